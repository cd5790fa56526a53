"""Raw-feature ensembles: configs written and parsed back, and the preprocess/postprocess logic
(the numpy parts of the Python models, imported without Triton) against FeatureEncoder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

import toolkit.repository
from toolkit.data import FeatureEncoder, Splits
from toolkit.data.features import OOV_ID, PAD_ID, RawRows
from toolkit.errors import RepositoryError
from toolkit.repository.config import BatchingOptions, build_model_config, read_config
from toolkit.repository.ensemble import write_ensembles
from toolkit.repository.metadata import read_metadata
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS, RAW_SCALAR_INPUTS, raw_request
from toolkit.serving.client import prepare_inputs
from toolkit.tensors import TensorSpec

PYTHON_MODELS = Path(toolkit.repository.__file__).parent / "python_models"
RAW_NAMES = [s.name for s in RAW_INPUT_SPECS]


def _load(file_name: str) -> ModuleType:
    """A Python-backend model file as a module; Triton's pb_utils is only imported by initialize()."""
    spec = importlib.util.spec_from_file_location(f"tritonrec_test_{file_name.removesuffix('.py')}", PYTHON_MODELS / file_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


preprocess = _load("preprocess.py")
postprocess = _load("postprocess.py")


def _ranker_config(
    encoder: FeatureEncoder, *, max_batch_size: int = 256, dense: str = "float32", ids: str = "int64", name="dlrm_onnx_python"
):
    inputs = [
        TensorSpec("dense_features", dense, (None, 2)),
        TensorSpec("sparse_ids", ids, (None, 7)),
        TensorSpec("multi_hot_ids", ids, (None, encoder.max_genres)),
    ]
    outputs = [TensorSpec("probability", "float32", (None, 1))]
    options = BatchingOptions(max_batch_size=max_batch_size, dynamic_batching=max_batch_size > 0)
    return build_model_config(name, inputs, outputs, options, backend="python")


def _summary(config) -> dict:
    """The fields a reader of a config cares about, in plain Python."""
    dtype = model_config_pb2.DataType.Name
    return {
        "name": config.name,
        "runtime": config.platform or config.backend,
        "max_batch_size": config.max_batch_size,
        "input": [(t.name, dtype(t.data_type), list(t.dims)) for t in config.input],
        "output": [(t.name, dtype(t.data_type), list(t.dims)) for t in config.output],
        "steps": [(s.model_name, s.model_version, dict(s.input_map), dict(s.output_map)) for s in config.ensemble_scheduling.step],
        "dynamic_batching": config.HasField("dynamic_batching"),
        "instance_group": [(g.kind, g.count) for g in config.instance_group],
        "parameters": {k: v.string_value for k, v in config.parameters.items()},
    }


# -- preprocess: the same ids and floats as FeatureEncoder.transform ------------------------------


def test_raw_inputs_table_of_the_model_file_is_the_toolkit_one() -> None:
    assert preprocess.RAW_TO_FEATURE == RAW_SCALAR_INPUTS


def test_preprocess_equals_feature_encoder_on_raw_test_rows(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    rows = synthetic_splits.raw_test
    got = preprocess.RawFeatureEncoder(encoder.to_dict()).encode(raw_request(rows))
    want = encoder.transform(rows)

    np.testing.assert_array_equal(got["sparse_ids"], want.sparse_ids)
    np.testing.assert_array_equal(got["multi_hot_ids"], want.multi_hot_ids)
    np.testing.assert_array_equal(got["dense_features"], want.dense_features)  # bit-identical floats
    assert got["dense_features"].dtype == np.float32 and got["sparse_ids"].dtype == np.int64
    assert got["multi_hot_ids"].shape == (len(rows), encoder.max_genres)


def _edge_rows(encoder: FeatureEncoder, known: RawRows) -> RawRows:
    """Unknown user/item/genre, empty year, a non-numeric year, too many genres, a full zip code."""
    genres_vocab = encoder.vocabularies["genres"].tokens
    first = {k: v[0] for k, v in known.columns.items()}
    table = [
        # user, item, age, gender, occupation, zip, year, genres
        ("no-such-user", "no-such-item", first["age"], first["gender"], "astronaut", "00000", "", ("Space Western",)),
        (first["user_id"], first["item_id"], "200", "X", first["occupation"], first["zip_prefix"], "1995", tuple(genres_vocab)),
        (first["user_id"], "no-such-item", first["age"], first["gender"], first["occupation"], first["zip_prefix"], "V", ()),
        (first["user_id"], first["item_id"], first["age"], first["gender"], first["occupation"], first["zip_prefix"], "1977", ("unknown",)),
    ]
    names = ["user_id", "item_id", "age", "gender", "occupation", "zip_prefix", "release_year", "genres"]
    columns = {}
    for j, name in enumerate(names):
        column = np.empty(len(table), dtype=object)
        column[:] = [row[j] for row in table]
        columns[name] = column
    dense = np.array([[float(r[2]), float(r[6]) if r[6].isdigit() else np.nan] for r in table])
    return RawRows(columns, dense, np.zeros(len(table), dtype=np.float32))


def test_preprocess_maps_unknown_values_to_oov_and_pads_and_truncates_genres_like_feature_encoder(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    rows = _edge_rows(encoder, synthetic_splits.raw_test)
    got = preprocess.RawFeatureEncoder(encoder.to_dict()).encode(raw_request(rows))
    want = encoder.transform(rows)

    np.testing.assert_array_equal(got["sparse_ids"], want.sparse_ids)
    np.testing.assert_array_equal(got["multi_hot_ids"], want.multi_hot_ids)
    np.testing.assert_array_equal(got["dense_features"], want.dense_features)
    assert got["sparse_ids"][0, :2].tolist() == [OOV_ID, OOV_ID]  # unknown user and item
    assert got["multi_hot_ids"][0].tolist() == [OOV_ID] + [PAD_ID] * (encoder.max_genres - 1)  # unknown genre
    assert len(encoder.vocabularies["genres"].tokens) > encoder.max_genres  # row 1 really is truncated
    assert got["multi_hot_ids"][2].tolist() == [PAD_ID] * encoder.max_genres  # no genres at all
    assert got["dense_features"][0, 1] == 0.0 and got["dense_features"][2, 1] == 0.0  # "" and "V": the mean


def test_genres_joined_by_a_bar_in_one_element_equal_one_genre_per_element(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    rows = synthetic_splits.raw_test.take(np.arange(50))
    per_element = raw_request(rows)
    joined = dict(per_element)
    joined["genres"] = np.array([["|".join(g.decode() for g in row if g)] for row in per_element["genres"]], dtype=object)
    assert joined["genres"].shape == (50, 1)
    pre = preprocess.RawFeatureEncoder(encoder.to_dict())

    np.testing.assert_array_equal(pre.encode(joined)["multi_hot_ids"], encoder.transform(rows).multi_hot_ids)


def test_zip_code_is_cut_to_the_configured_prefix(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    rows = synthetic_splits.raw_test.take(np.arange(20))
    request = raw_request(rows)
    request["zip_code"] = np.array([[z[0] + b"99"] for z in request["zip_code"]], dtype=object)  # full 5-digit codes
    want = encoder.transform(rows).sparse_ids

    np.testing.assert_array_equal(preprocess.RawFeatureEncoder(encoder.to_dict(), zip_prefix_len=3).encode(request)["sparse_ids"], want)
    shorter = preprocess.RawFeatureEncoder(encoder.to_dict(), zip_prefix_len=2).encode(request)["sparse_ids"]
    assert (shorter[:, 5] == OOV_ID).all()  # 2-character prefixes are not in the 3-character vocabulary


def test_str_and_int_values_encode_like_bytes(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    rows = synthetic_splits.raw_test.take(np.arange(30))
    request = raw_request(rows)
    as_str = {k: np.vectorize(lambda b: b.decode(), otypes=[object])(v) for k, v in request.items()}
    as_str["user_id"] = np.array([[int(u)] for u in rows.columns["user_id"]], dtype=object)
    pre = preprocess.RawFeatureEncoder(encoder.to_dict())

    np.testing.assert_array_equal(pre.encode(as_str)["sparse_ids"], encoder.transform(rows).sparse_ids)


def test_preprocess_refuses_a_missing_input_or_ragged_rows(synthetic_splits: Splits) -> None:
    pre = preprocess.RawFeatureEncoder(synthetic_splits.encoder.to_dict())
    request = raw_request(synthetic_splits.raw_test.take(np.arange(4)))
    with pytest.raises(ValueError, match="missing input 'genres'"):
        pre.encode({k: v for k, v in request.items() if k != "genres"})
    with pytest.raises(ValueError, match="item_id"):
        pre.encode(request | {"item_id": request["item_id"][:3]})


def test_client_sends_integer_ids_for_bytes_inputs_as_decimal_strings() -> None:
    ids = np.array([[196], [2**63 - 1]], dtype=np.int64)
    prepared = prepare_inputs({"user_id": ids}, [TensorSpec("user_id", "object", (None, 1))], 8)["user_id"]
    assert prepared.dtype == object
    assert prepared.tolist() == [[b"196"], [b"9223372036854775807"]]


# -- postprocess -------------------------------------------------------------------------------


def test_top_k_sorts_by_descending_score_and_keeps_input_order_on_ties() -> None:
    ids = np.array([[b"a"], [b"b"], [b"c"], [b"d"], [b"e"]], dtype=object)
    scores = np.array([[0.2], [0.9], [0.5], [0.9], [0.5]], dtype=np.float32)
    top_ids, top_scores = postprocess.top_k(ids, scores, 4)
    assert top_ids.tolist() == [b"b", b"d", b"c", b"e"]
    assert top_scores.dtype == np.float32 and top_scores.tolist() == pytest.approx([0.9, 0.9, 0.5, 0.5])


def test_top_k_returns_all_candidates_when_fewer_than_k_and_refuses_bad_input() -> None:
    top_ids, _ = postprocess.top_k(np.array([b"x", b"y"], dtype=object), np.array([0.1, 0.3]), 10)
    assert top_ids.tolist() == [b"y", b"x"]
    with pytest.raises(ValueError, match="top_k"):
        postprocess.top_k(np.array([b"x"], dtype=object), np.array([0.1]), 0)
    with pytest.raises(ValueError, match="2 item ids but 1 scores"):
        postprocess.top_k(np.array([b"x", b"y"], dtype=object), np.array([0.1]), 1)


# -- configs written, parsed back -----------------------------------------------------------------


def test_written_configs_parse_back_to_the_expected_ensembles(tmp_path: Path, synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    g = encoder.max_genres
    ranker = _ranker_config(encoder)
    models = write_ensembles(
        tmp_path, model_name="dlrm", ranker_config=ranker, encoder=encoder.to_dict(), options=BatchingOptions(instance_count=2), top_k=5
    )

    assert [(m.name, m.role) for m in models] == [
        ("dlrm_preprocess", "preprocess"),
        ("dlrm_ensemble", "ensemble"),
        ("dlrm_postprocess", "postprocess"),
        ("dlrm_topk", "ensemble"),
    ]
    parsed = {m.name: read_config(tmp_path / m.name / "config.pbtxt") for m in models}
    assert all(parsed[m.name] == m.config for m in models)

    raw_batched = [(n, "TYPE_STRING", [1]) for n in RAW_NAMES[:-1]] + [("genres", "TYPE_STRING", [-1])]
    raw_full = [(n, "TYPE_STRING", [-1, 1]) for n in RAW_NAMES[:-1]] + [("genres", "TYPE_STRING", [-1, -1])]
    ranker_tensors = [("dense_features", "TYPE_FP32", [2]), ("sparse_ids", "TYPE_INT64", [7]), ("multi_hot_ids", "TYPE_INT64", [g])]
    identity = {n: n for n in RAW_NAMES}
    ranker_map = {"dense_features": "dense_features", "sparse_ids": "sparse_ids", "multi_hot_ids": "multi_hot_ids"}
    pre_step = ("dlrm_preprocess", -1, identity, ranker_map)
    ranker_step = ("dlrm_onnx_python", -1, ranker_map, {"probability": "probability"})
    top_outputs = [("top_item_ids", "TYPE_STRING", [-1]), ("top_scores", "TYPE_FP32", [-1])]

    assert _summary(parsed["dlrm_preprocess"]) == {
        "name": "dlrm_preprocess",
        "runtime": "python",
        "max_batch_size": 256,
        "input": raw_batched,
        "output": ranker_tensors,
        "steps": [],
        "dynamic_batching": True,
        "instance_group": [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)],
        "parameters": {"zip_prefix_len": "3", "vocabularies": "vocabularies.json"},
    }
    assert _summary(parsed["dlrm_ensemble"]) == {
        "name": "dlrm_ensemble",
        "runtime": "ensemble",
        "max_batch_size": 256,
        "input": raw_batched,
        "output": [("probability", "TYPE_FP32", [1])],
        "steps": [pre_step, ranker_step],
        "dynamic_batching": False,
        "instance_group": [],
        "parameters": {},
    }
    assert _summary(parsed["dlrm_postprocess"]) == {
        "name": "dlrm_postprocess",
        "runtime": "python",
        "max_batch_size": 0,
        "input": [("item_id", "TYPE_STRING", [-1, 1]), ("probability", "TYPE_FP32", [-1, 1])],
        "output": top_outputs,
        "steps": [],
        "dynamic_batching": False,
        "instance_group": [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)],
        "parameters": {"top_k": "5"},
    }
    post_step = (
        "dlrm_postprocess",
        -1,
        {"item_id": "item_id", "probability": "probability"},
        {"top_item_ids": "top_item_ids", "top_scores": "top_scores"},
    )
    assert _summary(parsed["dlrm_topk"]) == {
        "name": "dlrm_topk",
        "runtime": "ensemble",
        "max_batch_size": 0,
        "input": raw_full,
        "output": top_outputs,
        "steps": [pre_step, ranker_step, post_step],
        "dynamic_batching": False,
        "instance_group": [],
        "parameters": {},
    }


def test_model_folders_hold_their_files_and_metadata(tmp_path: Path, synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder.to_dict()
    ranker = _ranker_config(synthetic_splits.encoder, name="dlrm_onnx_int8")
    write_ensembles(tmp_path, model_name="dlrm", ranker_config=ranker, encoder=encoder, options=BatchingOptions(), ranker_precision="int8")

    assert sorted(p.name for p in (tmp_path / "dlrm_preprocess" / "1").iterdir()) == ["model.py", "vocabularies.json"]
    assert json.loads((tmp_path / "dlrm_preprocess" / "1" / "vocabularies.json").read_text()) == encoder
    assert (tmp_path / "dlrm_preprocess" / "1" / "model.py").read_bytes() == (PYTHON_MODELS / "preprocess.py").read_bytes()
    assert (tmp_path / "dlrm_postprocess" / "1" / "model.py").read_bytes() == (PYTHON_MODELS / "postprocess.py").read_bytes()
    for ensemble in ("dlrm_ensemble", "dlrm_topk"):
        assert list((tmp_path / ensemble / "1").iterdir()) == []  # the empty version folder Triton needs

    meta = {name: read_metadata(tmp_path / name) for name in ("dlrm_preprocess", "dlrm_ensemble", "dlrm_postprocess", "dlrm_topk")}
    assert (meta["dlrm_preprocess"].role, meta["dlrm_preprocess"].precision) == ("preprocess", "fp32")
    assert (meta["dlrm_postprocess"].role, meta["dlrm_postprocess"].source["top_k"]) == ("postprocess", 10)
    for name in ("dlrm_ensemble", "dlrm_topk"):
        assert (meta[name].role, meta[name].precision, meta[name].ranker) == ("ensemble", "int8", "dlrm_onnx_int8")
    assert (meta["dlrm_ensemble"].variant, meta["dlrm_topk"].variant) == ("ensemble", "topk")


def test_preprocess_outputs_follow_the_ranker_dtypes_and_non_batching_ranker(tmp_path: Path, synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    ranker = _ranker_config(encoder, max_batch_size=0, dense="float16", ids="int32", name="dlrm_trt")
    models = write_ensembles(
        tmp_path, model_name="m", ranker_config=ranker, encoder=encoder.to_dict(), options=BatchingOptions(), top_k=None
    )

    assert [m.name for m in models] == ["m_preprocess", "m_ensemble"]
    pre, ens = (_summary(read_config(tmp_path / m.name / "config.pbtxt")) for m in models)
    assert pre["output"] == [
        ("dense_features", "TYPE_FP16", [-1, 2]),
        ("sparse_ids", "TYPE_INT32", [-1, 7]),
        ("multi_hot_ids", "TYPE_INT32", [-1, encoder.max_genres]),
    ]
    assert (pre["max_batch_size"], pre["dynamic_batching"], ens["max_batch_size"]) == (0, False, 0)
    assert ens["input"][0] == ("user_id", "TYPE_STRING", [-1, 1])
    assert not (tmp_path / "m_topk").exists() and not (tmp_path / "m_postprocess").exists()


def test_ranker_without_probability_or_with_foreign_inputs_is_refused(tmp_path: Path, synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder.to_dict()
    options = BatchingOptions()
    no_prob = build_model_config(
        "r1", [TensorSpec("dense_features", "float32", (None, 2))], [TensorSpec("score", "float32", (None, 1))], options, backend="python"
    )
    with pytest.raises(RepositoryError, match="'r1'.*no output 'probability'"):
        write_ensembles(tmp_path, model_name="a", ranker_config=no_prob, encoder=encoder, options=options)
    foreign = build_model_config(
        "r2", [TensorSpec("user_tower", "float32", (None, 8))], [TensorSpec("probability", "float32", (None, 1))], options, backend="python"
    )
    with pytest.raises(RepositoryError, match="'r2'.*user_tower"):
        write_ensembles(tmp_path, model_name="b", ranker_config=foreign, encoder=encoder, options=options)


def test_vocabularies_that_do_not_fit_the_ranker_are_refused(tmp_path: Path, synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder.to_dict()
    ranker = _ranker_config(synthetic_splits.encoder)
    wider = encoder | {"max_genres": encoder["max_genres"] + 2}
    with pytest.raises(RepositoryError, match=rf"multi_hot_ids has {encoder['max_genres']} columns, the vocabularies give"):
        write_ensembles(tmp_path, model_name="a", ranker_config=ranker, encoder=wider, options=BatchingOptions())
    with pytest.raises(RepositoryError, match="malformed"):
        write_ensembles(tmp_path, model_name="a", ranker_config=ranker, encoder={"format_version": 1}, options=BatchingOptions())
    assert list(tmp_path.iterdir()) == []  # nothing written before the checks pass


def test_bad_top_k_and_an_existing_version_are_refused(tmp_path: Path, synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder.to_dict()
    ranker = _ranker_config(synthetic_splits.encoder)
    with pytest.raises(RepositoryError, match="top_k must be >= 1"):
        write_ensembles(tmp_path, model_name="a", ranker_config=ranker, encoder=encoder, options=BatchingOptions(), top_k=0)
    write_ensembles(tmp_path, model_name="a", ranker_config=ranker, encoder=encoder, options=BatchingOptions())
    with pytest.raises(RepositoryError, match=r"a_preprocess/1, .*a_topk/1 already exist"):
        write_ensembles(tmp_path, model_name="a", ranker_config=ranker, encoder=encoder, options=BatchingOptions())
    write_ensembles(tmp_path, model_name="a", ranker_config=ranker, encoder=encoder, options=BatchingOptions(), version="2")
    assert (tmp_path / "a_topk" / "2").is_dir()


def test_preprocess_maps_bytes_that_are_not_utf8_to_the_oov_id_like_any_unknown_value(synthetic_splits):
    encoder = preprocess.RawFeatureEncoder(synthetic_splits.encoder.to_dict())
    request = {name: np.array([[b"\xff\xfe"]], dtype=object) for name in RAW_SCALAR_INPUTS}
    request["genres"] = np.array([[b"\xff", b""]], dtype=object)
    out = encoder.encode(request)
    assert (out["sparse_ids"] == OOV_ID).all()
    assert out["multi_hot_ids"][0, 0] == OOV_ID and (out["multi_hot_ids"][0, 1:] == 0).all()
    assert (out["dense_features"] == 0).all()

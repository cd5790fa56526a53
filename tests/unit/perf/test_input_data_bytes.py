"""write_input_data / read_input_data with BYTES tensors (the raw-feature ensembles' request), and
which rows `tritonrec perf` gives which model (rows_for_model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.data.features import RawRows
from toolkit.errors import PerfError
from toolkit.perf import read_input_data, write_input_data
from toolkit.perf.sweep import is_raw_feature_model, rows_for_model
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS, raw_request
from toolkit.tensors import TensorSpec


def _raw_rows() -> RawRows:
    columns = {
        "user_id": np.array(["196", "186", "22", "244", "166"], dtype=object),
        "item_id": np.array(["242", "302", "377", "51", "346"], dtype=object),
        "age": np.array(["49", "39", "25", "28", "47"], dtype=object),
        "gender": np.array(["M", "F", "M", "M", "M"], dtype=object),
        "occupation": np.array(["writer", "executive", "writer", "technician", "educator"], dtype=object),
        "zip_prefix": np.array(["551", "000", "400", "801", "552"], dtype=object),
        "release_year": np.array(["1997", "1997", "", "1994", "1998"], dtype=object),
        "genres": np.array([("Comedy",), ("Crime", "Film-Noir"), ("Children's",), ("Drama", "Romance", "War"), ("Café",)], dtype=object),
    }
    return RawRows(columns, np.zeros((5, 2)), np.zeros(5, np.float32))


def test_raw_request_round_trips_as_one_entry_of_strings_per_row(tmp_path: Path) -> None:
    request = raw_request(_raw_rows())
    path = write_input_data(tmp_path / "raw.json", request, batch_size=2)
    doc = json.loads(path.read_text())
    assert len(doc["data"]) == 4  # 5 rows trimmed to a multiple of the batch size
    second = doc["data"][1]
    assert second["user_id"] == {"content": ["186"], "shape": [1]}
    assert second["genres"] == {"content": ["Crime", "Film-Noir", ""], "shape": [3]}  # padded to the widest row
    assert doc["data"][2]["release_year"]["content"] == [""]

    back = read_input_data(path)  # strings come back as BYTES: object arrays of UTF-8 bytes, like Triton's clients
    assert set(back) == set(request)
    for name, array in back.items():
        assert array.dtype == object and array.shape == request[name][:4].shape
        assert array.tolist() == request[name][:4].tolist()
    explicit = read_input_data(path, {"gender": object, "age": "int64", "item_id": np.bytes_})
    assert explicit["gender"].tolist() == [[b"M"], [b"F"], [b"M"], [b"M"]]
    np.testing.assert_array_equal(explicit["age"], [[49], [39], [25], [28]])
    assert explicit["item_id"].dtype.kind == "S" and explicit["item_id"][:, 0].tolist() == [b"242", b"302", b"377", b"51"]


def test_non_ascii_text_survives_and_str_bytes_and_numpy_bytes_mix_with_numbers(tmp_path: Path) -> None:
    genres = np.array([["Café", ""], ["Ünïcode", "Drama"]], dtype=object)
    genres[0, 0] = genres[0, 0].encode()  # bytes and str elements in one object array
    rows = {"genres": genres, "tag": np.array([[b"a"], [b"b"]]), "ids": np.array([[1, 2], [3, 4]], np.int64)}
    back = read_input_data(write_input_data(tmp_path / "mixed.json", rows, batch_size=1))
    assert back["genres"].tolist() == [["Café".encode(), b""], ["Ünïcode".encode(), b"Drama"]]
    assert back["tag"].tolist() == [[b"a"], [b"b"]]
    assert back["ids"].dtype == np.int64 and back["ids"].tolist() == [[1, 2], [3, 4]]


def test_whole_requests_for_a_non_batching_model_carry_strings_too(tmp_path: Path) -> None:
    request = raw_request(_raw_rows())
    doc = json.loads(write_input_data(tmp_path / "r.json", request, batch_size=2, model_batches=False).read_text())
    assert len(doc["data"]) == 2
    assert doc["data"][1]["item_id"] == {"content": ["377", "51"], "shape": [2, 1]}


def test_bytes_that_perf_analyzers_json_cannot_carry_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    with pytest.raises(PerfError, match=r"input 'user_id': element 1 \(b'\\xff\\xfe'\) is not UTF-8"):
        write_input_data(path, {"user_id": np.array([[b"1"], [b"\xff\xfe"]], dtype=object)}, batch_size=1)
    with pytest.raises(PerfError, match="input 'age': element 0 is int") as err:
        write_input_data(path, {"age": np.array([[24]], dtype=object)}, batch_size=1)
    assert "raw_request" in (err.value.hint or "")
    with pytest.raises(PerfError, match="input 'gender': <U1 data cannot be written") as err:
        write_input_data(path, {"gender": np.array([["M"]])}, batch_size=1)
    assert "astype(object)" in (err.value.hint or "")
    assert not path.exists()


def test_raw_feature_models_get_the_raw_request_and_others_the_encoded_rows() -> None:
    encoded = {"dense_features": np.zeros((5, 2), np.float32), "sparse_ids": np.ones((5, 7), np.int64)}
    raw = raw_request(_raw_rows())
    ranker = [TensorSpec("dense_features", "float32", (None, 2)), TensorSpec("sparse_ids", "int64", (None, 7))]
    assert not is_raw_feature_model(ranker) and is_raw_feature_model(RAW_INPUT_SPECS)
    assert rows_for_model("dlrm_onnx_python", ranker, max_batch_size=256, encoded=encoded, raw=raw) == encoded
    got = rows_for_model("dlrm_ensemble", RAW_INPUT_SPECS, max_batch_size=256, output_names=["probability"], encoded=encoded, raw=raw)
    assert list(got) == [s.name for s in RAW_INPUT_SPECS] and got["genres"] is raw["genres"]
    with pytest.raises(PerfError, match="'dlrm_ensemble' takes raw features"):
        rows_for_model("dlrm_ensemble", RAW_INPUT_SPECS, max_batch_size=256, encoded=encoded, raw=None)


def test_a_top_k_model_is_refused_with_the_reason() -> None:
    with pytest.raises(PerfError, match=r"model 'dlrm_topk' is a top-K model .* one user's whole candidate list") as err:
        rows_for_model(
            "dlrm_topk",
            RAW_INPUT_SPECS,
            max_batch_size=0,
            output_names=["top_item_ids", "top_scores"],
            encoded={},
            raw=raw_request(_raw_rows()),
        )
    assert "dlrm_ensemble" in (err.value.hint or "")

"""Build files: every BatchingOptions field, per-variant overrides, and errors naming the file and the field."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from toolkit.errors import RepositoryError
from toolkit.repository.buildfile import BuildFile, ModelSection, load_build_file
from toolkit.repository.config import BatchingOptions, InstanceGroup, VersionPolicy

FULL = {
    "model_name": "dlrm",
    "target": "gpu",
    "variants": ["pytorch", "onnx"],
    "ensembles": True,
    "ensemble_ranker": "onnx",
    "top_k": 10,
    "model": {
        "max_batch_size": 128,
        "dynamic_batching": True,
        "max_queue_delay_us": 200,
        "preferred_batch_sizes": [32, 128],
        "instance_groups": [{"kind": "KIND_GPU", "count": 2, "gpus": [0]}, {"kind": "KIND_CPU"}],
        "queue_timeout_us": 50000,
        "queue_timeout_action": "DELAY",
        "allow_timeout_override": True,
        "max_queue_size": 1024,
        "version_policy": {"kind": "latest", "num_versions": 2},
        "response_cache": True,
        "intra_op_threads": 2,
        "inter_op_threads": 1,
        "warmup_batch_sizes": [1, 32],
    },
    "overrides": {
        "onnx": {"gpu_execution_accelerator": "tensorrt", "tensorrt_precision_mode": "FP16"},
        "pytorch": {"max_batch_size": 32, "preferred_batch_sizes": [32], "warmup_batch_sizes": [1]},
    },
}


def _write(tmp_path: Path, content: dict | str) -> Path:
    path = tmp_path / "build.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_a_full_build_file_gives_each_variant_its_options(tmp_path: Path) -> None:
    build = load_build_file(_write(tmp_path, FULL))

    assert (build.model_name, build.target, build.variants, build.ensemble_ranker, build.top_k) == (
        "dlrm",
        "gpu",
        ["pytorch", "onnx"],
        "onnx",
        10,
    )
    onnx = build.batching_options("onnx")
    assert onnx.max_batch_size == 128 and onnx.preferred_batch_sizes == [32, 128]
    assert onnx.instance_groups == [InstanceGroup("KIND_GPU", 2, [0]), InstanceGroup("KIND_CPU", 1)]
    assert (onnx.queue_timeout_us, onnx.queue_timeout_action, onnx.allow_timeout_override, onnx.max_queue_size) == (
        50000,
        "DELAY",
        True,
        1024,
    )
    assert onnx.version_policy == VersionPolicy("latest", 2)
    assert onnx.response_cache and (onnx.intra_op_threads, onnx.inter_op_threads) == (2, 1)
    assert (onnx.gpu_execution_accelerator, onnx.tensorrt_precision_mode) == ("tensorrt", "FP16")
    pytorch = build.batching_options("pytorch")
    assert (pytorch.max_batch_size, pytorch.preferred_batch_sizes, pytorch.warmup_batch_sizes) == (32, [32], [1])
    assert pytorch.gpu_execution_accelerator is None and pytorch.max_queue_delay_us == 200  # from the model section
    build.check_variants(["pytorch", "onnx", "onnx_python"])


def test_an_empty_build_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    build = load_build_file(_write(tmp_path, {}))

    assert (build.model_name, build.target, build.variants, build.ensembles, build.ensemble_ranker, build.top_k) == (
        "dlrm",
        "cpu",
        None,
        True,
        None,
        10,
    )
    assert build.batching_options("onnx") == BatchingOptions()
    base = BatchingOptions(instance_kind="KIND_GPU", max_batch_size=64)  # e.g. the gpu profile
    assert build.batching_options("onnx", base) == base


def test_the_model_section_has_every_batching_options_field() -> None:
    # every field but instance_kind, which the target decides (instance_groups give explicit kinds)
    assert {f.name for f in fields(BatchingOptions)} - {"instance_kind"} == set(ModelSection.model_fields)
    defaults = ModelSection()
    for f in fields(BatchingOptions):
        if f.name == "instance_kind":
            continue
        value = getattr(defaults, f.name)
        expected = getattr(BatchingOptions(), f.name)
        if f.name == "version_policy":
            assert (value.kind, value.num_versions, value.versions) == (expected.kind, expected.num_versions, expected.versions)
        else:
            assert value == expected, f.name


def test_a_missing_build_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"build file .*nowhere\.json does not exist"):
        load_build_file(tmp_path / "nowhere.json")


def test_bad_json_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "model_name": "dlrm",\n  "target": cpu\n}')
    with pytest.raises(RepositoryError, match=r"build\.json is not valid JSON: Expecting value at line 3 column 13"):
        load_build_file(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"modle_name": "x"}, r"modle_name: unknown field \(did you mean 'model_name'\?\); expected one of model_name, target, variants"),
        (
            {"model": {"max_batch": 8}},
            r"model\.max_batch: unknown field \(did you mean 'max_batch_size'\?\); expected one of max_batch_size",
        ),
        (
            {"model": {"preferred_batch_size": [8]}},
            r"model\.preferred_batch_size: unknown field \(did you mean 'preferred_batch_sizes'\?\)",
        ),
        ({"overrides": {"onnx": {"gpus": 2}}}, r"overrides\.onnx\.gpus: unknown field; expected one of max_batch_size"),
        (
            {"model": {"instance_groups": [{"kind": "KIND_GPU", "devices": [0]}]}},
            r"model\.instance_groups\[0\]\.devices: unknown field; expected one of kind, count, gpus",
        ),
        (
            {"model": {"version_policy": {"latest": 2}}},
            r"model\.version_policy\.latest: unknown field; expected one of kind, num_versions, versions",
        ),
    ],
    ids=["top-level", "model", "triton-spelling", "override", "instance-group", "version-policy"],
)
def test_unknown_fields_are_errors_naming_the_field_and_the_known_ones(tmp_path: Path, content: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=rf"build file .*build\.json: {message}"):
        load_build_file(_write(tmp_path, content))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"model": {"max_batch_size": "32"}}, r"model\.max_batch_size: Input should be a valid integer \(got '32'\)"),
        ({"model": {"max_batch_size": -1}}, r"model\.max_batch_size: Input should be greater than or equal to 0 \(got -1\)"),
        ({"target": "tpu"}, r"target: Input should be 'cpu' or 'gpu' \(got 'tpu'\)"),
        ({"model": {"response_cache": "yes"}}, r"model\.response_cache: Input should be a valid boolean \(got 'yes'\)"),
        (
            {"model": {"instance_groups": [{"kind": "KIND_GPU", "count": 0}]}},
            r"model\.instance_groups\[0\]\.count: Input should be greater than or equal to 1",
        ),
        ({"top_k": 0}, r"top_k: Input should be greater than or equal to 1"),
        ({"model_name": "my model"}, r"model_name: String should match pattern"),
        ([1, 2], r"\(top level\): Input should be a valid dictionary"),
    ],
    ids=["string-for-int", "negative", "target", "bool", "group-count", "top-k", "name", "not-an-object"],
)
def test_wrong_types_and_values_name_the_field_and_what_was_given(tmp_path: Path, content, message: str) -> None:
    with pytest.raises(RepositoryError, match=rf"build file .*build\.json: {message}"):
        load_build_file(_write(tmp_path, json.dumps(content)))


def test_every_wrong_field_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError) as info:
        load_build_file(_write(tmp_path, {"target": "tpu", "model": {"max_batch_size": "x", "warp": 1}}))
    message = str(info.value)
    assert "target:" in message and "model.max_batch_size:" in message and "model.warp: unknown field" in message


def test_a_preferred_batch_size_above_max_batch_size_is_refused_naming_the_file_and_section(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"build\.json: model: preferred_batch_size \[64\] must lie in \[1, max_batch_size=32\]"):
        load_build_file(_write(tmp_path, {"model": {"max_batch_size": 32, "preferred_batch_sizes": [64]}}))
    override = {"model": {"preferred_batch_sizes": [128]}, "overrides": {"pytorch": {"max_batch_size": 64}}}
    with pytest.raises(RepositoryError, match=r"model \+ overrides\.pytorch \(variant 'pytorch'\): preferred_batch_size \[128\]"):
        load_build_file(_write(tmp_path, override))


def test_an_accelerator_without_a_gpu_group_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(
        RepositoryError, match=r"overrides\.onnx \(variant 'onnx'\): gpu_execution_accelerator 'tensorrt' acts only on KIND_GPU"
    ):
        load_build_file(_write(tmp_path, {"overrides": {"onnx": {"gpu_execution_accelerator": "tensorrt"}}}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"variants": ["onnx", "onnx_int4"]}, r"variants: unknown variant\(s\) \['onnx_int4'\]"),
        ({"overrides": {"tensorflow": {}}}, r"overrides: unknown variant\(s\) \['tensorflow'\]"),
        ({"ensemble_ranker": "xgboost"}, r"ensemble_ranker: unknown variant\(s\) \['xgboost'\]"),
        ({"variants": ["onnx"], "overrides": {"pytorch": {}}}, r"overrides: variant\(s\) \['pytorch'\] are not built"),
        ({"variants": ["onnx"], "ensemble_ranker": "pytorch"}, r"ensemble_ranker: 'pytorch' is not among the built variants"),
    ],
)
def test_check_variants_names_unknown_variants(content: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BuildFile.model_validate(content).check_variants(["pytorch", "onnx", "onnx_python"])


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "examples").glob("build_*.json")), ids=lambda p: p.name)
def test_the_example_build_files_load(path: Path) -> None:
    from toolkit.repository.builder import VARIANTS

    build = load_build_file(path)
    build.check_variants(VARIANTS)
    for variant in build.variants or []:
        build.batching_options(variant)


def test_a_gpu_target_file_may_ask_for_an_execution_accelerator(tmp_path: Path) -> None:
    build = load_build_file(_write(tmp_path, {"target": "gpu", "overrides": {"onnx": {"gpu_execution_accelerator": "tensorrt"}}}))
    options = build.batching_options("onnx")
    assert (options.instance_kind, options.gpu_execution_accelerator) == ("KIND_GPU", "tensorrt")


def test_instance_kind_is_not_a_build_file_field_the_target_decides_it(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"model\.instance_kind: unknown field"):
        load_build_file(_write(tmp_path, {"model": {"instance_kind": "KIND_GPU"}}))


def test_a_calibration_cache_is_found_next_to_the_build_file_or_named_when_missing(tmp_path: Path) -> None:
    (tmp_path / "int8.cache").write_bytes(b"TRT-1005-EntropyCalibration2\n")
    build = load_build_file(_write(tmp_path, {"target": "gpu", "calibration_cache": "int8.cache"}))
    assert build.calibration_cache == str((tmp_path / "int8.cache").resolve())
    with pytest.raises(RepositoryError, match=r"calibration_cache 'missing.cache' .* does not exist"):
        load_build_file(_write(tmp_path, {"calibration_cache": "missing.cache"}))

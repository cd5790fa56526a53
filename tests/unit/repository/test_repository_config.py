"""Triton config.pbtxt files: built from the protobuf schema, written, parsed back, checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from toolkit.errors import RepositoryError
from toolkit.repository import (
    BatchingOptions,
    build_model_config,
    check_config_against,
    config_tensor_specs,
    config_to_text,
    parse_config,
    read_config,
)
from toolkit.repository.config import InstanceGroup, VersionPolicy
from toolkit.tensors import TensorSpec

INPUTS = [
    TensorSpec("dense_features", "float32", (None, 2)),
    TensorSpec("sparse_ids", "int64", (None, 7)),
    TensorSpec("multi_hot_ids", "int64", (None, 6)),
]
OUTPUTS = [TensorSpec("probability", "float32", (None, 1))]

GOLDEN_ONNX_CONFIG = """\
name: "dlrm_onnx"
platform: "onnxruntime_onnx"
version_policy {
  latest {
    num_versions: 1
  }
}
max_batch_size: 256
input {
  name: "dense_features"
  data_type: TYPE_FP32
  dims: 2
}
input {
  name: "sparse_ids"
  data_type: TYPE_INT64
  dims: 7
}
input {
  name: "multi_hot_ids"
  data_type: TYPE_INT64
  dims: 6
}
output {
  name: "probability"
  data_type: TYPE_FP32
  dims: 1
}
instance_group {
  count: 1
  kind: KIND_CPU
}
dynamic_batching {
  max_queue_delay_microseconds: 100
}
parameters {
  key: "intra_op_thread_count"
  value {
    string_value: "1"
  }
}
"""


def _onnx_config(options: BatchingOptions | None = None):
    return build_model_config(
        "dlrm_onnx", INPUTS, OUTPUTS, options or BatchingOptions(), platform="onnxruntime_onnx", parameters={"intra_op_thread_count": "1"}
    )


def test_default_config_text_is_the_golden_triton_config_and_parses_back_equal() -> None:
    config = _onnx_config()
    text = config_to_text(config)

    assert text == GOLDEN_ONNX_CONFIG
    assert parse_config(text) == config
    assert "max_batch_size: 256" in text
    assert "dims: -1" not in text  # the batch dimension is implicit
    assert text.count("TYPE_INT64") == 2  # both id tensors


def test_python_backend_config_names_the_backend_not_a_platform() -> None:
    config = build_model_config("dlrm_pytorch", INPUTS, OUTPUTS, BatchingOptions(), backend="python")
    text = config_to_text(config)

    assert 'backend: "python"' in text and "platform" not in text
    assert parse_config(text) == config


def test_max_batch_size_zero_keeps_full_dims_with_minus_one_for_the_batch() -> None:
    config = _onnx_config(BatchingOptions(max_batch_size=0, dynamic_batching=False))
    text = config_to_text(config)

    assert [list(t.dims) for t in config.input] == [[-1, 2], [-1, 7], [-1, 6]]
    assert list(config.output[0].dims) == [-1, 1]
    assert "max_batch_size" not in text  # proto3 default 0: Triton reads a missing field as 0
    assert "dynamic_batching" not in text
    assert parse_config(text).max_batch_size == 0


def test_max_batch_size_zero_accepts_tensors_with_a_fixed_batch() -> None:
    fixed = [TensorSpec("x", "float32", (8, 3))]
    config = build_model_config("m", fixed, fixed, BatchingOptions(max_batch_size=0, dynamic_batching=False), backend="python")
    assert list(config.input[0].dims) == [8, 3]


def test_batching_options_appear_in_the_config() -> None:
    options = BatchingOptions(max_batch_size=64, max_queue_delay_us=500, preferred_batch_sizes=[16, 64], instance_count=2)
    config = _onnx_config(options)

    assert config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 64]
    assert config.instance_group[0].count == 2
    assert parse_config(config_to_text(config)) == config


def test_preferred_batch_size_above_max_batch_size_is_refused_naming_both() -> None:
    with pytest.raises(RepositoryError, match=r"preferred_batch_size \[64\] must lie in \[1, max_batch_size=32\]") as info:
        BatchingOptions(max_batch_size=32, preferred_batch_sizes=[64])
    assert "--max-batch-size" in info.value.hint


def test_dynamic_batching_without_batching_is_refused() -> None:
    with pytest.raises(RepositoryError, match="dynamic_batching needs max_batch_size >= 1") as info:
        BatchingOptions(max_batch_size=0)
    assert "dynamic batching off" in info.value.hint


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": -1}, "max_batch_size must be >= 0"),
        ({"max_queue_delay_us": -5}, "max_queue_delay_microseconds must be >= 0"),
        ({"instance_count": 0}, "instance_group count must be >= 1"),
        ({"instance_kind": "KIND_TPU"}, "KIND_CPU or KIND_GPU"),
        ({"preferred_batch_sizes": [0]}, r"preferred_batch_size \[0\]"),
    ],
)
def test_invalid_batching_options_are_repository_errors(options: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BatchingOptions(**options)


@pytest.mark.parametrize(("kwargs"), [{}, {"platform": "onnxruntime_onnx", "backend": "python"}])
def test_a_config_needs_exactly_one_of_platform_or_backend(kwargs: dict) -> None:
    with pytest.raises(RepositoryError, match="exactly one of platform or backend"):
        build_model_config("m", INPUTS, OUTPUTS, BatchingOptions(), **kwargs)


def test_batching_a_tensor_with_a_fixed_first_dimension_is_refused() -> None:
    fixed = [TensorSpec("dense_features", "float32", (8, 2))]
    with pytest.raises(RepositoryError, match=r"dense_features float32\[8, 2\] has a fixed one") as info:
        build_model_config("m", fixed, OUTPUTS, BatchingOptions(), backend="python")
    assert "--max-batch-size 0" in info.value.hint


def test_config_tensor_specs_put_the_batch_dimension_back() -> None:
    assert config_tensor_specs(_onnx_config()) == (INPUTS, OUTPUTS)


def test_parse_config_rejects_text_that_is_not_a_model_config_naming_the_source() -> None:
    with pytest.raises(RepositoryError, match=r"models/x/config\.pbtxt: not a valid Triton ModelConfig"):
        parse_config('name: "x"\nmax_batch_sise: 4\n', source="models/x/config.pbtxt")


def test_read_config_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text(GOLDEN_ONNX_CONFIG)
    assert read_config(tmp_path / "config.pbtxt") == _onnx_config()
    with pytest.raises(RepositoryError, match=r"elsewhere/config\.pbtxt does not exist"):
        read_config(tmp_path / "elsewhere" / "config.pbtxt")


def test_check_config_against_accepts_the_model_it_was_built_from() -> None:
    check_config_against(_onnx_config(), INPUTS, OUTPUTS)
    check_config_against(_onnx_config(BatchingOptions(max_batch_size=0, dynamic_batching=False)), INPUTS, OUTPUTS)


@pytest.mark.parametrize(
    ("model_inputs", "message"),
    [
        (
            [TensorSpec("dense_features", "float64", (None, 2)), *INPUTS[1:]],
            "input 'dense_features': config says float32, the model takes float64",
        ),
        (
            [INPUTS[0], TensorSpec("sparse_ids", "int32", (None, 7)), INPUTS[2]],
            "input 'sparse_ids': config says int64, the model takes int32",
        ),
        (
            [INPUTS[0], TensorSpec("item_ids", "int64", (None, 7)), INPUTS[2]],
            "config declares input 'sparse_ids', which the model does not have; input 'item_ids' of the model is not declared",
        ),
        (
            [INPUTS[0], TensorSpec("sparse_ids", "int64", (None, 7, 1)), INPUTS[2]],
            r"input 'sparse_ids': config rank 2 \(sparse_ids int64\[B, 7\]\), model rank 3",
        ),
        (
            [*INPUTS[:2], TensorSpec("multi_hot_ids", "int64", (None, 5))],
            r"input 'multi_hot_ids': config shape multi_hot_ids int64\[B, 6\], model shape multi_hot_ids int64\[B, 5\]",
        ),
    ],
    ids=["wrong-float-dtype", "wrong-int-dtype", "wrong-name", "wrong-rank", "wrong-width"],
)
def test_check_config_against_names_each_mismatch(model_inputs: list[TensorSpec], message: str) -> None:
    with pytest.raises(RepositoryError, match=rf"model 'dlrm_onnx': .*{message}"):
        check_config_against(_onnx_config(), model_inputs, OUTPUTS)


def test_check_config_against_checks_outputs_too() -> None:
    with pytest.raises(RepositoryError, match="config declares output 'probability', which the model does not have"):
        check_config_against(_onnx_config(), INPUTS, [TensorSpec("score", "float32", (None, 1))])


# -- instance groups, queue policy, version policy, response cache, accelerators, warmup, BYTES --


def test_heterogeneous_instance_groups_replace_count_and_kind() -> None:
    groups = [InstanceGroup("KIND_GPU", 2, [0, 1]), {"kind": "KIND_CPU", "count": 3}]
    options = BatchingOptions(instance_count=5, instance_groups=groups)
    config = _onnx_config(options)

    assert [(g.kind, g.count, list(g.gpus)) for g in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2, [0, 1]),
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, 3, []),
    ]
    assert "count: 5" not in config_to_text(config)
    assert parse_config(config_to_text(config)) == config


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"kind": "KIND_CPU", "gpus": [0]}, "only KIND_GPU groups name GPUs"),
        ({"kind": "KIND_GPU", "count": 0}, "instance_group count must be >= 1"),
        ({"kind": "KIND_TPU"}, "KIND_CPU or KIND_GPU"),
        ({"kind": "KIND_GPU", "gpus": [0, 0]}, "distinct GPU ids"),
        ({"kind": "KIND_GPU", "cores": 4}, r"instance_groups\[0\]: .*cores"),
    ],
)
def test_invalid_instance_groups_are_repository_errors(group: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BatchingOptions(instance_groups=[group])


def test_queue_policy_is_written_only_when_set() -> None:
    assert not _onnx_config().dynamic_batching.HasField("default_queue_policy")

    options = BatchingOptions(queue_timeout_us=50_000, queue_timeout_action="DELAY", allow_timeout_override=True, max_queue_size=128)
    config = _onnx_config(options)
    policy = config.dynamic_batching.default_queue_policy
    text = config_to_text(config)

    assert policy.default_timeout_microseconds == 50_000
    assert policy.timeout_action == policy.DELAY
    assert policy.allow_timeout_override and policy.max_queue_size == 128
    assert "default_queue_policy {" in text and "timeout_action: DELAY" in text
    assert parse_config(text) == config
    assert _onnx_config(BatchingOptions(max_queue_size=8)).dynamic_batching.default_queue_policy.max_queue_size == 8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_timeout_action": "DROP"}, "queue_timeout_action must be REJECT or DELAY"),
        ({"queue_timeout_us": -1}, r"queue_timeout_us .* must be an integer >= 0"),
        ({"max_queue_size": -3}, "max_queue_size must be an integer >= 0"),
        (
            {"max_batch_size": 0, "dynamic_batching": False, "max_queue_size": 4},
            "queue policy .* is part of dynamic_batching, which is off",
        ),
    ],
)
def test_invalid_queue_policies_are_repository_errors(options: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BatchingOptions(**options)


def test_version_policy_is_always_written_latest_one_by_default() -> None:
    assert _onnx_config().version_policy.latest.num_versions == 1
    assert _onnx_config(BatchingOptions(version_policy=VersionPolicy("all"))).version_policy.WhichOneof("policy_choice") == "all"
    specific = _onnx_config(BatchingOptions(version_policy={"kind": "specific", "versions": [1, 3]}))
    assert list(specific.version_policy.specific.versions) == [1, 3]
    latest2 = _onnx_config(BatchingOptions(version_policy=VersionPolicy("latest", 2)))
    assert "num_versions: 2" in config_to_text(latest2)
    for config in (specific, latest2):
        assert parse_config(config_to_text(config)) == config


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"kind": "newest"}, "version_policy kind must be one of latest, all, specific"),
        ({"kind": "latest", "num_versions": 0}, "num_versions must be >= 1"),
        ({"kind": "specific"}, "specific needs distinct versions >= 1"),
        ({"kind": "specific", "versions": [0]}, "specific needs distinct versions >= 1"),
        ({"kind": "all", "versions": [1]}, "takes no versions"),
    ],
)
def test_invalid_version_policies_are_repository_errors(policy: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BatchingOptions(version_policy=policy)


def test_response_cache_is_enabled_only_when_asked() -> None:
    assert not _onnx_config().HasField("response_cache")
    config = _onnx_config(BatchingOptions(response_cache=True))
    assert config.response_cache.enable
    assert "response_cache {\n  enable: true\n}" in config_to_text(config)


def test_tensorrt_execution_accelerator_is_written_for_onnxruntime_models_on_gpu() -> None:
    options = BatchingOptions(instance_kind="KIND_GPU", gpu_execution_accelerator="tensorrt", tensorrt_precision_mode="FP16")
    config = _onnx_config(options)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator

    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}
    assert parse_config(config_to_text(config)) == config
    cuda = _onnx_config(BatchingOptions(instance_kind="KIND_GPU", gpu_execution_accelerator="cuda"))
    assert cuda.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "cuda"


def test_an_execution_accelerator_on_a_python_backend_model_is_refused_naming_the_model() -> None:
    options = BatchingOptions(instance_kind="KIND_GPU", gpu_execution_accelerator="tensorrt")
    with pytest.raises(RepositoryError, match=r"model 'dlrm_pytorch': gpu_execution_accelerator 'tensorrt' .* backend 'python'"):
        build_model_config("dlrm_pytorch", INPUTS, OUTPUTS, options, backend="python")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gpu_execution_accelerator": "tensorrt"}, "acts only on KIND_GPU instances"),
        ({"instance_kind": "KIND_GPU", "gpu_execution_accelerator": "openvino"}, "must be one of tensorrt, cuda or unset"),
        ({"tensorrt_precision_mode": "FP16"}, "needs gpu_execution_accelerator 'tensorrt'"),
        ({"instance_kind": "KIND_GPU", "gpu_execution_accelerator": "tensorrt", "tensorrt_precision_mode": "INT4"}, "FP32 or FP16"),
    ],
)
def test_invalid_accelerator_options_are_repository_errors(options: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BatchingOptions(**options)


def test_warmup_entries_go_into_the_config() -> None:
    warmup = [
        {
            "name": "batch_4_row_0",
            "batch_size": 4,
            "count": 1,
            "inputs": {"dense_features": {"data_type": "TYPE_FP32", "dims": [2], "input_data_file": "row_0_dense_features.bin"}},
        }
    ]
    config = build_model_config("m", INPUTS, OUTPUTS, BatchingOptions(), backend="python", warmup=warmup)

    (entry,) = config.model_warmup
    assert entry.batch_size == 4 and entry.inputs["dense_features"].input_data_file == "row_0_dense_features.bin"
    assert parse_config(config_to_text(config)) == config
    with pytest.raises(RepositoryError, match=r"model 'm': model_warmup\[0\] is not a Triton ModelWarmup"):
        build_model_config("m", INPUTS, OUTPUTS, BatchingOptions(), backend="python", warmup=[{"batch": 4}])


def test_bytes_tensors_are_type_string_both_ways() -> None:
    raw = [TensorSpec("user_id", "object", (None, 1)), TensorSpec("genres", "object", (None, None))]
    config = build_model_config("pre", raw, OUTPUTS, BatchingOptions(), backend="python")
    text = config_to_text(config)

    assert text.count("TYPE_STRING") == 2 and "TYPE_BYTES" not in text
    assert config_tensor_specs(parse_config(text)) == (raw, OUTPUTS)
    assert _tensor_type_of(TensorSpec("s", "<U3", (None, 1))) == "TYPE_STRING"


def _tensor_type_of(spec: TensorSpec) -> str:
    config = build_model_config("m", [spec], OUTPUTS, BatchingOptions(), backend="python")
    return model_config_pb2.DataType.Name(config.input[0].data_type)


def test_thread_parameters_use_each_runtimes_keys() -> None:
    options = BatchingOptions(intra_op_threads=4, inter_op_threads=2)
    assert options.thread_parameters(platform="onnxruntime_onnx") == {"intra_op_thread_count": "4", "inter_op_thread_count": "2"}
    assert options.thread_parameters(backend="python") == {"intra_op_threads": "4", "inter_op_threads": "2"}
    with pytest.raises(RepositoryError, match="intra_op_threads must be an integer >= 0"):
        BatchingOptions(intra_op_threads=-1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 32, "warmup_batch_sizes": [64]}, r"warmup batch sizes \[64\] must lie in \[1, 32\]"),
        ({"warmup_batch_sizes": [0]}, r"warmup batch sizes \[0\]"),
        ({"max_batch_size": 0, "dynamic_batching": False, "warmup_batch_sizes": [2]}, r"\[1, 1\] \(max_batch_size 0"),
    ],
)
def test_invalid_warmup_batch_sizes_are_repository_errors(options: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        BatchingOptions(**options)

"""Golden tests: the config.pbtxt files a build writes, byte for byte, against committed copies.

Each config is built through the public API, written with ``config_to_text``, parsed back (it must
equal what was built) and compared with ``tests/fixtures/golden/<name>.pbtxt`` — the text a user
reads and Triton parses. After an intended change, regenerate with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/repository/test_golden_configs.py`` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.repository import BatchingOptions, InstanceGroup, VersionPolicy, build_model_config, config_to_text, parse_config
from toolkit.repository.ensemble import write_ensembles
from toolkit.tensors import TensorSpec

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden"
INPUTS = [
    TensorSpec("dense_features", "float32", (None, 2)),
    TensorSpec("sparse_ids", "int64", (None, 7)),
    TensorSpec("multi_hot_ids", "int64", (None, 6)),
]
OUTPUTS = [TensorSpec("probability", "float32", (None, 1))]
WARMUP = [
    {
        "name": "batch_1_row_0",
        "batch_size": 1,
        "inputs": {
            t.name: {
                "data_type": "TYPE_FP32" if t.dtype == "float32" else "TYPE_INT64",
                "dims": [t.shape[1]],
                "input_data_file": f"row_0_{t.name}.bin",
            }
            for t in INPUTS
        },
        "count": 1,
    }
]


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.pbtxt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name}: the written config differs from {path}"


def _ranker(name: str, options: BatchingOptions, **runtime) -> str:
    config = build_model_config(name, INPUTS, OUTPUTS, options, **runtime)
    text = config_to_text(config)
    assert parse_config(text) == config
    return text


def test_cpu_python_ranker_with_queue_policy_and_warmup() -> None:
    options = BatchingOptions(
        preferred_batch_sizes=[64, 256], queue_timeout_us=100_000, max_queue_size=512, instance_count=2, intra_op_threads=2
    )
    text = _ranker("dlrm_onnx_python", options, backend="python", parameters=options.thread_parameters(backend="python"), warmup=WARMUP)
    _check_golden("dlrm_onnx_python", text)


def test_gpu_onnx_ranker_with_heterogeneous_groups_and_tensorrt_accelerator() -> None:
    options = BatchingOptions(
        instance_groups=[InstanceGroup("KIND_GPU", 2, [0]), InstanceGroup("KIND_CPU", 1)],
        gpu_execution_accelerator="tensorrt",
        tensorrt_precision_mode="FP16",
        version_policy=VersionPolicy("latest", num_versions=2),
        response_cache=True,
    )
    text = _ranker("dlrm_onnx", options, platform="onnxruntime_onnx", parameters=options.thread_parameters(platform="onnxruntime_onnx"))
    _check_golden("dlrm_onnx_gpu", text)


def test_unbatched_ranker_keeps_the_batch_dimension_in_dims() -> None:
    fixed = [TensorSpec(t.name, t.dtype, (16, *t.shape[1:])) for t in INPUTS]
    config = build_model_config(
        "dlrm_fixed",
        fixed,
        [TensorSpec("probability", "float32", (16, 1))],
        BatchingOptions(max_batch_size=0, dynamic_batching=False),
        platform="onnxruntime_onnx",
    )
    text = config_to_text(config)
    assert parse_config(text) == config
    _check_golden("dlrm_fixed", text)


def test_ensembles(tmp_path: Path, synthetic_splits) -> None:
    ranker = build_model_config(
        "dlrm_onnx_int8_python",
        [
            TensorSpec(t.name, t.dtype, (None, synthetic_splits.encoder.max_genres if t.name == "multi_hot_ids" else t.shape[1]))
            for t in INPUTS
        ],
        OUTPUTS,
        BatchingOptions(),
        backend="python",
    )
    models = write_ensembles(
        tmp_path, model_name="dlrm", ranker_config=ranker, encoder=synthetic_splits.encoder.to_dict(), options=BatchingOptions(), top_k=10
    )
    assert [m.name for m in models] == ["dlrm_preprocess", "dlrm_ensemble", "dlrm_postprocess", "dlrm_topk"]
    for m in models:
        text = (tmp_path / m.name / "config.pbtxt").read_text()
        assert parse_config(text) == m.config
        _check_golden(m.name, text)


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.pbtxt")))
def test_every_golden_file_is_a_valid_model_config(name: str) -> None:
    config = parse_config((GOLDEN / f"{name}.pbtxt").read_text(), source=name)
    assert config.name.startswith("dlrm_")

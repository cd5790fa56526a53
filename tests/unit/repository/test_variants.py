"""Every serving variant's model files, built from the real MovieLens DLRM and run in ONNX Runtime.

The ONNX variants are built once per module (quantizing the small model takes seconds); the
TensorRT variants need a GPU and are skipped elsewhere with the reason, never faked.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from toolkit.data import load_splits
from toolkit.errors import RepositoryError
from toolkit.export import read_io_specs
from toolkit.metrics import auc
from toolkit.optimize import quantize_qdq_for_tensorrt
from toolkit.repository.variants import (
    VARIANT_SPECS,
    PreparedVariant,
    onnx_precision,
    prepare_variant,
    variant_unavailable,
)
from toolkit.train import load_checkpoint, predict

ONNX_VARIANTS = ("onnx", "onnx_int8", "onnx_fp16", "onnx_python", "onnx_int8_python", "onnx_fp16_python")
RUNNER = Path(__file__).resolve().parents[3] / "toolkit" / "repository" / "python_models"
SAMPLE_ROWS = 512
AUC_BUDGET = 0.01  # INT8/FP16 keep the AUC within 1% of FP32


@pytest.fixture(scope="module")
def data(trained_movielens, movielens_dir: Path) -> SimpleNamespace:
    ckpt = load_checkpoint(trained_movielens.checkpoint)
    splits = load_splits(movielens_dir, seed=int(ckpt.metrics.get("split", {}).get("seed", 42)), encoder=ckpt.encoder)
    test = splits.test
    return SimpleNamespace(
        ckpt=ckpt,
        onnx=trained_movielens.onnx,
        samples=splits.val.take(slice(0, SAMPLE_ROWS)).inputs(),  # real in-range rows, as the builder passes
        test=test,
        reference=predict(ckpt.model, test),
    )


@pytest.fixture(scope="module")
def built(data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, PreparedVariant]]:
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for name in ("pytorch", *ONNX_VARIANTS):
        version_dir = root / f"dlrm_{name}" / "1"
        prepared = prepare_variant(
            name,
            version_dir,
            checkpoint=data.ckpt,
            onnx_model=data.onnx,
            max_batch_size=256,
            sample_inputs=data.samples,
            work_dir=root / f".work-{name}",
        )
        out[name] = (version_dir, prepared)
    return out


def _run(onnx_path: Path, rows) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["probability"], rows.inputs())[0].reshape(-1)


def test_variant_specs_are_complete_and_consistent() -> None:
    assert tuple(VARIANT_SPECS) == (
        "pytorch",
        "onnx",
        "onnx_int8",
        "onnx_fp16",
        "onnx_python",
        "onnx_int8_python",
        "onnx_fp16_python",
        "tensorrt",
        "tensorrt_int8",
    )
    for name, spec in VARIANT_SPECS.items():
        assert spec.name == name and spec.description
        assert (spec.platform is None) != (spec.backend is None), name
        assert spec.precision in ("fp32", "fp16", "int8") and spec.device in ("cpu", "gpu", "any")
    assert {n for n, s in VARIANT_SPECS.items() if s.platform == "onnxruntime_onnx"} == {"onnx", "onnx_int8", "onnx_fp16"}
    assert {n for n, s in VARIANT_SPECS.items() if s.platform == "tensorrt_plan"} == {"tensorrt", "tensorrt_int8"}
    assert VARIANT_SPECS["tensorrt"].precision == "fp16" and VARIANT_SPECS["tensorrt_int8"].precision == "int8"
    assert all(VARIANT_SPECS[n].device == "gpu" for n in ("tensorrt", "tensorrt_int8"))
    for twin in ("onnx_python", "onnx_int8_python", "onnx_fp16_python"):
        base = VARIANT_SPECS[twin.removesuffix("_python")]
        assert VARIANT_SPECS[twin].backend == "python" and VARIANT_SPECS[twin].precision == base.precision


def test_every_variant_writes_its_model_files(built, data) -> None:
    expected = {
        "pytorch": ["architecture.json", "dlrm.py", "layers.py", "model.pt", "model.py", "model_config.json"],
        "onnx": ["model.onnx", "model.onnx.data"],  # the dynamo export keeps its weights next to it
        "onnx_python": ["model.onnx", "model.onnx.data", "model.py"],
    }
    for name, (version_dir, prepared) in built.items():
        files = sorted(p.name for p in version_dir.iterdir())
        assert files == sorted(prepared.files), name
        if name in expected:
            assert files == expected[name], name
        assert "model.onnx" in files or name == "pytorch"
        if VARIANT_SPECS[name].backend == "python":
            runner = "torch_runner.py" if name == "pytorch" else "onnx_runner.py"
            assert (version_dir / "model.py").read_bytes() == (RUNNER / runner).read_bytes(), name
        else:
            assert "model.py" not in files, name
    assert (built["pytorch"][0] / "model.pt").read_bytes() == (data.ckpt.path / "model.pt").read_bytes()


def test_twins_carry_the_same_onnx_file_plus_the_runner(built) -> None:
    for twin in ("onnx_python", "onnx_int8_python", "onnx_fp16_python"):
        base_dir, base = built[twin.removesuffix("_python")]
        twin_dir, prepared = built[twin]
        assert (twin_dir / "model.onnx").read_bytes() == (base_dir / "model.onnx").read_bytes(), twin
        assert prepared.precision == base.precision
        assert prepared.parameters == {"intra_op_threads": "1", "inter_op_threads": "1", "execution_provider": "cpu"}
        assert base.parameters == {"intra_op_thread_count": "1", "inter_op_thread_count": "1"}
        assert (prepared.inputs, prepared.outputs) == (base.inputs, base.outputs)


def test_declared_tensors_are_the_files_own_with_a_dynamic_batch(built) -> None:
    for name, (version_dir, prepared) in built.items():
        assert [t.name for t in prepared.inputs] == ["dense_features", "sparse_ids", "multi_hot_ids"], name
        assert [(t.name, t.dtype) for t in prepared.outputs] == [("probability", "float32")], name
        assert all(t.has_dynamic_batch for t in (*prepared.inputs, *prepared.outputs)), name
        if name != "pytorch":
            assert (prepared.inputs, prepared.outputs) == tuple(read_io_specs(version_dir / "model.onnx")), name


def test_fp32_variants_match_pytorch_to_1e_5(built, data) -> None:
    for name in ("onnx", "onnx_python"):
        served = _run(built[name][0] / "model.onnx", data.test)
        assert built[name][1].precision == "fp32"
        np.testing.assert_allclose(served, data.reference, atol=1e-5, err_msg=name)


def test_int8_and_fp16_keep_the_auc_within_1_percent(built, data) -> None:
    reference_auc = auc(data.test.labels, data.reference)
    for name, precision in (("onnx_int8", "int8"), ("onnx_fp16", "fp16")):
        version_dir, prepared = built[name]
        served = _run(version_dir / "model.onnx", data.test)
        assert prepared.precision == precision
        assert np.isfinite(served).all()
        assert auc(data.test.labels, served) >= (1 - AUC_BUDGET) * reference_auc, name
        assert float(np.max(np.abs(served - data.reference))) > 0.0  # really converted, not a copy of FP32


def test_the_detected_precision_and_provenance_are_recorded(built) -> None:
    assert {n: p.precision for n, (_, p) in built.items()} == {
        "pytorch": "fp32",
        "onnx": "fp32",
        "onnx_int8": "int8",
        "onnx_fp16": "fp16",
        "onnx_python": "fp32",
        "onnx_int8_python": "int8",
        "onnx_fp16_python": "fp16",
    }
    int8 = built["onnx_int8"][1].source
    assert "dynamic INT8" in int8["quantization"] and int8["quantization_ops"].get("MatMulInteger", 0) > 0
    fp16 = built["onnx_fp16"][1].source
    assert "float16" in fp16["fp16"] and set(fp16["fp16_max_abs_diff"]) == {"probability"}
    json.dumps([p.source for _, p in built.values()])  # tritonrec.json must be able to hold it


def test_an_already_quantized_onnx_file_is_copied_as_is_and_reported_int8(built, data, tmp_path: Path) -> None:
    quantized = built["onnx_int8"][0] / "model.onnx"
    for name in ("onnx_int8", "onnx_int8_python", "onnx"):
        prepared = prepare_variant(
            name,
            tmp_path / name / "1",
            checkpoint=data.ckpt,
            onnx_model=quantized,
            max_batch_size=256,
            sample_inputs=data.samples,
            work_dir=tmp_path / f"work-{name}",
        )
        assert (tmp_path / name / "1" / "model.onnx").read_bytes() == quantized.read_bytes(), name
        assert prepared.precision == "int8", name
    assert "as given" in prepared.source["onnx_file"]
    assert onnx_precision(quantized) == "int8"
    assert onnx_precision(data.onnx) == "fp32"
    assert onnx_precision(built["onnx_fp16"][0] / "model.onnx") == "fp16"


def test_unknown_variant_and_missing_onnx_are_clear_errors(data, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"unknown variant 'onnx_int4'; choose from pytorch, onnx, .*tensorrt_int8"):
        prepare_variant("onnx_int4", tmp_path / "v", checkpoint=data.ckpt, onnx_model=data.onnx, max_batch_size=8, work_dir=tmp_path / "w")
    with pytest.raises(RepositoryError, match="unknown variant"):
        variant_unavailable("onnx_int4")
    with pytest.raises(RepositoryError, match="variant onnx is built from an ONNX file, but none was given") as info:
        prepare_variant("onnx", tmp_path / "v", checkpoint=data.ckpt, onnx_model=None, max_batch_size=8, work_dir=tmp_path / "w")
    assert "--onnx" in info.value.hint
    with pytest.raises(RepositoryError, match="execution_provider 'rocm'"):
        prepare_variant(
            "onnx_python",
            tmp_path / "v",
            checkpoint=data.ckpt,
            onnx_model=data.onnx,
            max_batch_size=8,
            work_dir=tmp_path / "w",
            execution_provider="rocm",
        )


def test_the_python_twin_can_ask_for_the_cuda_provider(data, tmp_path: Path) -> None:
    prepared = prepare_variant(
        "onnx_python",
        tmp_path / "1",
        checkpoint=data.ckpt,
        onnx_model=data.onnx,
        max_batch_size=8,
        sample_inputs=data.samples,
        work_dir=tmp_path / "w",
        execution_provider="cuda",
    )
    assert prepared.parameters["execution_provider"] == "cuda"


def test_tensorrt_variants_say_why_they_cannot_be_built_here(data, tmp_path: Path) -> None:
    reason = variant_unavailable("tensorrt")
    if reason is None:
        pytest.skip("TensorRT can be built here: the gpu tests cover it")
    assert reason.startswith(("TensorRT needs an NVIDIA GPU", "tensorrt is not installed", "tensorrt is installed but", "polygraphy"))
    assert "make gpu-deps" in reason or "GPU" in reason
    assert variant_unavailable("tensorrt_int8") == reason
    for name in ("tensorrt", "tensorrt_int8"):
        with pytest.raises(RepositoryError, match=f"variant {name} cannot be built here: " + reason.split(":")[0]):
            prepare_variant(name, tmp_path / name, checkpoint=data.ckpt, onnx_model=data.onnx, max_batch_size=32, work_dir=tmp_path / "w")
        assert not (tmp_path / name).exists()  # nothing written, nothing faked


def test_the_qdq_model_for_tensorrt_is_symmetric_and_keeps_the_auc(data, tmp_path: Path) -> None:
    """The INT8 TensorRT path's quantization step runs on CPU: check what TensorRT requires of it."""
    qdq = quantize_qdq_for_tensorrt(data.onnx, tmp_path / "qdq" / "model.onnx", data.samples)

    model = onnx.load_model(str(qdq))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger"}  # TensorRT's parser cannot import these
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points
    for name in zero_points:
        assert not numpy_helper.to_array(inits[name]).any(), f"zero point {name} is not 0 (TensorRT accepts only symmetric INT8)"
    assert onnx_precision(qdq) == "int8"
    served = _run(qdq, data.test)
    assert auc(data.test.labels, served) >= (1 - AUC_BUDGET) * auc(data.test.labels, data.reference)


# ---------------------------------------------------------------------------------------------
# GPU: TensorRT engines (skipped with the reason where there is no GPU or no tensorrt)


def _skip_without_tensorrt(name: str) -> None:
    reason = variant_unavailable(name)
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tensorrt", "tensorrt_int8"])
def test_tensorrt_variants_build_a_checked_engine(name: str, data, tmp_path: Path) -> None:
    _skip_without_tensorrt(name)
    version_dir = tmp_path / f"dlrm_{name}" / "1"
    prepared = prepare_variant(
        name,
        version_dir,
        checkpoint=data.ckpt,
        onnx_model=data.onnx,
        max_batch_size=64,
        sample_inputs=data.samples,
        work_dir=tmp_path / "work",
    )
    assert sorted(p.name for p in version_dir.iterdir()) == ["model.plan", "tensorrt_build.json"]
    assert prepared.spec.platform == "tensorrt_plan" and prepared.parameters == {}
    assert prepared.precision == VARIANT_SPECS[name].precision
    assert [t.name for t in prepared.inputs] == ["dense_features", "sparse_ids", "multi_hot_ids"]
    assert all(t.has_dynamic_batch for t in (*prepared.inputs, *prepared.outputs))
    info = json.loads((version_dir / "tensorrt_build.json").read_text())
    assert info["tensorrt_version"] and info["gpu"] and info["compute_capability"]
    assert "only with the TensorRT version" in info["note"]
    assert all(r["min"][0] == 1 and r["max"][0] == 64 for r in info["profiles"][0].values())
    assert info["comparison"]["passed"] is True and info["comparison"]["n_rows"] == SAMPLE_ROWS
    assert prepared.source["tensorrt_version"] == info["tensorrt_version"]

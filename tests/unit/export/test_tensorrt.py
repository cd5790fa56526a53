"""TensorRT engines: the pure profile and Q/DQ checks everywhere, the engine builds on a GPU machine only.

Where there is no NVIDIA GPU or no ``tensorrt``, the ``gpu`` tests are skipped with the
reason :func:`tensorrt_unavailable` gives; nothing is faked. The CPU side of the INT8 path,
the Q/DQ ONNX file TensorRT is handed (:func:`toolkit.optimize.quantize_qdq_for_tensorrt`),
is made and run here with real ONNX Runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.compress.recipe import OnnxStaticInt8Config
from toolkit.errors import ExportError
from toolkit.export import export_onnx, profile_findings, tensorrt_unavailable
from toolkit.export.tensorrt import (
    ENGINE_TOLERANCES,
    PLAN_PORTABILITY_NOTE,
    ShapeRange,
    build_engine,
    cuda_device_unavailable,
    plan_findings,
    qdq_findings,
    read_plan_io,
    read_plan_profiles,
)
from toolkit.optimize import quantize_dynamic_int8, quantize_qdq_for_tensorrt, quantize_static_int8

GOOD = {"x": ((1, 4), (32, 4), (32, 4)), "ids": ((1, 3), (32, 3), (32, 3))}


# ---------------------------------------------------------------------------------------------
# profile_findings (pure)


def test_a_profile_covering_1_to_max_batch_size_has_no_findings() -> None:
    assert profile_findings(GOOD, 32) == []
    assert profile_findings(GOOD, 16) == []  # a wider profile than needed is fine
    assert profile_findings({k: ShapeRange.of(v) for k, v in GOOD.items()}, 32) == []


def test_a_profile_capped_at_8_under_max_batch_size_32_is_reported_with_the_fix() -> None:
    capped = {**GOOD, "ids": ((1, 3), (8, 3), (8, 3))}

    findings = profile_findings(capped, 32, model="dlrm_tensorrt/1/model.plan")

    assert len(findings) == 1
    line = findings[0]
    assert "dlrm_tensorrt/1/model.plan input 'ids'" in line
    assert "max shape (8, 3) allows at most 8 rows" in line
    assert "max_batch_size is 32" in line
    assert "fix: rebuild the engine with a profile max batch of at least 32" in line
    assert "or lower max_batch_size to 8" in line


def test_a_profile_that_needs_more_than_one_row_is_reported() -> None:
    findings = profile_findings({"x": ((4, 4), (16, 4), (32, 4))}, 32)
    assert len(findings) == 1
    assert "input 'x'" in findings[0] and "needs at least 4 rows" in findings[0] and "min batch of 1" in findings[0]


def test_fixed_batch_bindings_are_reported_for_inputs_and_outputs() -> None:
    findings = profile_findings(
        {"x": ((16, 4), (16, 4), (16, 4))},
        32,
        binding_shapes={"x": (16, 4), "probability": (16, 1)},
    )
    assert any("input 'x' has a fixed batch dimension of 16" in f and "dynamic one (-1)" in f for f in findings)
    assert any("tensor 'probability' has a fixed batch dimension of 16" in f for f in findings)
    assert any("allows at most 16 rows" in f for f in findings)
    # dynamic bindings (-1 or None) are what batching needs
    assert profile_findings(GOOD, 32, binding_shapes={"x": (-1, 4), "ids": (None, 3), "probability": (-1, 1)}) == []


def test_inconsistent_profiles_are_reported_and_max_batch_size_0_skips_the_batch_checks() -> None:
    assert "outside [min" in profile_findings({"x": ((1, 4), (64, 4), (32, 4))}, 32)[0]
    assert "different ranks" in profile_findings({"x": ((1, 4), (1, 4, 1), (32, 4))}, 32)[0]
    assert profile_findings({"x": ((16, 4), (16, 4), (16, 4))}, 0) == []  # no batching: Triton sends the full shape
    assert "no optimization profile" in profile_findings({}, 32)[0]
    assert profile_findings({}, 0) == []


def test_bad_arguments_raise() -> None:
    with pytest.raises(ExportError, match="max_batch_size=-1 is negative"):
        profile_findings(GOOD, -1)
    with pytest.raises(ExportError, match=r"must be \(min, opt, max\) shapes"):
        profile_findings({"x": ((1, 4), (32, 4))}, 32)


def test_the_tolerances_name_their_source() -> None:
    assert ENGINE_TOLERANCES["fp32"].atol == 1e-5
    assert ENGINE_TOLERANCES["fp16"].atol == 1e-2 and "2**-11" in ENGINE_TOLERANCES["fp16"].source
    assert ENGINE_TOLERANCES["int8"].source
    assert "TensorRT version" in PLAN_PORTABILITY_NOTE and "GPU" in PLAN_PORTABILITY_NOTE


# ---------------------------------------------------------------------------------------------
# the Q/DQ model of the INT8 path (CPU: made and run with ONNX Runtime)


def _ort(path: Path, rows: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, rows)[0]


@pytest.fixture(scope="module")
def qdq_onnx(mlp_onnx: Path, rows, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Q/DQ model an INT8 engine of ``mlp_onnx`` is built from, calibrated on the 500 rows."""
    return quantize_qdq_for_tensorrt(mlp_onnx, tmp_path_factory.mktemp("qdq") / "model.onnx", rows)


def test_the_qdq_model_for_tensorrt_is_symmetric_int8_and_runs_close_to_fp32(qdq_onnx: Path, mlp_onnx: Path, rows) -> None:
    assert qdq_findings(qdq_onnx) == []
    model = onnx.load_model(str(qdq_onnx))
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 2  # both Linear layers
    for gemm in gemms:
        activation, weight, bias = (producers.get(name) for name in gemm.input)
        assert activation.op_type == "DequantizeLinear" and producers[activation.input[0]].op_type == "QuantizeLinear"
        # the weight: float, with a per-channel Q/DQ pair TensorRT folds; the bias: float, not an INT32 DequantizeLinear
        assert weight.op_type == "DequantizeLinear" and producers[weight.input[0]].op_type == "QuantizeLinear"
        assert inits[producers[weight.input[0]].input[0]].data_type == TensorProto.FLOAT
        assert numpy_helper.to_array(inits[weight.input[1]]).size == inits[producers[weight.input[0]].input[0]].dims[0]
        assert bias is None and inits[gemm.input[2]].data_type == TensorProto.FLOAT
    zero_points = {n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert {inits[z].data_type for z in zero_points} == {TensorProto.INT8}
    assert not any(numpy_helper.to_array(inits[z]).any() for z in zero_points)  # TensorRT: zero point 0

    diff = np.abs(_ort(qdq_onnx, rows) - _ort(mlp_onnx, rows))
    # measured max 0.0032 (mean 0.0006) on these 500 rows; 0.02 is the INT8 bound the compress tests hold a DLRM to,
    # far below what a wrong scale or a sign error gives (the output's spread is ~0.04, its range 0..1)
    assert diff.max() < 0.02


def test_tensorrt_refuses_other_int8_models_on_the_cpu_before_any_tensorrt_call(mlp_onnx: Path, rows, tmp_path: Path) -> None:
    """ONNX Runtime's own static INT8 (asymmetric, INT32 biases), dynamic INT8, or no Q/DQ at all: named, nothing built."""
    asymmetric = quantize_static_int8(mlp_onnx, tmp_path / "asym" / "model.onnx", OnnxStaticInt8Config(reduce_range=False), rows)
    dynamic = quantize_dynamic_int8(mlp_onnx, tmp_path / "dyn" / "model.onnx")

    findings = qdq_findings(asymmetric)
    zero_points = [f for f in findings if "symmetric quantization only (zero point 0)" in f]
    assert any("QuantizeLinear node 'relu_QuantizeLinear': zero point 'relu_zero_point' is -128" in f for f in zero_points)
    assert len(zero_points) == len({f.split("zero point '")[1] for f in zero_points})  # each shared zero point once
    biases = [f for f in findings if "(a quantized bias), which TensorRT's ONNX parser refuses" in f]
    assert len(biases) == 2 and len(findings) == len(zero_points) + len(biases)
    assert "MatMulInteger" in qdq_findings(dynamic)[0] and "cannot import" in qdq_findings(dynamic)[0]
    assert "has no QuantizeLinear/DequantizeLinear nodes" in qdq_findings(mlp_onnx)[0]

    plan = tmp_path / "engine" / "model.plan"
    for model, expected in ((asymmetric, "zero point"), (dynamic, "MatMulInteger"), (mlp_onnx, "no QuantizeLinear")):
        with pytest.raises(ExportError, match=f"no INT8 engine can be built from .*{expected}"):
            build_engine(model, plan, max_batch_size=32, precision="int8", sample_inputs=rows)
    assert not plan.parent.exists()


def _qdq_graph(scale: np.ndarray, zero_point: np.ndarray | None, *, scale_as_input: bool = False) -> onnx.ModelProto:
    inits = [] if scale_as_input else [numpy_helper.from_array(scale, "s")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])]
    if scale_as_input:
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scale.shape)))
    names = ["x", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        names.append("zp")
    nodes = [helper.make_node("QuantizeLinear", names, ["q"], name="q"), helper.make_node("DequantizeLinear", ["q", *names[1:]], ["y"])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_qdq_findings_name_each_thing_tensorrt_explicit_quantization_refuses() -> None:
    one = np.array(0.1, np.float32)
    assert qdq_findings(_qdq_graph(one, np.array(0, np.int8))) == []
    assert qdq_findings(_qdq_graph(one, None)) == []  # no zero point: 0

    (unsigned,) = qdq_findings(_qdq_graph(one, np.array(0, np.uint8)))
    assert "QuantizeLinear node 'q': zero point 'zp' is UINT8; TensorRT quantizes to signed INT8 only" in unsigned
    (zero_scale,) = qdq_findings(_qdq_graph(np.array(0.0, np.float32), np.array(0, np.int8)))
    assert "scale 's' holds [0.0], expected finite values > 0" in zero_scale
    (per_channel,) = qdq_findings(_qdq_graph(np.full(4, 0.1, np.float32), np.zeros(4, np.int8)))
    assert "4 scales (per channel) for an activation; TensorRT quantizes activations per tensor" in per_channel
    (runtime_scale,) = qdq_findings(_qdq_graph(one, np.array(0, np.int8), scale_as_input=True))
    assert "its scale 's' is not a constant; TensorRT needs build-time scales" in runtime_scale
    assert all("fix: quantize with toolkit.optimize.quantize_qdq_for_tensorrt" in f for f in (unsigned, zero_scale, per_channel))


def test_qdq_findings_of_an_unreadable_file_name_it(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ExportError, match=r"cannot read ONNX model .*model.onnx"):
        qdq_findings(bad)


# ---------------------------------------------------------------------------------------------
# without a GPU: the reason, and no engine


def test_importing_the_tensorrt_module_does_not_import_tensorrt_or_polygraphy() -> None:
    code = "import sys, toolkit.export, toolkit.export.tensorrt; print(sorted({'tensorrt', 'polygraphy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_without_a_gpu_the_reason_is_given_and_nothing_is_written(mlp_onnx: Path, tmp_path: Path) -> None:
    if cuda_device_unavailable() is None:
        pytest.skip("a CUDA GPU is present: the gpu tests cover the build")
    reason = tensorrt_unavailable()
    assert reason is not None and reason.startswith("TensorRT needs an NVIDIA GPU: no CUDA device found")
    with pytest.raises(ExportError, match="TensorRT needs an NVIDIA GPU"):
        build_engine(mlp_onnx, tmp_path / "model.plan", max_batch_size=32)
    with pytest.raises(ExportError, match="TensorRT needs an NVIDIA GPU"):
        read_plan_profiles(tmp_path / "model.plan")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.fixture
def needs_tensorrt() -> None:
    reason = tensorrt_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.gpu
def test_an_fp16_engine_is_built_checked_compared_and_recorded(needs_tensorrt, mlp_onnx: Path, rows, tmp_path: Path) -> None:
    plan = tmp_path / "dlrm_tensorrt" / "1" / "model.plan"

    build = build_engine(mlp_onnx, plan, max_batch_size=32, precision="fp16", sample_inputs=rows)

    assert sorted(p.name for p in plan.parent.iterdir()) == ["model.plan", "tensorrt_build.json"]
    assert build.profile == {"x": ShapeRange((1, 4), (32, 4), (32, 4)), "ids": ShapeRange((1, 3), (32, 3), (32, 3))}
    assert [(t.name, t.dtype, t.shape) for t in build.inputs] == [("x", "float32", (None, 4)), ("ids", "int64", (None, 3))]
    assert [(t.name, t.shape) for t in build.outputs] == [("probability", (None, 1))]
    assert build.comparison is not None and build.comparison.passed and build.comparison.n_rows == 500
    assert build.comparison.max_abs_diff["probability"] <= ENGINE_TOLERANCES["fp16"].atol
    info = json.loads(build.build_info.read_text())
    assert info["tensorrt_version"] and info["gpu"] and info["compute_capability"] and info["note"] == PLAN_PORTABILITY_NOTE
    assert read_plan_profiles(plan) == build.profile
    assert read_plan_io(plan) == (build.inputs, build.outputs)
    assert plan_findings(plan, 32) == []


@pytest.mark.gpu
def test_an_engine_whose_profile_is_capped_at_8_is_reported_under_max_batch_size_32(needs_tensorrt, mlp_onnx: Path, tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    build_engine(mlp_onnx, plan, max_batch_size=8, precision="fp16")  # a real engine, profile [1, 8]

    findings = profile_findings(read_plan_profiles(plan), 32, model=str(plan))

    assert len(findings) == 2  # both inputs
    assert all("allows at most 8 rows" in f and "max_batch_size is 32" in f and "at least 32" in f for f in findings)
    assert {f.split("input '")[1].split("'")[0] for f in findings} == {"x", "ids"}
    assert len(plan_findings(plan, 32)) == 2 and plan_findings(plan, 8) == []


@pytest.mark.gpu
def test_a_fixed_batch_onnx_file_is_refused_before_any_engine_is_built(needs_tensorrt, fixed16_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="fixed batch dimension of 16, but max_batch_size=32"):
        build_engine(fixed16_onnx, tmp_path / "model.plan", max_batch_size=32)
    assert not (tmp_path / "model.plan").exists()


@pytest.mark.gpu
def test_an_engine_beyond_the_tolerance_is_refused(needs_tensorrt, mlp_onnx: Path, make_mlp, make_inputs, rows, tmp_path: Path) -> None:
    """ONNX Runtime runs another model's weights as the reference: Polygraphy sees the difference, nothing is written."""
    other = export_onnx(make_mlp(1), make_inputs(8), ["probability"], tmp_path / "other" / "model.onnx")
    plan = tmp_path / "engine" / "model.plan"

    with pytest.raises(ExportError, match=r"FP16 TensorRT engine of mlp.onnx differs from onnxruntime .* above the tolerance 0.01"):
        build_engine(mlp_onnx, plan, max_batch_size=32, sample_inputs=rows, reference_onnx=other)

    assert not plan.exists() and not (plan.parent / "tensorrt_build.json").exists()


@pytest.mark.gpu
def test_an_int8_engine_is_built_from_the_qdq_model_and_compared_with_onnx_runtime_on_it(
    needs_tensorrt, qdq_onnx: Path, rows, tmp_path: Path
) -> None:
    plan = tmp_path / "dlrm_tensorrt_int8" / "1" / "model.plan"

    build = build_engine(qdq_onnx, plan, max_batch_size=32, precision="int8", sample_inputs=rows)

    assert build.precision == "int8" and build.info["quantization"] == "explicit (Q/DQ nodes of the ONNX model)"
    assert build.comparison is not None and build.comparison.passed and build.comparison.reference.endswith(qdq_onnx.name)
    assert build.comparison.max_abs_diff["probability"] <= ENGINE_TOLERANCES["int8"].atol
    assert plan_findings(plan, 32) == []

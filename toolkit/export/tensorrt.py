"""TensorRT engines (``model.plan``) built from ONNX files, with the checks Triton's tensorrt backend needs.

::

    reason = tensorrt_unavailable()          # None, or why not (no GPU, tensorrt not installed)
    build = build_engine(Path("model.onnx"), repo / "dlrm_tensorrt/1/model.plan", max_batch_size=256,
                         precision="fp16", sample_inputs=rows)
    profile_findings(read_plan_profiles(build.plan), max_batch_size=256)   # [] when Triton may batch up to 256

What a build does (TensorRT Python API, TensorRT 10: ``trt.Builder``,
``IBuilder.create_network``, ``trt.OnnxParser.parse_from_file``,
``IBuilder.create_optimization_profile`` + ``IOptimizationProfile.set_shape``,
``IBuilder.build_serialized_network``; NVIDIA TensorRT developer guide, "The Python API"):

1. parse the ONNX file (external data next to it is read by the parser);
2. give every input one explicit optimization profile whose batch range is
   ``[1, max_batch_size]`` (opt: ``opt_batch_size``, default ``max_batch_size``: under load
   Triton's dynamic batcher forms the largest batches, where throughput is decided; single
   rows are launch-bound anyway); every other dimension must be fixed in the ONNX file;
3. FP16 (``BuilderFlag.FP16``), or INT8 (``BuilderFlag.INT8`` + FP16 for the layers left in
   float) from a Q/DQ ONNX model (explicit quantization) or a calibration cache (implicit
   quantization with a cache-only calibrator). The Q/DQ model comes from the toolkit's one
   static INT8 implementation, :func:`toolkit.optimize.quantize_qdq_for_tensorrt`
   (ONNX Runtime's ``quantize_static``, symmetric, float weights with Q/DQ pairs, float
   biases), or from the user; before any TensorRT call it is checked on the CPU for what
   TensorRT's explicit quantization refuses (:func:`qdq_findings`: a zero point other than 0,
   unsigned INT8, a scale that is not a positive constant, per-channel activation scales, an
   INT32 quantized bias, dynamic-quantization ops);
4. read the engine back and check each I/O tensor's batch dimension is dynamic (-1) and the
   profile covers ``max_batch_size`` (:func:`profile_findings`) *before* anything is written;
5. compare the engine with ONNX Runtime (CPU) on real rows with Polygraphy's ``Comparator``
   and refuse it when an output differs by more than the tolerance (:data:`ENGINE_TOLERANCES`);
6. write ``model.plan`` and ``tensorrt_build.json`` (TensorRT version, GPU name, compute
   capability, profile, precision, comparison) together, atomically.

A plan is not portable: it runs only with the TensorRT version it was built with and on the
GPU model (compute capability) it was built on (TensorRT developer guide, "Engine
compatibility"); ``tensorrt_build.json`` says which, and :data:`PLAN_PORTABILITY_NOTE`
says so in words.

Needs an NVIDIA GPU, the ``tensorrt`` Python package and ``polygraphy`` (``make gpu-deps``,
pinned in ``requirements-gpu.txt``). Nothing here imports them at module import time;
:func:`profile_findings` and :func:`qdq_findings` are pure and run anywhere.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import ExportError
from toolkit.export._files import install_files, staging_dir
from toolkit.export.onnx_info import check_batch_dimension, check_onnx_inputs, read_io_specs
from toolkit.tensors import TensorSpec

__all__ = [
    "BUILD_INFO_FILE",
    "ENGINE_TOLERANCES",
    "PLAN_FILE",
    "PLAN_PORTABILITY_NOTE",
    "EngineBuild",
    "EngineComparison",
    "EngineTolerance",
    "ShapeRange",
    "build_engine",
    "cuda_device_unavailable",
    "gpu_info",
    "plan_findings",
    "profile_findings",
    "qdq_findings",
    "read_plan_io",
    "read_plan_profiles",
    "tensorrt_unavailable",
]

PLAN_FILE = "model.plan"
BUILD_INFO_FILE = "tensorrt_build.json"
PLAN_PORTABILITY_NOTE = (
    "A TensorRT plan runs only with the TensorRT version it was built with and on the GPU model "
    "(compute capability) it was built on; rebuild it (tritonrec build --target gpu) for any other "
    "TensorRT version (e.g. another tritonserver container release) or GPU."
)
_INSTALL_HINT = "make gpu-deps"
_DEFAULT_WORKSPACE_BYTES = 1 << 30
# CUDA driver API attribute ids (cuda.h, CUdevice_attribute).
_CC_MAJOR, _CC_MINOR = 75, 76

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineTolerance:
    """How closely an engine must match ONNX Runtime on the sample rows.

    Attributes:
        atol: largest accepted max |TensorRT - ONNX Runtime| per output, in the output's units
            (probabilities for the DLRM).
        source: where the number comes from, for the record in ``tensorrt_build.json``.
    """

    atol: float
    source: str


#: Per engine precision. The reference is ONNX Runtime (CPU) running the ONNX file the engine
#: was built from (for INT8: the Q/DQ model, so only TensorRT's own error is measured; the
#: accuracy cost of INT8 itself is judged by ``tritonrec verify``'s AUC budget).
ENGINE_TOLERANCES: dict[str, EngineTolerance] = {
    "fp32": EngineTolerance(1e-5, "the FP32 export parity bound of `tritonrec export` (max |Δp| 1e-5)"),
    "fp16": EngineTolerance(
        1e-2,
        "FP16 unit roundoff u = 2**-11 ≈ 4.9e-4 (IEEE 754 binary16, 11-bit significand); an n-term dot product "
        "of FP16-rounded operands may be off by up to about n·u·Σ|w·x| (Higham, Accuracy and Stability of "
        "Numerical Algorithms, 2nd ed., §3.1), i.e. a few 1e-2 in a logit for the DLRM's 16–256-term layers; "
        "the sigmoid's slope ≤ 1/4 makes that ≤ 1e-2 in probability",
    ),
    "int8": EngineTolerance(
        3e-2,
        "one INT8 quantization step (scale = max|x|/127) flipped at a rounding boundary between TensorRT's and "
        "ONNX Runtime's kernels, on top of the FP16 tolerance for the layers TensorRT runs in FP16",
    ),
}


@dataclass(frozen=True)
class ShapeRange:
    """An optimization profile's shapes for one input tensor (batch dimension first)."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def of(cls, value: ShapeRange | Sequence[Sequence[int]]) -> ShapeRange:
        """A ``ShapeRange`` from itself or a ``(min, opt, max)`` triple of shapes."""
        if isinstance(value, ShapeRange):
            return value
        try:
            mn, op, mx = value
        except (TypeError, ValueError) as exc:
            raise ExportError(f"an optimization profile entry must be (min, opt, max) shapes, got {value!r}") from exc
        return cls(tuple(int(d) for d in mn), tuple(int(d) for d in op), tuple(int(d) for d in mx))

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class EngineComparison:
    """Polygraphy's comparison of the engine with ONNX Runtime on the sample rows."""

    reference: str
    n_rows: int
    batches: int
    max_abs_diff: dict[str, float]
    atol: float
    tolerance_source: str
    passed: bool


@dataclass(frozen=True)
class EngineBuild:
    """What :func:`build_engine` wrote.

    Attributes:
        plan: the ``model.plan`` file.
        build_info: the ``tensorrt_build.json`` next to it.
        inputs, outputs: the engine's I/O tensors (batch first, ``None`` for a dynamic dim),
            read back from the engine; what a Triton config declares.
        precision: ``fp32``, ``fp16`` or ``int8``.
        profile: profile 0, per input.
        info: the content of ``tensorrt_build.json``.
    """

    plan: Path
    build_info: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str
    profile: dict[str, ShapeRange]
    info: dict = field(default_factory=dict)
    comparison: EngineComparison | None = None


# ---------------------------------------------------------------------------------------------
# pure checks


def _describe(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def profile_findings(
    profiles: Mapping[str, ShapeRange | Sequence[Sequence[int]]],
    max_batch_size: int,
    *,
    binding_shapes: Mapping[str, Sequence[int | None]] | None = None,
    model: str = PLAN_FILE,
) -> list[str]:
    """What stops Triton from batching up to ``max_batch_size`` rows through an engine with these profiles.

    Pure: no TensorRT needed. Triton's tensorrt backend hands the engine batches of 1 to
    ``max_batch_size`` rows along the first dimension (Triton docs, "Model Configuration",
    "Maximum Batch Size"), using optimization profile 0 unless the instance group names
    another; a batch outside the profile's ``[min, max]`` fails at inference time.

    Args:
        profiles: one optimization profile: input name -> ``(min, opt, max)`` shapes, batch first
            (e.g. ``{"sparse_ids": ((1, 7), (32, 7), (32, 7))}``), as :func:`read_plan_profiles` returns.
        max_batch_size: the Triton config's value (0: no batching; only the profile's own
            consistency is then checked).
        binding_shapes: optionally the engine's declared I/O shapes (``-1`` or ``None`` for a
            dynamic dimension), inputs and outputs, to check the batch dimension is dynamic.
        model: how the findings name the engine.

    Returns:
        One line per problem, naming the tensor, the value found and the fix; ``[]`` when none.

    Raises:
        ExportError: a negative ``max_batch_size`` or an entry that is not three shapes.
    """
    if max_batch_size < 0:
        raise ExportError(f"max_batch_size={max_batch_size} is negative", hint="use 0 (no batching) or a positive number of rows")
    findings: list[str] = []
    ranges = {name: ShapeRange.of(value) for name, value in profiles.items()}
    if max_batch_size > 0 and not ranges:
        findings.append(
            f"{model}: the engine has no optimization profile for its inputs, so its batch range is unknown; "
            f"fix: rebuild it with a profile whose batch range is [1, {max_batch_size}]"
        )
    for name, r in ranges.items():
        where = f"{model} input '{name}'"
        if not len(r.min) == len(r.opt) == len(r.max):
            findings.append(
                f"{where}: optimization profile shapes min {_describe(r.min)}, opt {_describe(r.opt)}, max {_describe(r.max)} "
                "have different ranks; fix: rebuild the engine with one rank per input"
            )
            continue
        if any(a > b for a, b in zip(r.min, r.opt, strict=True)) or any(b > c for b, c in zip(r.opt, r.max, strict=True)):
            findings.append(
                f"{where}: optimization profile opt shape {_describe(r.opt)} lies outside [min {_describe(r.min)}, "
                f"max {_describe(r.max)}]; fix: rebuild the engine with min <= opt <= max"
            )
        if max_batch_size == 0:
            continue
        if not r.max:
            findings.append(
                f"{where} is a scalar with no batch dimension, but max_batch_size={max_batch_size} asks Triton to batch "
                "requests; fix: build with --max-batch-size 0 or make the first dimension the batch"
            )
            continue
        if r.min[0] > 1:
            findings.append(
                f"{where}: the TensorRT optimization profile's min shape {_describe(r.min)} needs at least {r.min[0]} rows, "
                f"but Triton sends batches of 1 to {max_batch_size} rows; fix: rebuild the engine with a profile min batch of 1"
            )
        if r.max[0] < max_batch_size:
            findings.append(
                f"{where}: the TensorRT optimization profile's max shape {_describe(r.max)} allows at most {r.max[0]} rows, "
                f"but max_batch_size is {max_batch_size}, so Triton would form batches the engine rejects; fix: rebuild the "
                f"engine with a profile max batch of at least {max_batch_size} (tritonrec build sizes it [1, max_batch_size]) "
                f"or lower max_batch_size to {r.max[0]}"
            )
    if binding_shapes and max_batch_size > 0:
        for name, shape in binding_shapes.items():
            dims = [(-1 if d is None else int(d)) for d in shape]
            role = "input" if name in ranges else "tensor"
            if not dims:
                if name not in ranges:  # inputs were reported above
                    findings.append(
                        f"{model} {role} '{name}' is a scalar with no batch dimension, but max_batch_size={max_batch_size} "
                        "asks Triton to batch requests; fix: build with --max-batch-size 0"
                    )
            elif dims[0] != -1:
                findings.append(
                    f"{model} {role} '{name}' has a fixed batch dimension of {dims[0]} (shape {_describe(dims)}), but "
                    f"max_batch_size={max_batch_size} needs a dynamic one (-1); fix: re-export the ONNX file with a dynamic "
                    "batch dimension (`tritonrec export` does) and rebuild the engine, or build with --max-batch-size 0"
                )
    return findings


#: Quantized ops TensorRT's ONNX parser cannot import: ONNX Runtime's dynamic INT8 and its
#: QOperator format (TensorRT takes INT8 only as QuantizeLinear/DequantizeLinear pairs).
QDQ_UNSUPPORTED_OPS = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QLinearMatMul",
        "QLinearConv",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
    }
)


def _constant_values(model) -> dict[str, object]:
    """``{name: TensorProto}`` of the top-level initializers and ``Constant`` outputs (external data not read)."""
    values: dict[str, object] = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    values[node.output[0]] = attr.t
    return values


def _tensor_array(tensor, base_dir: Path | None) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    if tensor.data_location == onnx.TensorProto.EXTERNAL and base_dir is not None:
        tensor = onnx.TensorProto.FromString(tensor.SerializeToString())
        onnx.external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))
    return numpy_helper.to_array(tensor)


def qdq_findings(model_or_path) -> list[str]:
    """What stops TensorRT from building an explicitly quantized INT8 engine from this Q/DQ model.

    Pure (ONNX only, no TensorRT or GPU): it checks on the CPU what TensorRT's explicit
    quantization takes (TensorRT developer guide, "Working with Quantized Types": symmetric
    quantization to signed INT8, the scale a build-time constant, per-tensor scales for
    activations and per-tensor or per-channel ones for weights) on every top-level
    ``QuantizeLinear``/``DequantizeLinear`` node:

    * a zero point that is not all 0 (ONNX Runtime's default asymmetric activations), or of
      type UINT8;
    * a scale that is not a constant (initializer or ``Constant``), or not finite and > 0;
    * a ``QuantizeLinear`` of an activation (not of a constant weight) with more than one scale;
    * a ``DequantizeLinear`` of an INT32 constant (ONNX Runtime's quantized bias), which
      TensorRT's parser refuses ("only activation types allowed as input", onnx/onnx-tensorrt#850);

    plus ops TensorRT cannot import (:data:`QDQ_UNSUPPORTED_OPS`), and a model with no Q/DQ
    node at all (an INT8 engine would then have no scales). A scale or zero point shared by a
    ``QuantizeLinear`` and its ``DequantizeLinear`` is reported once, at the first node reading it.

    Args:
        model_or_path: an ``onnx.ModelProto`` or the ``.onnx`` file (external data next to it).

    Returns:
        One line per problem, naming the node, the value found and the fix; ``[]`` when none.

    Raises:
        ExportError: the file cannot be read as an ONNX model.
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        try:
            model = onnx.load_model(str(path), load_external_data=False)
        except Exception as exc:
            raise ExportError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from exc
        base_dir, label = path.parent, path.name
    else:
        model, base_dir, label = model_or_path, None, "the model"
    constants = _constant_values(model)
    fix = "quantize with toolkit.optimize.quantize_qdq_for_tensorrt (symmetric INT8), or give a calibration cache"
    findings: list[str] = []
    unsupported = sorted({n.op_type for n in model.graph.node} & QDQ_UNSUPPORTED_OPS)
    if unsupported:
        findings.append(
            f"{label} holds {', '.join(unsupported)}, which TensorRT's ONNX parser cannot import "
            f"(INT8 must be QuantizeLinear/DequantizeLinear pairs); fix: {fix}"
        )
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq and not unsupported:
        findings.append(f"{label} has no QuantizeLinear/DequantizeLinear nodes, so an INT8 engine would have no scales; fix: {fix}")
    seen: set[str] = set()
    for node in qdq:
        data = constants.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type == onnx.TensorProto.INT32:
            findings.append(
                f"{label} DequantizeLinear node '{node.name or node.output[0]}' reads the INT32 constant '{node.input[0]}' "
                f"(a quantized bias), which TensorRT's ONNX parser refuses; fix: {fix}"
            )
        where = f"{label} {node.op_type} node '{node.name or node.output[0]}'"
        scale_name = node.input[1] if len(node.input) > 1 else ""
        scale = constants.get(scale_name)
        if scale_name in seen and (len(node.input) < 3 or node.input[2] in seen):
            continue
        seen.update(node.input[1:3])
        if scale is None:
            findings.append(f"{where}: its scale '{scale_name}' is not a constant; TensorRT needs build-time scales; fix: {fix}")
        else:
            values = _tensor_array(scale, base_dir).astype(np.float64)
            if values.size == 0 or not np.all(np.isfinite(values)) or not np.all(values > 0):
                bad = values[~(np.isfinite(values) & (values > 0))] if values.size else values
                findings.append(f"{where}: scale '{scale_name}' holds {bad[:3].tolist()}, expected finite values > 0; fix: {fix}")
            elif node.op_type == "QuantizeLinear" and values.size > 1 and node.input[0] not in constants:
                findings.append(
                    f"{where}: {values.size} scales (per channel) for an activation; TensorRT quantizes activations per tensor; fix: {fix}"
                )
        if len(node.input) > 2 and node.input[2]:
            zp = constants.get(node.input[2])
            if zp is None:
                findings.append(f"{where}: its zero point '{node.input[2]}' is not a constant; fix: {fix}")
                continue
            if zp.data_type == onnx.TensorProto.UINT8:
                findings.append(f"{where}: zero point '{node.input[2]}' is UINT8; TensorRT quantizes to signed INT8 only; fix: {fix}")
            values = _tensor_array(zp, base_dir)
            if values.any():
                nonzero = values[values != 0]
                findings.append(
                    f"{where}: zero point '{node.input[2]}' is {int(nonzero.flat[0])} ({nonzero.size} of {values.size} "
                    f"nonzero); TensorRT takes symmetric quantization only (zero point 0); fix: {fix}"
                )
    return findings


# ---------------------------------------------------------------------------------------------
# what this machine has


def _libcuda():
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_device_unavailable() -> str | None:
    """``None`` when the CUDA driver sees at least one GPU, else why not.

    Asks the CUDA driver API itself (``libcuda.so.1``: ``cuInit``, ``cuDeviceGetCount``), so it
    honours ``CUDA_VISIBLE_DEVICES`` and needs no Python CUDA package.
    """
    cuda = _libcuda()
    if cuda is None:
        return "no CUDA device found (the NVIDIA driver library libcuda.so.1 is not installed)"
    rc = cuda.cuInit(0)
    if rc != 0:
        return f"no CUDA device found (cuInit returned CUDA error {rc})"
    count = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value < 1:
        return "no CUDA device found" + (f" (cuDeviceGetCount returned CUDA error {rc})" if rc else "")
    return None


def gpu_info(device: int = 0) -> dict:
    """Name, compute capability and driver version of CUDA device ``device`` (driver API).

    Returns:
        ``{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver_version": "12.4", "device": 0}``.

    Raises:
        ExportError: no CUDA device (see :func:`cuda_device_unavailable`).
    """
    reason = cuda_device_unavailable()
    if reason is not None:
        raise ExportError(f"TensorRT needs an NVIDIA GPU: {reason}")
    cuda = _libcuda()
    dev = ctypes.c_int(0)
    cuda.cuDeviceGet(ctypes.byref(dev), device)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    major, minor, driver = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
    cuda.cuDriverGetVersion(ctypes.byref(driver))
    return {
        "name": name.value.decode(errors="replace"),
        "compute_capability": f"{major.value}.{minor.value}",
        "driver_version": f"{driver.value // 1000}.{(driver.value % 1000) // 10}",
        "device": device,
    }


def tensorrt_unavailable() -> str | None:
    """``None`` when TensorRT engines can be built and checked here, else the reason.

    Checked in this order: a CUDA GPU (``"TensorRT needs an NVIDIA GPU: no CUDA device
    found"``), the ``tensorrt`` package (``"tensorrt is not installed: make gpu-deps"``; an
    installed one must also import), and ``polygraphy`` (which compares the engine with ONNX
    Runtime).
    """
    reason = cuda_device_unavailable()
    if reason is not None:
        return f"TensorRT needs an NVIDIA GPU: {reason}"
    if importlib.util.find_spec("tensorrt") is None:
        return f"tensorrt is not installed: {_INSTALL_HINT}"
    try:
        importlib.import_module("tensorrt")
    except Exception as exc:  # a wheel without its libraries fails in several ways
        return f"tensorrt is installed but cannot be imported ({type(exc).__name__}: {str(exc)[:200]}): {_INSTALL_HINT}"
    if importlib.util.find_spec("polygraphy") is None:
        return f"polygraphy is not installed (it compares the engine with ONNX Runtime): {_INSTALL_HINT}"
    return None


def _require_tensorrt():
    reason = tensorrt_unavailable()
    if reason is not None:
        raise ExportError(reason, hint="build TensorRT engines on a machine with an NVIDIA GPU after `make gpu-deps`")
    import tensorrt as trt

    return trt


def _cuda_runtime_on_path() -> None:
    """Put the ``nvidia-cuda-runtime-cu12`` wheel's ``libcudart.so.12`` on ``LD_LIBRARY_PATH``.

    Polygraphy's CUDA wrapper looks for ``libcudart.so*`` in ``LD_LIBRARY_PATH`` and
    ``/usr/local/cuda/lib64`` when it first runs; a pip-only install keeps it in
    ``site-packages/nvidia/cuda_runtime/lib``.
    """
    for root in map(Path, sys.path):
        lib = root / "nvidia" / "cuda_runtime" / "lib"
        if lib.is_dir() and any(lib.glob("libcudart.so*")):
            paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
            if str(lib) not in paths:
                os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib), *[p for p in paths if p]])
            return


# ---------------------------------------------------------------------------------------------
# reading engines


def _logger(trt):
    class _Collecting(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))

    return _Collecting()


def _deserialize(trt, plan: bytes, label: str, logger=None):
    logger = logger or _logger(trt)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportError(
            f"TensorRT {trt.__version__} cannot deserialize {label}: {'; '.join(logger.errors) or 'no reason given'}",
            hint="a plan loads only with the TensorRT version and on the GPU it was built for (its tensorrt_build.json); rebuild it",
        )
    return engine


def _engine_io(trt, engine) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
        spec = TensorSpec(name, dtype, shape)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
    return inputs, outputs


def _engine_profile(trt, engine, profile: int) -> dict[str, ShapeRange]:
    if not 0 <= profile < max(engine.num_optimization_profiles, 1):
        raise ExportError(f"the engine has {engine.num_optimization_profiles} optimization profile(s); there is no profile {profile}")
    ranges = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
            continue
        mn, op, mx = engine.get_tensor_profile_shape(name, profile)
        ranges[name] = ShapeRange(tuple(int(d) for d in mn), tuple(int(d) for d in op), tuple(int(d) for d in mx))
    return ranges


def _read_plan_bytes(plan_path: Path) -> bytes:
    try:
        return Path(plan_path).read_bytes()
    except OSError as exc:
        raise ExportError(f"cannot read TensorRT plan {plan_path}: {exc}") from exc


def read_plan_profiles(plan_path: Path, profile: int = 0) -> dict[str, ShapeRange]:
    """Optimization profile ``profile`` (Triton's default: 0) of a plan: input name -> (min, opt, max).

    Needs TensorRT and a GPU (the plan is deserialized). Feed the result to :func:`profile_findings`.

    Raises:
        ExportError: no GPU/TensorRT here; the file is unreadable or was built for another
            TensorRT version or GPU; no such profile.
    """
    trt = _require_tensorrt()
    engine = _deserialize(trt, _read_plan_bytes(plan_path), str(plan_path))
    return _engine_profile(trt, engine, profile)


def read_plan_io(plan_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The I/O tensors of a plan, ``(inputs, outputs)``, batch first, ``None`` for dynamic dims. Needs TensorRT and a GPU."""
    trt = _require_tensorrt()
    engine = _deserialize(trt, _read_plan_bytes(plan_path), str(plan_path))
    return _engine_io(trt, engine)


def plan_findings(plan_path: Path, max_batch_size: int, *, profile: int = 0) -> list[str]:
    """:func:`profile_findings` for a plan file, with its declared I/O shapes. Needs TensorRT and a GPU."""
    trt = _require_tensorrt()
    engine = _deserialize(trt, _read_plan_bytes(plan_path), str(plan_path))
    inputs, outputs = _engine_io(trt, engine)
    return profile_findings(
        _engine_profile(trt, engine, profile),
        max_batch_size,
        binding_shapes={s.name: s.shape for s in (*inputs, *outputs)},
        model=str(plan_path),
    )


# ---------------------------------------------------------------------------------------------
# building


def _input_range(name: str, shape: Sequence[int], max_batch_size: int, opt_batch_size: int, onnx_path: Path) -> ShapeRange | None:
    dims = [int(d) for d in shape]
    if not dims or all(d >= 0 for d in dims):
        return None  # static input: no profile entry needed
    dynamic_rest = [i for i, d in enumerate(dims[1:], start=1) if d < 0]
    if dynamic_rest:
        raise ExportError(
            f"{onnx_path.name} input '{name}' has dynamic dimension(s) {dynamic_rest} besides the batch (shape {_describe(dims)}); "
            "a TensorRT optimization profile needs their range",
            hint="re-export the ONNX file with fixed feature dimensions (`tritonrec export` does)",
        )
    if max_batch_size == 0:
        raise ExportError(
            f"{onnx_path.name} input '{name}' has a dynamic batch dimension, but max_batch_size=0 gives the TensorRT "
            "optimization profile no upper bound",
            hint="build with --max-batch-size 1 or more",
        )
    rest = tuple(dims[1:])
    return ShapeRange((1, *rest), (opt_batch_size, *rest), (max_batch_size, *rest))


def _cache_calibrator(trt, cache: bytes):
    """An INT8 calibrator that only hands TensorRT an existing calibration cache (no calibration batches)."""

    class _CacheOnly(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, cache_bytes) -> None:
            return None

    return _CacheOnly()


def _batches(arrays: Mapping[str, np.ndarray], rows: int) -> list[dict[str, np.ndarray]]:
    n = next(iter(arrays.values())).shape[0]
    return [{k: np.ascontiguousarray(v[s : s + rows]) for k, v in arrays.items()} for s in range(0, n, rows)]


def _compare(
    serialized: bytes, reference: Path, arrays: Mapping[str, np.ndarray], batch_rows: int, tolerance: EngineTolerance
) -> EngineComparison:
    """Polygraphy: ONNX Runtime (CPU) on ``reference`` vs the engine, batch by batch; max |Δ| per output."""
    _cuda_runtime_on_path()
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # its per-iteration INFO lines would flood a build's output
    batches = _batches(arrays, batch_rows)
    runners = [
        OnnxrtRunner(SessionFromOnnx(str(reference), providers=["cpu"]), name="onnxruntime"),
        TrtRunner(EngineFromBytes(bytes(serialized)), name="tensorrt"),
    ]
    try:
        results = Comparator.run(runners, data_loader=batches)
        accuracy = Comparator.compare_accuracy(
            results, compare_func=CompareFunc.simple(atol=tolerance.atol, rtol=0.0, check_error_stat="max")
        )
    except Exception as exc:  # Polygraphy reports failures as PolygraphyException
        raise ExportError(f"Polygraphy could not run the engine and ONNX Runtime on the sample rows: {type(exc).__name__}: {exc}") from exc
    ort_iters, trt_iters = results["onnxruntime"], results["tensorrt"]
    worst: dict[str, float] = {}
    for ref_out, eng_out in zip(ort_iters, trt_iters, strict=True):
        for name in ref_out.keys():
            diff = float(np.max(np.abs(np.asarray(eng_out[name], np.float64) - np.asarray(ref_out[name], np.float64))))
            worst[name] = max(worst.get(name, 0.0), diff)
    passed = bool(accuracy) and all(d <= tolerance.atol for d in worst.values())
    return EngineComparison(
        reference=f"onnxruntime (CPU) on {reference.name}",
        n_rows=int(next(iter(arrays.values())).shape[0]),
        batches=len(batches),
        max_abs_diff=worst,
        atol=tolerance.atol,
        tolerance_source=tolerance.source,
        passed=passed,
    )


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    *,
    max_batch_size: int,
    precision: str = "fp16",
    opt_batch_size: int | None = None,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    calibration_cache: Path | None = None,
    reference_onnx: Path | None = None,
    tolerance: EngineTolerance | None = None,
    workspace_bytes: int = _DEFAULT_WORKSPACE_BYTES,
) -> EngineBuild:
    """Build, check, compare and write a TensorRT engine for ``onnx_path`` (see the module docstring).

    Args:
        onnx_path: the ONNX file (FP32; for ``precision="int8"`` a symmetric Q/DQ model, checked
            with :func:`qdq_findings` before TensorRT is called, e.g. from
            :func:`toolkit.optimize.quantize_qdq_for_tensorrt`; or an FP32 one with
            ``calibration_cache``). Every non-batch dimension must be fixed.
        plan_path: where ``model.plan`` goes; ``tensorrt_build.json`` is written next to it.
        max_batch_size: the Triton config's value; the profile's batch range is [1, max_batch_size].
            0 only for an ONNX file with fully static shapes.
        precision: ``fp16`` (default), ``int8`` or ``fp32``.
        opt_batch_size: the batch TensorRT tunes its kernels for (default ``max_batch_size``).
        sample_inputs: ``{input name: array}`` real rows (in-range ids) for the Polygraphy
            comparison, batched by ``max_batch_size`` rows. ``None`` skips the comparison (the
            record then says so); builds of repository variants always pass rows.
        calibration_cache: a TensorRT INT8 calibration cache (implicit quantization); only with
            ``precision="int8"`` and a float model.
        reference_onnx: the model ONNX Runtime runs for the comparison (default ``onnx_path``).
        tolerance: default :data:`ENGINE_TOLERANCES` ``[precision]``.
        workspace_bytes: TensorRT's workspace memory pool limit (default 1 GiB).

    Returns:
        The files written, the engine's I/O tensors and its profile, the record and the comparison.

    Raises:
        ExportError: an INT8 model without a calibration cache that TensorRT's explicit
            quantization refuses (:func:`qdq_findings`, checked first, on any machine); no
            GPU/TensorRT/Polygraphy here; an unknown precision; a fixed batch dimension
            with ``max_batch_size > 0``; a dynamic non-batch dimension; the ONNX parser's errors;
            a failed build; a profile that does not cover ``max_batch_size`` (:func:`profile_findings`);
            outputs beyond the tolerance. Nothing is written then.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if precision not in ENGINE_TOLERANCES:
        raise ExportError(f"TensorRT precision {precision!r} is not one of {', '.join(ENGINE_TOLERANCES)}")
    if calibration_cache is not None and precision != "int8":
        raise ExportError(f"a calibration cache ({calibration_cache}) is only used for INT8 engines, not {precision}")
    if opt_batch_size is not None and not 1 <= opt_batch_size <= max(max_batch_size, 1):
        raise ExportError(f"opt_batch_size={opt_batch_size} must lie in [1, max_batch_size={max_batch_size}]")
    if precision == "int8" and calibration_cache is None:
        findings = qdq_findings(onnx_path)  # on the CPU, before any TensorRT call
        if findings:
            raise ExportError(f"no INT8 engine can be built from {onnx_path}: " + "; ".join(findings), hint="nothing was written")
    trt = _require_tensorrt()
    check_batch_dimension(onnx_path, max_batch_size)
    read_io_specs(onnx_path)  # a readable ONNX file, with clear errors
    arrays = check_onnx_inputs(onnx_path, sample_inputs, role="TensorRT comparison rows") if sample_inputs is not None else None
    tolerance = tolerance or ENGINE_TOLERANCES[precision]
    label = f"{onnx_path} ({precision})"

    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network is explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT {trt.__version__}'s ONNX parser rejects {onnx_path}: {'; '.join(errors)[:1000]}",
            hint="TensorRT has no EmbeddingBag and no dynamic INT8 ops (MatMulInteger): export padded ids, use a Q/DQ model for INT8",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    opt = opt_batch_size or max(max_batch_size, 1)
    ranges: dict[str, ShapeRange] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        r = _input_range(tensor.name, tuple(tensor.shape), max_batch_size, opt, onnx_path)
        if r is not None:
            ranges[tensor.name] = r
    profile = None
    if ranges:
        profile = builder.create_optimization_profile()
        for name, r in ranges.items():
            profile.set_shape(name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
    findings = profile_findings(ranges, max_batch_size, model=label) if ranges else []
    if findings:
        raise ExportError("; ".join(findings))
    if calibration_cache is not None:
        try:
            cache = Path(calibration_cache).read_bytes()
        except OSError as exc:
            raise ExportError(f"cannot read the INT8 calibration cache {calibration_cache}: {exc}") from exc
        config.int8_calibrator = _cache_calibrator(trt, cache)
        if profile is not None:
            config.set_calibration_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT {trt.__version__} could not build an engine from {label}: {'; '.join(logger.errors)[:1000] or 'no reason given'}"
        )
    plan = bytes(serialized)

    # The checks Triton's tensorrt backend would make at load time, on the engine itself.
    engine = _deserialize(trt, plan, label, logger)
    inputs, outputs = _engine_io(trt, engine)
    engine_profile = _engine_profile(trt, engine, 0) if ranges else {}  # a static engine has no ranges to check
    findings = profile_findings(
        engine_profile, max_batch_size, binding_shapes={s.name: s.shape for s in (*inputs, *outputs)}, model=f"engine of {label}"
    )
    if findings:
        raise ExportError("; ".join(findings), hint="the engine was not written")

    comparison = None
    if arrays is not None:
        reference = Path(reference_onnx) if reference_onnx is not None else onnx_path
        # a static engine (max_batch_size 0) takes exactly its own batch; a dynamic one up to max_batch_size
        static_batch = next((s.shape[0] for s in inputs if s.shape and s.shape[0] is not None and s.shape[0] > 0), None)
        batch_rows = static_batch if max_batch_size == 0 and static_batch else max(max_batch_size, 1)
        if max_batch_size == 0 and static_batch:
            arrays = {k: np.resize(np.asarray(v), (static_batch, *np.asarray(v).shape[1:])) for k, v in arrays.items()}
        comparison = _compare(plan, reference, arrays, batch_rows, tolerance)
        if not comparison.passed:
            diffs = ", ".join(f"'{k}' {v:.3g}" for k, v in comparison.max_abs_diff.items())
            raise ExportError(
                f"the {precision.upper()} TensorRT engine of {onnx_path.name} differs from {comparison.reference} by max |Δ| {diffs} "
                f"on {comparison.n_rows} sample rows, above the tolerance {tolerance.atol:g} ({tolerance.source})",
                hint="the engine was not written; check the sample rows are real in-range rows, or build another precision",
            )

    gpu = gpu_info(0)
    info = {
        "tensorrt_version": trt.__version__,
        "gpu": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "cuda_driver": gpu["driver_version"],
        "note": PLAN_PORTABILITY_NOTE,
        "precision": precision,
        "quantization": (
            "none"
            if precision != "int8"
            else (
                "implicit, calibration cache " + str(calibration_cache) if calibration_cache else "explicit (Q/DQ nodes of the ONNX model)"
            )
        ),
        "onnx": str(onnx_path),
        "max_batch_size": max_batch_size,
        "profiles": [{name: r.to_dict() for name, r in engine_profile.items()}],
        "inputs": [s.describe() for s in inputs],
        "outputs": [s.describe() for s in outputs],
        "workspace_bytes": workspace_bytes,
        "comparison": asdict(comparison) if comparison is not None else "not run (no sample rows given)",
    }
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staging_dir(plan_path.parent, plan_path.name) as staging:
            (staging / plan_path.name).write_bytes(plan)
            (staging / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            install_files(staging, [plan_path.name, BUILD_INFO_FILE], plan_path.parent)
    except OSError as exc:
        raise ExportError(f"writing {plan_path} failed: {exc}", hint="check free disk space and permissions") from exc
    return EngineBuild(
        plan=plan_path,
        build_info=plan_path.parent / BUILD_INFO_FILE,
        inputs=inputs,
        outputs=outputs,
        precision=precision,
        profile=engine_profile,
        info=info,
        comparison=comparison,
    )

"""ONNX-file optimizers: INT8 and FP16 conversions of an exported model with ONNX Runtime's tools.

Each conversion is ``(src .onnx, dst .onnx, step config) -> dst``:

* :func:`quantize_dynamic_int8`: ``onnxruntime.quantization.quantize_dynamic``. INT8 weights
  for MatMul/Gemm, activations quantized at run time (``DynamicQuantizeLinear`` +
  ``MatMulInteger``). No calibration data needed.
* :func:`quantize_static_int8`: ``quantize_static`` in QDQ format (``QuantizeLinear`` /
  ``DequantizeLinear`` pairs on the weight and activation inputs of MatMul/Gemm), activation
  ranges calibrated on rows. The one static INT8 Q/DQ implementation: the recipe step
  ``onnx_static_int8`` runs it for ONNX Runtime, and :func:`quantize_qdq_for_tensorrt` runs it
  in the form TensorRT's explicit quantization imports (the ``tensorrt_int8``
  variant), checked with :func:`toolkit.export.tensorrt.qdq_findings`.
* :func:`convert_fp16`: FP16 weights and compute with FP32 inputs and outputs, keeping the
  nodes whose constants or attributes FP16 cannot represent in FP32.

Only ``MatMul`` and ``Gemm`` are handed to the INT8 quantizers (``op_types_to_quantize``):
the embedding ``Gather`` nodes never are, so FP32 tables stay FP32 (quantize them row-wise
in PyTorch first, :mod:`toolkit.compress.quantize_embeddings`) and tables that already are
int8 (``Gather`` on int8, then ``Cast``/``Sub``/``Mul``) pass through untouched.

Every result is run once in ONNX Runtime on sample rows and rejected with
:class:`~toolkit.errors.CompressError` when an output holds NaN or Inf
(:func:`check_finite_outputs`); ``dst`` is only written when the result passes.

External data: ``src`` may keep its weights in files next to it (``<src>.data`` as
:func:`toolkit.export.export_onnx` writes). Results are written as one self-contained file
when they fit protobuf's 2 GB limit, otherwise with their weights in ``<dst name>.data``
next to ``dst``. The files are written into a temporary folder next to ``dst`` and moved
into place together, so a failure leaves an older ``dst`` untouched.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from toolkit.compress.recipe import OnnxDynamicInt8Config, OnnxFp16Config, OnnxStaticInt8Config
from toolkit.cpu import int8_settings
from toolkit.errors import CompressError, ExportError
from toolkit.export._files import install_files, staging_dir
from toolkit.export.onnx_info import check_onnx_inputs, external_data_files, read_io_specs

__all__ = [
    "QUANTIZED_OP_TYPES",
    "FP16_MAX",
    "FP16_MIN_SUBNORMAL",
    "Fp16Report",
    "check_finite_outputs",
    "find_fp16_unsafe_nodes",
    "quantize_dynamic_int8",
    "quantize_qdq_for_tensorrt",
    "quantize_static_int8",
    "resolve_reduce_range",
    "convert_fp16",
]

log = logging.getLogger(__name__)

#: The only op types handed to ONNX Runtime's INT8 quantizers.
QUANTIZED_OP_TYPES = ("MatMul", "Gemm")
#: Largest finite FP16 value.
FP16_MAX = 65504.0
#: FP16's smallest positive (subnormal) value, 2**-24 ≈ 5.96e-8; smaller magnitudes flush.
FP16_MIN_SUBNORMAL = 2.0**-24
# Underflow of values below 2**-24 is ignored in a tensor whose largest |x| is at least
# 2**-13: the error (< 2**-24) is then below FP16's own rounding of that largest value
# (2**-13 * 2**-11), e.g. a lone 1e-9 in a weight matrix of ~0.01 values.
_UNDERFLOW_NEGLIGIBLE_ABOVE = 2.0**-13
# protobuf cannot serialize a message of 2 GiB or more; keep a margin for the graph itself.
_SINGLE_FILE_LIMIT = 2**31 - 2**24
_DEFAULT_SAMPLE_ROWS = 8
_CALIBRATION_BATCH_ROWS = 256
# quantize_static's extra options for TensorRT's explicit quantization (see quantize_static_int8).
_TENSORRT_QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True, "QuantizeBias": False}


# ---------------------------------------------------------------------------------------------
# files


def _check_src(src: Path) -> list[Path]:
    """The external data files of ``src``, as a CompressError when it is unreadable."""
    try:
        return external_data_files(src)
    except ExportError as exc:
        raise CompressError(str(exc), hint=exc.hint) from exc


def _check_dst(dst: Path) -> Path:
    dst = Path(dst)
    if dst.is_dir():
        raise CompressError(f"ONNX destination {dst} is a directory, expected a file path such as {dst / 'model.onnx'}")
    return dst


def _disk_bytes(src: Path, data_files: list[Path]) -> int:
    return src.stat().st_size + sum(p.stat().st_size for p in data_files)


def _fits_one_file(model: onnx.ModelProto) -> bool:
    try:
        return model.ByteSize() < _SINGLE_FILE_LIMIT
    except Exception:  # protobuf refuses to size messages past its limit
        return False


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load_model(str(path), load_external_data=True)
    except Exception as exc:
        raise CompressError(f"cannot load ONNX model {path} with its external data: {type(exc).__name__}: {exc}") from exc


def _save(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write ``model`` to ``path``: one file when it fits, else weights in ``<name>.data``.

    Returns the file names written, relative to ``path.parent``.
    """
    if _fits_one_file(model):
        onnx.external_data_helper.convert_model_from_external_data(model)  # no-op unless tensors point to files
        onnx.save_model(model, str(path))
        return [path.name]
    location = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=1024)
    return [path.name, location]


def _single_file_input(src: Path, data_files: list[Path], tmp: Path) -> Path:
    """``src`` itself, or a self-contained copy in ``tmp`` when it has external data but fits one file.

    ONNX Runtime's pre-processing and shape inference read external data relative to the
    model they are given and may lose it when they save intermediate models elsewhere; a
    single file avoids that.
    """
    if not data_files or _disk_bytes(src, data_files) >= _SINGLE_FILE_LIMIT:
        return src
    model = _load(src)
    if not _fits_one_file(model):
        return src
    copy = tmp / f"single_{src.name}"
    _save(model, copy)
    return copy


def _is_large(path: Path) -> bool:
    return _disk_bytes(path, _check_src(path)) >= _SINGLE_FILE_LIMIT


def _pre_process(model_path: Path, tmp: Path) -> Path:
    """``quant_pre_process`` (shape inference + ORT graph optimization); the input itself if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / f"pre_{model_path.name}"
    large = _is_large(model_path)
    try:
        quant_pre_process(
            str(model_path),
            str(out),
            skip_optimization=large,  # ORT's optimizer cannot write a > 2 GB model as one file
            save_as_external_data=large,
            all_tensors_to_one_file=True,
            external_data_location=out.name + ".data" if large else None,
        )
    except Exception as exc:  # the pre-processing is an optimization: quantize the model as it is
        log.warning(
            "quant_pre_process failed on %s (%s: %s); quantizing it without pre-processing", model_path.name, type(exc).__name__, exc
        )
        return model_path
    return out


def _install(model: onnx.ModelProto, dst: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stage ``model`` next to ``dst``, reject NaN/Inf outputs on ``inputs``, then move it into place."""
    with staging_dir(dst.parent, dst.name) as staging:
        staged = staging / dst.name
        written = _save(model, staged)
        outputs = check_finite_outputs(staged, inputs)
        try:
            install_files(staging, written, dst.parent)
        except OSError as exc:
            raise CompressError(
                f"moving the compressed model into {dst} failed: {exc}", hint="check permissions and free disk space"
            ) from exc
    stale = dst.parent / (dst.name + ".data")
    if (dst.name + ".data") not in written and stale.is_file():
        stale.unlink()  # an older version's weights; dst is self-contained now
    return outputs


# ---------------------------------------------------------------------------------------------
# running


def _check_inputs(onnx_path: Path, inputs: Mapping[str, np.ndarray], role: str) -> dict[str, np.ndarray]:
    try:
        return check_onnx_inputs(onnx_path, inputs, role=role)
    except ExportError as exc:
        raise CompressError(str(exc), hint=exc.hint) from exc


def _default_sample_inputs(onnx_path: Path, rows: int = _DEFAULT_SAMPLE_ROWS) -> dict[str, np.ndarray]:
    """``rows`` rows per input: standard normal floats (seeded), zeros for ids and other types.

    Id 0 is in range of every table, so the rows are valid inputs of any embedding model.
    """
    in_specs, _ = read_io_specs(onnx_path)
    rng = np.random.default_rng(0)
    out = {}
    for spec in in_specs:
        shape = tuple(rows if i == 0 and d is None else (d if d is not None else 1) for i, d in enumerate(spec.shape))
        dtype = spec.numpy_dtype
        out[spec.name] = rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
    return out


def _session(model: Path | bytes, label: str):
    import onnxruntime as ort  # heavy import, only needed here

    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompressError(f"ONNX Runtime could not load {label}: {type(exc).__name__}: {str(exc)[:500]}") from exc


def _run(model: Path | bytes, arrays: Mapping[str, np.ndarray], batch_size: int, label: str = "") -> dict[str, np.ndarray]:
    label = label or Path(model).name
    session = _session(model, label)
    names = [o.name for o in session.get_outputs()]
    n_rows = next(iter(arrays.values())).shape[0]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, n_rows, batch_size):
        feeds = {k: np.ascontiguousarray(v[start : start + batch_size]) for k, v in arrays.items()}
        try:
            outs = session.run(names, feeds)
        except Exception as exc:
            raise CompressError(
                f"ONNX Runtime failed on rows {start}.. of {label}: {type(exc).__name__}: {str(exc)[:500]}",
                hint="check the sample inputs against read_io_specs(onnx_path)",
            ) from exc
        for part, out in zip(parts, outs, strict=True):
            part.append(out)
    return {n: (np.concatenate(p) if len(p) > 1 and p[0].ndim > 0 else p[0]) for n, p in zip(names, parts, strict=True)}


def check_finite_outputs(onnx_path: Path, inputs: Mapping[str, np.ndarray], *, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Run ``onnx_path`` in ONNX Runtime (CPU) on ``inputs`` and reject NaN or Inf outputs.

    Args:
        onnx_path: the model (its external data files next to it).
        inputs: ``{graph input name: array}``, one per graph input, with the graph's dtypes and
            the same number of rows N >= 1.
        batch_size: rows per run.

    Returns:
        ``{output name: array}`` over all N rows (batches concatenated along the first axis).

    Raises:
        CompressError: inputs missing, unexpected, of the wrong dtype or row count; ONNX
            Runtime cannot load or run the model; a floating output holds NaN or Inf (the
            message names the output, the counts and the first row concerned).
    """
    onnx_path = Path(onnx_path)
    arrays = _check_inputs(onnx_path, inputs, "sample inputs")
    outputs = _run(onnx_path, arrays, max(1, int(batch_size)))
    for name, value in outputs.items():
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            n_nan, n_inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
            first = int(np.argwhere(bad)[0][0]) if value.ndim else 0
            raise CompressError(
                f"{onnx_path.name} output '{name}' holds {n_nan} NaN and {n_inf} Inf values (of {value.size}; "
                f"first at row {first}) on {next(iter(arrays.values())).shape[0]} sample rows; expected finite values",
                hint="the compressed model overflows or divides by zero: keep the offending nodes in FP32 or use another compression step",
            )
    return outputs


# ---------------------------------------------------------------------------------------------
# INT8


def quantize_dynamic_int8(
    src: Path,
    dst: Path,
    config: OnnxDynamicInt8Config | None = None,
    *,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    cpu: str = "auto",
) -> Path:
    """Dynamic INT8 quantization (``onnxruntime.quantization.quantize_dynamic``) of ``src`` into ``dst``.

    Weights of ``MatMul`` and ``Gemm`` nodes become QInt8 (per output channel when
    ``config.per_channel``); ONNX Runtime replaces ``Gemm`` by ``MatMulInteger`` + ``Add`` and
    quantizes each activation on the fly (``DynamicQuantizeLinear``). Only ``MatMul``/``Gemm``
    are handed to the quantizer (``op_types_to_quantize``): embedding ``Gather`` nodes are
    never quantized (FP32 tables stay FP32; int8 row-wise tables pass through untouched),
    and ``MatMul`` nodes whose second input is not a constant weight (the DLRM's dot-product
    interaction) stay FP32 (``MatMulConstBOnly``). The model is pre-processed with
    ``quant_pre_process`` first (skipped with a warning if that fails).

    Args:
        src: the FP32 ``.onnx`` file (external data next to it is fine).
        dst: the output ``.onnx`` file (a single file when < 2 GB, else ``<dst name>.data`` too).
        config: the recipe step (``None``: defaults).
        sample_inputs: rows to check the result on (:func:`check_finite_outputs`); ``None``
            uses 8 rows of standard normal floats and zero ids.
        cpu: the serving CPU (:data:`toolkit.cpu.CPU_TARGETS`); decides ``reduce_range`` when
            ``config.reduce_range`` is None (7-bit weights on x86-64 without VNNI, where
            8-bit ones saturate ONNX Runtime's int16 accumulation: :mod:`toolkit.cpu`).

    Returns:
        ``dst``.

    Raises:
        CompressError: ``src`` unreadable or missing its data files; the quantizer failed
            (chained); the result has NaN/Inf outputs (``dst`` is then left untouched).
        ToolkitError: ``cpu`` is not a known target.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = config or OnnxDynamicInt8Config()
    reduce_range = resolve_reduce_range(config, cpu)
    src, dst = Path(src), _check_dst(dst)
    data_files = _check_src(src)
    with tempfile.TemporaryDirectory(prefix="tritonrec-quant-") as tmp_name:
        tmp = Path(tmp_name)
        model_in = _pre_process(_single_file_input(src, data_files, tmp), tmp)
        out = tmp / f"q_{dst.name}"
        try:
            quantize_dynamic(
                str(model_in),
                str(out),
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                per_channel=config.per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                use_external_data_format=_is_large(model_in),
                extra_options={"MatMulConstBOnly": True},
            )
        except Exception as exc:
            raise CompressError(f"dynamic INT8 quantization of {src} failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
        model = _load(out)
        inputs = sample_inputs if sample_inputs is not None else _default_sample_inputs(src)
        _install(model, dst, inputs)
    log.info("dynamic INT8 (reduce_range=%s): %s -> %s (%s)", reduce_range, src, dst, _op_summary(model))
    return dst


def resolve_reduce_range(config: OnnxDynamicInt8Config | OnnxStaticInt8Config, cpu: str = "auto") -> bool:
    """``config.reduce_range`` when set, else what the serving CPU needs (:func:`toolkit.cpu.int8_settings`).

    Raises:
        ToolkitError: ``cpu`` is not one of :data:`toolkit.cpu.CPU_TARGETS`.
    """
    if config.reduce_range is not None:
        return config.reduce_range
    return int8_settings(cpu).reduce_range


class _RowBatches:
    """A ``CalibrationDataReader`` over the first ``rows`` rows of ``arrays``, ``batch`` rows at a time."""

    def __init__(self, arrays: Mapping[str, np.ndarray], rows: int, batch: int) -> None:
        self.arrays = {k: np.ascontiguousarray(v[:rows]) for k, v in arrays.items()}
        self.rows = min(rows, next(iter(arrays.values())).shape[0])
        self.batch = batch
        self.rewind()

    def rewind(self) -> None:
        self._starts: Iterator[int] = iter(range(0, self.rows, self.batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._starts, None)
        if start is None:
            return None
        return {k: v[start : start + self.batch] for k, v in self.arrays.items()}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return -(-self.rows // self.batch)


def quantize_static_int8(
    src: Path,
    dst: Path,
    config: OnnxStaticInt8Config | None,
    calibration_inputs: Mapping[str, np.ndarray],
    *,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    quantize_activation_matmuls: bool = False,
    cpu: str = "auto",
    tensorrt: bool = False,
) -> Path:
    """Static INT8 quantization in QDQ format (``onnxruntime.quantization.quantize_static``).

    The model is pre-processed with ``quant_pre_process`` (shape inference and ONNX Runtime
    graph optimizations; a model with external data is first made a single file when it
    fits 2 GB; if pre-processing fails the model is quantized as it is, with a warning).
    Activation ranges are calibrated (``config.calibration_method``: MinMax, Entropy or
    Percentile) on the first ``config.calibration_rows`` rows of ``calibration_inputs`` in
    batches of 256; weights are QInt8 (per output channel when ``config.per_channel``),
    activations QInt8: asymmetric (a zero point per tensor, the full int8 range for the
    one-sided outputs of a ReLU) unless ``tensorrt``.

    What is quantized: only ``MatMul`` and ``Gemm`` nodes are handed to the quantizer
    (``op_types_to_quantize``), so embedding ``Gather`` nodes never are. Their weight and
    activation *inputs* get ``QuantizeLinear``/``DequantizeLinear`` pairs; their outputs stay
    float (``OpTypesToExcludeOutputQuantization``: the next layer re-quantizes its input
    anyway, and a second rounding of e.g. the final logit only adds error; this is also the
    Q/DQ placement TensorRT expects). ``MatMul`` nodes whose both operands are activations
    (the DLRM's dot interaction) are excluded unless ``quantize_activation_matmuls``: a
    per-tensor INT8 scale for all pairwise dot products tripled the error on our DLRM
    (max |Δp| 0.07 instead of 0.026 on the synthetic test split).

    Args:
        src: the FP32 ``.onnx`` file.
        dst: the output ``.onnx`` file.
        config: the recipe step (``None``: defaults).
        calibration_inputs: ``{graph input name: array}`` with N rows (training rows); fewer than
            ``calibration_rows`` rows are all used.
        sample_inputs: rows for :func:`check_finite_outputs`; ``None`` uses the calibration rows.
        quantize_activation_matmuls: also quantize activation-by-activation ``MatMul`` nodes.
        cpu: the serving CPU; decides ``reduce_range`` when ``config.reduce_range`` is None
            (as for :func:`quantize_dynamic_int8`).
        tensorrt: write the form TensorRT's explicit quantization imports
            (:func:`quantize_qdq_for_tensorrt`): zero points of 0 for activations and weights
            (``ActivationSymmetric``, ``WeightSymmetric``); weights kept float, each with a
            ``QuantizeLinear``/``DequantizeLinear`` pair (``AddQDQPairToWeight``) as QAT
            exports write them; biases left float (``QuantizeBias=False``: TensorRT's parser
            refuses the int32 bias ``DequantizeLinear`` written otherwise, onnx/onnx-tensorrt#850).
            ONNX Runtime computes the same values either way; the file is larger (float weights).

    Returns:
        ``dst``.

    Raises:
        CompressError: ``src`` unreadable; calibration inputs missing, unexpected, mistyped or
            empty; the quantizer failed (chained); the result has NaN/Inf outputs.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    config = config or OnnxStaticInt8Config()
    reduce_range = resolve_reduce_range(config, cpu)
    src, dst = Path(src), _check_dst(dst)
    data_files = _check_src(src)
    arrays = _check_inputs(src, calibration_inputs, "calibration inputs")
    n_rows = next(iter(arrays.values())).shape[0]
    if n_rows < config.calibration_rows:
        log.info("calibrating %s on all %d rows given (calibration_rows=%d)", src.name, n_rows, config.calibration_rows)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.calibration_method]
    with tempfile.TemporaryDirectory(prefix="tritonrec-quant-") as tmp_name:
        tmp = Path(tmp_name)
        model_in = _pre_process(_single_file_input(src, data_files, tmp), tmp)
        out = tmp / f"q_{dst.name}"
        reader = _RowBatches(arrays, config.calibration_rows, _CALIBRATION_BATCH_ROWS)
        excluded = [] if quantize_activation_matmuls else _activation_matmuls(model_in)
        if excluded:
            log.info("static INT8: leaving activation-by-activation MatMul node(s) %s in FP32", ", ".join(excluded))
        try:
            quantize_static(
                str(model_in),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                per_channel=config.per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=excluded,
                use_external_data_format=_is_large(model_in),
                extra_options={
                    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
                    **(_TENSORRT_QDQ_OPTIONS if tensorrt else {}),
                },
            )
        except Exception as exc:
            raise CompressError(
                f"static INT8 quantization ({config.calibration_method} calibration on {reader.rows} rows) of {src} failed: "
                f"{type(exc).__name__}: {str(exc)[:500]}"
            ) from exc
        model = _load(out)
        if sample_inputs is None:
            sample_inputs = {k: v[: max(config.calibration_rows, 1)] for k, v in arrays.items()}
        _install(model, dst, sample_inputs)
    log.info(
        "static INT8 (QDQ, %s, reduce_range=%s): %s -> %s (%s)",
        "for TensorRT: symmetric, float weights with Q/DQ pairs" if tensorrt else "asymmetric activations",
        reduce_range,
        src,
        dst,
        _op_summary(model),
    )
    return dst


def quantize_qdq_for_tensorrt(src: Path, dst: Path, calibration_inputs: Mapping[str, np.ndarray]) -> Path:
    """The Q/DQ INT8 model a TensorRT INT8 engine is built from (explicit quantization), on CPU.

    :func:`quantize_static_int8` with the settings TensorRT's explicit quantization takes
    (TensorRT developer guide, "Working with Quantized Types": symmetric quantization, signed
    INT8, so every zero point is 0): ``tensorrt=True``, MinMax calibration on all of
    ``calibration_inputs`` (at least 16 rows are asked for; fewer are all used), per-channel
    weights, 8-bit weights (``reduce_range=False``: a GPU's INT8 kernels do not saturate as x86
    AVX2's do). The same Q/DQ placement as the ONNX Runtime step: only ``MatMul``/``Gemm``
    inputs, activation-by-activation ``MatMul`` nodes left in float. The result is checked with
    :func:`toolkit.export.tensorrt.qdq_findings` (what TensorRT's ONNX parser refuses) and run
    once in ONNX Runtime (finite outputs); TensorRT itself then builds it with
    :func:`toolkit.export.tensorrt.build_engine` ``(precision="int8")``, and Polygraphy compares
    the engine against ONNX Runtime running this same file.

    Args:
        src: the FP32 ``.onnx`` file (external data next to it is fine).
        dst: the Q/DQ ``.onnx`` file to write.
        calibration_inputs: ``{graph input name: array}`` real rows (in-range ids), N >= 1.

    Returns:
        ``dst``.

    Raises:
        CompressError: as :func:`quantize_static_int8`; or the result holds something TensorRT
            would refuse (the findings, naming the node; ``dst`` is then removed).
    """
    from toolkit.export.tensorrt import qdq_findings

    config = OnnxStaticInt8Config(
        per_channel=True, reduce_range=False, calibration_method="minmax", calibration_rows=max(16, _rows_of(calibration_inputs))
    )
    dst = Path(dst)
    quantize_static_int8(src, dst, config, calibration_inputs, tensorrt=True)
    findings = qdq_findings(dst)
    if findings:
        for path in (dst, dst.parent / (dst.name + ".data")):
            path.unlink(missing_ok=True)
        raise CompressError(
            f"the Q/DQ INT8 model {dst} is not one TensorRT imports: " + "; ".join(findings),
            hint="report this: quantize_static_int8(tensorrt=True) should write only what TensorRT imports",
        )
    return dst


def _rows_of(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def _activation_matmuls(model_path: Path) -> list[str]:
    """Names of the top-level ``MatMul`` nodes neither of whose operands is a constant."""
    model = onnx.load_model(str(model_path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name and not constants.intersection(n.input)]


def _op_summary(model: onnx.ModelProto) -> str:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# FP16


@dataclass(frozen=True)
class Fp16Report:
    """Result of :func:`convert_fp16`.

    Attributes:
        path: the written model.
        kept_fp32: names of the nodes kept in FP32 (the converter's ``node_block_list``).
        reasons: ``{node name: why}`` for every node found unsafe in FP16 (all of them kept in FP32
            unless ``keep_unsafe_nodes_fp32=False``), e.g. ``"attribute epsilon=1e-12 is below
            FP16's smallest subnormal 5.96e-08"``.
        max_abs_diff: ``{output name: max |fp16 - fp32|}`` on the sample inputs.
    """

    path: Path
    kept_fp32: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from _iter_nodes(sub)


def _iter_initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _iter_initializers(attr.g)
            for sub in attr.graphs:
                yield from _iter_initializers(sub)


def _fp16_range_problem(values: np.ndarray) -> str | None:
    """Why FP16 cannot hold ``values`` (float32), or None."""
    finite = np.abs(values[np.isfinite(values)]).astype(np.float64)
    if finite.size == 0:
        return None
    big = finite.max()
    if big > FP16_MAX:
        return f"holds {big:.6g}, above FP16's largest value {FP16_MAX:g}"
    tiny = finite[(finite > 0) & (finite < FP16_MIN_SUBNORMAL)]
    if tiny.size and big < _UNDERFLOW_NEGLIGIBLE_ABOVE:
        return f"holds {tiny.min():.3g}, below FP16's smallest subnormal {FP16_MIN_SUBNORMAL:.3g} (largest |value| {big:.3g})"
    return None


def _float_attr_problem(value: float) -> str | None:
    v = abs(value)
    if np.isfinite(v) and v > FP16_MAX:
        return f"above FP16's largest value {FP16_MAX:g}"
    if 0 < v < FP16_MIN_SUBNORMAL:
        return f"below FP16's smallest subnormal {FP16_MIN_SUBNORMAL:.3g}"
    return None


def _name_unnamed(model: onnx.ModelProto) -> None:
    used = {n.name for n in _iter_nodes(model.graph) if n.name}
    for i, node in enumerate(_iter_nodes(model.graph)):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


_VALUE_NODES = ("Constant", "ConstantOfShape")


def find_fp16_unsafe_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes that must stay FP32 because FP16 cannot represent a value they use.

    A value is out of FP16's range when a finite ``|x| > 65504`` (it would be clamped to
    65504) or ``0 < |x| < 2**-24`` (it would flush to FP16's smallest subnormal). Underflow
    is only reported for tensors whose largest ``|x|`` is below ``2**-13``: in a larger tensor
    the change (< 2**-24) is smaller than FP16's rounding of its largest value, so a weight
    matrix is not kept in FP32 over one tiny entry. Reported:

    * every node reading a float32 initializer with such values (all of its readers: the
      converter turns an initializer shared with any FP16 node into FP16);
    * ``Constant``/``ConstantOfShape`` nodes whose value has such values, and every node
      reading their output;
    * nodes with a float attribute (or list of floats) out of range, e.g. a
      ``LayerNormalization`` or ``BatchNormalization`` ``epsilon`` of 1e-12.

    ``model`` must have its external data loaded. Unnamed nodes are given names (in place)
    so that they can be listed.

    Returns:
        ``{node name: reason}`` in graph order.
    """
    _name_unnamed(model)
    nodes = list(_iter_nodes(model.graph))
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            if name:
                readers.setdefault(name, []).append(node)
    found: dict[str, str] = {}

    def flag(node: onnx.NodeProto, reason: str) -> None:
        found.setdefault(node.name, reason)

    for init in _iter_initializers(model.graph):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        problem = _fp16_range_problem(numpy_helper.to_array(init))
        if problem:
            for node in readers.get(init.name, []):
                flag(node, f"reads initializer '{init.name}' that {problem}")
    for node in nodes:
        for attr in node.attribute:
            problem = None
            if attr.type == onnx.AttributeProto.FLOAT:
                if (p := _float_attr_problem(attr.f)) is not None:
                    problem = f"attribute {attr.name}={attr.f:.3g} is {p}"
            elif attr.type == onnx.AttributeProto.FLOATS:
                bad = [v for v in attr.floats if _float_attr_problem(v)]
                if bad:
                    problem = f"attribute {attr.name} holds {bad[0]:.3g}, {_float_attr_problem(bad[0])}"
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT:
                if (p := _fp16_range_problem(numpy_helper.to_array(attr.t))) is not None:
                    problem = f"attribute {attr.name} {p}"
            elif attr.type == onnx.AttributeProto.TENSORS:
                for t in attr.tensors:
                    if t.data_type == onnx.TensorProto.FLOAT and (p := _fp16_range_problem(numpy_helper.to_array(t))) is not None:
                        problem = f"attribute {attr.name} {p}"
                        break
            if problem is None:
                continue
            flag(node, problem)
            if node.op_type in _VALUE_NODES:
                for out in node.output:
                    for reader in readers.get(out, []):
                        flag(reader, f"reads the output '{out}' of {node.op_type} node '{node.name}' whose {problem}")
    order = {n.name: i for i, n in enumerate(nodes)}
    return dict(sorted(found.items(), key=lambda kv: order[kv[0]]))


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every top-level value with known type (inputs, value_info, outputs)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; dynamo exports carry value_info anyway
        inferred = model
    types: dict[str, int] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _fp32_value_ranges(
    model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], label: str
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Run the FP32 ``model`` once exposing every float32 value of its top-level graph.

    Returns ``({value name: largest finite |x| on the rows}, {graph output name: array})``.
    """
    types = _elem_types(model)
    outputs = [o.name for o in model.graph.output]
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    present = set(outputs)
    for node in aug.graph.node:
        for name in node.output:
            if name and name not in present and types.get(name) == onnx.TensorProto.FLOAT:
                aug.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                present.add(name)
    with tempfile.TemporaryDirectory(prefix="tritonrec-fp16-scan-") as tmp:
        if _fits_one_file(aug):
            values = _run(aug.SerializeToString(), arrays, 1024, label)
        else:
            path = Path(tmp) / "scan.onnx"
            _save(aug, path)
            values = _run(path, arrays, 1024, label)
    del aug
    values.update({k: v for k, v in arrays.items() if types.get(k) == onnx.TensorProto.FLOAT})
    ranges = {}
    for name, value in values.items():
        if np.issubdtype(value.dtype, np.floating) and value.size:
            finite = np.abs(value[np.isfinite(value)])
            ranges[name] = float(finite.max()) if finite.size else 0.0
    return ranges, {n: values[n] for n in outputs}


def _activation_overflow_nodes(model: onnx.ModelProto, ranges: Mapping[str, float], n_rows: int) -> dict[str, str]:
    """Nodes producing or reading a float value that exceeds FP16's range on the sample rows."""
    found: dict[str, str] = {}
    producers = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for name, peak in ranges.items():
        if peak <= FP16_MAX:
            continue
        what = f"reaches {peak:.6g} on {n_rows} sample rows, above FP16's largest value {FP16_MAX:g}"
        if name in producers:
            found.setdefault(producers[name].name, f"its output '{name}' {what}")
        for reader in readers.get(name, []):
            found.setdefault(reader.name, f"reads '{name}', which {what}")
    return found


def _attr_int(node: onnx.NodeProto, name: str) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return None


def _keep_blocked_values_fp32(model: onnx.ModelProto, blocked: set[str]) -> int:
    """Remove the FP32 -> FP16 -> FP32 round trips the converter puts between FP32 nodes.

    The converter casts every output of a blocked node to FP16 and casts it back before each
    blocked reader, so a value passed between two FP32 nodes (or from a FP32 node or a float
    input to a graph output) would still be rounded to, and overflow in, FP16. Here a
    ``Cast(to=FLOAT)`` of a ``Cast(to=FLOAT16)`` of a blocked node's output (or of a float
    graph input) reads the FP32 value directly; FP16 casts left without readers are removed.

    Returns:
        The number of round trips removed.
    """
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    float_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    graph_outputs = {o.name for o in graph.output}
    replace: dict[str, str] = {}  # output of a redundant Cast(to=FLOAT) -> the FP32 value it round-trips
    keep_as_identity: list[tuple[onnx.NodeProto, str]] = []
    for node in graph.node:
        if node.op_type != "Cast" or _attr_int(node, "to") != onnx.TensorProto.FLOAT:
            continue
        up = producers.get(node.input[0])
        if up is None or up.op_type != "Cast" or _attr_int(up, "to") != onnx.TensorProto.FLOAT16:
            continue
        origin = up.input[0]
        origin_node = producers.get(origin)
        if not ((origin_node is not None and origin_node.name in blocked) or (origin_node is None and origin in float_inputs)):
            continue
        if node.output[0] in graph_outputs:
            keep_as_identity.append((node, origin))  # a graph output's name must stay: Cast FP32 -> FP32
        else:
            replace[node.output[0]] = origin
    for node, origin in keep_as_identity:
        node.input[0] = origin
    if replace:
        dead = {id(n) for n in graph.node if n.output and n.output[0] in replace}
        kept = [n for n in graph.node if id(n) not in dead]
        for node in kept:
            for i, name in enumerate(node.input):
                if name in replace:
                    node.input[i] = replace[name]
        del graph.node[:]
        graph.node.extend(kept)
    # FP16 casts nobody reads any more
    read = {name for n in graph.node for name in n.input} | graph_outputs
    unused = [n for n in graph.node if n.op_type == "Cast" and _attr_int(n, "to") == onnx.TensorProto.FLOAT16 and n.output[0] not in read]
    if unused:
        drop = {id(n) for n in unused}
        gone = {n.output[0] for n in unused} | set(replace)
        kept = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(kept)
        kept_vi = [vi for vi in graph.value_info if vi.name not in gone]
        del graph.value_info[:]
        graph.value_info.extend(kept_vi)
    return len(replace) + len(keep_as_identity)


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    names: set[str] = set()
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in _iter_nodes(sub):
                names.update(inner.input)
    return names


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Order the top-level nodes so that every value is produced before it is read.

    The FP16 converter appends its Cast nodes at the end of the graph; ONNX Runtime does not
    mind, but the ONNX checker and TensorRT's ONNX parser want topological order. Ties keep
    the original order.
    """
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps: list[set[int]] = []
    for i, node in enumerate(nodes):
        wanted = {name for name in node.input if name} | _subgraph_reads(node)
        deps.append({producer[name] for name in wanted if name in producer and producer[name] != i})
    users: list[list[int]] = [[] for _ in nodes]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    remaining = [len(ds) for ds in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):  # a cycle: leave the graph as the converter wrote it
        log.warning("the FP16 graph has a cycle; its nodes are left in the converter's order")
        return
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def convert_fp16(
    src: Path,
    dst: Path,
    config: OnnxFp16Config | None = None,
    *,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    keep_unsafe_nodes_fp32: bool = True,
) -> Fp16Report:
    """Convert ``src`` to FP16 weights and compute, with FP32 inputs and outputs.

    Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` with
    ``keep_io_types=True`` (Casts at the graph's float inputs and outputs: clients keep sending
    and receiving float32). Before converting, two kinds of nodes are put in the converter's
    ``node_block_list`` and stay FP32:

    1. nodes whose constants or float attributes FP16 cannot represent
       (:func:`find_fp16_unsafe_nodes`: values past 65504, values below 2**-24 such as a
       LayerNorm ``epsilon`` of 1e-12);
    2. nodes producing or reading a value that exceeds 65504 when the FP32 model runs on
       ``sample_inputs`` (an FP16 intermediate would overflow to Inf).

    Values passed between two FP32 nodes then stay FP32 (the converter's FP32 -> FP16 -> FP32
    round trips between them are removed), and the graph is put back in topological order.
    The kept nodes are logged and returned with their reasons. Finally the FP16 model is run
    on ``sample_inputs`` and rejected if an output is NaN or Inf (:func:`check_finite_outputs`).

    ONNX Runtime's CPU provider runs most FP16 operators by casting to FP32 internally, so the
    CPU run alone would miss FP16 overflow inside chains of such operators; step 2 (the FP32
    value scan) is what catches those. The scan only sees the sample rows: pass rows that
    cover the range served (e.g. the test split).

    Args:
        src: the FP32 ``.onnx`` file (external data next to it is fine).
        dst: the output ``.onnx`` file (one file when < 2 GB, else ``<dst name>.data`` too).
        config: the recipe step (``None``: defaults).
        sample_inputs: ``{graph input name: array}`` rows for the value scan and the final
            check; ``None`` uses 8 rows of standard normal floats and zero ids.
        keep_unsafe_nodes_fp32: when False nothing is kept in FP32 (the converter clamps
            out-of-range constants and values may overflow); for experiments and for tests of
            the NaN/Inf check. The unsafe nodes are still reported in ``reasons``.

    Returns:
        An :class:`Fp16Report`.

    Raises:
        CompressError: ``src`` unreadable; sample inputs invalid; the converter failed
            (chained); an output of the FP16 model is NaN or Inf on the sample rows, naming
            the output (``dst`` is left untouched).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    config = config or OnnxFp16Config()
    src, dst = Path(src), _check_dst(dst)
    _check_src(src)
    model = _load(src)
    inputs = sample_inputs if sample_inputs is not None else _default_sample_inputs(src)
    arrays = _check_inputs(src, inputs, "sample inputs")
    n_rows = next(iter(arrays.values())).shape[0]
    unsafe = find_fp16_unsafe_nodes(model)
    ranges, reference = _fp32_value_ranges(model, arrays, src.name)
    for name, reason in _activation_overflow_nodes(model, ranges, n_rows).items():
        unsafe.setdefault(name, reason)
    block = list(unsafe) if keep_unsafe_nodes_fp32 else []
    for name in block:
        log.info("FP16: keeping node '%s' in FP32: %s", name, unsafe[name])
    with tempfile.TemporaryDirectory(prefix="tritonrec-fp16-") as tmp_name, _quiet_converter():
        try:
            if _fits_one_file(model):
                converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
            else:  # in-memory shape inference cannot take > 2 GB: hand the converter a file
                staged = Path(tmp_name) / src.name
                _save(model, staged)
                del model
                converted = convert_float_to_float16(str(staged), keep_io_types=True, node_block_list=block)
        except Exception as exc:
            raise CompressError(f"FP16 conversion of {src} failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
    if block:
        _keep_blocked_values_fp32(converted, set(block))
    _topological_sort(converted.graph)
    outputs = _install(converted, dst, arrays)
    diffs = {}
    for name, want in reference.items():
        got = outputs.get(name)
        if got is not None and np.issubdtype(want.dtype, np.floating) and got.shape == want.shape and got.size:
            diffs[name] = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    log.info("FP16: %s -> %s, %d node(s) kept in FP32, max |fp16 - fp32| %s", src, dst, len(block), diffs)
    return Fp16Report(path=dst, kept_fp32=tuple(block), reasons=dict(unsafe), max_abs_diff=diffs)


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """The converter logs every clamped value and shared initializer; keep that out of the user's logs."""
    logger = logging.getLogger("onnxruntime.transformers.float16")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)

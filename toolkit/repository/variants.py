"""The serving variants of one trained model (any registered architecture): what each is, where it runs, and the model files it needs.

==================== ========= ==================== =========== ==============================================
variant              precision runs as              device      version folder
==================== ========= ==================== =========== ==============================================
``pytorch``          fp32      backend: python      any         ``model.py`` (torch runner), the architecture's
                                                                source files (``dlrm.py``), ``architecture.json``,
                                                                ``model.pt``, ``model_config.json`` (and, for
                                                                tables made int8 in place, ``structure.json``
                                                                and ``tritonrec_layers.py``)
``onnx``             fp32      onnxruntime_onnx     any         ``model.onnx`` (+ its external data)
``onnx_int8``        int8      onnxruntime_onnx     any         ``model.onnx``: the given file when it is already
                                                                quantized (e.g. ``tritonrec compress``'s static
                                                                Q/DQ INT8), else ONNX Runtime dynamic INT8
``onnx_fp16``        fp16      onnxruntime_onnx     any         ``model.onnx``: FP16 weights and compute, FP32 I/O
``onnx_python``,     as above  backend: python      any         the same ``model.onnx`` + ``model.py`` (ONNX
``onnx_int8_python``,                                           Runtime in a Python backend, for servers without
``onnx_fp16_python``                                            the onnxruntime backend)
``tensorrt``         fp16      tensorrt_plan        gpu         ``model.plan`` + ``tensorrt_build.json``
``tensorrt_int8``    int8      tensorrt_plan        gpu         the same, INT8 from a Q/DQ model (the given one,
                                                                or static INT8 calibrated on the sample rows) or
                                                                a TensorRT calibration cache
==================== ========= ==================== =========== ==============================================

:func:`prepare_variant` writes one variant's files into a version folder and returns what
its Triton config must declare; the builder (:mod:`toolkit.repository.builder`) writes the
config, the warmup and ``tritonrec.json``. The precision returned is the one *detected* in
the files written (:func:`onnx_precision`), not the nominal one: an already-quantized file
given for ``onnx`` is reported ``int8``.

TensorRT variants need an NVIDIA GPU, ``tensorrt`` and ``polygraphy``
(:func:`variant_unavailable` says why not); they are never faked.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from toolkit.cpu import int8_settings
from toolkit.errors import CompressError, RepositoryError
from toolkit.export import copy_onnx_model, read_io_specs
from toolkit.export.tensorrt import BUILD_INFO_FILE, PLAN_FILE, build_engine, tensorrt_unavailable
from toolkit.models import layers as model_layers
from toolkit.optimize.onnx_quant import check_finite_outputs, convert_fp16, quantize_dynamic_int8, quantize_qdq_for_tensorrt
from toolkit.repository.config import thread_parameter_keys
from toolkit.repository.ensemble import python_model_source
from toolkit.tensors import TensorSpec
from toolkit.train.checkpoint import STRUCTURE_FILE, Checkpoint, model_structure

__all__ = [
    "EXECUTION_PROVIDERS",
    "QUANTIZATION_OP_TYPES",
    "VARIANT_SPECS",
    "PreparedVariant",
    "VariantSpec",
    "onnx_precision",
    "prepare_variant",
    "resolve_sample_inputs",
    "variant_unavailable",
]


@dataclass(frozen=True)
class VariantSpec:
    """One serving variant.

    Attributes:
        name: folder suffix (``<model>_<name>``), e.g. ``onnx_int8``.
        precision: nominal precision, ``fp32`` | ``fp16`` | ``int8`` (the files written may
            differ, see :attr:`PreparedVariant.precision`).
        platform: Triton ``platform`` (``onnxruntime_onnx``, ``tensorrt_plan``) or ``None``.
        backend: Triton ``backend`` (``python``) or ``None``.
        device: where it can run: ``cpu``, ``gpu`` or ``any``.
        description: one line for the build table.
        onnx_kind: the ONNX file it serves (``fp32``, ``int8``, ``fp16``) or ``None`` (pytorch, TensorRT).
        runner: the Python-backend ``model.py`` it carries (``torch_runner.py``, ``onnx_runner.py``) or ``None``.
        needs_onnx: whether it is built from the ONNX file.
    """

    name: str
    precision: str
    platform: str | None
    backend: str | None
    device: str
    description: str
    onnx_kind: str | None = None
    runner: str | None = None
    needs_onnx: bool = True


VARIANT_SPECS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec(
            "pytorch",
            "fp32",
            None,
            "python",
            "any",
            "PyTorch FP32 eager in a Python backend (the baseline)",
            None,
            "torch_runner.py",
            False,
        ),
        VariantSpec("onnx", "fp32", "onnxruntime_onnx", None, "any", "ONNX Runtime FP32 (onnxruntime backend)", "fp32"),
        VariantSpec("onnx_int8", "int8", "onnxruntime_onnx", None, "any", "ONNX Runtime INT8 (onnxruntime backend)", "int8"),
        VariantSpec("onnx_fp16", "fp16", "onnxruntime_onnx", None, "any", "ONNX Runtime FP16, FP32 I/O (onnxruntime backend)", "fp16"),
        VariantSpec("onnx_python", "fp32", None, "python", "any", "ONNX Runtime FP32 in a Python backend", "fp32", "onnx_runner.py"),
        VariantSpec("onnx_int8_python", "int8", None, "python", "any", "ONNX Runtime INT8 in a Python backend", "int8", "onnx_runner.py"),
        VariantSpec(
            "onnx_fp16_python", "fp16", None, "python", "any", "ONNX Runtime FP16, FP32 I/O, in a Python backend", "fp16", "onnx_runner.py"
        ),
        VariantSpec("tensorrt", "fp16", "tensorrt_plan", None, "gpu", "TensorRT FP16 engine (tensorrt_plan)"),
        VariantSpec("tensorrt_int8", "int8", "tensorrt_plan", None, "gpu", "TensorRT INT8 engine from a Q/DQ model (tensorrt_plan)"),
    )
}

#: ``execution_provider`` values of the ONNX-Runtime-in-Python runner (``onnx_runner.py``).
EXECUTION_PROVIDERS = ("cpu", "cuda")

#: ONNX op types that mark a quantized model (ONNX Runtime's static Q/DQ and dynamic INT8 outputs),
#: besides every ``QLinear*`` op.
QUANTIZATION_OP_TYPES = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QGemm",
    }
)
# Dynamic-quantization ops TensorRT's ONNX parser cannot import.
_DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
_CHECK_ROWS = 64
#: The copy of :mod:`toolkit.models.layers` (torch and the standard library only) that the PyTorch
#: variant's runner imports to re-apply a checkpoint's ``structure.json`` (another name than an
#: architecture's own ``layers.py``, which may be another file).
RUNNER_LAYERS_FILE = "tritonrec_layers.py"
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)


@dataclass
class PreparedVariant:
    """What :func:`prepare_variant` wrote, and what the variant's config must declare.

    Attributes:
        spec: the variant.
        inputs, outputs: the model's tensors (batch dimension first, ``None`` = dynamic), read
            from the files written (the ONNX graph, the TensorRT engine) or the architecture's signature.
        parameters: backend ``parameters`` (string values): ONNX Runtime thread counts, the
            Python runner's ``execution_provider``.
        precision: detected from the files written: ``fp32``, ``fp16``, ``int8`` or ``mixed``
            (INT8 ops in an FP16 graph).
        source: provenance for ``tritonrec.json`` (quantization, ops found, TensorRT version and GPU...).
        files: the files written, relative to the version folder.
    """

    spec: VariantSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, str]
    precision: str
    source: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _spec(name: str) -> VariantSpec:
    spec = VARIANT_SPECS.get(name)
    if spec is None:
        raise RepositoryError(f"unknown variant {name!r}; choose from {', '.join(VARIANT_SPECS)}", hint="see `tritonrec build --help`")
    return spec


def variant_unavailable(name: str) -> str | None:
    """``None`` when variant ``name`` can be built on this machine, else the reason.

    Only the TensorRT variants depend on the machine: they need an NVIDIA GPU, ``tensorrt``
    and ``polygraphy`` (e.g. ``"TensorRT needs an NVIDIA GPU: no CUDA device found"``,
    ``"tensorrt is not installed: make gpu-deps"``).

    Raises:
        RepositoryError: an unknown variant name.
    """
    spec = _spec(name)
    if spec.platform == "tensorrt_plan":
        return tensorrt_unavailable()
    return None


# ---------------------------------------------------------------------------------------------
# precision of an ONNX file


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return counts


def _quant_ops(counts: Mapping[str, int]) -> dict[str, int]:
    return {op: n for op, n in sorted(counts.items()) if op in QUANTIZATION_OP_TYPES or op.startswith("QLinear")}


def _onnx_summary(onnx_path: Path) -> tuple[str, dict[str, int], dict[str, int]]:
    """``(precision, quantization ops, float initializer counts by type)`` of an ONNX file."""
    try:
        model = onnx.load_model(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise RepositoryError(f"{onnx_path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    quant = _quant_ops(_op_counts(model))
    by_type = {"float32": 0, "float16": 0}
    for t in model.graph.initializer:
        if t.data_type in _FLOAT_TYPES:
            by_type["float32"] += 1
        elif t.data_type == onnx.TensorProto.FLOAT16:
            by_type["float16"] += 1
    fp16 = by_type["float16"] > 0
    precision = "mixed" if quant and fp16 else "int8" if quant else "fp16" if fp16 else "fp32"
    return precision, quant, by_type


def onnx_precision(onnx_path: Path) -> str:
    """The precision of an ONNX file's weights and compute, from its graph.

    ``int8`` when it holds quantization ops (:data:`QUANTIZATION_OP_TYPES` or ``QLinear*``:
    ONNX Runtime static Q/DQ or dynamic INT8), ``fp16`` when it has FLOAT16 initializers,
    ``mixed`` when both, else ``fp32``. Reads the graph only (external data is not loaded).

    Raises:
        RepositoryError: the file is not readable ONNX.
    """
    return _onnx_summary(Path(onnx_path))[0]


# ---------------------------------------------------------------------------------------------
# building blocks


def _check_rows(arrays: Mapping[str, np.ndarray], rows: int = _CHECK_ROWS) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[:rows] for k, v in arrays.items()}


def _fit_batch(onnx_model: Path, samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``samples`` cut or repeated to the ONNX file's batch when that batch is fixed (a ``max_batch_size: 0``
    build of a fixed-batch export), so that ONNX Runtime accepts them; unchanged when the batch is dynamic."""
    fixed = {s.name: s.shape[0] for s in read_io_specs(onnx_model)[0] if s.shape and s.shape[0] is not None}
    return {
        k: (np.resize(np.asarray(v), (fixed[k], *np.asarray(v).shape[1:])) if k in fixed else np.asarray(v)) for k, v in samples.items()
    }


def resolve_sample_inputs(
    checkpoint: Checkpoint, sample_inputs: Mapping[str, np.ndarray] | None, rows: int = _CHECK_ROWS
) -> dict[str, np.ndarray]:
    """``sample_inputs`` as numpy arrays, or, when ``None``, ``rows`` random in-range rows of the
    checkpoint's model (its architecture's ``example_inputs``, seed 0)."""
    if sample_inputs is not None:
        return {k: np.asarray(v) for k, v in sample_inputs.items()}
    return {k: v.numpy() for k, v in checkpoint.architecture.example_inputs(checkpoint.config, rows, seed=0).items()}


def _write_pytorch(version_dir: Path, checkpoint: Checkpoint) -> list[str]:
    if checkpoint.path is not None and (Path(checkpoint.path) / "model.pt").is_file():
        shutil.copyfile(Path(checkpoint.path) / "model.pt", version_dir / "model.pt")
        shutil.copyfile(Path(checkpoint.path) / "model_config.json", version_dir / "model_config.json")
    else:  # a checkpoint built in memory
        import torch

        torch.save(checkpoint.model.state_dict(), version_dir / "model.pt")
        (version_dir / "model_config.json").write_text(json.dumps(checkpoint.config.to_dict(), indent=2) + "\n")
    arch = checkpoint.architecture
    sources = []
    for source in arch.source_files:
        shutil.copyfile(source, version_dir / Path(source).name)
        sources.append(Path(source).name)
    structure = model_structure(checkpoint.model)
    if structure["replaced_modules"]:  # tables made int8 after the build: the runner re-applies them with the toolkit's layers
        (version_dir / STRUCTURE_FILE).write_text(json.dumps(structure, indent=2) + "\n")
        shutil.copyfile(Path(model_layers.__file__), version_dir / RUNNER_LAYERS_FILE)
        sources += [STRUCTURE_FILE, RUNNER_LAYERS_FILE]
    (version_dir / "architecture.json").write_text(json.dumps(arch.runner_manifest(), indent=2) + "\n")
    (version_dir / "model.py").write_bytes(python_model_source("torch_runner.py"))
    return ["model.pt", "model_config.json", *sources, "architecture.json", "model.py"]


def _onnx_file(onnx_model: Path | None, variant: str) -> Path:
    if onnx_model is None:
        raise RepositoryError(
            f"variant {variant} is built from an ONNX file, but none was given", hint="pass --onnx (from `tritonrec export`)"
        )
    onnx_model = Path(onnx_model)
    if not onnx_model.is_file():
        raise RepositoryError(f"ONNX file {onnx_model} for variant {variant} does not exist", hint="run `tritonrec export` first")
    return onnx_model


def _make_onnx(
    kind: str, onnx_model: Path, work_dir: Path, samples: Mapping[str, np.ndarray], cpu_target: str = "auto"
) -> tuple[Path, dict]:
    """The ONNX file of ``kind`` (fp32/int8/fp16) for ``onnx_model``, made in ``work_dir`` when needed.

    INT8 is quantized for the serving CPU ``cpu_target`` (:func:`toolkit.cpu.int8_settings`).
    """
    given, quant_ops, _ = _onnx_summary(onnx_model)
    if kind == "fp32":
        return onnx_model, {"onnx_file": "as given"}
    if kind == "int8":
        if quant_ops:
            return onnx_model, {"quantization": "as given (the ONNX file is already quantized)", "quantization_ops": quant_ops}
        dst = work_dir / "int8" / "model.onnx"
        settings = int8_settings(cpu_target)
        quantize_dynamic_int8(onnx_model, dst, sample_inputs=_check_rows(samples), cpu=settings.cpu_target)
        return dst, {
            "quantization": "ONNX Runtime dynamic INT8 (MatMul/Gemm weights per tensor, activations at run time)",
            "cpu_target": settings.cpu_target,
            "reduce_range": settings.reduce_range,
            "reduce_range_reason": settings.reason,
        }
    if given in ("fp16", "mixed"):
        return onnx_model, {"fp16": "as given (the ONNX file already has FP16 weights)"}
    dst = work_dir / "fp16" / "model.onnx"
    report = convert_fp16(onnx_model, dst, sample_inputs=samples)
    return dst, {
        "fp16": "ONNX Runtime float16 conversion, FP32 inputs and outputs",
        "kept_fp32": list(report.kept_fp32),
        "fp16_max_abs_diff": {k: float(v) for k, v in report.max_abs_diff.items()},
    }


def _prepare_tensorrt(
    spec: VariantSpec,
    version_dir: Path,
    onnx_model: Path,
    max_batch_size: int,
    samples: Mapping[str, np.ndarray],
    work_dir: Path,
    calibration_cache: Path | None,
    opt_batch_size: int | None,
) -> tuple[list[TensorSpec], list[TensorSpec], str, dict]:
    quant_ops = _onnx_summary(onnx_model)[1]
    dynamic = sorted(set(quant_ops) & _DYNAMIC_QUANT_OPS)
    if dynamic:
        raise RepositoryError(
            f"{onnx_model} holds dynamic-quantization ops {dynamic}, which TensorRT cannot import",
            hint="build TensorRT variants from the FP32 export or a static Q/DQ model (tritonrec compress with onnx_static_int8)",
        )
    source: dict = {}
    build_from, reference = onnx_model, onnx_model
    if spec.precision == "int8":
        if calibration_cache is not None:
            source["int8"] = f"implicit quantization from the calibration cache {calibration_cache}"
        elif quant_ops:
            source["int8"] = "explicit quantization: the given Q/DQ model"
        else:
            try:
                build_from = reference = quantize_qdq_for_tensorrt(onnx_model, work_dir / "qdq" / "model.onnx", samples)
            except CompressError as exc:
                raise RepositoryError(f"the Q/DQ INT8 model for TensorRT could not be made: {exc}", hint=exc.hint) from exc
            rows = next(iter(samples.values())).shape[0]
            source["int8"] = (
                f"explicit quantization: symmetric static Q/DQ INT8 (toolkit.optimize.quantize_qdq_for_tensorrt) calibrated (MinMax) "
                f"on {rows} sample rows"
            )
    elif quant_ops:
        raise RepositoryError(
            f"{onnx_model} is already INT8-quantized ({', '.join(quant_ops)}); the FP16 TensorRT variant needs the FP32 export",
            hint="build tensorrt_int8 from this file, or pass the FP32 ONNX file",
        )
    built = build_engine(
        build_from,
        version_dir / PLAN_FILE,
        max_batch_size=max_batch_size,
        precision=spec.precision,
        opt_batch_size=opt_batch_size,
        sample_inputs=samples,
        calibration_cache=calibration_cache,
        reference_onnx=reference,
    )
    source.update(
        {
            "tensorrt_version": built.info["tensorrt_version"],
            "gpu": built.info["gpu"],
            "compute_capability": built.info["compute_capability"],
            "note": built.info["note"],
            "build_info": BUILD_INFO_FILE,
        }
    )
    if built.comparison is not None:
        source["polygraphy_max_abs_diff"] = built.comparison.max_abs_diff
        source["polygraphy_atol"] = built.comparison.atol
    return built.inputs, built.outputs, built.precision, source


def prepare_variant(
    name: str,
    version_dir: Path,
    *,
    checkpoint: Checkpoint,
    onnx_model: Path | None,
    max_batch_size: int,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    work_dir: Path,
    execution_provider: str = "cpu",
    calibration_cache: Path | None = None,
    opt_batch_size: int | None = None,
    cpu_target: str = "auto",
) -> PreparedVariant:
    """Write variant ``name``'s model files into ``version_dir`` and say what its config declares.

    Args:
        name: a key of :data:`VARIANT_SPECS`.
        version_dir: the version folder (``<model>/<N>``; created if missing).
        checkpoint: the loaded checkpoint (:func:`toolkit.train.load_checkpoint`).
        onnx_model: its ONNX export (external data alongside); needed by all but ``pytorch``.
        max_batch_size: the config's value; sizes the TensorRT optimization profile.
        sample_inputs: real rows (in-range ids) by input name: ``dense_features`` float32 (N, D),
            ``sparse_ids`` int64 (N, S), ``multi_hot_ids`` int64 (N, G). Used for the FP16
            overflow scan, INT8 calibration, NaN/Inf checks and the TensorRT comparison.
            ``None``: 64 random in-range rows (not enough to calibrate ``tensorrt_int8``, which
            then refuses).
        work_dir: scratch space for intermediate files (created; the caller removes it).
        execution_provider: for the ``*_python`` twins, ONNX Runtime's provider in the runner:
            ``cpu`` (default) or ``cuda`` (needs ``onnxruntime-gpu`` in the server's Python).
        calibration_cache: for ``tensorrt_int8``: a TensorRT INT8 calibration cache to use
            instead of a Q/DQ model.
        opt_batch_size: TensorRT's optimization batch (default ``max_batch_size``).
        cpu_target: the CPU that will serve the ONNX Runtime INT8 variants
            (:data:`toolkit.cpu.CPU_TARGETS`; ``auto``: this machine's): decides ``reduce_range``.

    Returns:
        The variant's tensors, backend parameters, detected precision, provenance and files.

    Raises:
        RepositoryError: an unknown variant; a variant this machine cannot build (the reason);
            a missing ONNX file; quantization/conversion failures; an INT8 TensorRT build
            without real rows. ExportError from reading ONNX files and building engines
            (e.g. a TensorRT profile that does not cover ``max_batch_size``).
    """
    spec = _spec(name)
    reason = variant_unavailable(name)
    if reason is not None:
        raise RepositoryError(f"variant {name} cannot be built here: {reason}")
    if execution_provider not in EXECUTION_PROVIDERS:
        raise RepositoryError(f"execution_provider {execution_provider!r} must be one of {', '.join(EXECUTION_PROVIDERS)}")
    version_dir, work_dir = Path(version_dir), Path(work_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    intra, inter = thread_parameter_keys(platform=spec.platform, backend=spec.backend)
    threads = {intra: "1", inter: "1"}

    if name == "pytorch":
        files = _write_pytorch(version_dir, checkpoint)
        inputs, outputs = checkpoint.architecture.signature(checkpoint.config)
        return PreparedVariant(spec, inputs, outputs, {intra: "1"}, "fp32", {"runtime": "PyTorch eager FP32"}, files)

    onnx_model = _onnx_file(onnx_model, name)
    if spec.platform == "tensorrt_plan" and spec.precision == "int8" and sample_inputs is None and calibration_cache is None:
        given = _onnx_summary(onnx_model)[1]
        if not given:
            raise RepositoryError(
                "tensorrt_int8 calibrates INT8 ranges on real rows, but no sample_inputs were given",
                hint="pass rows of the checkpoint's data (the builder does), a Q/DQ ONNX file, or a calibration cache",
            )
    samples = _fit_batch(onnx_model, resolve_sample_inputs(checkpoint, sample_inputs))
    try:
        if spec.platform == "tensorrt_plan":
            inputs, outputs, precision, source = _prepare_tensorrt(
                spec, version_dir, onnx_model, max_batch_size, samples, work_dir, calibration_cache, opt_batch_size
            )
            return PreparedVariant(spec, inputs, outputs, {}, precision, source, [PLAN_FILE, BUILD_INFO_FILE])

        made, source = _make_onnx(spec.onnx_kind, onnx_model, work_dir, samples, cpu_target)
        copied = copy_onnx_model(made, version_dir)
        check_finite_outputs(copied, _check_rows(samples))
    except CompressError as exc:
        raise RepositoryError(f"cannot build variant {name} from {onnx_model}: {exc}", hint=exc.hint) from exc
    precision, quant_ops, _ = _onnx_summary(copied)
    if quant_ops:
        source.setdefault("quantization_ops", quant_ops)
    files = sorted(p.name for p in version_dir.iterdir() if p.is_file())
    inputs, outputs = read_io_specs(copied)
    if spec.backend == "python":
        (version_dir / "model.py").write_bytes(python_model_source(spec.runner))
        files = sorted({*files, "model.py"})
        parameters = {**threads, "execution_provider": execution_provider}
    else:
        parameters = threads
    return PreparedVariant(spec, inputs, outputs, parameters, precision, source, files)

"""Build a Triton model repository with every serving variant of one trained model (any registered architecture).

A build takes a checkpoint and its ONNX export and writes, for a placement *target*:

* one ranker model per serving variant (``<model>_<variant>``; the variants and what each
  needs are in :mod:`toolkit.repository.variants`),
* optionally the raw-feature ensembles (``<model>_preprocess`` → ranker → ``probability``
  as ``<model>_ensemble``, and the top-K ``<model>_topk``; see
  :mod:`toolkit.repository.ensemble`),

each with a config built from Triton's protobuf schema, ``model_warmup`` from real
in-range rows, a ``tritonrec.json`` record (role, variant, precision) and the saved
vocabularies.

Targets (``--target``):

=========  ====================================================  =============================
target     ranker variants                                        instance kind
=========  ====================================================  =============================
``cpu``    pytorch, onnx, onnx_int8, and the ONNX-Runtime-in-      ``KIND_CPU``
           Python twins onnx_python, onnx_int8_python (the
           bundled server has no onnxruntime backend)
``gpu``    pytorch, onnx, onnx_fp16, onnx_int8, tensorrt,          ``KIND_GPU`` (preprocess and
           tensorrt_int8                                          postprocess stay on CPU)
=========  ====================================================  =============================

A variant that cannot be built on this machine (TensorRT without a GPU) is skipped and
reported with the reason, never faked.

Atomic and versioned: everything is staged in a hidden folder next to the repository (not in
it: Triton tries every folder at the top of a repository as a model, hidden ones included)
and validated there (:func:`toolkit.repository.validate.check_repository`); only then is each
model installed as version N+1 next to N (:func:`toolkit.repository.versions.install_model`),
so a failed or interrupted build leaves every model as it was, and no version a server
may be serving is rewritten. The install itself is a few renames per model, one model
after another: only an interruption within those milliseconds can leave some models at
N+1 and others still at N (each model whole either way). The staging folder's name records
the building process (``.<repository>.staging-<pid>-<start ticks>-<random>@<host>``); a build
killed outright (SIGKILL, power loss) leaves it behind, and the next build into the same
repository deletes it once that process is gone, and keeps the folders of builds still
running (:func:`toolkit.repository.versions.remove_abandoned_folders`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from toolkit.cpu import resolve_cpu_target
from toolkit.data.checkpoint_split import split_seed
from toolkit.errors import ExportError, RepositoryError
from toolkit.export import check_batch_dimension, read_io_specs
from toolkit.repository.config import BatchingOptions, build_model_config, check_config_against, config_to_text, read_config
from toolkit.repository.ensemble import write_ensembles
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.repository.ranker_choice import choose_cpu_ranker
from toolkit.repository.validate import check_repository, validate_repository
from toolkit.repository.variants import VARIANT_SPECS, prepare_variant, resolve_sample_inputs, variant_unavailable
from toolkit.repository.versions import (
    install_model,
    make_owned_directory,
    model_folders,
    next_version,
    remove_abandoned_folders,
    staging_prefix,
)
from toolkit.repository.warmup import write_warmup
from toolkit.tensors import TensorSpec
from toolkit.train.checkpoint import Checkpoint, load_checkpoint

__all__ = ["VARIANTS", "TARGETS", "TARGET_VARIANTS", "BuiltModel", "SkippedVariant", "BuildResult", "build_repository"]

VARIANTS: tuple[str, ...] = tuple(VARIANT_SPECS)
TARGETS = ("cpu", "gpu")
TARGET_VARIANTS: dict[str, tuple[str, ...]] = {
    "cpu": ("pytorch", "onnx", "onnx_int8", "onnx_python", "onnx_int8_python"),
    "gpu": ("pytorch", "onnx", "onnx_fp16", "onnx_int8", "tensorrt", "tensorrt_int8"),
}
# The ensemble's ranker per target, in order of preference (the first one built is used).
ENSEMBLE_RANKERS: dict[str, tuple[str, ...]] = {
    "cpu": ("onnx_int8_python", "onnx_python", "pytorch"),
    "gpu": ("tensorrt", "onnx_fp16", "onnx", "pytorch"),
}
_INSTANCE_KIND = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
_SAMPLE_ROWS = 256


@dataclass(frozen=True)
class BuiltModel:
    """One model folder written by :func:`build_repository`."""

    name: str
    variant: str  # a ranker variant, or "preprocess" / "postprocess" / "ensemble" / "topk"
    path: Path
    runtime: str  # e.g. "platform: onnxruntime_onnx", "backend: python (ONNX Runtime INT8)"
    version: int = 1
    precision: str = "fp32"


@dataclass(frozen=True)
class SkippedVariant:
    """A variant asked for (or part of the target) that this machine cannot build, and why."""

    variant: str
    reason: str


@dataclass
class BuildResult:
    """What :func:`build_repository` wrote and what it skipped."""

    repository: Path
    models: list[BuiltModel] = field(default_factory=list)
    skipped: list[SkippedVariant] = field(default_factory=list)
    ensemble_ranker: str | None = None  # the ranker variant the ensembles call
    ensemble_ranker_reason: str = ""  # why that one (e.g. INT8 timed against FP32 on this CPU)

    def __iter__(self):
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, i: int) -> BuiltModel:
        return self.models[i]


def _check_onnx_matches(
    onnx_path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], weight_shapes: dict[str, tuple[int, ...]]
) -> None:
    hint = "export the ONNX file from this checkpoint with `tritonrec export`"
    onnx_in, onnx_out = read_io_specs(onnx_path)
    for kind, want, have in (("inputs", inputs, onnx_in), ("outputs", outputs, onnx_out)):
        # compared by name: Triton and every runner feed tensors by name, in whatever order the graph lists them
        w = sorted((s.name, s.dtype, len(s.shape)) for s in want)
        h = sorted((s.name, s.dtype, len(s.shape)) for s in have)
        if w != h:
            raise RepositoryError(
                f"{onnx_path}: ONNX {kind} {[s.describe() for s in have]} do not match the checkpoint's {[s.describe() for s in want]}",
                hint=hint,
            )
    # The same tensors do not make the same model: an export of another checkpoint (other table
    # sizes or widths) keeps its weights under the state dict's names, with other shapes.
    graph = onnx.load_model(str(onnx_path), load_external_data=False).graph
    wrong = [
        f"{t.name} {list(t.dims)} (checkpoint: {list(weight_shapes[t.name])})"
        for t in graph.initializer
        if t.name in weight_shapes and tuple(t.dims) != weight_shapes[t.name]
    ]
    if wrong:
        raise RepositoryError(f"{onnx_path}: ONNX weights do not match the checkpoint's: {', '.join(wrong)}", hint=hint)


def _resolve_variants(target: str, variants: Sequence[str] | None) -> list[str]:
    if target not in TARGETS:
        raise RepositoryError(
            f"unknown target {target!r}; choose from {', '.join(TARGETS)}", hint="cpu: KIND_CPU models; gpu: KIND_GPU, FP16 and TensorRT"
        )
    chosen = list(variants) if variants else list(TARGET_VARIANTS[target])
    unknown = [v for v in chosen if v not in VARIANT_SPECS]
    if unknown or not chosen:
        raise RepositoryError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if len(set(chosen)) != len(chosen):
        raise RepositoryError(f"variants {chosen} name one variant twice")
    return chosen


def _write_warmup(model_dir: Path, inputs: Sequence[TensorSpec], samples: Mapping[str, np.ndarray], opts: BatchingOptions) -> list[dict]:
    """``model_warmup`` from real rows: one row per batch size when the model batches; without
    batching (``max_batch_size: 0``) one whole request of the model's own (fixed, else 1) batch."""
    if opts.max_batch_size > 0:
        return write_warmup(model_dir, {t.name: samples[t.name] for t in inputs}, list(opts.warmup_batch_sizes))
    request = {}
    for t in inputs:
        rows = np.asarray(samples[t.name])
        n = t.shape[0] if t.shape and t.shape[0] is not None else 1
        request[t.name] = np.resize(rows, (n, *rows.shape[1:]))
    return write_warmup(model_dir, request, [1], batched=False)


def _check_joined(staging: Path, repository: Path, staged: Sequence[str]) -> None:
    """Validate the repository as it will be once the staged models are installed.

    A view (symlinks in a hidden folder of the staging area) holds the staged models and every
    installed model the build does not replace, so ensembles already in the repository are
    checked against the new versions of their steps. Errors the repository already had are
    tolerated (a broken model the build does not touch does not block it); any new one raises.

    Raises:
        RepositoryError: from :func:`toolkit.repository.validate.check_repository`.
    """
    view = staging / ".joined"
    view.mkdir()
    existing = model_folders(repository) if repository.is_dir() else []
    for folder in existing:
        if folder.name not in staged:
            (view / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    for name in staged:
        (view / name).symlink_to((staging / name).resolve(), target_is_directory=True)
    before = [f for f in validate_repository(repository) if f.severity == "error"] if existing else []
    check_repository(view, tolerated=before)


def _check_same_filesystem(repository: Path) -> None:
    """Refuse a repository that is a mount point: its staging folder (in the parent) could not be renamed into it.

    Triton tries every folder at the top of a repository as a model, hidden ones included, so
    the staging folder cannot live inside it.

    Raises:
        RepositoryError: ``repository`` and its parent folder are on different filesystems.
    """
    if repository.is_dir() and os.stat(repository).st_dev != os.stat(repository.parent).st_dev:
        raise RepositoryError(
            f"model repository {repository} is on another filesystem than its parent folder {repository.parent}: "
            "a build stages next to the repository and renames each model into it, which cannot cross filesystems",
            hint=f"build into a folder inside the mount (e.g. {repository / 'models'}) and serve that folder",
        )


def _placed(options: BatchingOptions, target: str) -> BatchingOptions:
    """``options`` with the target's instance kind, unless instance groups were given explicitly."""
    if options.instance_groups:
        return options
    return replace(options, instance_kind=_INSTANCE_KIND[target])


def build_repository(
    repository: Path,
    *,
    checkpoint: Path | Checkpoint,
    onnx_model: Path | None = None,
    model_name: str = "dlrm",
    options: BatchingOptions | Callable[[str], BatchingOptions] | None = None,
    variants: Sequence[str] | None = None,
    target: Literal["cpu", "gpu"] = "cpu",
    ensembles: bool = False,
    ensemble_ranker: str | None = None,
    top_k: int | None = 10,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    calibration_cache: Path | None = None,
    cpu_target: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Write the serving variants of one checkpoint (and optionally its ensembles) into ``repository``.

    Args:
        repository: the model repository folder (created if missing). Other models in it are kept.
        checkpoint: a folder written by :func:`toolkit.train.save_checkpoint`, or a
            :class:`~toolkit.train.checkpoint.Checkpoint` in memory (``path`` None: a user's model
            loaded by :func:`toolkit.models.user.load_model_file`, whose metadata then names its file).
        onnx_model: the ONNX file exported from that checkpoint (external data alongside);
            needed by every variant but ``pytorch``.
        model_name: prefix of the model folders (``<model_name>_<variant>``).
        options: batching and placement, one for all variants or a function of the variant
            name (a build file's per-variant overrides). Default :class:`BatchingOptions` with
            the target's instance kind. ``gpu_execution_accelerator`` applies to the
            ``onnxruntime_onnx`` models only and is dropped for the others.
        variants: ranker variants to build (default: the target's, :data:`TARGET_VARIANTS`).
        target: ``cpu`` or ``gpu`` placement profile (module docstring).
        ensembles: also write ``<model>_preprocess``, ``<model>_ensemble`` and, when ``top_k``,
            ``<model>_postprocess`` + ``<model>_topk``.
        ensemble_ranker: the ranker variant the ensembles call (default: the target's first
            built variant in :data:`ENSEMBLE_RANKERS`, else the first variant built; on the CPU
            target INT8 only when it is timed faster than FP32 on this machine,
            :func:`toolkit.repository.ranker_choice.choose_cpu_ranker`); must be among the
            variants built.
        calibration_cache: a TensorRT INT8 calibration cache for ``tensorrt_int8`` (instead of
            a Q/DQ model calibrated on ``sample_inputs``).
        cpu_target: the CPU that will serve the ONNX Runtime INT8 variants (``auto``: this
            machine's; ``avx2`` or ``vnni`` for a repository served elsewhere): decides
            ``reduce_range`` (:mod:`toolkit.cpu`).
        sample_inputs: real rows by input name (``dense_features`` float32 (N, D), ``sparse_ids``
            int64 (N, S), ``multi_hot_ids`` int64 (N, G)) for warmup, FP16 overflow checks, INT8
            calibration and TensorRT comparisons. Default: 256 random in-range rows.
        progress: called with one line per step (the CLI prints it).

    Before staging, the staging and temporary folders that killed builds of this repository
    left behind are deleted (those whose process is gone; ``progress`` names each one removed
    or kept).

    Returns:
        The models written (each as version N+1 of its folder) and the variants skipped here.

    Raises:
        RepositoryError: unknown target/variant, a bad model name, an ONNX file that does not fit
            the checkpoint, a config that does not validate, no buildable variant left, or a
            repository that is a mount point (on another filesystem than its parent folder).
            CheckpointError from reading the checkpoint.
    """
    say = progress or (lambda _line: None)
    chosen = _resolve_variants(target, variants)
    cpu_target = resolve_cpu_target(cpu_target)
    if not model_name or not model_name.replace("_", "").replace("-", "").isalnum():
        raise RepositoryError(f"model name {model_name!r} must be letters, digits, '-' or '_'")
    options_for: Callable[[str], BatchingOptions]
    if options is None or isinstance(options, BatchingOptions):
        base = options or BatchingOptions()
        options_for = lambda _variant: base  # noqa: E731
    else:
        options_for = options
    repository = Path(repository)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    inputs, outputs = ckpt.architecture.signature(ckpt.config)
    result = BuildResult(repository)

    buildable = []
    for v in chosen:
        reason = variant_unavailable(v)
        if reason is None:
            buildable.append(v)
        else:
            result.skipped.append(SkippedVariant(v, reason))
            say(f"skipped {model_name}_{v}: {reason}")
    if not buildable:
        raise RepositoryError(
            f"none of the variants {chosen} can be built here: " + "; ".join(f"{s.variant}: {s.reason}" for s in result.skipped)
        )
    ranker = None
    if ensembles:
        # the target's preferred ranker among those built, else the first one built ("the ranker is any variant")
        preference = [ensemble_ranker] if ensemble_ranker else [*ENSEMBLE_RANKERS[target], *buildable]
        ranker = next((v for v in preference if v in buildable), None)
        if ranker is None:
            raise RepositoryError(
                f"the ensemble ranker {ensemble_ranker or ' / '.join(preference)} is not among the variants built ({', '.join(buildable)})",
                hint="add it with --variant, or choose another with --ensemble-ranker",
            )

    onnx_path = Path(onnx_model) if onnx_model is not None else None
    needs_onnx = any(VARIANT_SPECS[v].name != "pytorch" for v in buildable)
    if needs_onnx:
        if onnx_path is None:
            raise RepositoryError(f"variants {[v for v in buildable if v != 'pytorch']} need an ONNX file", hint="pass --onnx")
        try:
            check_batch_dimension(onnx_path, max(options_for(v).max_batch_size for v in buildable if v != "pytorch"))
        except ExportError as exc:
            raise RepositoryError(f"cannot build the ONNX variants: {exc}", hint=exc.hint) from exc
        weight_shapes = {name: tuple(t.shape) for name, t in ckpt.model.state_dict().items()}
        _check_onnx_matches(onnx_path, inputs, outputs, weight_shapes)
    samples = resolve_sample_inputs(ckpt, sample_inputs, rows=_SAMPLE_ROWS)

    repository.parent.mkdir(parents=True, exist_ok=True)
    _check_same_filesystem(repository)
    leftovers = remove_abandoned_folders(repository)
    for path in leftovers.removed:
        say(f"removed {path}: left by a build whose process is gone")
    for path, reason in leftovers.kept:
        say(f"left {path} alone: {reason}")
    staging = make_owned_directory(staging_prefix(repository), repository.parent)
    try:
        ranker_configs = {}
        for variant in buildable:
            name = f"{model_name}_{variant}"
            version = next_version(repository / name)
            model_dir = staging / name
            version_dir = model_dir / str(version)
            version_dir.mkdir(parents=True)
            say(f"building {name} (version {version})")
            try:
                prepared = prepare_variant(
                    variant,
                    version_dir,
                    checkpoint=ckpt,
                    onnx_model=onnx_path,
                    max_batch_size=options_for(variant).max_batch_size,
                    sample_inputs=samples,
                    work_dir=staging / f".work-{variant}",
                    calibration_cache=Path(calibration_cache) if calibration_cache and variant == "tensorrt_int8" else None,
                    cpu_target=cpu_target,
                )
            except ExportError as exc:
                raise RepositoryError(f"cannot build {name}: {exc}", hint=exc.hint) from exc
            spec = prepared.spec
            opts = _placed(options_for(variant), target)
            if opts.gpu_execution_accelerator and spec.platform != "onnxruntime_onnx":
                # an ONNX Runtime execution accelerator means nothing to the other runtimes
                opts = replace(opts, gpu_execution_accelerator=None, tensorrt_precision_mode="FP32")
            warmup = _write_warmup(model_dir, prepared.inputs, samples, opts) if opts.warmup_batch_sizes else None
            parameters = dict(prepared.parameters)
            if spec.platform != "tensorrt_plan":  # ONNX Runtime / PyTorch thread counts from the options
                parameters.update(opts.thread_parameters(platform=spec.platform, backend=spec.backend))
            config = build_model_config(
                name,
                prepared.inputs,
                prepared.outputs,
                opts,
                platform=spec.platform,
                backend=spec.backend,
                parameters=parameters,
                warmup=warmup,
            )
            (model_dir / "config.pbtxt").write_text(config_to_text(config))
            parsed = read_config(model_dir / "config.pbtxt")
            if parsed != config:
                raise RepositoryError(f"{name}/config.pbtxt does not parse back to the config that was written")
            check_config_against(parsed, inputs, outputs)
            # The vocabularies travel with every model: clients and ensembles map raw values with them.
            if ckpt.encoder is not None:
                shutil.copyfile(ckpt.path / "vocabularies.json", model_dir / "vocabularies.json")
            model_file = getattr(ckpt.config, "source_file", "in memory")
            origin = {"checkpoint": str(ckpt.path)} if ckpt.path is not None else {"model_file": model_file}
            if ckpt.encoder is not None:  # rows from a MovieLens folder: `verify` rebuilds the same test split
                origin["split_seed"] = split_seed(ckpt.metrics)
            source = {**origin, **({"onnx": str(onnx_path)} if onnx_path else {}), **prepared.source}
            write_metadata(model_dir, ModelMetadata("ranker", variant, prepared.precision, source=source))
            ranker_configs[variant] = (config, prepared.precision)
            result.models.append(BuiltModel(name, variant, repository / name, spec.description, version, prepared.precision))
        shutil.rmtree(staging / ".work", ignore_errors=True)
        for work in staging.glob(".work-*"):
            shutil.rmtree(work, ignore_errors=True)

        if ensembles:
            if ckpt.encoder is None:
                raise RepositoryError(
                    f"{ckpt.path or getattr(ckpt.config, 'source_file', 'the model')}: the checkpoint has no vocabularies "
                    "(trained on pre-encoded ids, or a model file's own module): no raw features to map",
                    hint="build without --ensembles",
                )
            result.ensemble_ranker_reason = f"{ranker}: " + (
                "asked for" if ensemble_ranker else f"the {target} target's preferred ranker built"
            )
            if not ensemble_ranker and ranker == "onnx_int8_python" and "onnx_python" in ranker_configs:
                staged = {
                    v: staging / f"{model_name}_{v}" / str(next_version(repository / f"{model_name}_{v}")) / "model.onnx"
                    for v in (ranker, "onnx_python")
                }
                say("timing INT8 against FP32 on this CPU for the ensembles' ranker")
                ranker, result.ensemble_ranker_reason = choose_cpu_ranker(
                    (ranker, staged[ranker]), ("onnx_python", staged["onnx_python"]), samples, cpu_target
                )
            result.ensemble_ranker = ranker
            config, precision = ranker_configs[ranker]
            say(f"building the raw-feature ensembles on {config.name}")
            names = [f"{model_name}_{suffix}" for suffix in ("preprocess", "ensemble", "postprocess", "topk")]
            version = max(next_version(repository / n) for n in names)  # one version for the whole set
            ranker_options = _placed(options_for(ranker), target)
            ensemble_options = replace(
                ranker_options,
                instance_groups=[],
                instance_kind="KIND_CPU",  # numpy pre/postprocessing
                instance_count=max(g.count for g in ranker_options.groups),  # keep up with the ranker's instances
                warmup_batch_sizes=[],
                gpu_execution_accelerator=None,
                tensorrt_precision_mode="FP32",
            )
            for model in write_ensembles(
                staging,
                model_name=model_name,
                ranker_config=config,
                encoder=ckpt.encoder.to_dict(),
                options=ensemble_options,
                top_k=top_k,
                ranker_precision=precision,
                version=str(version),
            ):
                kind = "topk" if model.name == f"{model_name}_topk" else model.role
                runtime = "platform: ensemble" if model.config.platform == "ensemble" else f"backend: {model.config.backend} ({model.role})"
                carries = model.config.platform == "ensemble"  # an ensemble's precision is its ranker's
                result.models.append(BuiltModel(model.name, kind, repository / model.name, runtime, version, precision if carries else "-"))

        say("validating the staged models with the repository they join")
        _check_joined(staging, repository, [m.name for m in result.models])
        for model in result.models:
            install_model(staging / model.name, repository)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result

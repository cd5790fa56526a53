"""``tritonrec build``: write a Triton model repository with every serving variant and the raw-feature ensembles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit.cli._common import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA_DIR,
    DEFAULT_ONNX,
    DEFAULT_REPOSITORY,
    CheckpointDir,
    CpuTarget,
    DataDir,
    ModelFile,
    OnnxPath,
    RepositoryDir,
    console,
    print_note,
)
from toolkit.errors import ModelFileError, RepositoryError

if TYPE_CHECKING:
    from toolkit.repository import InstanceGroup, VersionPolicy
    from toolkit.train.checkpoint import Checkpoint

# toolkit.repository.builder.VARIANTS, for --variant's help without importing the builder (torch, onnx) at start-up;
# tests/unit/cli/test_cli_imports.py checks that the two agree.
VARIANTS = ("pytorch", "onnx", "onnx_int8", "onnx_fp16", "onnx_python", "onnx_int8_python", "onnx_fp16_python", "tensorrt", "tensorrt_int8")


def _instance_group(text: str) -> InstanceGroup:
    from toolkit.repository import InstanceGroup

    kind, _, count = text.partition(":")
    kinds = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "kind_cpu": "KIND_CPU", "kind_gpu": "KIND_GPU"}
    if kind.lower() not in kinds or (count and not count.isdigit()):
        raise RepositoryError(f"--instance-group {text!r}: expected KIND[:COUNT], e.g. gpu:2 or cpu:1")
    return InstanceGroup(kinds[kind.lower()], int(count or 1))


def _version_policy(text: str) -> VersionPolicy:
    from toolkit.repository import VersionPolicy

    kind, _, rest = text.partition(":")
    try:
        if kind == "all" and not rest:
            return VersionPolicy("all")
        if kind == "latest":
            return VersionPolicy("latest", num_versions=int(rest or 1))
        if kind == "specific":
            return VersionPolicy("specific", versions=[int(v) for v in rest.split(",")])
    except ValueError:
        pass
    raise RepositoryError(f"--version-policy {text!r}: expected latest[:N], all or specific:V1,V2")


def _architecture(checkpoint: Path) -> str:
    """The ``architecture`` of the checkpoint's ``model_config.json`` (read without torch); ``dlrm`` when unreadable
    (loading the checkpoint then reports what is wrong with it)."""
    try:
        name = json.loads((Path(checkpoint) / "model_config.json").read_text()).get("architecture")
    except (OSError, ValueError, AttributeError):
        return "dlrm"
    return name if isinstance(name, str) and name.replace("_", "").isalnum() else "dlrm"


def build(
    checkpoint: CheckpointDir = DEFAULT_CHECKPOINT,
    onnx: OnnxPath = DEFAULT_ONNX,
    repository: RepositoryDir = DEFAULT_REPOSITORY,
    build_file: Annotated[Path | None, typer.Option(help="JSON build file with every choice below (options given here win).")] = None,
    target: Annotated[
        str | None, typer.Option(help="cpu (KIND_CPU; ONNX FP32/INT8 + Python twins) or gpu (KIND_GPU; FP16, TensorRT). [default: cpu]")
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(help="Prefix of the model folders: `<model-name>_<variant>`. [default: its architecture, e.g. dlrm]"),
    ] = None,
    variant: Annotated[
        list[str] | None, typer.Option(help=f"Variants to build (repeatable): {', '.join(VARIANTS)}. Default: the target's.")
    ] = None,
    ensembles: Annotated[bool | None, typer.Option(help="Build the raw-feature ensembles (and top-K). [default: on]")] = None,
    ensemble_ranker: Annotated[str | None, typer.Option(help="Variant the ensembles call. Default: the target's fastest.")] = None,
    top_k: Annotated[int | None, typer.Option(help="K of the `<model>_topk` ensemble; 0 builds none. [default: 10]")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    max_batch_size: Annotated[int | None, typer.Option(help="Triton max_batch_size; 0 turns batching off. [default: 256]")] = None,
    dynamic_batching: Annotated[bool | None, typer.Option(help="Let Triton's dynamic batcher merge requests. [default: on]")] = None,
    max_queue_delay_us: Annotated[int | None, typer.Option(help="dynamic_batching.max_queue_delay_microseconds. [default: 100]")] = None,
    preferred_batch_size: Annotated[list[int] | None, typer.Option(help="dynamic_batching.preferred_batch_size (repeatable).")] = None,
    instance_count: Annotated[int | None, typer.Option(help="Model instances (one group of the target's kind). [default: 1]")] = None,
    instance_group: Annotated[
        list[str] | None, typer.Option(help="KIND:COUNT instance groups (repeatable), e.g. --instance-group gpu:2 --instance-group cpu:1.")
    ] = None,
    queue_timeout_us: Annotated[int | None, typer.Option(help="default_queue_policy.default_timeout_microseconds (0: none).")] = None,
    max_queue_size: Annotated[int | None, typer.Option(help="default_queue_policy.max_queue_size (0: unbounded).")] = None,
    response_cache: Annotated[bool | None, typer.Option(help="response_cache { enable: true } (the server needs --cache-config).")] = None,
    version_policy: Annotated[str | None, typer.Option(help="latest[:N], all or specific:V1,V2. [default: latest:1]")] = None,
    gpu_execution_accelerator: Annotated[
        str | None, typer.Option(help="ONNX Runtime execution accelerator for the onnx* platform models on GPU: tensorrt or cuda.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime / PyTorch intra-op threads per instance. [default: 1]")] = None,
    calibration_cache: Annotated[
        Path | None, typer.Option(help="TensorRT INT8 calibration cache for tensorrt_int8 (instead of calibrating on real rows).")
    ] = None,
    warmup_batch_size: Annotated[
        list[int] | None, typer.Option(help="model_warmup batch sizes, from real rows (repeatable; 0 for none). [default: 1]")
    ] = None,
    cpu: CpuTarget = "auto",
    model_file: ModelFile = None,
) -> None:
    """Build the Triton model repository: every serving variant of a checkpoint, and its raw-feature ensembles.

    Variants (`<model>_<variant>`): pytorch (FP32 eager, the baseline), onnx, onnx_int8, onnx_fp16
    (platform onnxruntime_onnx), their ONNX-Runtime-in-Python twins (*_python, for servers without
    the onnxruntime backend), tensorrt and tensorrt_int8 (GPU only; skipped with the reason elsewhere).
    Every config comes from Triton's protobuf schema and is validated (`tritonrec validate`) before
    anything is installed; each model becomes version N+1 next to N, so a failed build changes nothing.
    With --model-file (a model of your own, exported with `tritonrec export --model-file`) there is no
    checkpoint: no ensembles by default (no vocabularies), warmup and checks on random in-range rows,
    and the model folders are named after the file unless --model-name says otherwise.
    """
    from toolkit.repository import (
        TARGET_VARIANTS,
        VARIANTS,
        BatchingOptions,
        BuildFile,
        build_repository,
        load_build_file,
        validate_repository,
    )
    from toolkit.repository.rows import checkpoint_sample_rows

    spec = load_build_file(build_file) if build_file else BuildFile()
    if build_file is not None and model_name is None:
        model_name = spec.model_name
    target = target or spec.target
    variants = variant or spec.variants
    spec.check_variants(VARIANTS)
    explicit: dict = {}
    for name, value in (
        ("max_batch_size", max_batch_size),
        ("dynamic_batching", dynamic_batching),
        ("max_queue_delay_us", max_queue_delay_us),
        ("preferred_batch_sizes", preferred_batch_size),
        ("instance_count", instance_count),
        ("queue_timeout_us", queue_timeout_us),
        ("max_queue_size", max_queue_size),
        ("response_cache", response_cache),
        ("gpu_execution_accelerator", gpu_execution_accelerator),
        ("intra_op_threads", threads),
    ):
        if value is not None:
            explicit[name] = value
    if instance_group:
        explicit["instance_groups"] = [_instance_group(g) for g in instance_group]
    if version_policy is not None:
        explicit["version_policy"] = _version_policy(version_policy)
    if warmup_batch_size is not None:
        explicit["warmup_batch_sizes"] = [b for b in warmup_batch_size if b > 0]
    if explicit.get("max_batch_size") == 0 and "dynamic_batching" not in explicit:
        explicit["dynamic_batching"] = False  # --max-batch-size 0 turns batching off, as its help says
    # the target's instance kind; the CLI warms every model up with one real row
    base = BatchingOptions(warmup_batch_sizes=[1], instance_kind="KIND_GPU" if target == "gpu" else "KIND_CPU")

    def options_for(v: str) -> BatchingOptions:
        try:
            return replace(spec.batching_options(v, base=base), **explicit)
        except RepositoryError as exc:
            raise RepositoryError(f"variant {v!r}: {exc}", hint=exc.hint) from exc

    with_ensembles = spec.ensembles if ensembles is None else ensembles
    k = top_k if top_k is not None else spec.top_k
    source: Path | Checkpoint = checkpoint
    if model_file is not None:
        from toolkit.models.user import load_model_file
        from toolkit.train.checkpoint import Checkpoint

        if checkpoint != DEFAULT_CHECKPOINT:
            raise ModelFileError(f"give --checkpoint ({checkpoint}) or --model-file ({model_file}), not both")
        model = load_model_file(model_file)
        source = Checkpoint(model, model.config, None, {}, None)
        with_ensembles = bool(ensembles)  # a model file has no vocabularies: only when asked (and then refused, saying why)
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(model.config.source_file).stem)
        model_name = model_name or stem
    samples = None if model_file is not None else checkpoint_sample_rows(checkpoint, data_dir, on_note=print_note)
    with console.status("building") as status:
        result = build_repository(
            repository,
            checkpoint=source,
            onnx_model=onnx,
            model_name=model_name or _architecture(checkpoint),
            options=options_for,
            variants=variants or None,
            target=target,
            ensembles=with_ensembles,
            ensemble_ranker=ensemble_ranker or spec.ensemble_ranker,
            top_k=k or None,
            sample_inputs=samples,
            calibration_cache=calibration_cache or (Path(spec.calibration_cache) if spec.calibration_cache else None),
            cpu_target=cpu,
            progress=lambda line: status.update(line),
        )
    table = Table(title=f"Triton model repository {repository} (target {target}: {', '.join(TARGET_VARIANTS[target])})")
    for column in ("model", "kind", "version", "precision", "runtime"):
        table.add_column(column)
    for b in result.models:
        table.add_row(b.name, b.variant, str(b.version), b.precision, b.runtime)
    console.print(table)
    if result.ensemble_ranker:
        console.print(f"ensembles call {escape(result.ensemble_ranker_reason)}", highlight=False)
    for s in result.skipped:
        console.print(f"[yellow]skipped[/yellow] {s.variant}: {escape(s.reason)}", highlight=False)
    findings = validate_repository(repository)
    warnings = [f for f in findings if f.severity == "warning"]
    errors = [f for f in findings if f.severity == "error"]
    for f in warnings:
        console.print(f"[yellow]warning[/yellow] {escape(f.model)} {escape(f.field)}: {escape(f.message)}", highlight=False)
    if errors:  # models outside this build (the build itself was validated before it was installed)
        console.print(f"[red]{len(errors)} error(s) in other models of {repository}[/red]: run `tritonrec validate {repository}`")
        raise typer.Exit(1)
    console.print(f"{repository}: {len(result.models)} model(s) written and validated")

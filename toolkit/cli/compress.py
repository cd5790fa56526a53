"""``tritonrec compress``: apply a compression recipe to a checkpoint and measure it side by side."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, CpuTarget, DataDir, ModelFile, console
from toolkit.errors import ModelFileError

StudentFile = Annotated[
    str | None,
    typer.Option(
        "--student-file",
        help="With --model-file: the student the recipe's distill step trains, PATH.py:FACTORY like --model-file "
        "(a module taking the same inputs by name).",
    ),
]
RowsFile = Annotated[
    Path | None,
    typer.Option(
        "--rows",
        help="With --model-file: labelled rows, an .npz with one array per input of the signature plus 'label' (0/1), "
        "split 80/10/10 (seed 42) to fine-tune, distill and check AUC; without it those steps are skipped, saying so.",
    ),
]


def outcomes_table(report: dict) -> Table:
    """Per recipe step (then the export and the AUC check): applied, skipped or refused, and why."""
    table = Table(title=f"{report['module']}: what each step did")
    for column in ("step", "status", "why / how"):
        table.add_column(column, no_wrap=column != "why / how")
    colors = {"applied": "green", "skipped": "yellow", "refused": "red"}
    for o in report["steps"]:
        table.add_row(o["kind"], f"[{colors[o['status']]}]{o['status']}[/]", o["reason"])
    return table


def _compress_model_file(
    model_file: str, student_file: str | None, rows: Path | None, recipe: Path, out: Path, cpu: str, rounds: int
) -> None:
    from toolkit.compress.recipe import load_recipe
    from toolkit.models.user import load_model_file
    from toolkit.optimize.bench import machine_info
    from toolkit.optimize.module import compress_module, load_labelled_rows, save_module_compression

    spec = load_recipe(recipe)
    module = load_model_file(model_file)
    student = load_model_file(student_file) if student_file else None
    labelled = load_labelled_rows(rows, module.config.inputs) if rows is not None else None
    with tempfile.TemporaryDirectory(prefix="tritonrec-compress-") as tmp:
        with console.status(f"compressing {model_file} with {recipe}") as status:
            result = compress_module(
                module,
                recipe=spec,
                workdir=Path(tmp),
                rows=labelled,
                student=student,
                cpu_target=cpu,
                timing_rounds=rounds,
                on_log=status.update,
            )
        result.report["command"] = shlex.join(["tritonrec", *sys.argv[1:]])
        result.report["machine"] = machine_info()
        save_module_compression(result, out)
    console.print(outcomes_table(result.report))
    console.print(f"compressed model.onnx, recipe and report written to [bold]{out}[/bold]")
    if (out / "skipped.json").is_file():
        console.print(f"[yellow]{json.loads((out / 'skipped.json').read_text())['checkpoint']}[/yellow]", highlight=False)
    distilled = any(o.kind == "distill" and o.status == "applied" for o in result.outcomes)
    served = student_file if distilled else model_file  # the module model.onnx was exported from
    console.print(f"serve it: tritonrec build --model-file {served} --onnx {out / 'model.onnx'} --variant onnx_python", highlight=False)
    if result.report.get("within_budget") is False:
        t = result.report["test"]
        console.print(
            f"[red]{spec.name}: test AUC {t['compressed']['auc']:.4f} is {t['auc_ratio']:.2%} of the module's, "
            f"below the budget of {spec.min_auc_ratio:.1%}: not fit to serve[/red]"
        )
        raise typer.Exit(1)


def variants_table(report: dict) -> Table:
    """Per variant: size, MACs, AUC and budget, batch-1 latency and batch-256 throughput."""
    table = Table(title=f"Side by side on {report['data']} (one CPU thread each)")
    for column in ("variant", "size MB", "MACs", "test AUC", "budget", "b1 ms", "b256 rows/s", "× PyTorch"):
        table.add_column(column, justify="left" if column in ("variant", "budget") else "right", no_wrap=column == "variant")
    for v in report["variants"]:
        budget = "–" if v["within_budget"] is None else ("ok" if v["within_budget"] else "[red]FAIL[/red]")
        table.add_row(
            v["name"],
            f"{v['size_bytes'] / 1e6:.2f}",
            f"{v['macs_per_sample']:,}",
            "–" if v["test_auc"] is None else f"{v['test_auc']:.4f}",
            budget,
            f"{v['latency_ms_b1']:.3f}",
            f"{v['throughput_rps_b256']:,.0f}",
            f"{v['throughput_vs_pytorch_b256']:.2f}",
        )
    return table


def selection_lines(report: dict, name: str) -> str:
    """The CPU seen, the INT8 settings, and why each optional step of recipe ``name`` was kept or dropped."""
    cpu = report.get("cpu", {})
    lines = [f"CPU: {cpu.get('cpu', '?')} ({cpu.get('cpu_target', '?')}: {', '.join(cpu.get('simd_flags', []))})"]
    int8 = report.get("int8", {})
    if int8:
        lines.append(f"INT8 for {int8['cpu_target']}: reduce_range={int8['reduce_range']} ({int8['reason']})")
    row = next((v for v in report["variants"] if v["name"] == name), {})
    for step, verdict in row.get("selection", {}).get("selection", {}).get("steps", {}).items():
        lines.append(f"{step}: {verdict['reason']}")
    for step, why in row.get("selection", {}).get("refused", {}).items():
        lines.append(f"{step}: refused, left out: {why}")
    return "\n".join(lines)


def compress_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder written by `tritonrec train`.")] = DEFAULT_CHECKPOINT,
    recipe: Annotated[Path, typer.Option(help="Recipe JSON: an ordered list of steps (see recipes/ for examples).")] = Path(
        "recipes/default.json"
    ),
    out: Annotated[Path, typer.Option(help="Folder for the compressed checkpoint, model.onnx, recipe.json and report.")] = Path(
        "artifacts/compressed"
    ),
    data_dir: DataDir = DEFAULT_DATA_DIR,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds (medians are reported).")] = 3,
    cpu: CpuTarget = "auto",
    model_file: ModelFile = None,
    student_file: StudentFile = None,
    rows: RowsFile = None,
) -> None:
    """Compress a checkpoint with a recipe (pruning, distillation, INT8 embeddings, ONNX INT8/FP16).

    The result is measured side by side with the FP32 PyTorch eager baseline and the FP32
    ONNX model: parameters, bytes, MACs, test AUC and log loss, batch-1 latency and
    batch-256 throughput. A result below the recipe's accuracy budget (default: test AUC >=
    99% of the baseline) is reported as failing and the command exits 1.

    Optional steps (the ONNX step, a last quantize_embeddings) are kept only where they make the
    model faster on this CPU within the budget (the recipe's "select": max_throughput by default,
    min_latency, or as_written); the report says why each was kept or dropped. INT8 weights are
    quantized for --cpu (7-bit on x86-64 without VNNI, where 8-bit ones lose accuracy).

    --model-file PATH.py:FACTORY compresses a module of your own instead (any nn.Module with
    nn.Embedding/nn.EmbeddingBag tables and nn.Linear layers): pruning through Torch-Pruning's
    dependency graph, INT8 tables in place, distillation into --student-file, the ONNX step; with
    --rows its labelled rows fine-tune, distill and check the AUC budget. A step that cannot apply
    is refused naming the module path, the other steps still run; the steps are applied as written.
    """
    if model_file is not None:
        if checkpoint != DEFAULT_CHECKPOINT:
            raise ModelFileError(f"give a checkpoint ({checkpoint}) or --model-file ({model_file}), not both")
        _compress_model_file(model_file, student_file, rows, recipe, out, cpu, rounds)
        return
    for name, value in (("--student-file", student_file), ("--rows", rows)):
        if value is not None:
            raise ModelFileError(
                f"{name} {value} goes with --model-file; a checkpoint distills into a narrower copy of its architecture "
                "(the recipe's distill step) and uses its own data split",
            )
    from toolkit.compress.recipe import load_recipe
    from toolkit.compress.report import write_report
    from toolkit.data.checkpoint_split import checkpoint_splits
    from toolkit.optimize.bench import machine_info
    from toolkit.optimize.pipeline import CompressionData, compress_and_report, save_compressed
    from toolkit.train import load_checkpoint

    spec = load_recipe(recipe)
    ckpt = load_checkpoint(checkpoint)
    splits = checkpoint_splits(checkpoint, data_dir, encoder=ckpt.encoder, metrics=ckpt.metrics)
    data = CompressionData("MovieLens-100K", splits.train, splits.val, splits.test, ckpt.encoder)
    with tempfile.TemporaryDirectory(prefix="tritonrec-compress-") as tmp:
        with console.status(f"compressing with {recipe}") as status:
            report, results = compress_and_report(
                ckpt.model, {spec.name: spec}, data, Path(tmp), rounds=rounds, cpu_target=cpu, on_log=status.update
            )
        mine = next(v for v in report["variants"] if v["name"] == spec.name)
        metrics = {"split": ckpt.metrics.get("split", {}), "test": {"auc": mine["test_auc"], "log_loss": mine["test_log_loss"]}}
        save_compressed(results[spec.name], out, ckpt.encoder, metrics)
    report["command"] = shlex.join(["tritonrec", *sys.argv[1:]])
    report["machine"] = machine_info()
    write_report(report, out / "report.json")
    console.print(variants_table(report))
    console.print(selection_lines(report, spec.name), highlight=False)
    console.print(f"compressed model, recipe and report written to [bold]{out}[/bold]")
    if (out / "skipped.json").is_file():
        for what, why in json.loads((out / "skipped.json").read_text()).items():
            console.print(f"[yellow]{what}: {why}[/yellow]", highlight=False)
    if not mine["within_budget"]:
        console.print(
            f"[red]{spec.name}: test AUC {mine['test_auc']:.4f} is {mine['auc_ratio']:.2%} of the baseline's, "
            f"below the budget of {spec.min_auc_ratio:.1%}: not fit to serve[/red]"
        )
        raise typer.Exit(1)

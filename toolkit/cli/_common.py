"""Options and helpers shared by the command modules (defined once, used everywhere)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# Piped or logged output (make, CI) gets 120 columns instead of rich's 80, so tables don't truncate.
console = Console(width=None if sys.stdout.isatty() else 120)

DEFAULT_DATA_DIR = Path(".cache/ml-100k")
DEFAULT_CHECKPOINT = Path("artifacts/checkpoint")
DEFAULT_ONNX = Path("artifacts/onnx/model.onnx")
DEFAULT_REPOSITORY = Path("model_repository")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="MovieLens-100K folder: RecBole atomic files (ml-100k.inter/.user/.item) or GroupLens' u.data/u.user/u.item.",
    ),
]
CheckpointDir = Annotated[
    Path, typer.Option("--checkpoint", help="Checkpoint folder (model.pt, model_config.json, vocabularies.json, metrics.json).")
]
OnnxPath = Annotated[Path, typer.Option("--onnx", help="ONNX model file (its .data file lies next to it).")]
RepositoryDir = Annotated[Path, typer.Option("--repository", help="Triton model repository folder.")]
ModelFile = Annotated[
    str | None,
    typer.Option(
        "--model-file",
        help="A model of your own instead of a checkpoint: PATH.py:FACTORY, a self-contained file whose FACTORY() returns "
        "(nn.Module, {input name: (dtype, shape)}); forward takes the inputs by name and returns the probability (B, 1).",
    ),
]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="Architecture to train: dlrm, dcnv2 or deepfm (any registered in toolkit.models.registry); "
        "each with its own default widths, --embedding-dim where the command has it.",
    ),
]
CpuTarget = Annotated[
    str,
    typer.Option(
        "--cpu",
        help="The CPU that will serve the INT8 models: auto (this machine), avx2 (x86-64 without VNNI: 7-bit weights, "
        "since 8-bit ones saturate there), vnni (AVX-512 VNNI / AVX-VNNI) or arm64.",
    ),
]


def progress() -> Progress:
    """A rich progress display with a bar, counts and elapsed time (use as a context manager)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def print_note(line: str) -> None:
    """Print one ``note:`` line (yellow label; the text is printed as it is, not as rich markup)."""
    console.print(f"[yellow]note:[/yellow] {escape(line)}", highlight=False)


@contextlib.contextmanager
def row_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A :func:`progress` bar over ``total`` rows; yields the callback that advances it by the rows just answered."""
    with progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)

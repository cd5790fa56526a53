"""``tritonrec export``: export a checkpoint (or a user's --model-file model) to ONNX and check it against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, DEFAULT_ONNX, DataDir, ModelFile, console
from toolkit.errors import ModelFileError


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder written by `tritonrec train`.")] = DEFAULT_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="ONNX file to write; its weights go to `<out>.data` next to it.")] = DEFAULT_ONNX,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    atol: Annotated[float, typer.Option(help="Largest accepted |ONNX Runtime - PyTorch| probability on the test split.")] = 1e-5,
    model_file: ModelFile = None,
) -> None:
    """Export to ONNX with a dynamic batch dimension (torch.onnx dynamo exporter).

    The file is accepted only if ONNX Runtime matches PyTorch on every test-split row
    within --atol; otherwise nothing is written and the command fails. A --model-file model has no
    split: it is checked on 1,024 random in-range rows of its signature.
    """
    if model_file is not None:
        from toolkit.export.model import export_model
        from toolkit.models.user import load_model_file

        if checkpoint != DEFAULT_CHECKPOINT:
            raise ModelFileError(f"give a checkpoint ({checkpoint}) or --model-file ({model_file}), not both")
        with console.status(f"loading {model_file}, exporting with torch.onnx (dynamo) and checking parity"):
            report = export_model(load_model_file(model_file), out, atol=atol)
        console.print(
            f"ONNX written to [bold]{out}[/bold]: max |ONNX Runtime - PyTorch| = {report.max_abs_diff:.2e} "
            f"over {report.n_rows:,} random in-range rows of {model_file}'s signature (<= {atol:g})"
        )
        return
    from toolkit.export.checkpoint import export_checkpoint

    with console.status("exporting with torch.onnx (dynamo) and checking parity on the test split"):
        report = export_checkpoint(checkpoint, out, data_dir, atol=atol)
    console.print(
        f"ONNX written to [bold]{out}[/bold]: max |ONNX Runtime - PyTorch| = {report.max_abs_diff:.2e} "
        f"over {report.n_rows:,} test rows (<= {atol:g})"
    )

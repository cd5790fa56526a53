"""``tritonrec verify``: every served variant and ensemble against PyTorch, on the same real test rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from toolkit.cli._common import DEFAULT_DATA_DIR, DEFAULT_REPOSITORY, DataDir, console
from toolkit.cli._tables import verify_report_notes, verify_report_table

# toolkit.serving.verify's defaults, without importing it (tritonclient, scikit-learn) at start-up;
# tests/unit/cli/test_cli_imports.py checks that they agree.
DEFAULT_AUC_BUDGET = 0.99
DEFAULT_FP32_MAX_ABS_DIFF = 1e-5


def verify(
    repository: Annotated[Path, typer.Argument(help="Triton model repository to verify (read for its tritonrec.json files).")] = (
        DEFAULT_REPOSITORY
    ),
    url: Annotated[str | None, typer.Option(help="Use a running server that serves REPOSITORY at host:port (the --protocol port).")] = None,
    protocol: Annotated[str, typer.Option(help="grpc or http.")] = "grpc",
    data_dir: DataDir = DEFAULT_DATA_DIR,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the random 80/10/10 split the test rows come from (default: the one each model's checkpoint "
            "recorded at build time, 42 for repositories built before builds recorded it)."
        ),
    ] = None,
    rows: Annotated[int, typer.Option(help="Send the first N rows of the test split.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Rows per request (capped by each model's max_batch_size).")] = 256,
    auc_budget: Annotated[
        float, typer.Option(help="FP16/INT8 variants pass when served AUC >= this fraction of the PyTorch reference's.")
    ] = DEFAULT_AUC_BUDGET,
    fp32_tolerance: Annotated[
        float, typer.Option(help="FP32 variants (and those without metadata) pass when max |Δp| <= this.")
    ] = DEFAULT_FP32_MAX_ABS_DIFF,
    out: Annotated[Path | None, typer.Option(help="Also write the machine-readable report here (JSON, written atomically).")] = None,
) -> None:
    """Send the same real test rows to every loaded variant and ensemble; compare each with PyTorch.

    Starts Triton on REPOSITORY (or uses --url). Per model family, the served `<model>_pytorch`
    (FP32 eager) is the reference; rankers get the first --rows test rows as model tensors,
    ensembles the same rows as the raw-feature request. FP32: max |Δp| <= 1e-5; FP16/INT8:
    served AUC >= --auc-budget x the reference AUC. Models the server cannot load are listed
    with its reason (not a failure). Exits 1 when any variant fails.
    """
    from toolkit.serving.verify import verify_repository

    if protocol not in ("http", "grpc"):
        raise typer.BadParameter(f"--protocol must be http or grpc, got {protocol!r}")
    with console.status("verifying") as status:
        report = verify_repository(
            repository,
            data_dir=data_dir,
            url=url,
            protocol=protocol,  # type: ignore[arg-type]
            seed=seed,
            n_rows=rows,
            batch_size=batch_size,
            auc_budget=auc_budget,
            fp32_max_abs_diff=fp32_tolerance,
            on_progress=status.update,
        )
    console.print(verify_report_table(report))
    for line in verify_report_notes(report):
        console.print(escape(line), highlight=False, soft_wrap=True)
    if out is not None:
        report.write(out)
        console.print(f"report: {out}")
    if not report.passed:
        names = ", ".join(r.model for r in report.failed)
        console.print(f"[red]{len(report.failed)} model(s) outside their tolerance: {names}[/red]")
        raise typer.Exit(1)

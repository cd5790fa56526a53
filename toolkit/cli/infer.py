"""``tritonrec infer``: send test-split rows to a served model and compare with the trained one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, CheckpointDir, DataDir, console, row_progress


def infer(
    model: Annotated[str, typer.Option(help="Served model name, e.g. dlrm_onnx_python.")],
    url: Annotated[
        list[str] | None,
        typer.Option(help="Server address host:port (8000 is HTTP, 8001 gRPC by default); repeat it for replicas of one model."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    routing: Annotated[
        str,
        typer.Option(
            help="With several --url: least_outstanding (fewest in flight), peak_ewma (latency EWMA x (in flight + 1)), "
            "round_robin or pinned (one replica per connection)."
        ),
    ] = "least_outstanding",
    checkpoint: CheckpointDir = DEFAULT_CHECKPOINT,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    rows: Annotated[int | None, typer.Option(help="Send only the first N test rows (default: all 10,000).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per request (capped by the model's max_batch_size).")] = 256,
    latency_requests: Annotated[int, typer.Option(help="Also time this many single-row requests (0 to skip).")] = 0,
) -> None:
    """Score the test split on a served model and check served AUC == offline AUC (to 1e-4).

    Rows are encoded with the checkpoint's vocabularies; the offline AUC comes from the
    checkpoint's PyTorch model on the same rows. Exits 1 when the AUCs differ by more than 1e-4.
    """
    if protocol not in ("http", "grpc"):
        raise typer.BadParameter(f"--protocol must be http or grpc, got {protocol!r}")
    from toolkit.serving.router import POLICIES

    if routing not in POLICIES:
        raise typer.BadParameter(f"--routing must be one of {', '.join(POLICIES)}, got {routing!r}")
    from toolkit.serving.quality import AUC_TOLERANCE, measure_served
    from toolkit.train.reference import offline_reference

    urls = url or ["127.0.0.1:8000"]
    ref = offline_reference(checkpoint, data_dir, rows)
    with row_progress(f"{model} over {protocol}: test rows", len(ref.rows)) as advance:
        served = measure_served(
            urls,
            protocol,  # type: ignore[arg-type]
            model,
            ref.rows.inputs(),
            ref.rows.labels,
            reference=ref.probabilities,
            batch_size=batch_size,
            latency_requests=latency_requests,
            routing=routing,
            progress=advance,
        )
    quality, latency, replicas = served.quality, served.latency, served.replicas
    where = urls[0] if len(urls) == 1 else f"{len(urls)} replicas ({routing})"
    table = Table(title=f"{model} at {where} ({protocol}), {quality.n_rows:,} test rows")
    for column in ("offline AUC", "served AUC", "|ΔAUC|", "max |Δp|", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    delta = abs(quality.auc - ref.auc)
    table.add_row(
        f"{ref.auc:.6f}",
        f"{quality.auc:.6f}",
        f"{delta:.1e}",
        f"{quality.max_abs_diff:.1e}",
        f"{latency.p50_ms:.2f}" if latency else "-",
        f"{latency.p99_ms:.2f}" if latency else "-",
    )
    console.print(table)
    if replicas:
        total = sum(r.requests for r in replicas) or 1
        console.print(
            "requests per replica: "
            + ", ".join(f"{r.address} {r.requests} ({r.requests / total:.0%}, {r.failures} failed)" for r in replicas)
        )
    if delta > AUC_TOLERANCE:
        console.print(f"[red]served AUC differs from offline AUC by {delta:.2e} (> {AUC_TOLERANCE:g})[/red]")
        raise typer.Exit(1)

"""``tritonrec infer``: send test-split rows to a served model and compare with the trained one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import typer
from rich.table import Table

from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, CheckpointDir, DataDir, checkpoint_splits, console, progress
from toolkit.data import EncodedRows

if TYPE_CHECKING:
    from toolkit.serving import LatencyStats
    from toolkit.serving.quality import ServedQuality
    from toolkit.serving.router import ReplicaStatus

#: Served AUC must equal the offline AUC to this tolerance (the main job's acceptance bar).
AUC_TOLERANCE = 1e-4


@dataclass
class OfflineReference:
    """The test split as the checkpoint encodes it, and PyTorch's probabilities and AUC on it."""

    rows: EncodedRows
    probabilities: np.ndarray
    auc: float


def offline_reference(checkpoint: Path, data_dir: Path, n_rows: int | None = None) -> OfflineReference:
    """Rebuild the checkpoint's test split (its seed and vocabularies) and score it with PyTorch."""
    from toolkit.train import evaluate, load_checkpoint, predict

    ckpt = load_checkpoint(checkpoint)
    rows = checkpoint_splits(checkpoint, data_dir, encoder=ckpt.encoder, metrics=ckpt.metrics).test
    if n_rows is not None:
        rows = rows.take(slice(0, n_rows))
    probabilities = predict(ckpt.model, rows)
    return OfflineReference(rows, probabilities, evaluate(rows.labels, probabilities)["auc"])


def measure_variant(
    url: str | Sequence[str],
    protocol: Literal["http", "grpc"],
    model: str,
    ref: OfflineReference,
    *,
    batch_size: int,
    latency_requests: int,
    routing: str = "least_outstanding",
    replicas: list[ReplicaStatus] | None = None,
) -> tuple[ServedQuality, LatencyStats | None]:
    """Served quality on every reference row and, if ``latency_requests``, single-row latency.

    ``url``: one server, or several replicas of it, whose requests a
    :class:`~toolkit.serving.router.Router` spreads with ``routing``; then ``replicas``, when
    given, receives what the router counted per replica.
    """
    from toolkit.serving import InferenceClient, measure_latency
    from toolkit.serving.quality import served_quality
    from toolkit.serving.router import RoutedInferenceClient, Router

    urls = [url] if isinstance(url, str) else list(url)
    if len(urls) == 1:
        client: InferenceClient = InferenceClient(urls[0], protocol=protocol, model_name=model)
    else:
        client = RoutedInferenceClient(Router(urls, protocol=protocol, policy=routing, model_name=model), model_name=model)
    with client, progress() as bar:
        task = bar.add_task(f"{model} over {protocol}: test rows", total=len(ref.rows))
        quality = served_quality(
            client,
            ref.rows.inputs(),
            ref.rows.labels,
            reference=ref.probabilities,
            batch_size=batch_size,
            progress=lambda n: bar.advance(task, n),
        )
        latency = measure_latency(client, ref.rows.inputs(), latency_requests) if latency_requests else None
        if replicas is not None and isinstance(client, RoutedInferenceClient):
            replicas.extend(client.router.replicas())
    return quality, latency


def infer(
    model: Annotated[str, typer.Option(help="Served model name, e.g. dlrm_onnx_python.")],
    url: Annotated[
        list[str] | None,
        typer.Option(help="Server address host:port (8000 is HTTP, 8001 gRPC by default); repeat it for replicas of one model."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    routing: Annotated[
        str, typer.Option(help="With several --url: least_outstanding, round_robin or pinned (one replica per connection).")
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
    urls = url or ["127.0.0.1:8000"]
    ref = offline_reference(checkpoint, data_dir, rows)
    replicas: list[ReplicaStatus] = []
    quality, latency = measure_variant(
        urls,
        protocol,  # type: ignore[arg-type]
        model,
        ref,
        batch_size=batch_size,
        latency_requests=latency_requests,
        routing=routing,
        replicas=replicas,
    )
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

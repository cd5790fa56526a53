"""``tritonrec perf``: perf_analyzer sweeps of served models with real rows, and the report."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from toolkit.cli._common import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA_DIR,
    DEFAULT_REPOSITORY,
    CheckpointDir,
    DataDir,
    console,
)
from toolkit.errors import PerfError, optional_dependencies

if TYPE_CHECKING:
    from toolkit.perf.sweep import Sweep


def _auc_of(report: Path | None, name: str | None) -> float | None:
    if report is None or name is None:
        return None
    variants = {v["name"]: v for v in json.loads(report.read_text())["variants"]}
    return variants.get(name, {}).get("test_auc")


def perf(
    model_repository: Annotated[Path, typer.Argument(help="Repository to serve (ignored with --url).")] = DEFAULT_REPOSITORY,
    model: Annotated[
        list[str],
        typer.Option(
            help="Served model to sweep (repeatable). Raw-feature ensembles such as dlrm_ensemble get the raw request of "
            "the same test rows; top-K models (dlrm_topk) are refused."
        ),
    ] = ["dlrm_pytorch", "dlrm_onnx_python"],  # noqa: B006
    url: Annotated[str | None, typer.Option(help="Use a running server at host:port (gRPC port; HTTP is asked with --http-url).")] = None,
    http_url: Annotated[str | None, typer.Option(help="HTTP host:port of the running server given by --url.")] = None,
    metrics_url: Annotated[str | None, typer.Option(help="Metrics URL of the running server, e.g. http://127.0.0.1:8002/metrics.")] = None,
    protocol: Annotated[list[str], typer.Option(help="grpc and/or http (repeatable).")] = ["grpc"],  # noqa: B006
    batch_size: Annotated[list[int], typer.Option(help="Client batch sizes (repeatable).")] = [1, 64],  # noqa: B006
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,2,4,8",
    request_rate: Annotated[
        str | None, typer.Option(help="Sweep request rates (requests/s, comma-separated) instead of concurrency.")
    ] = None,
    request_distribution: Annotated[str, typer.Option(help="Arrivals of a request-rate sweep: constant or poisson.")] = "poisson",
    checkpoint: CheckpointDir = DEFAULT_CHECKPOINT,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    rows: Annotated[int, typer.Option(help="Test rows written as perf_analyzer --input-data.")] = 2048,
    baseline: Annotated[str | None, typer.Option(help="Model to compare against (headline ratios).")] = None,
    optimized: Annotated[str | None, typer.Option(help="Model compared with --baseline.")] = None,
    compression_report: Annotated[Path | None, typer.Option(help="report.json of `tritonrec compress`, for the AUC ratio.")] = None,
    p99_budget_ms: Annotated[float, typer.Option(help="Latency budget for the throughput comparison.")] = 10.0,
    measurement_interval_ms: Annotated[int, typer.Option(help="perf_analyzer --measurement-interval.")] = 1000,
    out: Annotated[Path, typer.Option(help="Report JSON (Markdown, HTML and PNG plots are written beside it).")] = Path(
        "artifacts/perf/report.json"
    ),
) -> None:
    """Sweep served models with perf_analyzer (concurrency x client batch x protocol) using real test rows.

    Starts the repository on a real Triton server (or uses --url), runs perf_analyzer per load
    level, reads Triton's metrics for the batch the dynamic batcher formed and the machine's
    CPU use, and writes JSON, Markdown and HTML with a throughput-vs-p99 chart and latency
    breakdown bars. With --baseline and --optimized it states whether the paper's claims hold.

    Rankers get the encoded test rows; raw-feature ensembles (dlrm_ensemble) get the raw request
    (BYTES strings) of the same rows, and their steps' server counters are recorded, so
    `--model dlrm_onnx_python --model dlrm_ensemble` measures the ensemble's overhead like for
    like. Top-K models (dlrm_topk) are refused: one request is one user's candidate list, which
    perf_analyzer's row-per-entry input data does not model.
    """
    with optional_dependencies("tritonrec perf"):  # matplotlib, psutil, prometheus-client: the [perf] extra
        from toolkit.perf.report import headline, write_perf_report
        from toolkit.perf.sweep import ensemble_steps, is_raw_feature_model, rows_for_model, sweep_model
    from toolkit.perf.analyzer import find_perf_analyzer
    from toolkit.repository.rows import checkpoint_test_rows
    from toolkit.serving import InferenceClient, TritonServer, free_ports

    for p in protocol:
        if p not in ("grpc", "http"):
            raise typer.BadParameter(f"--protocol must be grpc or http, got {p!r}")
    if (baseline is None) != (optimized is None):
        raise typer.BadParameter("give both --baseline and --optimized, or neither")
    if request_distribution not in ("constant", "poisson"):
        raise typer.BadParameter(f"--request-distribution must be constant or poisson, got {request_distribution!r}")
    rates = [float(r) for r in request_rate.split(",")] if request_rate else None
    levels = None if rates else [int(c) for c in concurrency.split(",")]
    analyzer = find_perf_analyzer()
    encoded, raw = checkpoint_test_rows(checkpoint, data_dir, rows)
    server = None
    if url is None:
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
        server = TritonServer(model_repository, **ports)
        with console.status("starting Triton"):
            server.start()
        url, http_url, metrics_url = server.grpc_url, server.http_url, server.metrics_url
    if metrics_url is None:
        raise typer.BadParameter("--metrics-url is needed with --url")
    sweeps: list[Sweep] = []
    inputs_used: dict[str, str] = {}
    try:
        files = out.parent / "perf_analyzer"  # CSVs, JSON profile exports and logs of every level
        plans = []  # every model is checked (and refused, e.g. a top-K model) before anything is measured
        for name in model:
            with InferenceClient(url, protocol="grpc", model_name=name) as client:
                specs = client.input_specs
                model_rows = rows_for_model(
                    name,
                    specs,
                    max_batch_size=client.max_batch_size,
                    output_names=[o.name for o in client.output_specs],
                    encoded=encoded,
                    raw=raw,
                )
            raw_model = is_raw_feature_model(specs)
            steps = ensemble_steps(url, name) if raw_model else []
            inputs_used[name] = "raw-feature request (BYTES) of the same test rows" if raw_model else "encoded test rows"
            plans.append((name, specs, model_rows, steps))
        for name, specs, model_rows, steps in plans:
            for p in protocol:
                target = url if p == "grpc" else http_url
                if target is None:
                    raise typer.BadParameter("--http-url is needed for --protocol http with --url")
                for b in batch_size:
                    sweeps.append(
                        sweep_model(
                            name,
                            url=target,
                            protocol=p,
                            metrics_url=metrics_url,
                            input_specs=specs,
                            rows=model_rows,
                            batch_size=b,
                            concurrency=levels,
                            request_rate=rates,
                            request_distribution=request_distribution,  # type: ignore[arg-type]
                            out_dir=files / f"{name}_{p}_b{b}",
                            measurement_interval_ms=measurement_interval_ms,
                            composing_models=steps,
                            on_log=console.print,
                        )
                    )
    finally:
        if server is not None:
            server.stop()
    report: dict = {
        "data": f"{rows} test rows of {data_dir}",
        "command": shlex.join(["tritonrec", *sys.argv[1:]]),
        "perf_analyzer_version": analyzer.version(),
        "perf_analyzer_files": str(files),
        "inputs": inputs_used,
        "sweeps": [s.to_dict() for s in sweeps],
        "notes": [f"`{name}` got the {how}" for name, how in inputs_used.items()],
    }
    first = sweeps[0]
    pair = (baseline or first.model, optimized or first.model)
    by_key = {(s.model, s.protocol, s.batch_size): s for s in sweeps}
    base, opt = by_key.get((pair[0], first.protocol, first.batch_size)), by_key.get((pair[1], first.protocol, first.batch_size))
    if base is None or opt is None:
        raise PerfError(f"--baseline {pair[0]} and --optimized {pair[1]} must both be among the swept --model names")
    report["headline"] = headline(
        base,
        opt,
        p99_budget_ms=p99_budget_ms,
        baseline_auc=_auc_of(compression_report, "fp32_pytorch"),
        optimized_auc=_auc_of(compression_report, json.loads(compression_report.read_text())["variants"][-1]["name"])
        if compression_report
        else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    written = write_perf_report(report, sweeps, out)
    table = Table(title="perf_analyzer (real rows)")
    for column in ("model", "protocol", "batch", "load", "infer/s", "p50 ms", "p99 ms", "server batch"):
        table.add_column(column, justify="left" if column in ("model", "protocol") else "right", no_wrap=column == "model")
    for s in sweeps:
        for p in s.points:
            pt = p.point
            table.add_row(
                s.model,
                s.protocol,
                str(s.batch_size),
                f"c{pt.concurrency}" if pt.concurrency is not None else f"{pt.request_rate:g}/s",
                f"{pt.throughput_infer_per_s:,.0f}",
                f"{pt.p50_latency_ms:.2f}",
                f"{pt.p99_latency_ms:.2f}",
                "-" if p.avg_server_batch is None else f"{p.avg_server_batch:.1f}",
            )
    console.print(table)
    console.print("report: " + ", ".join(str(w) for w in written[:3]))

"""``tritonrec demo``: the main job end to end on MovieLens-100K.

data → train → export → build → serve → infer → verify, ending in a table of every
variant's offline AUC, served AUC (HTTP and gRPC) and single-row latency, and the
verification of every served variant and raw-feature ensemble against PyTorch. Also
written as ``<workdir>/demo_report.json`` and ``.md`` (+ ``verify_report.json``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit._io import atomic_write_json, atomic_write_text
from toolkit.cli._common import (
    DEFAULT_DATA_DIR,
    DEFAULT_REPOSITORY,
    DataDir,
    ModelOption,
    RepositoryDir,
    console,
    print_note,
    progress,
    row_progress,
)
from toolkit.cli._tables import train_report_table, verify_report_notes, verify_report_table
from toolkit.data import fetch_movielens

_COLUMNS = ("variant", "protocol", "offline AUC", "served AUC", "|ΔAUC|", "p50 ms", "p99 ms", "status")


def _markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in _COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def demo(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    workdir: Annotated[Path, typer.Option(help="Where the checkpoint, ONNX file and report go.")] = Path("artifacts"),
    repository: RepositoryDir = DEFAULT_REPOSITORY,
    latency_requests: Annotated[int, typer.Option(help="Single-row requests timed per variant and protocol.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = 42,
    model: ModelOption = "dlrm",
) -> None:
    """Run the main job on MovieLens-100K: train a model (a DLRM unless --model dcnv2/deepfm),
    export it, build a Triton repository (CPU target: PyTorch, ONNX FP32/INT8 and the raw-feature
    ensembles, named <model>_<variant>), serve it on a real Triton server, check the served answers
    over HTTP and gRPC and verify every variant."""
    from toolkit.export.checkpoint import export_checkpoint
    from toolkit.repository import BatchingOptions, build_repository
    from toolkit.repository.rows import checkpoint_sample_rows
    from toolkit.serving import TritonServer, explain_load_failure, free_ports
    from toolkit.serving.quality import AUC_TOLERANCE, measure_served
    from toolkit.serving.verify import DEFAULT_AUC_BUDGET, verify_repository
    from toolkit.train import EpochStats, TrainConfig, train_checkpoint
    from toolkit.train.reference import offline_reference

    started = time.perf_counter()
    checkpoint, onnx_path = workdir / "checkpoint", workdir / "onnx" / "model.onnx"

    console.rule("[bold]1/6 data")
    fetch_movielens(data_dir)
    console.print(f"MovieLens-100K in {data_dir}")

    console.rule("[bold]2/6 train")
    with progress() as bar:
        task = bar.add_task(f"training {model}", total=None)

        def on_epoch(stats: EpochStats) -> None:
            bar.console.print(f"epoch {stats.epoch}: validation AUC {stats.val_auc:.4f} ({stats.seconds:.1f} s)")

        report = train_checkpoint(
            data_dir,
            checkpoint,
            TrainConfig(seed=seed, architecture=model),
            split_seed=seed,
            on_step=lambda d, t: bar.update(task, completed=d, total=t),
            on_epoch=on_epoch,
        )
    console.print(train_report_table(report))

    console.rule("[bold]3/6 export")
    with console.status("exporting to ONNX and checking parity with PyTorch on the test split"):
        parity = export_checkpoint(checkpoint, onnx_path, data_dir)
    console.print(f"{onnx_path}: max |ONNX Runtime - PyTorch| = {parity.max_abs_diff:.1e} over {parity.n_rows:,} rows")

    console.rule("[bold]4/6 build")
    with console.status("building the CPU-target variants and the raw-feature ensembles") as status:
        result = build_repository(
            repository,
            checkpoint=checkpoint,
            onnx_model=onnx_path,
            model_name=model,
            options=BatchingOptions(warmup_batch_sizes=[1]),
            target="cpu",
            ensembles=True,
            sample_inputs=checkpoint_sample_rows(checkpoint, data_dir, on_note=print_note),
            progress=status.update,
        )
    console.print("built " + ", ".join(f"{b.name} (v{b.version}, {b.precision})" for b in result.models) + f" in {repository}")
    built = [b for b in result.models if b.variant not in ("preprocess", "postprocess", "ensemble", "topk")]

    console.rule("[bold]5/6 serve and infer")
    ref = offline_reference(checkpoint, data_dir)
    http_port, grpc_port, metrics_port = free_ports(3)
    rows: list[dict] = []
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with console.status("starting Triton and loading the models"):
        server.start()
    try:
        states = {s.name: s for s in server.model_states()}
        console.print(f"Triton serving on HTTP {server.http_url}, gRPC {server.grpc_url}")
        for b in built:
            state = states.get(b.name)
            if state is None or state.state != "READY":
                reason = state.reason if state else "not in the repository index"
                rows.append(
                    {c: "-" for c in _COLUMNS}
                    | {
                        "variant": b.name,
                        "offline AUC": f"{ref.auc:.5f}",
                        "status": "not loaded",
                        "note": explain_load_failure(reason),
                        "reason": reason,
                    }
                )
                continue
            for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                with row_progress(f"{b.name} over {protocol}: test rows", len(ref.rows)) as advance:
                    served = measure_served(
                        url,
                        protocol,  # type: ignore[arg-type]
                        b.name,
                        ref.rows.inputs(),
                        ref.rows.labels,
                        reference=ref.probabilities,
                        batch_size=256,
                        latency_requests=latency_requests,
                        progress=advance,
                    )
                quality, latency = served.quality, served.latency
                delta = abs(quality.auc - ref.auc)
                if b.precision == "fp32":
                    status = "ok" if delta <= AUC_TOLERANCE else f"FAIL: |ΔAUC| > {AUC_TOLERANCE:g}"
                else:  # INT8/FP16 are judged by the accuracy budget, as in `tritonrec compress`
                    floor = DEFAULT_AUC_BUDGET * ref.auc
                    status = f"ok ({b.precision}, AUC ≥ {DEFAULT_AUC_BUDGET:g}×)" if quality.auc >= floor else f"FAIL: AUC < {floor:.5f}"
                rows.append(
                    {
                        "variant": b.name,
                        "protocol": protocol,
                        "offline AUC": f"{ref.auc:.5f}",
                        "served AUC": f"{quality.auc:.5f}",
                        "|ΔAUC|": f"{delta:.0e}",
                        "max |Δp|": quality.max_abs_diff,
                        "p50 ms": f"{latency.p50_ms:.2f}" if latency else "-",
                        "p99 ms": f"{latency.p99_ms:.2f}" if latency else "-",
                        "status": status,
                    }
                )
        console.rule("[bold]6/6 verify")
        with console.status("verifying every served variant and ensemble against PyTorch") as status:
            verified = verify_repository(
                repository, data_dir=data_dir, url=server.grpc_url, protocol="grpc", seed=seed, on_progress=status.update
            )
        verified.write(workdir / "verify_report.json")
    finally:
        server.stop()

    table = Table(title=f"Served vs offline on {len(ref.rows):,} test rows; latency of {latency_requests:,} single-row requests")
    for column in _COLUMNS:
        left = column in ("variant", "protocol", "status")
        table.add_column(column, justify="left" if left else "right", no_wrap=column == "variant")
    for r in rows:
        table.add_row(*(r[c] for c in _COLUMNS))
    console.print(table)
    console.print(verify_report_table(verified))
    for line in verify_report_notes(verified):
        console.print(escape(line), highlight=False, soft_wrap=True)
    elapsed = time.perf_counter() - started
    summary = {
        "elapsed_s": round(elapsed, 1),
        "test_auc": report.test_auc,
        "baselines": {b.name: b.test_auc for b in report.baselines},
        "onnx_max_abs_diff": parity.max_abs_diff,
        "rows": rows,
        "verify": verified.to_dict(),
    }
    atomic_write_json(workdir / "demo_report.json", summary)
    atomic_write_text(workdir / "demo_report.md", _markdown(rows, f"# tritonrec demo ({elapsed:.0f} s)"))
    console.print(f"done in {elapsed:.0f} s; report in {workdir / 'demo_report.md'}")  # not-loaded reasons: verify's notes above
    if any(r["status"].startswith("FAIL") for r in rows) or not verified.passed:
        raise typer.Exit(1)

"""What the raw-feature ensemble costs over calling the ranker directly, measured with perf_analyzer.

Writes perf/results/ensemble_overhead.{json,md}. Run from the repository root:

    .venv/bin/python perf/ensemble_overhead.py

One server (the one in the nvidia-pytriton wheel, or `tritonserver` on PATH), one repository
with the MovieLens DLRM as

* ``dlrm_onnx_python``: ONNX Runtime (FP32) in a Python-backend model, dynamic batching -- called
  directly with the encoded test rows (``dense_features``, ``sparse_ids``, ``multi_hot_ids``);
* ``dlrm_ensemble``: raw BYTES features -> ``dlrm_preprocess`` (Python backend, the saved
  vocabularies) -> that same ``dlrm_onnx_python`` -> ``probability`` -- called with the raw
  request (:func:`toolkit.repository.raw_inputs.raw_request`) of the same test rows.

Both are swept over gRPC at client batch 1 and 64, concurrency 1, 2, 4, 8 (builder defaults:
``max_batch_size`` 256, 100 us queue delay, one CPU instance each). The report gives, per level,
ensemble / direct for p50, p99 and throughput, and the batch the ranker's dynamic batcher formed
in each case (Triton's counters).

The model: ``artifacts/checkpoint`` + ``artifacts/onnx/model.onnx`` when both exist (``make demo``
writes them), else a small DLRM trained here (1 epoch on 20,000 rows, as the tests' fixture).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from toolkit._io import atomic_write_text
from toolkit.data import FeatureEncoder, load_splits
from toolkit.optimize.bench import machine_info
from toolkit.perf.analyzer import find_perf_analyzer
from toolkit.perf.sweep import Sweep, ensemble_steps, rows_for_model, sweep_model
from toolkit.repository import build_repository, read_config
from toolkit.repository.raw_inputs import raw_request
from toolkit.serving import InferenceClient, TritonServer, free_ports

ROOT = Path(__file__).resolve().parents[1]
DIRECT, ENSEMBLE = "dlrm_onnx_python", "dlrm_ensemble"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def config_summary(repo: Path, name: str) -> dict:
    """The served config's batching and placement, as built (read back from config.pbtxt)."""
    config = read_config(repo / name / "config.pbtxt")
    batching = config.dynamic_batching if config.HasField("dynamic_batching") else None
    return {
        "backend": config.backend or config.platform,
        "max_batch_size": config.max_batch_size,
        "max_queue_delay_us": int(batching.max_queue_delay_microseconds) if batching is not None else None,
        "preferred_batch_size": list(batching.preferred_batch_size) if batching is not None else None,
        "instances": [f"{g.count} x {type(g).Kind.Name(g.kind)}" for g in config.instance_group],
        "steps": [step.model_name for step in config.ensemble_scheduling.step],
    }


def model_files(work: Path, data_dir: Path, checkpoint: Path, onnx: Path) -> tuple[Path, Path, str]:
    """The checkpoint and ONNX file to serve, and where they came from."""
    if (checkpoint / "model.pt").is_file() and onnx.is_file():
        return checkpoint, onnx, f"{_shown(checkpoint)} + {_shown(onnx)} (existing artifacts)"
    from toolkit.export.checkpoint import export_checkpoint
    from toolkit.train import TrainConfig, train_checkpoint

    checkpoint, onnx = work / "checkpoint", work / "onnx" / "model.onnx"
    print("training a small DLRM (1 epoch on 20,000 rows)", flush=True)
    train_checkpoint(data_dir, checkpoint, TrainConfig(max_epochs=1, max_train_rows=20_000), baselines=False)
    export_checkpoint(checkpoint, onnx, data_dir)
    return checkpoint, onnx, "a small DLRM trained by this script (1 epoch on 20,000 rows)"


def test_rows(checkpoint: Path, data_dir: Path, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The first n test rows of the checkpoint's split: encoded, and as the raw request."""
    encoder = FeatureEncoder.from_dict(json.loads((checkpoint / "vocabularies.json").read_text()))
    seed = int(json.loads((checkpoint / "metrics.json").read_text()).get("split", {}).get("seed", 42))
    splits = load_splits(data_dir, seed=seed, encoder=encoder)
    index = slice(0, n)
    return splits.test.take(index).inputs(), raw_request(splits.raw_test.take(index))


def ratios(direct: Sweep, ensemble: Sweep) -> list[dict]:
    """Per concurrency level: ensemble / direct p50, p99 and throughput, with both sides' numbers."""
    out = []
    for dp in direct.points:
        ep = ensemble.at(dp.point.load)
        if ep is None:
            continue
        d, e = dp.point, ep.point
        out.append(
            {
                "batch_size": direct.batch_size,
                "concurrency": d.concurrency,
                "direct_p50_ms": d.p50_latency_ms,
                "ensemble_p50_ms": e.p50_latency_ms,
                "p50_ratio": e.p50_latency_ms / d.p50_latency_ms,
                "direct_p99_ms": d.p99_latency_ms,
                "ensemble_p99_ms": e.p99_latency_ms,
                "p99_ratio": e.p99_latency_ms / d.p99_latency_ms,
                "direct_infer_per_s": d.throughput_infer_per_s,
                "ensemble_infer_per_s": e.throughput_infer_per_s,
                "throughput_ratio": e.throughput_infer_per_s / d.throughput_infer_per_s,
                "ranker_batch_direct": dp.avg_server_batch,
                "ranker_batch_in_ensemble": ep.composing.get(DIRECT, {}).get("avg_batch"),
                "cpu_pct_direct": dp.cpu_utilization_pct,
                "cpu_pct_ensemble": ep.cpu_utilization_pct,
            }
        )
    return out


def _config_line(c: dict) -> str:
    if c["steps"]:
        return f"ensemble of {' -> '.join(c['steps'])}, max_batch_size {c['max_batch_size']}, no batching or instances of its own"
    batching = (
        f"dynamic batching (queue delay {c['max_queue_delay_us']} us, preferred {c['preferred_batch_size'] or 'none'})"
        if c["max_queue_delay_us"] is not None
        else "no dynamic batching"
    )
    return f"{c['backend']} backend, max_batch_size {c['max_batch_size']}, {batching}, instances {', '.join(c['instances'])}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Raw-feature ensemble vs the ranker called directly (MovieLens DLRM, bundled Triton)",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['platform']})",
        f"- perf_analyzer {report['perf_analyzer_version']} ({report['perf_analyzer_source']}), gRPC",
        f"- model: {report['model_source']}; {report['n_rows']} test rows, the same rows for both "
        f"(ensemble answer vs direct: max |Δp| {report['max_abs_diff_ensemble_vs_direct']:.2e})",
        f"- direct: `{DIRECT}` with encoded rows; ensemble: `{ENSEMBLE}` = `{'` -> `'.join(report['ensemble_steps'])}` "
        "with the raw request",
        f"- elapsed: {report['elapsed_s']:.0f} s; load average (1/5/15 min) {report['load_average_1_5_15_min']['before']} "
        f"before the sweeps, {report['load_average_1_5_15_min']['after']} after",
        *(f"- `{name}`: {_config_line(c)}" for name, c in report["configs"].items()),
        "",
        "Ratios are ensemble / direct: a latency ratio above 1 and a throughput ratio below 1 are the ensemble's cost.",
        "",
        "| client batch | concurrency | p50 direct ms | p50 ensemble ms | p50 ratio | p99 direct ms | p99 ensemble ms | p99 ratio "
        "| infer/s direct | infer/s ensemble | throughput ratio | ranker batch direct / in ensemble |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def b(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for r in report["ratios"]:
        lines.append(
            f"| {r['batch_size']} | {r['concurrency']} | {r['direct_p50_ms']:.2f} | {r['ensemble_p50_ms']:.2f} | **{r['p50_ratio']:.2f}** "
            f"| {r['direct_p99_ms']:.2f} | {r['ensemble_p99_ms']:.2f} | **{r['p99_ratio']:.2f}** | {r['direct_infer_per_s']:,.0f} "
            f"| {r['ensemble_infer_per_s']:,.0f} | **{r['throughput_ratio']:.2f}** "
            f"| {b(r['ranker_batch_direct'])} / {b(r['ranker_batch_in_ensemble'])} |"
        )
    lost = [f"{s['model']} b{s['batch_size']}: {s['unstable_levels']}" for s in report["sweeps"] if s["unstable_levels"]]
    if lost:
        lines += ["", "Levels perf_analyzer could not stabilize (left out of the ratios): " + "; ".join(lost)]
    lines += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".cache" / "ml-100k")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts" / "checkpoint")
    parser.add_argument("--onnx", type=Path, default=ROOT / "artifacts" / "onnx" / "model.onnx")
    parser.add_argument("--rows", type=int, default=4096, help="test rows written as perf_analyzer input data")
    parser.add_argument("--batch-size", default="1,64")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--measurement-interval-ms", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "ensemble_overhead.json")
    args = parser.parse_args()
    started = time.perf_counter()
    batches = [int(b) for b in args.batch_size.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    analyzer = find_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="ensemble-overhead-") as tmp:
        work = Path(tmp)
        checkpoint, onnx, source = model_files(work, args.data_dir, args.checkpoint, args.onnx)
        repo = work / "model_repository"
        build_repository(
            repo,
            checkpoint=checkpoint,
            onnx_model=onnx,
            variants=["onnx_python"],
            ensembles=True,
            ensemble_ranker="onnx_python",
            top_k=None,
        )
        configs = {name: config_summary(repo, name) for name in (DIRECT, "dlrm_preprocess", ENSEMBLE)}
        encoded, raw = test_rows(checkpoint, args.data_dir, args.rows)
        load_before = os.getloadavg()
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
        sweeps: dict[tuple[str, int], Sweep] = {}
        with TritonServer(repo, **ports) as server:
            plans = {}
            for name in (DIRECT, ENSEMBLE):
                with InferenceClient(server.grpc_url, protocol="grpc", model_name=name) as client:
                    rows = rows_for_model(
                        name,
                        client.input_specs,
                        max_batch_size=client.max_batch_size,
                        output_names=[o.name for o in client.output_specs],
                        encoded=encoded,
                        raw=raw,
                    )
                    answer = client.infer_batched(rows, batch_size=256)
                    plans[name] = (client.input_specs, rows, np.asarray(answer["probability"]).reshape(-1))
            steps = ensemble_steps(server.grpc_url, ENSEMBLE)
            max_abs_diff = float(np.max(np.abs(plans[ENSEMBLE][2] - plans[DIRECT][2])))
            print(f"ensemble vs direct on {args.rows} rows: max |dp| {max_abs_diff:.2e}", flush=True)
            for i, batch in enumerate(batches):
                order = (DIRECT, ENSEMBLE) if i % 2 == 0 else (ENSEMBLE, DIRECT)  # alternate who goes first
                for name in order:
                    specs, rows, _ = plans[name]
                    sweeps[(name, batch)] = sweep_model(
                        name,
                        url=server.grpc_url,
                        protocol="grpc",
                        metrics_url=server.metrics_url,
                        input_specs=specs,
                        rows=rows,
                        batch_size=batch,
                        concurrency=levels,
                        out_dir=work / "pa" / f"{name}_b{batch}",
                        measurement_interval_ms=args.measurement_interval_ms,
                        composing_models=steps if name == ENSEMBLE else (),
                        on_log=lambda m: print(m, flush=True),
                    )
        load_after = os.getloadavg()
    report = {
        "command": shlex.join(["python", "perf/ensemble_overhead.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "perf_analyzer_version": analyzer.version(),
        "perf_analyzer_source": analyzer.source,
        "model_source": source,
        "n_rows": args.rows,
        "protocol": "grpc",
        "direct": DIRECT,
        "ensemble": ENSEMBLE,
        "ensemble_steps": steps,
        "max_abs_diff_ensemble_vs_direct": max_abs_diff,
        "configs": configs,
        "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "ratios": [r for batch in batches for r in ratios(sweeps[(DIRECT, batch)], sweeps[(ENSEMBLE, batch)])],
        "sweeps": [sweeps[(name, batch)].to_dict() for batch in batches for name in (DIRECT, ENSEMBLE)],
        "elapsed_s": round(time.perf_counter() - started, 1),
        "notes": [
            "Client (perf_analyzer) and server share one 2-core machine, shared with other sessions' work (builds, test "
            "suites) that ran at the same time: treat single ratios as noisy, the trend across levels as the signal.",
            "Server: Triton 2.51 from the nvidia-pytriton wheel, builder defaults (`configs`): the ranker is ONNX Runtime "
            "(FP32) in a Python-backend model, the preprocess a numpy Python-backend model, both with dynamic batching and "
            "one CPU instance; the ensemble itself has no batching of its own.",
            "perf_analyzer runs each concurrency level alone (stability 20 %, 1 s windows); latencies are client-side per "
            "request (a request carries the client batch of rows); throughput is rows (inferences) per second.",
            "The ensemble's request is 8 BYTES tensors (strings) and passes two Python-backend models, each with its own "
            "stub process and shared-memory hand-off; the direct request is 3 numeric tensors and one Python-backend model.",
            "ranker batch = delta nv_inference_count / delta nv_inference_exec_count of dlrm_onnx_python over the level.",
        ],
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

"""Does the simulator's replica model predict a real Triton server under open-loop Poisson load?

Writes perf/results/sim_check.{json,md,png}. Run from the repository root:

    .venv/bin/python perf/sim_check.py

``tritonrec autoscale simulate`` models each replica from a *closed-loop* concurrency sweep
(perf_analyzer ``--concurrency-range``) as a flow-equivalent server under Poisson arrivals
(:class:`toolkit.autoscale.simulate.ReplicaModel`). Autoscaled traffic is *open-loop*: requests
arrive whether or not earlier ones finished. This script checks that step on real servers (the
bundled Triton of the nvidia-pytriton wheel, or `tritonserver` on PATH). For each model, on one
server and back to back:

1. perf_analyzer sweeps concurrency (gRPC, client batch 1); the sweep is written as a perf report
   and read back with ``load_service_curve`` into a ``ReplicaModel``, exactly as the simulator
   reads one (capacity ``mu`` = throughput at the largest concurrency);
2. Poisson arrivals at fractions ``--rho`` of ``mu`` are sent, and their measured p50 and p99 are
   set against the model's prediction at the same rate (``ReplicaModel.latency_quantile_ms``).

Two models:

* ``delay``: :func:`toolkit.serving.delay_model.write_delay_model`, 5 ms of sleep per request on
  2 instances (about 400 req/s), no dynamic batching. Its service does not compete with the
  client for the CPU, so the open loop is :func:`toolkit.serving.load.open_loop` (Python,
  gRPC), which times each request from its *scheduled* arrival: a request that waits for a free
  client thread counts that wait. This is the check of the queueing model itself, with two replica
  models: one from perf_analyzer's sweep (what the simulator reads) and one from a closed loop of
  the same Python client (``toolkit.serving.load.closed_loop``), so that the client's own overhead
  is on both sides.
* ``dlrm``: the MovieLens-100K DLRM (FP32, trained with perf/compress_report.py's seeds) as ONNX
  Runtime in a Python-backend model with dynamic batching, the kind of model the simulator's
  default report (perf/results/triton_movielens.json) sweeps. Its open loop is perf_analyzer's
  ``--request-rate-range`` with ``--request-distribution poisson``, whose latency runs from
  when a request was *sent*: where the client cannot keep up with the offered rate on the
  shared cores (served < 97% of offered), the point is reported but not compared.

Client and server share the machine's cores, so measurements are noisy: ``--repeats`` runs of
the rate points give a spread (min-max in the report). About 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from compress_report import trained_baseline  # noqa: E402  (same folder)

from toolkit.autoscale.simulate import ReplicaModel, ServiceCurve, allen_cunneen_scale, load_service_curve  # noqa: E402
from toolkit.export import export_onnx  # noqa: E402
from toolkit.models import dlrm_example_inputs  # noqa: E402
from toolkit.optimize.bench import machine_info  # noqa: E402
from toolkit.perf.analyzer import find_perf_analyzer  # noqa: E402
from toolkit.perf.sweep import sweep_model  # noqa: E402
from toolkit.repository import BatchingOptions, build_repository  # noqa: E402
from toolkit.serving import InferenceClient, TritonServer, free_ports  # noqa: E402
from toolkit.serving.delay_model import DELAY_MODEL_INPUT, DELAY_MODEL_WIDTH, write_delay_model  # noqa: E402
from toolkit.serving.load import closed_loop, open_loop  # noqa: E402
from toolkit.serving.router import RoutedInferenceClient, Router  # noqa: E402
from toolkit.train import save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DLRM_MODEL, DELAY_MODEL = "dlrm_onnx_python", "delay"
#: Client-side shortfall past which a perf_analyzer rate point is not compared: it sent fewer requests than offered, and
#: its latency (from send time) then leaves out the wait of the requests it sent late.
SERVED_FRACTION = 0.97


def _build_dlrm(root: Path, queue_delay_us: int) -> tuple[Path, dict]:
    """The DLRM's one-model repository, and the test rows perf_analyzer sends."""
    data, model = trained_baseline("movielens", 0)
    save_checkpoint(root / "checkpoint", model, data.encoder, {})
    onnx = export_onnx(model, dlrm_example_inputs(model.config, 8), ["probability"], root / "onnx" / "model.onnx")
    repo = root / "model_repository"
    options = BatchingOptions(max_batch_size=256, dynamic_batching=True, max_queue_delay_us=queue_delay_us, preferred_batch_sizes=[64, 256])
    build_repository(repo, checkpoint=root / "checkpoint", onnx_model=onnx, model_name="dlrm", variants=["onnx_python"], options=options)
    return repo, data.test.take(slice(0, 4096)).inputs()


def _closed_loop_curve(sweep, root: Path, model: str) -> ServiceCurve:
    """The sweep written as a perf report and read back the way the simulator reads one."""
    curve_file = root / f"{model}_curve.json"
    curve_file.write_text(json.dumps({"optimized": model, "sweeps": [sweep.to_dict()]}))
    return load_service_curve(curve_file, protocol=sweep.protocol)


def _models(curves: dict[str, ServiceCurve], slo_ms: float) -> dict[str, tuple[ReplicaModel, float]]:
    """Per curve, the simulator's replica model as it is (Markovian: queue_scale 1) and with the
    Allen-Cunneen queue scale for the curve's service-time spread (``allen_cunneen_scale``)."""
    out = {}
    for label, curve in curves.items():
        scale = allen_cunneen_scale(curve)
        out[f"{label}, Markov"] = (ReplicaModel.from_curve(curve, slo_ms), 1.0)
        out[f"{label}, Allen-Cunneen {scale:.2f}"] = (ReplicaModel.from_curve(curve, slo_ms, queue_scale=scale), scale)
    return out


def _compare(
    name: str,
    models: dict[str, ReplicaModel],
    fractions: list[float],
    measured: dict[int, list[dict]],
    *,
    slo_ms: float,
    note: str,
    client_bound_check: bool,
) -> dict:
    """One served model's part of the report: per rate, each replica model's prediction next to the runs.

    ``models``: label -> (replica model, its queue_scale); the rates are fractions of the first one's capacity.
    ``client_bound_check``: a rate served below ``SERVED_FRACTION`` of offered is not compared (a
    client that times from send time and fell behind).
    """
    first = next(iter(models.values()))[0]
    rows = []
    for f in fractions:
        rate = round(f * first.capacity_rps)
        runs = measured[rate]
        served = statistics.median(x["throughput_rps"] for x in runs) if runs else None
        row = {"rho": f, "rate_rps": rate, "served_rps": served, "measured": runs, "predicted": {}, "model_over_measured": {}}
        row["compared"] = bool(runs) and (not client_bound_check or served >= SERVED_FRACTION * rate)
        for label, (model, _) in models.items():
            pred = {"p50_ms": model.latency_quantile_ms(rate, 0.5), "p99_ms": model.latency_quantile_ms(rate, 0.99)}
            row["predicted"][label] = pred
            if row["compared"]:
                row["model_over_measured"][label] = {k: pred[k] / statistics.median(x[k] for x in runs) for k in pred}
        rows.append(row)
    within = [r["rate_rps"] for r in rows if r["compared"] and statistics.median(x["p99_ms"] for x in r["measured"]) <= slo_ms]
    return {
        "model": name,
        "note": note,
        "slo_ms": slo_ms,
        "replica_models": {
            label: {
                "curve": m.curve.source,
                "queue_scale": scale,
                "capacity_rps": m.capacity_rps,
                "capacity_at_slo_rps": m.capacity_at_slo_rps,
                "points": {
                    "concurrency": m.curve.concurrency.tolist(),
                    "throughput_rps": m.curve.throughput_rps.tolist(),
                    "p50_ms": m.curve.p50_ms.tolist(),
                    "p99_ms": m.curve.p99_ms.tolist(),
                },
            }
            for label, (m, scale) in models.items()
        },
        "measured_capacity_at_slo_rps": max(within) if within else None,
        "rates": rows,
    }


def _curve_from_closed_loop(results: dict[int, object], source: str) -> ServiceCurve:
    """A service curve measured with our own client (toolkit.serving.load.closed_loop) instead of perf_analyzer.

    Queue and compute times are not measured this way; they only feed the simulator's signals, not the
    latency distributions compared here, and are set to 0 and the p50."""
    c = sorted(results)
    p50 = np.array([results[k].percentile_ms(50) for k in c])
    return ServiceCurve(
        concurrency=np.array(c, dtype=np.float64),
        throughput_rps=np.array([len(results[k].records) / results[k].duration_s for k in c]),
        p50_ms=p50,
        p99_ms=np.array([results[k].percentile_ms(99) for k in c]),
        queue_ms=np.zeros(len(c)),
        compute_ms=p50,
        source=source,
    )


def _delay_loads(url: str, levels: list[int], fractions: list[float], pa_model: ReplicaModel, seconds: float, repeats: int):
    """Our client's closed loop at ``levels`` (one curve), then its open loop (latency from due time)
    at ``fractions`` of the perf_analyzer curve's capacity, ``repeats`` times; gRPC through one router."""
    x = np.ones((1, DELAY_MODEL_WIDTH), np.float32)
    rates = [round(f * pa_model.capacity_rps) for f in fractions]
    measured: dict[int, list[dict]] = {r: [] for r in rates}
    with RoutedInferenceClient(Router([url], protocol="grpc", model_name=DELAY_MODEL), model_name=DELAY_MODEL) as client:

        def send(i: int, connection: object) -> str:
            client.infer({DELAY_MODEL_INPUT: x}, connection=connection)
            return client.last_address

        open_loop(send, rate_rps=50.0, n_requests=100, max_duration_s=5.0, seed=99)  # warm-up, untimed
        closed = {}
        for c in levels:
            closed[c] = closed_loop(send, concurrency=c, n_requests=100_000, max_duration_s=seconds)
            print(f"delay closed loop c{c}: {len(closed[c].records) / closed[c].duration_s:.0f} req/s, "
                  f"p50 {closed[c].percentile_ms(50):.2f} ms, p99 {closed[c].percentile_ms(99):.2f} ms", flush=True)  # fmt: skip
        for seed in range(repeats):
            for rate in rates:
                result = open_loop(send, rate_rps=rate, n_requests=int(rate * seconds), max_duration_s=seconds + 5.0, workers=64, seed=seed)
                s = result.summary()
                measured[rate].append(
                    {"throughput_rps": s["throughput_rps"], "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "errors": s["errors"]}
                )
                print(f"delay open loop {rate} req/s (seed {seed}): served {s['throughput_rps']:.0f}, "
                      f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms", flush=True)  # fmt: skip
    return _curve_from_closed_loop(closed, f"toolkit.serving.load.closed_loop, {DELAY_MODEL}, grpc, client batch 1"), measured


def _plot(parts: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(parts), figsize=(6.5 * len(parts), 4.4), squeeze=False)
    styles = ["s--", "^:"]
    for ax, part in zip(axes[0], parts, strict=True):
        rows = [r for r in part["rates"] if r["measured"]]
        rho = [r["rho"] for r in rows]
        for key, color in (("p50_ms", "tab:blue"), ("p99_ms", "tab:red")):
            measured = [[m[key] for m in r["measured"]] for r in rows]
            ax.plot(rho, [statistics.median(m) for m in measured], "o-", color=color, label=f"measured {key[:3]} (median of runs)")
            for x, m, r in zip(rho, measured, rows, strict=True):
                ax.vlines(x, min(m), max(m), color=color, alpha=0.4)
                if not r["compared"]:
                    ax.plot(x, statistics.median(m), "x", color="black", ms=9)
            for style, label in zip(styles, part["replica_models"], strict=False):
                ax.plot(
                    rho, [r["predicted"][label][key] for r in rows], style, color=color, alpha=0.7, label=f"model from {label}: {key[:3]}"
                )
        ax.axhline(part["slo_ms"], color="gray", lw=0.8, ls=":", label=f"SLO {part['slo_ms']:g} ms")
        ax.set_xlabel("offered Poisson rate / capacity mu of the perf_analyzer curve")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{part['model']} (x: client fell behind, not compared)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("One Triton replica under open-loop Poisson load: measured vs the simulator's replica model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else "")


def _markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# The simulator's replica model against a real server under open-loop Poisson load",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; perf_analyzer {report['perf_analyzer_version']}; client batch 1, gRPC; "
        f"{report['elapsed_s']:.0f} s in all",
        "",
    ]
    for part in report["parts"]:
        labels = list(part["replica_models"])[:2]  # the perf_analyzer curve's two models; the others in the list below
        lines += [f"## {part['model']}", "", part["note"], ""]
        for label, rm in part["replica_models"].items():
            ratios = [r["model_over_measured"][label]["p99_ms"] for r in part["rates"] if label in r["model_over_measured"]]
            lines.append(
                f"- model from {label} ({rm['curve']}): capacity mu {rm['capacity_rps']:,.0f} req/s, highest rate within the SLO "
                f"(p99 <= {part['slo_ms']:g} ms) {rm['capacity_at_slo_rps']:,.0f} req/s; p99 model / measured by rate: "
                + ", ".join(f"×{x:.2f}" for x in ratios)
            )
        got = part["measured_capacity_at_slo_rps"]
        lines += [
            f"- measured: highest compared rate whose median p99 was within the SLO: {f'{got:,.0f} req/s' if got else 'none'}",
            "",
            "| rho | offered req/s | served req/s | p50 measured ms | "
            + " | ".join(f"p50 model ({lb}) ms" for lb in labels)
            + " | p99 measured ms | "
            + " | ".join(f"p99 model ({lb}) ms" for lb in labels)
            + " |",
            "|" + "---:|" * (5 + 2 * len(labels)),
        ]
        for r in part["rates"]:
            runs = r["measured"]
            if not runs:
                lines.append(f"| {r['rho']:.2f} | {r['rate_rps']:,} | unstable |" + " — |" * (2 + 2 * len(labels)))
                continue

            def cell(r: dict, label: str, key: str) -> str:
                pred = r["predicted"][label][key]
                ratio = r["model_over_measured"].get(label, {}).get(key)
                return f"{pred:.2f} (×{ratio:.2f})" if ratio is not None else f"{pred:.2f}"

            flag = "" if r["compared"] else " (client behind)"
            lines.append(
                f"| {r['rho']:.2f} | {r['rate_rps']:,} | {r['served_rps']:,.0f}{flag} | {_span([x['p50_ms'] for x in runs])} | "
                + " | ".join(cell(r, lb, "p50_ms") for lb in labels)
                + f" | {_span([x['p99_ms'] for x in runs])} | "
                + " | ".join(cell(r, lb, "p99_ms") for lb in labels)
                + " |"
            )
        lines.append("")
    lines += [
        "Measured values are the median over runs, with the min–max range in parentheses; (×r) is model / measured. "
        "Above 1 the model predicts more latency than was measured: conservative for the autoscaler, which then scales "
        'earlier than needed. A row marked "client behind" was served below 97% of the offered rate by a client that '
        "times from send time (perf_analyzer), so its latency leaves out the wait of the requests it sent late: not compared.",
        "",
        "![measured vs model](sim_check.png)",
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rho", default="0.3,0.5,0.7,0.8,0.9,0.95", help="the delay model's offered Poisson rates, fractions of mu")
    parser.add_argument("--dlrm-rho", default="0.2,0.35,0.5,0.65", help="the DLRM's (perf_analyzer falls behind above about 0.65 here)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the rate points (for a spread)")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="the delay model's service time per request")
    parser.add_argument("--delay-instances", type=int, default=2)
    parser.add_argument("--delay-slo-ms", type=float, default=25.0)
    parser.add_argument("--delay-seconds", type=float, default=12.0, help="length of each load point of the delay model")
    parser.add_argument("--dlrm-slo-ms", type=float, default=10.0)
    parser.add_argument("--queue-delay-us", type=int, default=100, help="the DLRM's max_queue_delay_microseconds")
    parser.add_argument("--measurement-interval-ms", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "sim_check.json")
    args = parser.parse_args()
    started = time.perf_counter()
    fractions = [float(x) for x in args.rho.split(",")]
    dlrm_fractions = [float(x) for x in args.dlrm_rho.split(",")]
    if not all(0 < f < 1 for f in (*fractions, *dlrm_fractions)) or args.repeats < 1:
        parser.error("--rho and --dlrm-rho must be fractions in (0, 1) and --repeats >= 1")
    analyzer = find_perf_analyzer()
    log = lambda m: print(m, flush=True)  # noqa: E731
    parts = []
    with tempfile.TemporaryDirectory(prefix="sim-check-") as tmp:
        root = Path(tmp)
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))

        # -- the delay model: the queueing model itself -----------------------------------------------------------
        delay_repo = root / "delay_repository"
        write_delay_model(delay_repo, DELAY_MODEL, delay_ms=args.delay_ms, instances=args.delay_instances)
        levels = [1, 2, 3, 4, 6, 8]
        with TritonServer(delay_repo, **ports) as server:
            with InferenceClient(server.grpc_url, protocol="grpc", model_name=DELAY_MODEL) as client:
                specs = client.input_specs
            x = {DELAY_MODEL_INPUT: np.ones((256, DELAY_MODEL_WIDTH), np.float32)}
            closed = sweep_model(
                DELAY_MODEL, url=server.grpc_url, protocol="grpc", metrics_url=server.metrics_url, input_specs=specs, rows=x,
                batch_size=1, concurrency=levels, out_dir=root / "pa" / "delay", measurement_interval_ms=args.measurement_interval_ms,
                on_log=log,
            )  # fmt: skip
            pa_curve = _closed_loop_curve(closed, root, DELAY_MODEL)
            pa_model = ReplicaModel.from_curve(pa_curve, args.delay_slo_ms)
            own_curve, measured = _delay_loads(server.grpc_url, levels, fractions, pa_model, args.delay_seconds, args.repeats)
        models = _models({"perf_analyzer": pa_curve, "our client": own_curve}, args.delay_slo_ms)
        parts.append(
            _compare(
                "delay",
                models,
                fractions,
                measured,
                slo_ms=args.delay_slo_ms,
                client_bound_check=False,
                note=f"A Python-backend model sleeping {args.delay_ms:g} ms per request on {args.delay_instances} instances, no "
                f"dynamic batching. Open loop: toolkit.serving.load.open_loop (Poisson, {args.delay_seconds:g} s per rate, 64 client "
                "threads, gRPC, latency from each request's scheduled arrival, so a server that falls behind shows as latency). "
                "Replica models from two curves: perf_analyzer's concurrency sweep (what `tritonrec autoscale simulate` reads) and "
                "a closed loop of the same Python client as the open loop (the same client overhead on both sides), each "
                "Markovian (the simulator's model) and with the Allen-Cunneen queue scale.",
            )  # fmt: skip
        )

        # -- the DLRM: the kind of model the simulator's default report holds -----------------------------------
        repo, rows = _build_dlrm(root, args.queue_delay_us)
        with TritonServer(repo, **ports) as server:
            with InferenceClient(server.grpc_url, protocol="grpc", model_name=DLRM_MODEL) as client:
                specs = client.input_specs
            common = dict(url=server.grpc_url, protocol="grpc", metrics_url=server.metrics_url, input_specs=specs, rows=rows, batch_size=1)
            closed = sweep_model(
                DLRM_MODEL, **common, concurrency=[1, 2, 4, 8, 16], out_dir=root / "pa" / "dlrm",
                measurement_interval_ms=args.measurement_interval_ms, on_log=log,
            )  # fmt: skip
            dlrm_curve = _closed_loop_curve(closed, root, DLRM_MODEL)
            model = ReplicaModel.from_curve(dlrm_curve, args.dlrm_slo_ms)
            rates = [round(f * model.capacity_rps) for f in dlrm_fractions]
            measured = {r: [] for r in rates}
            for run in range(args.repeats):
                sweep = sweep_model(
                    DLRM_MODEL, **common, request_rate=rates, request_distribution="poisson", out_dir=root / "pa" / f"dlrm_open{run}",
                    measurement_interval_ms=args.measurement_interval_ms, on_log=log,
                )  # fmt: skip
                for p in sweep.points:
                    measured[round(p.point.load)].append(
                        {
                            "throughput_rps": p.point.throughput_infer_per_s,
                            "p50_ms": p.point.p50_latency_ms,
                            "p99_ms": p.point.p99_latency_ms,
                            "server_queue_ms": p.point.server_queue_ms,
                            "avg_server_batch": p.avg_server_batch,
                            "cpu_utilization_pct": p.cpu_utilization_pct,
                        }
                    )
        parts.append(
            _compare(
                "dlrm",
                _models({"perf_analyzer": dlrm_curve}, args.dlrm_slo_ms),
                dlrm_fractions,
                measured,
                slo_ms=args.dlrm_slo_ms,
                client_bound_check=True,
                note=f"The FP32 MovieLens DLRM as ONNX Runtime in a Python-backend model, dynamic batching (max_queue_delay "
                f"{args.queue_delay_us} us, preferred batches 64 and 256). Open loop: perf_analyzer --request-rate-range, Poisson, "
                "gRPC; its latency runs from send time. On these 2 cores perf_analyzer and the server compete for the CPU, and "
                "perf_analyzer falls behind the offered rate above about 0.65 mu.",
            )  # fmt: skip
        )
    report = {
        "command": shlex.join(["python", "perf/sim_check.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "perf_analyzer_version": analyzer.version(),
        "repeats": args.repeats,
        "parts": parts,
        "elapsed_s": time.perf_counter() - started,
        "notes": [
            "The replica model takes each concurrency level's latency as log-normal (its p50 and p99) and the queue beyond the "
            "largest measured concurrency as served at mu (toolkit/autoscale/simulate.py's module docstring).",
            "The load generator runs with the garbage collector's existing objects frozen (toolkit/serving/load.py): before, "
            "full collections over the torch-sized heap of this script paused it 150-260 ms and showed as p99s of 100-240 ms.",
            "A rate perf_analyzer could not measure stably (its windows did not settle within 20% after a retry) has no measured row.",
            "Why the model can over-predict as the load grows: its birth-death chain over requests outstanding is Markovian, "
            "as if service times were exponential (squared coefficient of variation Cs^2 = 1). The delay model's service is "
            "nearly constant (Cs^2 near 0), and for such queues the wait is about (1 + Cs^2) / 2 of the exponential one "
            "(Allen-Cunneen's approximation for G/G/c; Pollaczek-Khinchine for one server), so the chain overstates the "
            "queue, more so the nearer rho is to 1. A model that over-predicts latency under-states a replica's capacity at "
            "the SLO: in the simulator every policy, static peak included, then pays for more replicas than a real "
            "Deployment would. The Allen-Cunneen models scale the queue a request finds by (1 + Cs^2) / 2, with Cs^2 from the "
            "sweep's own spread at concurrency 1 (toolkit.autoscale.simulate.allen_cunneen_scale, "
            "ReplicaModel.from_curve(queue_scale=...)).",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    _plot(parts, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

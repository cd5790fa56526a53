"""Routing across three real Triton replicas, one of them slower: least-outstanding and peak EWMA vs round-robin vs pinned.

Writes perf/results/routing.{json,md,png}. Run from the repository root:

    .venv/bin/python perf/routing_report.py

Three servers (the bundled Triton 2.51 from the nvidia-pytriton wheel, or `tritonserver` on PATH)
bind 127.0.0.2, 127.0.0.3 and 127.0.0.4 with the same three ports (``--http-address``,
``--grpc-address``, ``--metrics-address``), as pods with their own IPs would. Each serves
:func:`toolkit.serving.delay_model.write_delay_model`: a Python-backend model whose requests
sleep a fixed service time, so a replica's capacity is known (instances x 1000 / delay_ms per
second) and does not depend on what else the shared 2-core machine runs. The two fast replicas
take 5 ms with 2 instances (400 requests/s each); the slow one (127.0.0.4 by default) takes 20 ms
with 1 instance (50 requests/s) -- a pod on a busier node or an older CPU.

The same offered load goes through :class:`toolkit.serving.router.Router` (gRPC) under each
policy: an open loop of Poisson arrivals at ``--rate`` requests/s, ``--requests`` requests or
``--max-duration-s`` seconds at most, from ``--connections`` clients (what ``pinned`` pins: each
client's connection sticks to one replica picked at random, as kube-proxy does for a ClusterIP
Service), latency timed from each request's due time (toolkit.serving.load.open_loop). The runs
repeat ``--repeats`` times with different seeds (arrivals and the policies' random choices),
policies interleaved, and the report gives each run and the median over runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from toolkit._io import atomic_write_text
from toolkit.serving import TritonServer
from toolkit.serving.delay_model import DELAY_MODEL_INPUT, DELAY_MODEL_WIDTH, write_delay_model
from toolkit.serving.load import open_loop
from toolkit.serving.router import POLICIES, LeastOutstanding, RoutedInferenceClient, Router, RoutingPolicy

ROOT = Path(__file__).resolve().parents[1]
MODEL = "delay"
P2C = "least_outstanding_p2c"
"""An extra row: least-outstanding with two random choices (Mitzenmacher) instead of comparing all three."""


def make(policy: str, seed: int) -> str | RoutingPolicy:
    """The router's policy for a report row."""
    return LeastOutstanding(choices=2, seed=seed) if policy == P2C else policy


def lscpu_model_name() -> str:
    """``lscpu``'s "Model name" line (``/proc/cpuinfo``'s ``model name`` where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_policy(addresses: list[str], policy: str, args: argparse.Namespace, seed: int) -> dict:
    """One open-loop run through a fresh router with ``policy``; its summary and the router's counts."""
    rows = np.ones((1, DELAY_MODEL_WIDTH), np.float32)
    router = Router(addresses, protocol="grpc", policy=make(policy, seed), model_name=MODEL, seed=seed)
    with RoutedInferenceClient(router, model_name=MODEL) as client:

        def send(i: int, connection: object) -> str:
            client.infer({DELAY_MODEL_INPUT: rows}, connection=connection)
            return client.last_address

        result = open_loop(
            send,
            rate_rps=args.rate,
            n_requests=args.requests,
            max_duration_s=args.max_duration_s,
            connections=args.connections,
            workers=args.workers,
            seed=seed,
        )
        summary = result.summary()
        summary["policy"], summary["seed"] = policy, seed
        summary["router"] = {r.address: {"requests": r.requests, "failures": r.failures} for r in router.replicas()}
        if policy == "pinned":
            pins = getattr(router.policy, "pins", {})
            summary["connections_per_replica"] = {a: sum(1 for v in pins.values() if v == a) for a in addresses}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="127.0.0.2,127.0.0.3,127.0.0.4", help="replica addresses (loopback)")
    parser.add_argument("--slow-host", default="127.0.0.4")
    parser.add_argument("--ports", default="8000,8001,8002", help="HTTP, gRPC and metrics ports, the same on every host")
    parser.add_argument("--fast-delay-ms", type=float, default=5.0)
    parser.add_argument("--fast-instances", type=int, default=2)
    parser.add_argument("--slow-delay-ms", type=float, default=20.0)
    parser.add_argument("--slow-instances", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0, help="offered load, requests/s")
    parser.add_argument("--requests", type=int, default=2000, help="requests per run")
    parser.add_argument("--max-duration-s", type=float, default=30.0, help="seconds per run at most")
    parser.add_argument("--connections", type=int, default=12, help="clients (what pinned pins)")
    parser.add_argument("--workers", type=int, default=256, help="sending threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "routing")
    args = parser.parse_args()

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    http_port, grpc_port, metrics_port = (int(p) for p in args.ports.split(","))
    t_start = time.time()
    load_before = os.getloadavg()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="routing-") as tmp, ExitStack() as stack:
        servers = {}
        for host in hosts:
            slow = host == args.slow_host
            repo = Path(tmp) / host
            write_delay_model(
                repo,
                MODEL,
                delay_ms=args.slow_delay_ms if slow else args.fast_delay_ms,
                instances=args.slow_instances if slow else args.fast_instances,
            )
            server = TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
            servers[host] = stack.enter_context(server)
        addresses = [servers[h].grpc_url for h in hosts]
        # warm-up: every replica's connection and model instances, untimed
        run_policy(addresses, "round_robin", argparse.Namespace(**{**vars(args), "requests": 60, "rate": 30.0}), seed=99)
        for repeat in range(args.repeats):
            for policy in (*POLICIES, P2C):
                summary = run_policy(addresses, policy, args, seed=repeat)
                print(f"{policy:18s} seed {repeat}: p50 {summary['p50_ms']:.1f} ms p99 {summary['p99_ms']:.1f} ms share {summary['share']}")
                runs.append(summary)
    load_after = os.getloadavg()

    slow_address = f"{args.slow_host}:{grpc_port}"
    medians = {}
    for policy in (*POLICIES, P2C):
        mine = [r for r in runs if r["policy"] == policy]
        medians[policy] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in mine), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 3),
            "slow_replica_share": round(statistics.median(r["share"].get(slow_address, 0.0) for r in mine), 4),
            "errors": sum(r["errors"] for r in mine),
        }
    lo = medians["least_outstanding"]["p99_ms"]
    report = {
        "command": shlex.join(["python", "perf/routing_report.py", *sys.argv[1:]]),
        "machine": {"cpu": lscpu_model_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "elapsed_s": round(time.time() - t_start, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "setup": {
            "server": "bundled Triton (toolkit.serving.find_tritonserver)",
            "protocol": "grpc",
            "model": f"{MODEL}: toolkit.serving.delay_model (Python backend, fixed sleep per request, no dynamic batching)",
            "replicas": {
                f"{h}:{grpc_port}": {
                    "delay_ms": args.slow_delay_ms if h == args.slow_host else args.fast_delay_ms,
                    "instances": args.slow_instances if h == args.slow_host else args.fast_instances,
                    "capacity_rps": (args.slow_instances * 1000 / args.slow_delay_ms)
                    if h == args.slow_host
                    else (args.fast_instances * 1000 / args.fast_delay_ms),
                }
                for h in hosts
            },
            "slow_replica": slow_address,
            "load": {
                "kind": "open loop, Poisson arrivals, latency from due time",
                "rate_rps": args.rate,
                "requests": args.requests,
                "max_duration_s": args.max_duration_s,
                "connections": args.connections,
                "workers": args.workers,
                "repeats": args.repeats,
            },
            "least_outstanding": "fewest outstanding requests of all replicas (this router's counts), equal counts to the "
            "lower latency EWMA, then at random; least_outstanding_p2c: the same between two replicas sampled at random",
            "peak_ewma": "lowest peak-sensitive latency EWMA (10 s decay) x (outstanding + 1) of all replicas "
            "(Finagle's and tower's PeakEwma)",
        },
        "median": medians,
        "least_outstanding_beats_both_on_p99": all(lo < medians[p]["p99_ms"] for p in ("round_robin", "pinned")),
        "runs_where_least_outstanding_beats_both_on_p99": sum(
            1
            for seed in range(args.repeats)
            if all(_run(runs, "least_outstanding", seed)["p99_ms"] < _run(runs, p, seed)["p99_ms"] for p in ("round_robin", "pinned"))
        ),
        "runs_where_peak_ewma_beats_both_on_p99": sum(
            1
            for seed in range(args.repeats)
            if all(_run(runs, "peak_ewma", seed)["p99_ms"] < _run(runs, p, seed)["p99_ms"] for p in ("round_robin", "pinned"))
        ),
        "runs_where_peak_ewma_beats_least_outstanding_on_p99": sum(
            1 for seed in range(args.repeats) if _run(runs, "peak_ewma", seed)["p99_ms"] < _run(runs, "least_outstanding", seed)["p99_ms"]
        ),
        "runs": runs,
    }
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    plot(report, out.with_suffix(".png"))
    print(
        f"wrote {out.with_suffix('.json')}, .md, .png; least_outstanding beats both on p99: {report['least_outstanding_beats_both_on_p99']}"
    )


def _run(runs: list[dict], policy: str, seed: int) -> dict:
    return next(r for r in runs if r["policy"] == policy and r["seed"] == seed)


def markdown(report: dict) -> str:
    """The report for people: set-up, medians over runs, every run."""
    s, m = report["setup"], report["machine"]
    rr_slow = s["load"]["rate_rps"] / len(s["replicas"])
    slow = s["replicas"][s["slow_replica"]]
    fast = next(r for a, r in s["replicas"].items() if a != s["slow_replica"])
    slow_capacity = slow["capacity_rps"]
    seeds = sorted({r["seed"] for r in report["runs"]})
    full_beats_p2c = sum(
        1 for seed in seeds if _run(report["runs"], "least_outstanding", seed)["p99_ms"] < _run(report["runs"], P2C, seed)["p99_ms"]
    )
    lines = [
        "# Routing across three Triton replicas, one slower (least-outstanding and peak EWMA vs round-robin vs pinned)",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']} (lscpu model name), {m['cores']} cores ({m['platform']})",
        f"- elapsed: {report['elapsed_s']} s; load average (1/5/15 min) {report['loadavg_before']} before, {report['loadavg_after']} after",
        f"- servers: {s['server']}, one per address, same ports; protocol {s['protocol']}",
        f"- model: {s['model']}",
        "- replicas: "
        + "; ".join(
            f"{a} {r['delay_ms']:g} ms x {r['instances']} instance(s) = {r['capacity_rps']:g} req/s"
            + (" (slow)" if a == s["slow_replica"] else "")
            for a, r in s["replicas"].items()
        ),
        f"- load: {s['load']['kind']}; {s['load']['rate_rps']:g} req/s, {s['load']['requests']} requests per run "
        f"(at most {s['load']['max_duration_s']:g} s), {s['load']['connections']} client connections, "
        f"{s['load']['workers']} sending threads; {s['load']['repeats']} runs per policy, policies interleaved",
        f"- least_outstanding: {s['least_outstanding']}; peak_ewma: {s.get('peak_ewma', 'not run')}; "
        "pinned: each connection on one replica picked at random (kube-proxy)",
        "",
        "## Median over runs",
        "",
        "| policy | p50 ms | p99 ms | slow replica's share | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for policy, row in report["median"].items():
        lines.append(f"| {policy} | {row['p50_ms']:.1f} | **{row['p99_ms']:.1f}** | {row['slow_replica_share']:.1%} | {row['errors']} |")
    lines += [
        "",
        f"least_outstanding beats both on p99 (medians): **{report['least_outstanding_beats_both_on_p99']}**; "
        f"in {report['runs_where_least_outstanding_beats_both_on_p99']} of {report['setup']['load']['repeats']} runs (same seed). "
        f"least_outstanding (all replicas compared) had a lower p99 than least_outstanding_p2c in {full_beats_p2c} of "
        f"{report['setup']['load']['repeats']} runs (same seed).",
        *(
            [
                "",
                f"peak_ewma beat both round_robin and pinned on p99 in {report['runs_where_peak_ewma_beats_both_on_p99']} of "
                f"{report['setup']['load']['repeats']} runs, and least_outstanding in "
                f"{report['runs_where_peak_ewma_beats_least_outstanding_on_p99']} (same seed).",
            ]
            if "runs_where_peak_ewma_beats_both_on_p99" in report
            else []
        ),
        "",
        "## Every run",
        "",
        "| policy | seed | p50 ms | p99 ms | max ms | throughput req/s | share per replica | pinned connections per replica |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["runs"]:
        share = ", ".join(f"{a} {v:.1%}" for a, v in r["share"].items())
        pins = ", ".join(f"{a} {n}" for a, n in r.get("connections_per_replica", {}).items()) or "-"
        lines.append(
            f"| {r['policy']} | {r['seed']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
            f"{r['throughput_rps']:.0f} | {share} | {pins} |"
        )
    lines += [
        "",
        "## Notes",
        "",
        f"- The slow replica is a delay model ({slow['delay_ms']:g} ms x {slow['instances']} instance(s) against the others' "
        f"{fast['delay_ms']:g} ms x {fast['instances']}), not a real ranker: with a sleep for service time, the replicas'",
        "  capacities hold on a shared 2-core machine where the load generator, three servers and other sessions' work compete",
        "  for the CPU; what is compared is where each policy sends the requests.",
        f"- Round-robin gives the slow replica a third of the load whatever its queue ({rr_slow:.3g} req/s against its capacity of "
        f"{slow_capacity:g}{'; more than it can serve, so its queue grows for the whole run' if rr_slow > slow_capacity else ''});",
        "  pinned gives it the requests of the connections that landed there (a binomial draw per run, hence the spread over",
        "  seeds); least-outstanding sends there only when its in-flight count is below the fast replicas' (or equal and its",
        "  recent latency lower).",
        *(
            [
                f"  With a {slow['delay_ms']:g} ms service time, any share above 1% puts the slow replica's own latency into the p99,",
                f"  so least-outstanding's p99 cannot fall below ~{slow['delay_ms']:g} ms here: it can only win by keeping the slow",
                "  replica's queue short, not by avoiding it.",
            ]
            if slow["delay_ms"] > fast["delay_ms"]
            else [
                "  Here the slow replica answers as fast as the others while it is idle and is slower only because it queues what",
                "  more instances would serve at once; outstanding counts do not see instance counts, so at these loads (most counts",
                "  0 or 1) least-outstanding still sends it a large share.",
            ]
        ),
        "- peak_ewma weighs each replica's in-flight count by its recent latency (a peak-sensitive EWMA of its answers, queueing",
        "  included), so a replica that answers slower at the same count, from a longer service time or from fewer instances, costs more.",
        "- The router and its outstanding counts are shared by all clients of the load generator (one process); separate",
        "  client processes with routers of their own would each see only their own requests.",
        "- least_outstanding_p2c (two random choices) is shown for comparison: on three replicas a pair without the slow one",
        "  is drawn a third of the time, and a pair with it goes to whichever has fewer in flight.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """PNG: p50/p99 per policy (median over runs) and each policy's share per replica (mean over runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(report["median"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(policies))
    ax1.bar(x - 0.2, [report["median"][p]["p50_ms"] for p in policies], 0.4, label="p50")
    ax1.bar(x + 0.2, [report["median"][p]["p99_ms"] for p in policies], 0.4, label="p99")
    ax1.set_xticks(x, policies, rotation=12, fontsize=8)
    ax1.set_ylabel("latency, ms (median over runs)")
    ax1.set_yscale("log")
    ax1.legend()
    replicas = list(report["setup"]["replicas"])
    bottom = np.zeros(len(policies))
    for address in replicas:
        shares = [statistics.mean(r["share"].get(address, 0.0) for r in report["runs"] if r["policy"] == p) for p in policies]
        label = address + (" (slow)" if address == report["setup"]["slow_replica"] else "")
        ax2.bar(x, shares, 0.6, bottom=bottom, label=label)
        bottom += np.array(shares)
    ax2.set_xticks(x, policies, rotation=12, fontsize=8)
    ax2.set_ylabel("share of requests (mean over runs)")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{report['setup']['load']['rate_rps']:g} req/s offered to 3 replicas, one slow")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()

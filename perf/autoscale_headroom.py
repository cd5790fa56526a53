"""How much spare capacity does a policy that cannot see the future need for 99% SLO attainment?

Writes perf/results/autoscale_headroom.{json,md,png}. Run from the repository root:

    .venv/bin/python perf/autoscale_headroom.py

Issue 10 asks ``tritonrec`` for >= 99% of requests within the SLO on the 1-hour ``spike`` and ``on_off``
traces at <= 70% of the static-peak replica-seconds. Both traces rise from their base to the peak in
30 s, as fast as a pod starts. This script replays them through ``toolkit.autoscale.simulate`` (the
replica model of ``tritonrec autoscale simulate``, same arrivals for every run) with headroom added
two ways, and sets each run's SLO attainment against its replica-seconds:

* a **floor** (``minReplicas``): spare pods kept at all times, the simplest headroom;
* a lower **target utilization** (``spec.capacity.targetUtilization``): spare capacity in proportion
  to the load;

each for ``tritonrec`` and for ``oracle_now``, the reference that knows the true arrival rate at every
decision (it reads the trace) but whose pods still take the start delay: the best any policy that
knows only the present can do. ``oracle_ahead`` (it knows the rate a pod start ahead) is the bound for
policies that know the future. Two pod starts: 30 s (the committed simulation's) and 10 s.

If even ``oracle_now`` with headroom reaches 99% only beyond 70% of static peak, no reactive policy
can meet the target on that trace; only knowing the load ahead (a forecast of a load that recurs) can.

A second part reruns ``tritonrec``'s default spec with each of ``--trend-windows`` as
``toolkit.autoscale.policy.TREND_WINDOW_SECONDS`` (the window whose intervals must all rise before the
trend counts) on the two traces and, when ``../shared/traces`` holds them, the two public traces of
perf/results/autoscale_sim.md: a shorter window sees a rise sooner, and follows more noise.
About 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import toolkit.autoscale.policy as tritonrec_policy  # noqa: E402
from toolkit.autoscale.signals import DeploymentSignals, ScaleDecision  # noqa: E402
from toolkit.autoscale.sim_report import make_policy  # noqa: E402
from toolkit.autoscale.simulate import ReplicaModel, load_service_curve, simulate  # noqa: E402
from toolkit.autoscale.traces import load_trace  # noqa: E402
from toolkit.cpu import machine_info  # noqa: E402

TARGET_ATTAINMENT = 0.99
TARGET_REPLICA_SHARE = 0.70


@dataclass
class Floor:
    """An autoscaler that never asks for fewer than ``floor`` replicas (headroom for a reference policy)."""

    inner: object
    floor: int

    @property
    def name(self) -> str:
        return getattr(self.inner, "name", "policy")

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        decision = self.inner.step(signals)
        return ScaleDecision(max(self.floor, decision.desired_replicas), decision.reason)


class _UtilizationModel:
    """A replica model whose ``replicas_for`` plans for ``utilization`` of the SLO capacity (the oracle's
    headroom in proportion to load); everything else is the wrapped model's."""

    def __init__(self, model: ReplicaModel, utilization: float) -> None:
        self._model, self._utilization = model, utilization

    def replicas_for(self, rate_rps: float) -> int:
        return self._model.replicas_for(rate_rps / self._utilization)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _runs(args: argparse.Namespace, model: ReplicaModel) -> list[dict]:
    out = []
    for trace_name in args.trace:
        trace = load_trace(trace_name, duration_s=args.duration, peak_rps=args.peak_rps)
        arrivals = trace.arrivals(0.02, args.seed)
        static = model.replicas_for(trace.peak_rps)
        initial = model.replicas_for(float(trace.rate_rps[: max(1, int(60.0 / trace.bin_s))].max()))
        for start_delay in args.start_delay:
            plans: list[tuple[str, str, float]] = [("oracle_ahead", "floor", 1)]
            for floor in args.floors:
                plans += [("tritonrec", "floor", floor), ("oracle_now", "floor", floor)]
            for utilization in args.utilizations:
                plans += [("tritonrec", "utilization", utilization), ("oracle_now", "utilization", utilization)]
            for name, kind, value in plans:
                floor = int(value) if kind == "floor" else 1
                overrides = {"minReplicas": floor} if kind == "floor" else {"capacity": {"targetUtilization": value}}
                the_model = model if kind == "floor" or name == "tritonrec" else _UtilizationModel(model, value)
                policy, sync_s, _ = make_policy(name, model=the_model, trace=trace, spec_overrides=overrides, start_delay_s=start_delay)
                if name != "tritonrec":
                    policy = Floor(policy, floor)
                result = simulate(
                    trace,
                    policy,
                    model,
                    sync_period_s=sync_s,
                    initial_replicas=max(initial, floor),
                    start_delay_s=start_delay,
                    arrivals=arrivals,
                )
                run = {
                    "trace": trace_name,
                    "start_delay_s": start_delay,
                    "policy": name,
                    "headroom": kind,
                    "value": value,
                    "slo_attainment": round(result.slo_attainment, 6),
                    "replica_share_of_static_peak": round(result.replica_seconds / (static * trace.duration_s), 4),
                    "scaling_actions": result.scaling_actions,
                }
                out.append(run)
                print(
                    f"{trace_name:8s} start {start_delay:4.0f} s {name:12s} {kind:11s} {value:5g}: "
                    f"{100 * run['slo_attainment']:8.4f}% at {100 * run['replica_share_of_static_peak']:5.1f}%",
                    flush=True,
                )
    return out


#: The public traces of perf/results/autoscale_sim.md (name -> load_trace arguments), read where present.
PUBLIC_TRACES = {
    "azure-llm-code": {
        "spec": "azure-llm:../shared/traces/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv",
        "bin_s": 60.0,
    },
    "azure-functions-e72c1540": {
        "spec": "azure-functions:../shared/traces/azure-functions-2019-format-vhive-invitro/invocations.csv",
        "function": "e72c1540",
    },
}


def _trend_runs(args: argparse.Namespace, model: ReplicaModel) -> tuple[list[dict], list[str]]:
    traces = {name: {"spec": name} for name in args.trace}
    skipped = []
    for name, kw in PUBLIC_TRACES.items():
        if Path(kw["spec"].split(":", 1)[1]).is_file():
            traces[name] = kw
        else:
            skipped.append(f"{name} ({kw['spec'].split(':', 1)[1]} not found)")
    out, default = [], tritonrec_policy.TREND_WINDOW_SECONDS
    try:
        for window in args.trend_windows:
            tritonrec_policy.TREND_WINDOW_SECONDS = window
            for start_delay in args.start_delay:
                for name, kw in traces.items():
                    kw = dict(kw)
                    trace = load_trace(kw.pop("spec"), duration_s=args.duration, peak_rps=args.peak_rps, **kw)
                    initial = model.replicas_for(float(trace.rate_rps[: max(1, int(60.0 / trace.bin_s))].max()))
                    policy, sync_s, _ = make_policy("tritonrec", model=model, trace=trace, start_delay_s=start_delay)
                    result = simulate(
                        trace,
                        policy,
                        model,
                        sync_period_s=sync_s,
                        initial_replicas=initial,
                        start_delay_s=start_delay,
                        arrivals=trace.arrivals(0.02, args.seed),
                    )
                    run = {
                        "trend_window_s": window,
                        "start_delay_s": start_delay,
                        "trace": name,
                        "slo_attainment": round(result.slo_attainment, 6),
                        "replica_share_of_static_peak": round(
                            result.replica_seconds / (model.replicas_for(trace.peak_rps) * trace.duration_s), 4
                        ),
                        "scaling_actions": result.scaling_actions,
                    }
                    out.append(run)
                    print(
                        f"trend window {window:4g} s start {start_delay:4.0f} s {name:26s}: {100 * run['slo_attainment']:8.4f}% "
                        f"at {100 * run['replica_share_of_static_peak']:5.1f}%, {run['scaling_actions']} actions",
                        flush=True,
                    )
    finally:
        tritonrec_policy.TREND_WINDOW_SECONDS = default
    return out, skipped


def _cheapest(runs: list[dict], trace: str, start_delay: float, policy: str) -> dict | None:
    hits = [
        r
        for r in runs
        if (r["trace"], r["start_delay_s"], r["policy"]) == (trace, start_delay, policy) and r["slo_attainment"] >= TARGET_ATTAINMENT
    ]
    return min(hits, key=lambda r: r["replica_share_of_static_peak"]) if hits else None


def _label(r: dict) -> str:
    return f"{'minReplicas' if r['headroom'] == 'floor' else 'targetUtilization'} {r['value']:g}"


def _markdown(report: dict) -> str:
    p = report["parameters"]
    lines = [
        "# Headroom against SLO attainment on the 1-hour spike and on_off traces (simulated)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores (the numbers are simulated: they do not "
        f"depend on it). Replica model: {p['perf_report']} (one replica {p['replica_rps_at_slo']:.0f} req/s "
        f"within the {p['slo_ms']:g} ms SLO under Poisson arrivals); peak {p['peak_rps']:g} req/s; seed {p['seed']}. "
        "Same model, arrivals and policies as `tritonrec autoscale simulate` (perf/results/autoscale_sim.md); "
        "the script's docstring says what each run adds.",
        "",
        f"Target (issue 10): SLO attainment >= {100 * TARGET_ATTAINMENT:g}% at <= {100 * TARGET_REPLICA_SHARE:g}% of "
        "static-peak replica-seconds. Cheapest run of each policy that reaches 99%:",
        "",
        "| trace | pod start (s) | oracle_ahead | tritonrec | oracle_now |",
        "|---|---:|---|---|---|",
    ]
    for trace in p["traces"]:
        for delay in p["start_delays_s"]:
            cells = []
            for policy in ("oracle_ahead", "tritonrec", "oracle_now"):
                best = _cheapest(report["runs"], trace, delay, policy)
                cells.append(
                    "none reaches 99%"
                    if best is None
                    else f"{100 * best['slo_attainment']:.2f}% at {100 * best['replica_share_of_static_peak']:.0f}% ({_label(best)})"
                )
            lines.append(f"| {trace} | {delay:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every run",
        "",
        "| trace | pod start (s) | policy | headroom | SLO attainment | vs static peak | scaling actions |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['trace']} | {r['start_delay_s']:g} | {r['policy']} | {_label(r)} | {100 * r['slo_attainment']:.4f}% | "
            f"{100 * r['replica_share_of_static_peak']:.1f}% | {r['scaling_actions']} |"
        )
    lines += [
        "",
        "## The trend window",
        "",
        "tritonrec's default spec with `TREND_WINDOW_SECONDS` (toolkit/autoscale/policy.py: every interval of it must rise "
        "before the trend counts; 15 s is three intervals at the 5 s sync period) set to each value:",
        "",
        "| trend window (s) | pod start (s) | trace | SLO attainment | vs static peak | scaling actions |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in report["trend_windows"]:
        lines.append(
            f"| {r['trend_window_s']:g} | {r['start_delay_s']:g} | {r['trace']} | {100 * r['slo_attainment']:.4f}% | "
            f"{100 * r['replica_share_of_static_peak']:.1f}% | {r['scaling_actions']} |"
        )
    if report["trend_windows_skipped"]:
        lines += ["", "Not run: " + "; ".join(report["trend_windows_skipped"]) + "."]
    lines += ["", "![SLO attainment against replica-seconds per trace and pod start](autoscale_headroom.png)", ""]
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    p = report["parameters"]
    panels = [(t, d) for t in p["traces"] for d in p["start_delays_s"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), sharey=True, squeeze=False)
    styles = {
        ("tritonrec", "floor"): "o-",
        ("tritonrec", "utilization"): "s--",
        ("oracle_now", "floor"): "^-",
        ("oracle_now", "utilization"): "v--",
    }
    for ax, (trace, delay) in zip(axes[0], panels, strict=True):
        runs = [r for r in report["runs"] if (r["trace"], r["start_delay_s"]) == (trace, delay)]
        for (policy, kind), style in styles.items():
            pts = sorted(
                (100 * r["replica_share_of_static_peak"], 100 * r["slo_attainment"])
                for r in runs
                if (r["policy"], r["headroom"]) == (policy, kind)
            )
            if pts:
                ax.plot(
                    *zip(*pts, strict=True), style, ms=4, label=f"{policy}, {'minReplicas' if kind == 'floor' else 'targetUtilization'}"
                )
        for r in runs:
            if r["policy"] == "oracle_ahead":
                ax.plot(100 * r["replica_share_of_static_peak"], 100 * r["slo_attainment"], "k*", ms=10, label="oracle_ahead")
        ax.fill_between([20, 100 * TARGET_REPLICA_SHARE], 100 * TARGET_ATTAINMENT, 100.05, color="tab:green", alpha=0.15, label="target")
        ax.set_xlim(20, 115)
        ax.set_ylim(84, 100.05)
        ax.set_title(f"{trace}, pod start {delay:g} s")
        ax.set_xlabel("replica-seconds, % of static peak")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("SLO attainment (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perf-report", type=Path, default=Path("perf/results/triton_movielens.json"))
    ap.add_argument("--slo-ms", type=float, default=10.0)
    ap.add_argument("--peak-rps", type=float, default=50000.0)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", action="append", default=None, help="generated trace (default: spike, on_off)")
    ap.add_argument("--start-delay", type=float, action="append", default=None, help="pod start, s (default: 30 and 10)")
    ap.add_argument("--floors", type=int, nargs="+", default=[1, 4, 6, 8, 9, 10])
    ap.add_argument("--utilizations", type=float, nargs="+", default=[0.85, 0.7, 0.55, 0.4])
    ap.add_argument("--trend-windows", type=float, nargs="+", default=[15.0, 10.0], help="TREND_WINDOW_SECONDS values of the second part")
    ap.add_argument("--out", type=Path, default=Path("perf/results"))
    args = ap.parse_args(argv)
    args.trace = args.trace or ["spike", "on_off"]
    args.start_delay = args.start_delay or [30.0, 10.0]
    model = ReplicaModel.from_curve(load_service_curve(args.perf_report), args.slo_ms)
    runs = _runs(args, model)
    trend, skipped = _trend_runs(args, model)
    report = {
        "command": " ".join(
            shlex.quote(a) for a in [".venv/bin/python", "perf/autoscale_headroom.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine_info(),
        "parameters": {
            "perf_report": str(args.perf_report),
            "slo_ms": args.slo_ms,
            "peak_rps": args.peak_rps,
            "duration_s": args.duration,
            "seed": args.seed,
            "traces": args.trace,
            "start_delays_s": args.start_delay,
            "replica_rps_at_slo": model.capacity_at_slo_rps,
        },
        "runs": runs,
        "trend_windows": trend,
        "trend_windows_skipped": skipped,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoscale_headroom.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "autoscale_headroom.md").write_text(_markdown(report))
    _plot(report, args.out / "autoscale_headroom.png")
    print(f"wrote {args.out}/autoscale_headroom.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

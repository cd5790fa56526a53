"""Policies side by side on the same traces: which policies, with which settings, and the report
(JSON, a Markdown table with the issue's targets checked, and a plot of load, replicas and latency).

Every policy replays the same arrivals (one seeded draw per trace) on the same replica model.
The policies and their settings (:func:`make_policy`):

* ``static_peak`` -- the replicas that keep the p99 within the SLO at the trace's peak rate, fixed.
* ``hpa_cpu`` -- ``toolkit.autoscale.hpa.HpaCpu`` at 80% CPU utilization (the simulated CPU is the
  replica's busy fraction, served / saturated throughput), every 15 s.
* ``hpa_queue_time`` -- ``toolkit.autoscale.hpa.HpaQueueTime`` (Triton's published prometheus-adapter
  rule) with its target set to the mean queue time the replica model predicts at 80% utilization,
  the operating point of ``hpa_cpu`` (the published 50 us is below this model's queue time at any
  load: an HPA with it would sit at maxReplicas), every 15 s.
* ``keda_threshold`` -- ``toolkit.autoscale.keda.KedaThreshold`` on the request rate
  (``sum(rate(nv_inference_request_success[1m]))``) with a threshold of 80% of the replica's saturated
  throughput per replica (the same operating point), polled every 30 s, its HPA synced every 15 s.
* ``tritonrec`` -- ``toolkit.autoscale.policy.TritonrecAutoscaler`` with the spec below, every
  ``spec.syncPeriodSeconds``.

Two references read the trace itself (:class:`Oracle`, not deployable): ``oracle_now`` knows the true
offered rate at each decision and keeps the HPA's 300 s scale-down window (a reactive policy with
perfect knowledge of the present, whose pods still take the start delay), ``oracle_ahead`` knows it a
pod start ahead (every pod is ready when its load comes).

The spec every policy gets: minReplicas 1, maxReplicas 4 x the static peak count, the SLO as
``slo.p99LatencyMs``, the HPA's default behavior, and ``capacity.perReplicaRps`` seeded with the perf
report's best throughput within the SLO (what ``capacity.fromPerfReport`` reads).
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit._io import atomic_write_json, atomic_write_text
from toolkit.autoscale.signals import Autoscaler, DeploymentSignals, ScaleDecision
from toolkit.autoscale.simulate import ReplicaModel, SimulationResult, StaticReplicas, simulate
from toolkit.autoscale.traces import Trace
from toolkit.cpu import machine_info
from toolkit.errors import AutoscaleError

__all__ = [
    "POLICIES",
    "ORACLES",
    "Oracle",
    "PolicyUnavailable",
    "SimulationSettings",
    "make_spec",
    "make_policy",
    "compare",
    "write_report",
    "check_targets",
]

#: The policies compared, in report order.
POLICIES: tuple[str, ...] = ("static_peak", "hpa_cpu", "hpa_queue_time", "keda_threshold", "tritonrec")
#: References that read the trace itself (not deployable; they bound what any policy can reach).
ORACLES: tuple[str, ...] = ("oracle_now", "oracle_ahead")
#: Seconds between an oracle's decisions.
ORACLE_SYNC_SECONDS = 5.0
#: CPU utilization target of hpa_cpu, and the utilization whose queue time is hpa_queue_time's target.
HPA_TARGET_UTILIZATION = 0.8


class Oracle:
    """A reference, not a policy one can deploy: it reads the trace's true offered rate and asks for
    the replicas that keep the p99 within the SLO at the highest rate of the next ``lookahead_s`` plus
    one decision period (``ReplicaModel.replicas_for``), plus what drains the queued requests within a
    decision period, and scales down only to the highest rate-based need of the last
    ``scale_down_window_s``.

    ``oracle_now`` (``lookahead_s = 0``, the HPA's default 300 s scale-down window): a reactive policy
    that knows the present exactly, with pods that still take the start delay. ``oracle_ahead``
    (``lookahead_s`` = pod start + one decision period, no window): every pod is ready when its load
    comes, and none is kept longer than it is needed: close to the best any policy can do.
    """

    def __init__(
        self, name: str, trace: Trace, model: ReplicaModel, lookahead_s: float, sync_period_s: float, scale_down_window_s: float = 0.0
    ) -> None:
        self.name, self.trace, self.model = name, trace, model
        self.lookahead_s, self.sync_period_s, self.scale_down_window_s = lookahead_s, sync_period_s, scale_down_window_s
        self._needs: list[tuple[float, int]] = []

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        """The replicas for the highest true rate in ``[now, now + lookahead_s + sync_period_s]`` plus the
        backlog, held at the highest need of the scale-down window."""
        t, now = self.trace, signals.now
        lo = int(now // t.bin_s)
        hi = int((now + self.lookahead_s + self.sync_period_s) // t.bin_s) + 1
        rate = float(t.rate_rps[min(lo, t.rate_rps.size - 1) : max(hi, lo + 1)].max())
        backlog = sum(max(0.0, (p.pending_requests or 0.0) - self.model.c_max) for p in signals.ready_pods)
        steady = self.model.replicas_for(rate)
        need = self.model.replicas_for(rate + backlog / self.sync_period_s)
        # the window remembers the steady need only: a drained backlog is not kept
        self._needs = [(s, n) for s, n in self._needs if s > now - self.scale_down_window_s] + [(now, steady)]
        want = max(need, max(n for _, n in self._needs))
        return ScaleDecision(want, f"oracle: {rate:.0f} req/s ahead, {backlog:.0f} queued: {need} needed, {want} kept")


class PolicyUnavailable(AutoscaleError):
    """A policy's module or class is not in this checkout (the report lists it as missing)."""


@dataclass(frozen=True)
class SimulationSettings:
    """What every run of a comparison shares.

    Attributes:
        slo_ms: latency objective, ms (p99, and the threshold of SLO attainment).
        start_delay_s: pod start + model load, seconds.
        step_s: simulation time step, seconds.
        seed: seed of the arrivals.
        queue_timeout_s: requests that would queue longer are rejected (Triton's queue policy with
            REJECT); None: unbounded queues, Triton's default.
        spec_overrides: ``TritonAutoscaler`` spec fields over the defaults (:func:`make_spec`), for
            every autoscaled policy (the HPA and KEDA baselines read min/max replicas and behavior).
    """

    slo_ms: float = 10.0
    start_delay_s: float = 30.0
    step_s: float = 0.02
    seed: int = 0
    queue_timeout_s: float | None = None
    spec_overrides: Mapping[str, Any] | None = None


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def make_spec(model: ReplicaModel, max_replicas: int, overrides: Mapping[str, Any] | None = None):
    """The ``TritonAutoscaler`` spec the policies get (see the module docstring).

    Args:
        model: the replica model (its SLO and the perf report's capacity are the defaults).
        max_replicas: the default ``maxReplicas``.
        overrides: spec fields (camelCase, as in the resource; or a whole ``TritonAutoscaler`` object)
            merged over the defaults, nested mappings field by field.

    Raises:
        InvalidAutoscalerSpecError: the merged spec is invalid (the message names the field).
    """
    from toolkit.autoscale.spec import KIND, parse_spec

    seed_rps = model.curve.best_within(model.slo_ms) or model.capacity_at_slo_rps
    base = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton-ranker"},
        "minReplicas": 1,
        "maxReplicas": max(2, max_replicas),
        "slo": {"p99LatencyMs": model.slo_ms},
        "capacity": {"perReplicaRps": round(seed_rps, 3)},
    }
    if overrides and overrides.get("kind") == KIND and isinstance(overrides.get("spec"), Mapping):
        overrides = overrides["spec"]
    return parse_spec(_merged(base, overrides or {}))


def _load(module: str, cls: str) -> type:
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise PolicyUnavailable(f"{module}.{cls} is not available in this checkout: {exc}") from exc


def make_policy(
    name: str, *, model: ReplicaModel, trace: Trace, spec_overrides: Mapping[str, Any] | None = None, start_delay_s: float = 30.0
) -> tuple[Autoscaler, float, dict]:
    """The policy called ``name`` for ``trace``, the seconds between its decisions, and its settings
    (``spec_overrides``: see :func:`make_spec`).

    Raises:
        PolicyUnavailable: its module or class is not there.
        AutoscaleError: an unknown name.
    """
    static = model.replicas_for(trace.peak_rps)
    if name == "static_peak":
        return StaticReplicas(static), 60.0, {"replicas": static}
    spec = make_spec(model, 4 * static, spec_overrides)
    if name == "hpa_cpu":
        cls = _load("toolkit.autoscale.hpa", "HpaCpu")
        policy = cls(spec, target_utilization=HPA_TARGET_UTILIZATION)
        return policy, float(getattr(policy, "sync_period_seconds", 15.0)), {"target_utilization": HPA_TARGET_UTILIZATION}
    if name == "hpa_queue_time":
        cls = _load("toolkit.autoscale.hpa", "HpaQueueTime")
        target_ms = float(model.queue_ms[model.row(HPA_TARGET_UTILIZATION * model.capacity_rps)])
        policy = cls(spec, target_queue_ms=target_ms)
        return policy, float(getattr(policy, "sync_period_seconds", 15.0)), {"target_queue_ms": round(target_ms, 4)}
    if name == "keda_threshold":
        cls = _load("toolkit.autoscale.keda", "KedaThreshold")
        threshold = round(HPA_TARGET_UTILIZATION * model.capacity_rps, 3)
        policy = cls(spec, threshold, metric="request_rate")
        settings = {k: v for k, v in vars(policy).items() if isinstance(v, int | float | str) and not k.startswith("_")}
        return policy, float(getattr(policy, "sync_period_seconds", 15.0)), settings
    if name == "tritonrec":
        cls = _load("toolkit.autoscale.policy", "TritonrecAutoscaler")
        return cls(spec), float(spec.sync_period_seconds), {"spec": spec.model_dump(by_alias=True, exclude_none=True)}
    if name in ORACLES:
        ahead, window = (0.0, 300.0) if name == "oracle_now" else (start_delay_s + ORACLE_SYNC_SECONDS, 0.0)
        oracle = Oracle(name, trace, model, ahead, ORACLE_SYNC_SECONDS, scale_down_window_s=window)
        return oracle, ORACLE_SYNC_SECONDS, {"lookahead_s": ahead, "scale_down_window_s": window}
    raise AutoscaleError(f"unknown policy {name!r}", hint=f"use some of {', '.join(POLICIES + ORACLES)}")


def compare(
    trace: Trace,
    model: ReplicaModel,
    policies: Sequence[str] = POLICIES,
    settings: SimulationSettings = SimulationSettings(),
    *,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[list[SimulationResult], dict[str, str], dict[str, dict]]:
    """Run each of ``policies`` on the same arrivals of ``trace``.

    Autoscaled policies start with the replicas the trace's first minute needs at its highest rate (ready
    at time 0), as a Deployment that has been running before the trace starts would have.

    Returns:
        (results in the order given, {policy: why it is missing}, {policy: its settings}).
    """
    arrivals = trace.arrivals(settings.step_s, settings.seed)
    initial = model.replicas_for(float(trace.rate_rps[: max(1, int(math.ceil(60.0 / trace.bin_s)))].max()))
    results, missing, used = [], {}, {}
    for name in policies:
        try:
            policy, sync_s, policy_settings = make_policy(
                name, model=model, trace=trace, spec_overrides=settings.spec_overrides, start_delay_s=settings.start_delay_s
            )
        except PolicyUnavailable as exc:
            missing[name] = str(exc)
            continue
        start = initial if name != "static_peak" else policy.replicas
        began = time.perf_counter()
        result = simulate(
            trace,
            policy,
            model,
            sync_period_s=sync_s,
            initial_replicas=start,
            start_delay_s=settings.start_delay_s,
            step_s=settings.step_s,
            queue_timeout_s=settings.queue_timeout_s,
            arrivals=arrivals,
            progress=None if progress is None else (lambda f, n=name: progress(n, f)),
        )
        result.name = name
        used[name] = {
            "timed_out_share": round(result.timed_out / result.requests, 6) if result.requests else 0.0,
            "sync_period_s": sync_s,
            "initial_replicas": start,
            "elapsed_s": round(time.perf_counter() - began, 2),
            **policy_settings,
        }
        results.append(result)
    return results, missing, used


def check_targets(results: Sequence[SimulationResult], trace_name: str) -> list[str]:
    """The issue's targets for ``tritonrec`` on this trace, each as one line ending in "met" or "NOT met".

    spike, on_off: SLO attainment >= 99%, replica-seconds <= 70% of static_peak's, and a higher SLO
    attainment than hpa_cpu and hpa_queue_time at no more replica-seconds. diurnal: replica-seconds
    <= 60% of static_peak's.
    """
    by = {r.name: r for r in results}
    ours, static = by.get("tritonrec"), by.get("static_peak")
    if ours is None or static is None:
        return ["tritonrec or static_peak was not run: no target checked"]
    lines = []
    ratio = ours.replica_seconds / static.replica_seconds
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    if trace_name in ("spike", "on_off"):
        lines.append(f"SLO attainment {ours.slo_attainment:.4%} >= 99%: {verdict(ours.slo_attainment >= 0.99)}")
        lines.append(f"replica-seconds {ratio:.1%} of static_peak <= 70%: {verdict(ratio <= 0.70)}")
        for hpa in ("hpa_cpu", "hpa_queue_time"):
            other = by.get(hpa)
            if other is None:
                lines.append(f"beats {hpa}: not run")
                continue
            ok = ours.slo_attainment > other.slo_attainment and ours.replica_seconds <= other.replica_seconds
            lines.append(
                f"beats {hpa} ({other.slo_attainment:.4%} at {other.replica_seconds:.0f} replica-s) on SLO attainment "
                f"at no more replica-seconds: {verdict(ok)}"
            )
    elif trace_name == "diurnal":
        lines.append(f"replica-seconds {ratio:.1%} of static_peak <= 60%: {verdict(ratio <= 0.60)}")
    return lines


def _plot(runs: dict[str, tuple[Trace, list[SimulationResult]]], slo_ms: float, path: Path) -> None:
    from toolkit.errors import optional_dependencies

    with optional_dependencies("the simulation plot"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    names = list(runs)
    fig, axes = plt.subplots(3, len(names), figsize=(5.2 * len(names), 9.5), sharex="col", squeeze=False)
    palette = ("#444444", "#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#8c564b", "#2ca02c")
    colors = {p: c for p, c in zip(POLICIES + ORACLES, palette, strict=True)}
    for col, name in enumerate(names):
        trace, results = runs[name]
        load_ax, rep_ax, lat_ax = axes[:, col]
        t0 = results[0].timeline["t_s"] / 60.0 if results else np.zeros(0)
        if results:
            load_ax.plot(t0, results[0].timeline["arrival_rps"] / 1000.0, color="black", lw=0.6)
        load_ax.set_title(name, fontsize=10)
        load_ax.set_ylabel("offered load (k req/s)")
        for r in results:
            tl = r.timeline
            t = tl["t_s"] / 60.0
            rep_ax.step(t, tl["pods"], where="post", lw=1.0, color=colors.get(r.name), label=r.name)
            p99 = np.where(np.isfinite(tl["p99_ms"]), tl["p99_ms"], 1e6)
            # a 10 s rolling max keeps the plot readable at 1 s resolution
            k = 10
            pad = (-len(p99)) % k
            rolled = np.concatenate([p99, np.full(pad, np.nan)]).reshape(-1, k)
            lat_ax.plot(t[::k], np.nanmax(rolled, axis=1), lw=0.9, color=colors.get(r.name), label=r.name)
        rep_ax.set_ylabel("pods (incl. starting, draining)")
        lat_ax.axhline(slo_ms, color="green", ls="--", lw=0.8, label=f"SLO {slo_ms:g} ms")
        lat_ax.set_yscale("log")
        lat_ax.set_ylabel("worst pod p99 per 10 s (ms)")
        lat_ax.set_xlabel("time (min)")
        if col == 0:
            rep_ax.legend(fontsize=7, loc="upper left")
            lat_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def _markdown(report: dict, targets: dict[str, list[str]], plot_name: str) -> str:
    p = report["parameters"]
    lines = [
        "# Autoscaling policies on load traces (simulated)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Replica model: {report['perf_report']}; SLO: p99 <= {p['slo_ms']:g} ms (attainment = share of requests within it); "
        f"pod start + model load {p['start_delay_s']:g} s; step {p['step_s'] * 1000:g} ms; seed {p['seed']}. "
        "Model and assumptions: `toolkit/autoscale/simulate.py` (module docstring); policies and their settings: "
        "`toolkit/autoscale/sim_report.py` and `parameters.traces.<trace>.policies` in the JSON.",
        "",
        "Reading it:",
        "",
        f"- A new pod serves {p['start_delay_s']:g} s after the decision that creates it. Where the load rises faster than "
        "that (spike, on_off, the real traces' jumps), every reactive policy is short of capacity for about the start delay "
        "plus one sync period, whatever it decides. tritonrec also forecasts load that recurs (`spec.forecast`: once its "
        "arrival history holds a period twice, it scales up a pod start before the load that period brings back, and "
        "down when none comes back within the scale-down window); the first two bursts of on_off, a lone spike and one "
        "diurnal period are met reactively.",
        "- Requests already queued on a pod stay there (one FIFO queue per pod, as in Triton); new pods get the new requests "
        "(least outstanding), so a queue built during a shortfall drains at one pod's rate. "
        + (
            "Queues are unbounded (Triton's default queue policy), so after a shortfall they hold seconds to minutes of "
            "requests, which dominates p99 and SLO attainment."
            if p.get("queue_timeout_s") is None
            else f"Requests that would queue longer than {p['queue_timeout_s'] * 1000:g} ms are rejected (they count as out of "
            "the SLO, at the timeout)."
        ),
        f"- One replica serves {p['replica_model']['saturated_rps']:g} req/s saturated, "
        f"{p['replica_model']['capacity_at_slo_rps']:g} req/s within the SLO under Poisson arrivals (open loop); the perf "
        f"report's closed-loop sweep reaches {p['replica_model']['measured_best_within_slo_rps']:g} req/s within it, the "
        "capacity seed the policies get. static_peak runs at its SLO capacity at the peak. Queue model: "
        + (
            "Markovian (exponential service; it over-predicts latency near saturation, perf/results/sim_check.md)."
            if p["replica_model"].get("queue_scale", 1.0) == 1.0
            else f"Allen-Cunneen, {p['replica_model']['queue_scale']:.2f} of the Markovian queue (perf/results/sim_check.md)."
        ),
        "",
    ]
    for name, entry in report["traces"].items():
        info = p["traces"][name]
        lines += [f"## {name}", "", f"{info['source']}; peak {info['peak_rps']:g} req/s, mean {info['mean_rps']:.0f} req/s.", ""]
        lines += [
            "| policy | SLO attainment | p99 (ms) | replica-seconds | vs static | scaling actions |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        static = next((e for e in entry["policies"] if e["name"] == "static_peak"), None)
        for e in entry["policies"]:
            vs = f"{e['replica_seconds'] / static['replica_seconds']:.0%}" if static else "-"
            p99 = "inf" if e["p99_ms"] is None else f"{e['p99_ms']:.2f}"
            lines.append(
                f"| {e['name']} | {e['slo_attainment']:.4%} | {p99} | {e['replica_seconds']:.0f} | {vs} | {e['scaling_actions']} |"
            )
        for missing, why in info.get("missing_policies", {}).items():
            lines.append(f"| {missing} | missing: {why} | | | | |")
        if targets.get(name):
            lines += ["", "Targets (issue 10) for tritonrec:", ""] + [f"- {t}" for t in targets[name]]
        lines.append("")
    lines += [f"![load, pods and latency over time per policy]({plot_name})", ""]
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    runs: dict[str, tuple[Trace, list[SimulationResult], dict[str, str], dict[str, dict]]],
    *,
    command: str,
    model: ReplicaModel,
    perf_report: str,
    settings: SimulationSettings,
    stem: str = "autoscale_sim",
    provenance: dict | None = None,
) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``.

    The JSON: ``{"traces": {TRACE: {"policies": [{"name", "slo_attainment", "p99_ms",
    "replica_seconds", "scaling_actions"}, ...]}}, "command", "perf_report", "machine", "parameters"}``
    (``p99_ms`` is null when more than 1% of requests failed).

    Args:
        runs: trace name -> (trace, results, missing policies, policy settings) from :func:`compare`.
        stem: the file names' stem.
        provenance: more entries for ``parameters`` (e.g. the git commit of the code that ran).

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    traces, params_traces, targets = {}, {}, {}
    for name, (trace, results, missing, used) in runs.items():
        traces[name] = {"policies": [r.summary() for r in results]}
        params_traces[name] = {
            "source": trace.source,
            "duration_s": trace.duration_s,
            "peak_rps": round(trace.peak_rps, 3),
            "mean_rps": round(trace.mean_rps, 3),
            "requests": round(results[0].requests) if results else 0,
            "policies": used,
            **({"missing_policies": missing} if missing else {}),
        }
        targets[name] = check_targets(results, name)
    report = {
        "traces": traces,
        "command": command,
        "perf_report": perf_report,
        "machine": machine_info(numpy=np.__version__),
        "parameters": {
            "slo_ms": settings.slo_ms,
            "start_delay_s": settings.start_delay_s,
            "step_s": settings.step_s,
            "seed": settings.seed,
            "queue_timeout_s": settings.queue_timeout_s,
            "spec_overrides": dict(settings.spec_overrides or {}),
            "replica_model": {
                "source": model.curve.source,
                "saturated_rps": round(model.capacity_rps, 3),
                "capacity_at_slo_rps": round(model.capacity_at_slo_rps, 3),
                "measured_best_within_slo_rps": model.curve.best_within(model.slo_ms),
                "queue_scale": model.queue_scale,
            },
            "traces": params_traces,
            "targets": targets,
            **(provenance or {}),
        },
    }
    json_path, md_path, png_path = (out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    atomic_write_json(json_path, report)
    _plot({n: (t, r) for n, (t, r, _, _) in runs.items()}, settings.slo_ms, png_path)
    atomic_write_text(md_path, _markdown(report, targets, png_path.name))
    return [json_path, md_path, png_path]

"""Our policy, table-driven on a fake clock in the style of the HPA's and Knative's own tests: burst,
ramp, steady load without flapping, slow scale-down, metric loss, counter resets, no ready pods, pods
still loading, max and min limits, capacity learning and its seed from a perf report.

Unless a test says otherwise: one replica serves 100 req/s within the SLO (spec.capacity), the SLO is
a 60 ms p99 (a 20 ms mean budget at p99ToMeanRatio 3), decisions every 5 s, the HPA's behavior.
A pod within the SLO queues 1 ms and computes 2 ms per request; an overloaded one queues 30 ms."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace

import pytest

from toolkit.autoscale.policy import History, TritonrecAutoscaler, decide, initial_history, seed_capacity_from_perf_report
from toolkit.autoscale.signals import DeploymentSignals, PodSignals
from toolkit.autoscale.spec import parse_spec
from toolkit.errors import PerfError

BASE = {
    "scaleTargetRef": {"name": "triton"},
    "minReplicas": 1,
    "maxReplicas": 20,
    "slo": {"p99LatencyMs": 60},
    "capacity": {"perReplicaRps": 100, "targetUtilization": 1.0},
}


def _spec(**overrides):
    return parse_spec({**BASE, **overrides})


SPEC = _spec()


def _pod(name, now, rate, *, queue_ms=1.0, pending=0.0, **kw) -> PodSignals:
    fields = {
        "scraped_at": now,
        "request_rate": rate,
        "inference_rate": rate,
        "queue_us_per_request": queue_ms * 1000.0,
        "compute_us_per_inference": 2000.0,
        "pending_requests": pending,
    }
    fields.update(kw)
    return PodSignals(name, "ready", **fields)


def _load(now, total, replicas, *, ready=None, pending=0.0, busy=None) -> DeploymentSignals:
    """``total`` req/s served evenly by ``ready`` (default: all) of ``replicas`` pods, the rest starting;
    a pod above 100 req/s (or ``busy``) queues 30 ms, else 1 ms; ``pending`` requests spread evenly."""
    ready = replicas if ready is None else ready
    per = total / ready if ready else 0.0
    over = busy if busy is not None else per > 100
    pods = [_pod(f"p{i}", now, per, queue_ms=70.0 if over else 1.0, pending=pending / ready) for i in range(ready)]
    pods += [PodSignals(f"s{i}", "starting") for i in range(replicas - ready)]
    return DeploymentSignals(now=now, current_replicas=replicas, pods=tuple(pods))


def _run(spec, steps, history=None):
    """Decide for each ``(now, signals)``; returns the decisions and the last history."""
    history = history or initial_history(spec)
    out = []
    for now, sig in steps:
        d, history = decide(sig, history, spec, now)
        out.append(d)
    return out, history


def _reason(d, ctype):
    return next(c for c in d.conditions if c.type == ctype)


# --- burst and panic ----------------------------------------------------------------------------------------------


def test_burst_panics_scales_up_at_once_and_never_down_while_panicking() -> None:
    """Knative-style panic: the need reaches 200% of the replicas -> straight to the need; later lower
    needs within the 60 s after the last crossing do not scale down. Backlogs drain within the 30 s a
    pod takes to start (the default until a start is seen)."""
    steps = [
        (0.0, _load(0.0, 150, 2)),  # 75 req/s each, within the SLO: need 2
        # 110 req/s each, over the SLO, 3000 pending (+600/s): arrivals 150 -> 820 req/s, mean 485 (one
        # rising interval is no trend); excess 3000 - 485 * 0.02 = 2990.3 drained in 30 s
        # -> (485 + 99.7) / 100 = 5.85 -> 6 (300% of 2)
        (5.0, _load(5.0, 220, 2, pending=3000, busy=True)),
        # 2 ready of 6, 6000 pending: arrivals 820 (150, 820, 820 does not rise), excess 5983.6 -> 10.19 -> 11
        (10.0, _load(10.0, 220, 6, ready=2, pending=6000, busy=True)),
        # the load falls (100 req/s served, backlog unchanged: need 7), but in panic: stay at 11
        (15.0, _load(15.0, 100, 11, ready=2, pending=6000)),
        # 65 s after the last crossing: panic is over; the 300 s window holds the highest steady need, 9 (t=10)
        (70.0, _load(70.0, 160, 11)),
    ]
    d, _ = _run(SPEC, steps)
    assert [x.desired_replicas for x in d] == [2, 6, 11, 11, 9]
    assert [x.signals["panic"] for x in d] == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert _reason(d[1], "AbleToScale").reason == "Panic" and d[1].reason.startswith("panic")
    assert d[1].signals["arrival_rate_rps"] == d[1].signals["forecast_rate_rps"] == pytest.approx(485.0)
    assert d[2].signals["needed_replicas"] == pytest.approx(10.1945, abs=1e-4)
    assert _reason(d[4], "AbleToScale").reason == "ScaleDownStabilized"


def test_panic_is_not_held_back_by_the_scale_up_rate_limit() -> None:
    """From 1 replica a need of 10 is reached in one step; the HPA's max(4 pods, 100%) would allow 5."""
    d, _ = _run(SPEC, [(0.0, _load(0.0, 1000, 1, busy=True))])
    assert d[0].desired_replicas == 10 and d[0].signals["panic"] == 1.0


# --- ramp, rate limits, steady load ----------------------------------------------------------------------------------


def test_ramp_is_followed_ahead_by_the_start_of_a_pod() -> None:
    """+10% per 5 s: once every interval of the last 15 s rises, the smallest slope is projected over the
    35 s a pod takes to start and serve until the next decision (t=10: 484 + 8 req/s/s * 35 s = 764 ->
    8); no panic; the HPA's scale-up limit (max(4 pods, 100%) per 15 s) holds t=15 at 8."""
    spec = _spec(panicWindowSeconds=1)  # one sample per window: the arrival is each step's own load
    loads = [400 * 1.1**k for k in range(7)]
    history, replicas, seen = initial_history(spec), 4, []
    for k, load in enumerate(loads):
        d, history = decide(_load(5.0 * k, load, replicas), history, spec, 5.0 * k)
        replicas = d.desired_replicas
        seen.append(replicas)
        assert d.signals["panic"] == 0.0
    assert seen == [4, 5, 8, 8, 9, 10, 11]
    assert d.signals["forecast_rate_rps"] == pytest.approx(loads[6] + (loads[4] - loads[3]) / 5 * 35)


def test_a_step_is_not_a_trend() -> None:
    spec = _spec(panicWindowSeconds=1)
    d, _ = _run(spec, [(0.0, _load(0.0, 400, 4)), (5.0, _load(5.0, 800, 8)), (10.0, _load(10.0, 800, 8))])
    assert d[2].signals["forecast_rate_rps"] == d[2].signals["arrival_rate_rps"] == pytest.approx(800)


def test_a_tighter_scale_up_policy_limits_the_step() -> None:
    spec = _spec(panicWindowSeconds=1, behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}})
    d, _ = _run(spec, [(0.0, _load(0.0, 600, 4))])  # need 6 = 150% of 4: no panic, one pod per 15 s
    assert d[0].desired_replicas == 5
    assert (_reason(d[0], "ScalingLimited").status, _reason(d[0], "ScalingLimited").reason) == ("True", "ScaleUpLimit")


def test_steady_load_does_not_flap() -> None:
    """400 req/s ± 1% for 20 minutes: the need is 4 or 5; once at 5 the scale-down window (the highest
    need of the last 300 s) keeps 5."""
    noise = [0, 4, -4, 2, -2, 3, -3, 1, -1, 0]
    history, replicas, counts = initial_history(SPEC), 4, []
    for k in range(240):
        d, history = decide(_load(5.0 * k, 400 + noise[k % len(noise)], replicas), history, SPEC, 5.0 * k)
        replicas = d.desired_replicas
        counts.append(replicas)
    assert counts[0] == 4 and set(counts[1:]) == {5}


def test_scale_down_waits_for_the_stabilization_window() -> None:
    """800 req/s on 8 replicas until t=55, then 100 req/s: the last need of 8 (t=55) leaves the 300 s
    window after t=355; the HPA's default scale-down policy (100% per 15 s) then allows the drop."""
    history, out = initial_history(SPEC), {}
    replicas = 8
    for k in range(80):
        now = 5.0 * k
        d, history = decide(_load(now, 800 if now < 60 else 100, replicas), history, SPEC, now)
        replicas = d.desired_replicas
        out[now] = replicas
    assert all(out[t] == 8 for t in out if t <= 350)
    assert out[355.0] == 5  # the t=60 need (arrival (800 + 100) / 2 = 450 -> 5) is still in the window
    assert out[360.0] == 1


def _decline(noise_rps: float) -> dict[float, object]:
    """1000 req/s falling by 1 req/s every second for 600 s, plus ``noise_rps`` alternately added and taken
    away at each decision; every replica asked for serves at the next decision. Returns ``{time: decision}``."""
    history, replicas, out = initial_history(SPEC), 10, {}
    for k in range(121):
        now = 5.0 * k
        d, history = decide(_load(now, 1000.0 - now + (noise_rps if k % 2 else -noise_rps), replicas), history, SPEC, now)
        out[now], replicas = d, d.desired_replicas
    return out


def test_a_steady_decline_is_followed_down_instead_of_held_for_the_window() -> None:
    """Once the history spans the 300 s window (t=270), a fall that a line explains (R^2 >= 0.9) is followed:
    at t=600 the arrivals (mean of the 6 s panic window, 402.5 req/s) need 5 replicas, and 5 are kept,
    where the window's highest need (697.5 req/s at t=305) would keep 7."""
    out = _decline(0.0)
    assert all(out[t].desired_replicas == 10 for t in (0.0, 60.0, 90.0))
    assert "fell steadily over the 300 s window" in out[270.0].reason
    assert out[270.0].signals["declining_rate_rps"] == pytest.approx(730.0)  # no residuals: the line itself
    assert out[600.0].desired_replicas == 5 and out[600.0].signals["declining_window_replicas"] == 5.0


def test_a_noisy_decline_is_no_steady_decline_and_waits_for_the_window() -> None:
    """The same fall with +-100 req/s of noise on each sample: the line explains less than 0.9 of the
    variance (the fall over 300 s has a variance of 300^2 / 12 = 7500, the noise 10000), so the window keeps
    its highest need. (The panic window's mean of two samples cancels the alternating noise, so the needs
    are those of the clean fall.)"""
    out = _decline(100.0)
    assert all("declining_rate_rps" not in d.signals for d in out.values())
    assert out[600.0].desired_replicas == 7  # the t=305 need: 697.5 req/s


def test_scale_down_in_bounded_steps() -> None:
    spec = _spec(behavior={"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    history, out, replicas = initial_history(spec), {}, 8
    for k in range(90):
        now = 5.0 * k
        d, history = decide(_load(now, 800 if now < 60 else 100, replicas), history, spec, now)
        replicas = d.desired_replicas
        out[now] = (replicas, _reason(d, "ScalingLimited").reason)
    assert out[350.0][0] == 8
    assert out[355.0] == (7, "ScaleDownLimit")
    assert out[410.0][0] == 7
    assert out[415.0] == (6, "ScaleDownLimit")


# --- metric loss, partial and stale metrics, fallback, counter resets -------------------------------------------


def _three(now, rate_each, **pod_overrides) -> DeploymentSignals:
    pods = []
    for i in range(3):
        name = f"p{i}"
        pod = _pod(name, now, rate_each, queue_ms=30.0 if rate_each > 100 else 1.0)
        if name in pod_overrides:
            pod = PodSignals(**{**pod.__dict__, **pod_overrides[name]})
        pods.append(pod)
    return DeploymentSignals(now=now, current_replicas=3, pods=tuple(pods))


@pytest.mark.parametrize(
    ("override", "reason", "text"),
    [
        ({"failed_scrapes": 1, "scraped_at": 0.0}, "FailedScrape", "pod p1 metrics endpoint failed 1 scrape"),
        ({"missing": ("nv_inference_queue_duration_us",)}, "MetricsMissing", "pod p1 lacks nv_inference_queue_duration_us"),
        ({"scraped_at": -20.0}, "MetricsStale", "pod p1 last scraped"),
        ({"request_rate": None}, "MetricsMissing", "pod p1 has no request_rate"),
    ],
    ids=["endpoint-down", "metric-missing", "stale", "partial"],
)
def test_missing_stale_or_partial_metrics_hold_and_name_the_pod(override, reason, text) -> None:
    """Load falls to a need of 1, but one pod cannot be read: the policy holds 3 (past the scale-down
    window too) and says which pod and what."""
    history = initial_history(SPEC)
    _, history = decide(_three(0.0, 80), history, SPEC, 0.0)
    for now in (400.0, 405.0):  # beyond the 300 s window
        sig = _three(now, 10, p1={**override, **({"scraped_at": now - 20.0} if "stale" in text else {})})
        d, history = decide(sig, history, SPEC, now)
        assert d.desired_replicas == 3 and d.hold
        active = _reason(d, "ScalingActive")
        assert (active.status, active.reason) == ("False", reason)
        assert text in active.message


def test_partial_metrics_still_scale_up_from_the_other_pods() -> None:
    sig = _three(0.0, 150, p1={"failed_scrapes": 1})  # p0, p2 at 150 req/s over the SLO: (300 * 3/2) / 100 -> 5
    d, _ = decide(sig, initial_history(SPEC), SPEC, 0.0)
    assert d.desired_replicas == 5 and not d.hold
    assert "pod p1" in _reason(d, "ScalingActive").message


@pytest.mark.parametrize(
    ("failed", "fallback", "expected", "reason"),
    [(3, 5, 5, "FallbackReplicas"), (3, 2, 3, "FallbackReplicas"), (2, 5, 3, "FailedScrape"), (3, None, 3, "FailedScrape")],
    ids=["fallback-up", "fallback-never-down", "not-yet", "no-fallback"],
)
def test_fallback_after_n_failed_scrapes_of_every_ready_pod(failed, fallback, expected, reason) -> None:
    spec = _spec(fallback={"failedScrapes": 3, **({"replicas": fallback} if fallback else {})})
    over = {"failed_scrapes": failed, "scraped_at": -100.0}
    d, _ = decide(_three(0.0, 80, p0=over, p1=over, p2=over), initial_history(spec), spec, 0.0)
    assert d.desired_replicas == expected
    assert _reason(d, "ScalingActive").reason == reason
    assert d.hold == (expected == 3)


def test_counter_reset_does_not_scale_down() -> None:
    """p1 restarts: its first scrape has no rate (hold), the next counts from zero and reads low for one
    interval (a lower need, kept out by the scale-down window)."""
    history = initial_history(SPEC)
    d, history = decide(_three(0.0, 80), history, SPEC, 0.0)
    assert d.desired_replicas == 3  # 240 req/s
    d, history = decide(
        _three(5.0, 80, p1={"request_rate": None, "inference_rate": None, "queue_us_per_request": None}), history, SPEC, 5.0
    )
    assert (d.desired_replicas, d.hold) == (3, True)
    d, history = decide(_three(10.0, 80, p1={"request_rate": 5.0, "inference_rate": 5.0}), history, SPEC, 10.0)
    assert (d.desired_replicas, d.hold) == (3, False)
    # (80 + 5 + 80) req/s: p1's first scrape added no arrival sample (it held the 240 of before, never
    # less), and the 240 of t = 0 is out of the panic window: 1.65 replicas' worth
    assert d.signals["needed_replicas"] == pytest.approx(1.65)


# --- no ready pods, pods still loading --------------------------------------------------------------------------


def test_no_ready_pod_holds_and_names_the_starting_pods() -> None:
    sig = DeploymentSignals(now=0.0, current_replicas=3, pods=tuple(PodSignals(f"s{i}", "starting") for i in range(3)))
    d, _ = decide(sig, initial_history(SPEC), SPEC, 0.0)
    assert (d.desired_replicas, d.hold) == (3, True)
    assert _reason(d, "ScalingActive").reason == "NoReadyPods" and "3 starting" in _reason(d, "ScalingActive").message


def test_scales_up_from_zero_ready_pods() -> None:
    spec = _spec(minReplicas=2)
    d, _ = decide(DeploymentSignals(now=0.0, current_replicas=0), initial_history(spec), spec, 0.0)
    assert d.desired_replicas == 2 and not d.hold
    # every pod restarted after a need of 6 was seen 10 s ago: size back to 6
    history = History(capacity_rps=100.0, last_need=(0.0, 6))
    sig = DeploymentSignals(now=10.0, current_replicas=2, pods=(PodSignals("s0", "starting"), PodSignals("s1", "starting")))
    d, _ = decide(sig, history, SPEC, 10.0)
    assert d.desired_replicas == 6 and "the last need seen (6)" in _reason(d, "ScalingActive").message


def test_pods_still_loading_count_as_capacity_on_the_way() -> None:
    """2 ready pods with a backlog need 6; the policy asks for 6 once, and with 4 of them still loading
    it asks for no more (they are neither idle capacity nor overload)."""
    # 220 req/s and 10000 pending, drained in 30 s: (220 + (10000 - 4.4) / 30) / 100 = 5.53 -> 6
    d0, history = decide(_load(0.0, 220, 2, pending=10000, busy=True), initial_history(SPEC), SPEC, 0.0)
    assert d0.desired_replicas == 6
    d1, history = decide(_load(5.0, 220, 6, ready=2, pending=10000, busy=True), history, SPEC, 5.0)
    assert d1.desired_replicas == 6 and not d1.hold
    assert d1.signals["starting_pods"] == 4.0


# --- limits -------------------------------------------------------------------------------------------------------


def test_max_replicas_limits_even_in_panic() -> None:
    d, _ = decide(_load(0.0, 5000, 10, busy=True), initial_history(SPEC), SPEC, 0.0)
    assert d.desired_replicas == 20
    assert _reason(d, "ScalingLimited").reason == "TooManyReplicas"


def test_min_replicas_is_kept_and_a_count_below_it_is_raised() -> None:
    spec = _spec(minReplicas=3)
    d, _ = decide(_load(0.0, 10, 1), initial_history(spec), spec, 0.0)  # someone scaled it to 1; the need is 1
    assert d.desired_replicas == 3
    assert d.reason.startswith("Current number of replicas below Spec.MinReplicas")
    assert _reason(d, "ScalingLimited").reason == "TooFewReplicas"


def test_a_count_above_max_is_brought_to_max() -> None:
    d, _ = decide(_load(0.0, 500, 30), initial_history(SPEC), SPEC, 0.0)  # need 5: the scale-down window starts from 20
    assert d.desired_replicas == 20
    assert d.reason.startswith("Current number of replicas above Spec.MaxReplicas")


# --- capacity -----------------------------------------------------------------------------------------------------


def test_capacity_is_learned_from_the_pods_counters() -> None:
    spec = parse_spec({k: v for k, v in BASE.items() if k != "capacity"})
    history = initial_history(spec)
    assert history.capacity_rps is None
    d, history = decide(_load(0.0, 0, 2), history, spec, 0.0)  # idle pods teach nothing
    assert _reason(d, "ScalingActive").reason == "NoCapacityEstimate" and d.hold
    d, history = decide(_load(5.0, 100, 2), history, spec, 5.0)  # 50 each within the SLO: at least 50
    assert history.capacity_rps == 50.0 and history.capacity_source == "learned"
    d, history = decide(_load(10.0, 80, 2, busy=True), history, spec, 10.0)  # over the SLO at 40 each...
    assert history.capacity_rps == 50.0  # ...but not at the previous decision: it may have become so within the interval
    d, history = decide(_load(15.0, 80, 2, busy=True), history, spec, 15.0)  # over it at two decisions in a row
    assert history.capacity_rps == pytest.approx(50 + 0.3 * (40 - 50))
    d, history = decide(_load(20.0, 240, 2, busy=False), history, spec, 20.0)  # within the SLO at 120 each: at least 120
    assert history.capacity_rps == 120.0


def test_slow_model_is_not_mistaken_for_overload() -> None:
    """A pod over the latency budget because its model computes slowly (queue < compute) says nothing
    about capacity."""
    sig = DeploymentSignals(now=0.0, current_replicas=1, pods=(_pod("p0", 0.0, 30.0, queue_ms=1.0, compute_us_per_inference=40_000.0),))
    _, history = decide(sig, initial_history(SPEC), SPEC, 0.0)
    assert history.capacity_rps == 100.0


def _report(tmp_path, sweeps, optimized="m"):
    path = tmp_path / "perf.json"
    path.write_text(json.dumps({"optimized": optimized, "sweeps": sweeps}))
    return path


def _sweep(model, batch, points, protocol="grpc"):
    return {
        "model": model,
        "protocol": protocol,
        "batch_size": batch,
        "points": [
            {"throughput_infer_per_s": t, "p99_latency_ms": p, "batch_size": batch, "server_queue_ms": q, "server_compute_infer_ms": 1.0}
            for t, p, q in points
        ],
    }


def test_seed_from_a_perf_report(tmp_path) -> None:
    path = _report(
        tmp_path,
        [
            _sweep("m", 1, [(500, 5.0, 0.1), (900, 9.0, 0.5), (1200, 14.0, 3.0)]),
            _sweep("m", 64, [(6400, 8.0, 0.2)]),
            _sweep("baseline", 1, [(5000, 1.0, 0.0)]),
        ],
    )
    assert seed_capacity_from_perf_report(path, 10.0) == 900.0  # batch-1 sweeps of the optimized model
    assert seed_capacity_from_perf_report(path, 10.0, batch_size=64) == 100.0  # 6400 inferences/s = 100 requests of 64
    assert seed_capacity_from_perf_report(path, 20.0, queue_compute_ratio=1.0) == 900.0  # 3 ms queued > 1 x 1 ms compute
    assert seed_capacity_from_perf_report(path, 10.0, model="baseline") == 5000.0


def test_seed_from_the_committed_movielens_report() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "perf" / "results" / "triton_movielens.json"
    report = json.loads(path.read_text())
    sweep = next(s for s in report["sweeps"] if s["model"] == report["optimized"] and s["batch_size"] == 1 and s["protocol"] == "grpc")
    seed = seed_capacity_from_perf_report(path, 10.0, protocol="grpc")
    assert seed in [p["throughput_infer_per_s"] for p in sweep["points"] if p["p99_latency_ms"] <= 10.0]


@pytest.mark.parametrize(
    ("content", "slo", "message"),
    [
        (None, 10.0, "does not exist"),
        ("not json", 10.0, "is not a `tritonrec perf` report"),
        ({"optimized": "m", "sweeps": []}, 10.0, "has no sweep of model 'm'"),
        ({"optimized": "m", "sweeps": [_sweep("m", 1, [(500, 5.0, 0.1)])]}, 1.0, "best p99 was 5.00 ms"),
    ],
    ids=["missing", "not-json", "no-sweep", "slo-unmet"],
)
def test_bad_perf_reports_are_refused_naming_the_file(tmp_path, content, slo, message) -> None:
    path = tmp_path / "perf.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PerfError, match=message) as info:
        seed_capacity_from_perf_report(path, slo)
    assert str(path) in str(info.value)


def test_autoscaler_seeds_from_the_report_named_in_the_spec(tmp_path) -> None:
    path = _report(tmp_path, [_sweep("m", 1, [(500, 5.0, 0.1), (900, 9.0, 0.5)])])
    spec = parse_spec({**BASE, "slo": {"p99LatencyMs": 10}, "capacity": {"fromPerfReport": str(path)}})
    scaler = TritonrecAutoscaler(spec)
    assert scaler.name == "tritonrec"
    assert (scaler.history.capacity_rps, scaler.history.capacity_source) == (900.0, str(path))
    assert TritonrecAutoscaler(SPEC).history.capacity_rps == 100.0
    bad = parse_spec({**BASE, "capacity": {"fromPerfReport": str(tmp_path / "none.json")}})
    with pytest.raises(PerfError, match="does not exist"):
        TritonrecAutoscaler(bad)


def test_autoscaler_step_keeps_its_history() -> None:
    scaler = TritonrecAutoscaler(SPEC)
    assert scaler.step(_load(0.0, 150, 2)).desired_replicas == 2
    assert scaler.history.last_need == (0.0, 2)


# --- shadow, purity -----------------------------------------------------------------------------------------------


def test_shadow_mode_is_carried_in_the_decision() -> None:
    spec = _spec(shadow=True)
    d, _ = decide(_load(0.0, 600, 2, busy=True), initial_history(spec), spec, 0.0)
    assert d.reason.startswith("shadow: would set 6 replicas") and d.signals["shadow"] == 1.0


def test_decide_is_pure() -> None:
    history = initial_history(SPEC)
    sig = _load(0.0, 600, 2, busy=True)
    first = decide(sig, history, SPEC, 0.0)
    assert decide(sig, history, SPEC, 0.0) == first
    assert history == initial_history(SPEC)
    with pytest.raises(FrozenInstanceError):
        history.capacity_rps = 1.0  # type: ignore[misc]


# --- headroom, pod starts, trends ----------------------------------------------------------------------------------


def test_target_utilization_leaves_headroom() -> None:
    spec = parse_spec({**BASE, "capacity": {"perReplicaRps": 100, "targetUtilization": 0.5}})
    d, _ = decide(_load(0.0, 300, 2, busy=True), initial_history(spec), spec, 0.0)
    assert d.desired_replicas == 6  # 300 req/s over 50 planned per replica


def test_start_delay_is_learned_from_the_pods_own_starts() -> None:
    one_starting = DeploymentSignals(now=0.0, current_replicas=2, pods=(_pod("p0", 0.0, 50.0), PodSignals("s0", "starting")))
    _, history = decide(one_starting, initial_history(SPEC), SPEC, 0.0)
    assert history.starting_since == (("s0", 0.0),)
    both_ready = DeploymentSignals(now=20.0, current_replicas=2, pods=(_pod("p0", 20.0, 50.0), _pod("s0", 20.0, 50.0)))
    d, history = decide(both_ready, history, SPEC, 20.0)
    assert history.start_delay_s == 20.0 and history.starting_since == ()
    assert d.signals["start_delay_s"] == 20.0


def test_no_scale_down_while_the_arrivals_rise() -> None:
    spec = _spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    history = replace(initial_history(spec), arrivals=((0.0, 300.0), (5.0, 400.0)))
    d, history = decide(_load(10.0, 500, 20), history, spec, 10.0)  # rising: forecast 500 + 20 * 35 = 1200 -> 12 < 20
    assert d.desired_replicas == 20 and "not scaling down while the arrivals rise" in d.reason
    d, history = decide(_load(15.0, 500, 20), history, spec, 15.0)  # level (need 5): the t=10 forecast holds 35 s
    assert d.desired_replicas == 12
    d, history = decide(_load(50.0, 500, 12), history, spec, 50.0)  # its horizon has passed; no window
    assert d.desired_replicas == 5


def test_a_pod_in_its_first_scrape_holds_the_arrival_estimate_and_adds_no_trend_sample() -> None:
    """The old pods under-read the arrivals while a new one takes load from them (300 req/s here, against
    400 before): the estimate holds at 400, the trend of before carries the forecast, and no sample is
    added, so the estimate does not feed on itself while scale-ups keep bringing new pods."""
    history = replace(initial_history(SPEC), arrivals=((0.0, 300.0), (5.0, 400.0)), trend_rps_per_s=20.0)
    pods = (_pod("p0", 10.0, 100.0), _pod("p1", 10.0, 100.0), _pod("new", 10.0, None, inference_rate=None))
    d, history = decide(DeploymentSignals(now=10.0, current_replicas=3, pods=pods), history, SPEC, 10.0)
    assert history.arrivals == ((0.0, 300.0), (5.0, 400.0)) and d.signals["arrival_rate_rps"] == 400.0
    # rising to 400 + 20 * 35 = 1100 req/s: up to 11 at once (partial metrics stop only scale-downs)
    assert (d.desired_replicas, d.hold) == (11, False)
    assert "pod new has no request_rate" in _reason(d, "ScalingActive").message
    # another new pod at the next decision: still 1100, not 400 + 20 * 10 + 700
    pods = (_pod("p0", 15.0, 100.0), _pod("p1", 15.0, 100.0), _pod("new2", 15.0, None, inference_rate=None))
    d, history = decide(DeploymentSignals(now=15.0, current_replicas=11, pods=pods), history, SPEC, 15.0)
    assert d.signals["forecast_rate_rps"] == pytest.approx(1100.0) and d.desired_replicas == 11


def test_rejected_requests_count_as_arrivals_and_as_overload() -> None:
    """With a queue timeout (Triton's queue policy, REJECT) an overloaded pod's queue stays short and
    its served requests look fast: only its rejections show the load it sheds. 2 pods serve 100 req/s
    each in 1 ms of queue and reject 150 req/s each: the arrivals are 500 req/s, and the capacity
    (seeded at 120) moves toward the 100 req/s they serve at saturation."""
    spec = _spec(capacity={"perReplicaRps": 120, "targetUtilization": 1.0})
    steps = [
        (0.0, _load(0.0, 200, 2)),
        (5.0, DeploymentSignals(5.0, 2, tuple(_pod(f"p{i}", 5.0, 100.0, rejected_rate=150.0) for i in range(2)))),
    ]
    (first, d), history = _run(spec, steps)
    assert first.desired_replicas == 2
    assert d.signals["arrival_rate_rps"] == pytest.approx((200 + 500) / 2)  # the panic window's mean
    assert d.desired_replicas == 3  # ceil(350 / 120)
    # saturated at a second decision in a row: the capacity moves toward the 100 req/s they serve
    again = (10.0, DeploymentSignals(10.0, 3, tuple(_pod(f"p{i}", 10.0, 100.0, rejected_rate=150.0) for i in range(2))))
    (d,), history = _run(spec, [again], history)
    assert history.capacity_rps == pytest.approx(120 + 0.3 * (100 - 120))  # CAPACITY_LEARNING_RATE
    # without the rejections the same pods look within the SLO at 100 req/s: 2 replicas, no change
    blind = [steps[0], (5.0, DeploymentSignals(5.0, 2, tuple(_pod(f"p{i}", 5.0, 100.0, rejected_rate=0.0) for i in range(2))))]
    (_, d_blind), _ = _run(spec, blind)
    assert d_blind.desired_replicas == 2


# --- the seasonal forecast -------------------------------------------------------------------------------------------


def _periodic_run(spec, until_s: float):
    """Bursts of 1000 req/s for the last 100 s of every 600 s (100 req/s otherwise), decided every 5 s on a
    fake clock; every pod asked for is ready at the next decision (the policy still assumes its default
    30 s start). Returns ``{time: decision}``."""
    history, replicas, out = initial_history(spec), 1, {}
    for k in range(int(until_s / 5) + 1):
        now = 5.0 * k
        load = 1000.0 if now % 600 >= 500 else 100.0
        d, history = decide(_load(now, load, replicas), history, spec, now)
        out[now], replicas = d, d.desired_replicas
    return out


def test_a_recurring_burst_is_met_a_pod_start_ahead_and_let_go_when_the_history_says_it_is_over() -> None:
    """After two periods the history repeats (period 600 s): from 45 s before the third burst (1700 s; the
    35 s a pod takes to start and serve, rounded up to the 15 s bins) the policy asks for more, and 35 s
    before it has the burst's 10 replicas while the load is still 100 req/s; after it (1800 s) the next 300 s
    one period back held no burst, so it scales down at once instead of holding the scale-down window.
    Without the forecast: up only when the burst arrives, down only after the 300 s window."""
    seasonal = _periodic_run(SPEC, 2000.0)
    assert seasonal[1650.0].desired_replicas == 1  # nothing expected within 45 s yet
    assert seasonal[1655.0].desired_replicas > 1
    ahead = seasonal[1665.0]
    assert ahead.desired_replicas == 10 and ahead.signals["arrival_rate_rps"] == pytest.approx(100.0)
    assert ahead.signals["seasonal_period_s"] == 600.0 and ahead.signals["seasonal_correlation"] >= 0.7  # spec.forecast.minCorrelation
    assert "the history repeats every 600 s" in ahead.reason
    down = next(t for t in sorted(seasonal) if t >= 1800 and seasonal[t].desired_replicas < 10)
    assert down <= 1810.0 and seasonal[1830.0].desired_replicas == 1
    assert "expects at most 1 within the 300 s window" in seasonal[down].reason

    reactive = _periodic_run(_spec(forecast={"seasonal": False}), 2150.0)
    assert [reactive[t].desired_replicas for t in (1695.0, 1700.0, 1705.0)] == [1, 6, 10]
    assert "seasonal_period_s" not in reactive[1665.0].signals
    assert reactive[2050.0].desired_replicas == 10 and reactive[2110.0].desired_replicas == 1  # the 300 s window


def test_a_period_is_not_trusted_before_two_are_seen() -> None:
    """The second burst (1100 s) follows only one: no forecast, it is met when it arrives (the 6 s panic
    window's mean of 100 and 1000 req/s asks for 6 at once, the next decision for 10)."""
    d = _periodic_run(SPEC, 1105.0)
    assert d[1095.0].desired_replicas == 1 and "seasonal_period_s" not in d[1095.0].signals
    assert [d[1100.0].desired_replicas, d[1105.0].desired_replicas] == [6, 10]

"""The simulator's Deployment model on cases small enough to check by hand, its routing rule, the
replica model read from the committed perf report, and determinism."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from toolkit.autoscale.signals import DeploymentSignals, ScaleDecision
from toolkit.autoscale.simulate import (
    ReplicaModel,
    ServiceCurve,
    SimulatedDeployment,
    StaticReplicas,
    allen_cunneen_scale,
    least_outstanding,
    load_service_curve,
    simulate,
    water_fill,
)
from toolkit.autoscale.traces import Trace, spike
from toolkit.errors import AutoscaleError

REPO_ROOT = Path(__file__).resolve().parents[3]
PERF_REPORT = REPO_ROOT / "perf" / "results" / "triton_movielens.json"
STEP = 0.02


def toy_curve(p99_ms: float = 20.0) -> ServiceCurve:
    """X(n) = 100 n req/s up to 4 outstanding (mu = 400 req/s), 10 ms median latency at every level."""
    c = np.array([1.0, 4.0])
    return ServiceCurve(
        concurrency=c,
        throughput_rps=100 * c,
        p50_ms=np.array([10.0, 10.0]),
        p99_ms=np.array([p99_ms, p99_ms]),
        queue_ms=np.array([0.0, 1.0]),
        compute_ms=np.array([9.0, 9.0]),
        source="toy",
    )


@pytest.fixture(scope="module")
def toy() -> ReplicaModel:
    return ReplicaModel.from_curve(toy_curve(), slo_ms=30.0)


@pytest.fixture(scope="module")
def sharp() -> ReplicaModel:
    """The toy curve with (almost) no service-time spread: every request takes 10 ms plus its wait."""
    return ReplicaModel.from_curve(toy_curve(p99_ms=10.0), slo_ms=20.0)


class Script:
    """A policy that asks for given replica counts from given times on (an Autoscaler)."""

    name = "script"

    def __init__(self, plan: list[tuple[float, int]]) -> None:
        self.plan, self.seen = plan, []

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        self.seen.append(signals)
        want = signals.current_replicas
        for t, n in self.plan:
            if signals.now + 1e-9 >= t:
                want = n
        return ScaleDecision(want, "scripted")


def constant(rate: float, seconds: float) -> tuple[Trace, np.ndarray]:
    trace = Trace("constant", np.full(int(seconds), rate), 1.0, "constant")
    return trace, np.full(int(round(seconds / STEP)), rate * STEP)


# -- one replica --------------------------------------------------------------------------------------------------


def test_stationary_pending_matches_the_birth_death_chain_by_hand(toy):
    # lambda = 100 req/s, X(n) = 100 n for n <= 4, 400 beyond: pi(n) ~ 1/n! up to 4, then x 1/4 per state
    w = [1 / math.factorial(n) for n in range(5)]
    w += [w[4] * 0.25**k for k in range(1, 400)]
    expected_mean = sum(n * p for n, p in enumerate(w)) / sum(w)
    row = toy.row(100.0)
    assert toy.rho[row] == pytest.approx(0.25)
    assert toy.pending[row] == pytest.approx(expected_mean, rel=1e-9)


def test_latency_quantiles_of_an_idle_replica_are_the_measured_ones_and_grow_with_load(toy):
    # at rate 0 every request finds the replica empty: concurrency 1's log-normal, median 10 ms, p99 20 ms
    # (1% is the tables' resolution: 600 log-spaced edges over 9 decades, interpolated)
    assert toy.latency_quantile_ms(0.0, 0.5) == pytest.approx(10.0, rel=0.01)
    assert toy.latency_quantile_ms(0.0, 0.99) == pytest.approx(20.0, rel=0.01)
    p99 = [toy.latency_quantile_ms(rate, 0.99) for rate in (0.0, 200.0, 350.0, 395.0)]
    assert p99 == sorted(p99) and p99[-1] > 2 * p99[0]  # near mu = 400 req/s the queue wait dominates
    with pytest.raises(AutoscaleError, match="q must be in"):
        toy.latency_quantile_ms(100.0, 1.0)
    with pytest.raises(AutoscaleError, match="rate_rps must be >= 0"):
        toy.latency_quantile_ms(-1.0, 0.5)


def test_allen_cunneen_scale_is_half_for_steady_service_and_one_for_exponential():
    steady = toy_curve(p99_ms=10.0 * math.exp(0.01 * 2.3263478740408408))  # sigma 0.01: Cs^2 = 1e-4
    assert allen_cunneen_scale(steady) == pytest.approx(0.5, abs=1e-4)
    sigma = math.sqrt(math.log(2.0))  # a log-normal with Cs^2 = exp(sigma^2) - 1 = 1, as an exponential has
    assert allen_cunneen_scale(toy_curve(p99_ms=10.0 * math.exp(sigma * 2.3263478740408408))) == pytest.approx(1.0)


def test_a_smaller_queue_scale_leaves_an_idle_replica_alone_and_shortens_the_queue_under_load():
    markov = ReplicaModel.from_curve(toy_curve(), slo_ms=30.0)
    half = ReplicaModel.from_curve(toy_curve(), slo_ms=30.0, queue_scale=0.5)
    assert half.queue_scale == 0.5 and markov.queue_scale == 1.0
    assert half.latency_quantile_ms(0.0, 0.99) == pytest.approx(markov.latency_quantile_ms(0.0, 0.99))
    assert half.latency_quantile_ms(380.0, 0.99) < 0.7 * markov.latency_quantile_ms(380.0, 0.99)
    assert half.capacity_at_slo_rps > markov.capacity_at_slo_rps
    with pytest.raises(AutoscaleError, match="queue_scale must be > 0"):
        ReplicaModel.from_curve(toy_curve(), slo_ms=30.0, queue_scale=0.0)


def test_one_replica_below_capacity_never_queues(toy):
    trace, arrivals = constant(200.0, 20)  # half of mu = 400 req/s
    dep = SimulatedDeployment(toy, step_s=STEP, start_delay_s=30, initial_replicas=1)
    for a in arrivals:
        dep.advance(a)
        assert dep.backlog[0] == 0.0
    row = toy.row(200.0)
    assert dep.row_weight[row] == pytest.approx(4000) and dep.row_weight.sum() == pytest.approx(4000)
    cdf = dep.latency_cdf()
    assert np.allclose(cdf, toy.cdf[row])  # every request has the stationary latency of rho = 0.5
    signals = dep.signals({})
    assert signals.pods[0].pending_requests == pytest.approx(toy.pending[row])


def test_one_replica_above_capacity_builds_a_queue_at_the_excess_rate(sharp):
    # 600 req/s into mu = 400 req/s: the queue grows by 200 req/s, 4 requests a step
    trace, arrivals = constant(600.0, 10)
    dep = SimulatedDeployment(sharp, step_s=STEP, start_delay_s=30, initial_replicas=1)
    for k, a in enumerate(arrivals, start=1):
        dep.advance(a)
        assert dep.backlog[0] == pytest.approx(4.0 * k)
    assert dep.backlog[0] == pytest.approx(2000.0)
    assert dep.counters.success[0] == pytest.approx(400 * 10)
    # requests of step k wait the step's mean queue, (4(k-1) + 4k) / 2 / 400 s = 10k - 5 ms, then take 10 ms:
    # within the 20 ms SLO only in step 1 (15 ms): 1 of 500 steps
    result = simulate(trace, StaticReplicas(1), sharp, sync_period_s=5, initial_replicas=1, step_s=STEP, arrivals=arrivals)
    assert result.slo_attainment == pytest.approx(1 / 500, rel=1e-3)
    # the p99 request is in the last 1% of steps: waits of 10k - 5 ms for k in 496..500, ~4.96 s
    assert result.p99_ms == pytest.approx(10 * 495 + 10, rel=0.02)
    assert dep.signals({}).pods[0].pending_requests == pytest.approx(sharp.c_max + 2000)


def test_a_queue_timeout_caps_the_queue_and_rejects_the_excess(sharp):
    # as above, with a 0.5 s queue timeout: the queue stops at 400 req/s x 0.5 s = 200 requests (after
    # 50 steps of +4); from then on the 200 req/s excess is rejected: 200 x (10 - 1) = 1,800 requests
    trace, arrivals = constant(600.0, 10)
    dep = SimulatedDeployment(sharp, step_s=STEP, start_delay_s=30, initial_replicas=1, queue_timeout_s=0.5)
    scrapes: dict = {}
    dep.signals(scrapes)
    for a in arrivals:
        dep.advance(a)
    assert dep.backlog[0] == pytest.approx(200.0)
    assert dep.timed_out == pytest.approx(1800.0)
    # the pod's nv_inference_request_failure{reason="REJECTED"}: 1,800 requests over the 10 s
    assert dep.signals(scrapes).pods[0].rejected_rate == pytest.approx(180.0)
    assert dep.counters.success[0] == pytest.approx(4000.0)  # the pod never idles
    result = simulate(trace, StaticReplicas(1), sharp, sync_period_s=5, initial_replicas=1, arrivals=arrivals, queue_timeout_s=0.5)
    assert result.timed_out == pytest.approx(1800.0)
    assert result.slo_attainment == pytest.approx(1 / 500, rel=1e-3)  # still only the first step within 20 ms
    # 30% are rejected: never within any latency, so the p99 is infinite (more than 1% got no answer)
    assert math.isinf(result.p99_ms)
    # a timeout shorter than the SLO sheds the excess early, and a shed request is still out of the SLO
    short = simulate(trace, StaticReplicas(1), sharp, sync_period_s=5, initial_replicas=1, arrivals=arrivals, queue_timeout_s=0.005)
    assert short.timed_out / short.requests == pytest.approx(1 / 3, rel=0.01)  # 200 of 600 req/s rejected
    assert short.slo_attainment <= 1 - short.timed_out / short.requests + 1e-9
    with pytest.raises(AutoscaleError, match="queue_timeout_s must be > 0"):
        SimulatedDeployment(sharp, step_s=STEP, start_delay_s=30, initial_replicas=1, queue_timeout_s=0)


def test_signals_are_counter_deltas_between_scrapes_and_none_on_the_first(toy):
    dep = SimulatedDeployment(toy, step_s=STEP, start_delay_s=30, initial_replicas=1)
    scrapes: dict = {}
    for _ in range(50):
        dep.advance(4.0)  # 200 req/s
    first = dep.signals(scrapes).pods[0]
    assert first.request_rate is None and first.queue_us_per_request is None
    assert first.cpu_utilization == pytest.approx(0.5)  # 200 of 400 req/s
    for _ in range(100):
        dep.advance(2.0)  # 100 req/s
    second = dep.signals(scrapes).pods[0]
    assert second.request_rate == pytest.approx(100.0)
    row = toy.row(100.0)
    assert second.queue_us_per_request == pytest.approx(toy.queue_ms[row] * 1000)
    assert second.compute_us_per_inference == pytest.approx(toy.compute_ms[row] * 1000)
    assert second.cpu_utilization == pytest.approx(0.25)
    for _ in range(50):
        dep.advance(0.0)
    idle = dep.signals(scrapes).pods[0]  # the scraper's rule: nothing completed, nothing pending -> no queue time
    assert (idle.request_rate, idle.queue_us_per_request, idle.compute_us_per_inference, idle.cpu_utilization) == (0.0, 0.0, None, 0.0)


# -- the Deployment ------------------------------------------------------------------------------------------------


def test_scale_up_adds_capacity_only_after_the_start_delay(sharp):
    # 600 req/s, one replica of 400: the policy asks for 2 at t = 1 s, ready at 1 + 5 = 6 s
    trace, arrivals = constant(600.0, 20)
    policy = Script([(1.0, 2)])
    result = simulate(trace, policy, sharp, sync_period_s=1, initial_replicas=1, start_delay_s=5, step_s=STEP, arrivals=arrivals)
    ready, pods = result.timeline["ready"], result.timeline["pods"]
    assert ready[:6].tolist() == [1, 1, 1, 1, 1, 1] and ready[6:].min() == 2
    assert pods[0] == 1 and pods[1:].min() == 2  # the pod costs from its creation at 1 s
    assert result.scaling_actions == 1 and result.decisions[0][:2] == (1.0, 2)
    # the queue grew 200 req/s for 6 s (1200) and drains at 800 - 600 = 200 req/s: empty at 12 s
    starting = [s for s in policy.seen if s.now < 6 and s.now > 1]
    assert starting and all(len(s.starting_pods) == 1 and len(s.ready_pods) == 1 for s in starting)
    # from 12 s on both serve 300 req/s from empty queues: the stationary p99 of that load, far below
    # the seconds-long waits behind the queue before
    p99 = result.timeline["p99_ms"]
    assert np.allclose(p99[12:], sharp.p99_ms[sharp.row(300.0)])
    assert p99[5] == pytest.approx((1196 + 1200) / 2 / 400 * 1000 + 10, rel=0.01)  # last step before 6 s: ~1,200 queued
    assert p99[11] > 2 * p99[12]


def test_least_outstanding_sends_a_new_replica_the_traffic_until_queues_level(sharp):
    dep = SimulatedDeployment(sharp, step_s=STEP, start_delay_s=0, initial_replicas=1)
    for _ in range(100):
        dep.advance(12.0)  # 600 req/s: 400 queued after 2 s
    assert dep.backlog[0] == pytest.approx(400)
    dep.add(1, ready=True)
    dep.advance(12.0)
    # the new replica (queue 0) gets all 12, the old one none: water-filling never reaches 400
    assert dep.backlog[1] == pytest.approx(12 - 8) and dep.backlog[0] == pytest.approx(400 - 8)


def test_scale_down_drains_the_replica_before_it_goes(sharp):
    # two replicas at 1000 req/s (capacity 800): after 5 s each has 500 queued; then asked for 1
    trace = Trace("x", np.array([1000.0] * 5 + [100.0] * 15), 1.0, "")
    arrivals = trace.expected_counts(STEP)
    policy = Script([(5.0, 1)])
    result = simulate(trace, policy, sharp, sync_period_s=5, initial_replicas=2, start_delay_s=5, step_s=STEP, arrivals=arrivals)
    pods = result.timeline["pods"]
    # the leaving pod gets no new requests and serves its 500 at 400 req/s: gone 1.25 s after 5 s
    assert pods[:6].tolist() == [2] * 6 and pods[7:].max() == 1 and 1 < pods[6] < 2
    assert result.timeline["ready"][5:].max() == 1
    assert result.failed == 0
    assert result.replica_seconds == pytest.approx(2 * 5 + 1.25 + 1 * 15, abs=2 * STEP)


def test_scale_down_deletes_starting_pods_before_ready_ones(toy):
    dep = SimulatedDeployment(toy, step_s=STEP, start_delay_s=30, initial_replicas=2)
    dep.add(2)
    assert (dep.spec_replicas, dep.ready_count) == (4, 2)
    dep.remove(3)
    assert (dep.spec_replicas, dep.pods_alive, dep.ready_count) == (1, 2, 1)  # one ready pod drains (empty: next step)
    dep.advance(0.0)
    assert dep.pods_alive == 1


def test_requests_fail_while_no_pod_is_ready(toy):
    trace, arrivals = constant(100.0, 10)
    result = simulate(trace, Script([]), toy, sync_period_s=5, initial_replicas=0, step_s=STEP, arrivals=arrivals)
    assert result.failed == pytest.approx(1000) and result.slo_attainment == 0.0 and math.isinf(result.p99_ms)


# -- routing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "amount"), [([0, 0, 0], 7), ([5, 0, 2], 4), ([3, 9, 1, 1], 20), ([4], 3), ([2, 2], 0)])
def test_water_fill_is_many_least_outstanding_picks(levels, amount):
    picks = list(map(float, levels))
    for _ in range(amount * 1000):  # requests of 1/1000 each
        picks[least_outstanding(picks)] += 0.001
    got = water_fill(np.array(levels, dtype=float), amount)
    assert got.sum() == pytest.approx(amount)
    assert np.allclose(np.array(levels) + got, picks, atol=2e-3)  # one small request of difference at most


@pytest.mark.parametrize(("levels", "amount"), [([5, 0, 2], 4), ([0, 0, 0, 0], 8), ([3, 9, 1, 1], 19)])
def test_water_fill_agrees_with_the_routers_own_pick(levels, amount):
    # the router's join-the-shortest-queue (choices=None) for whole requests; random ties only permute equal levels
    # (amounts chosen so that the fluid levels are whole numbers)
    from toolkit.serving.router import pick_least_outstanding

    names = [f"10.0.0.{i}:8001" for i in range(len(levels))]
    outstanding = dict(zip(names, levels, strict=True))
    rng = random.Random(0)
    for _ in range(amount):
        outstanding[pick_least_outstanding(names, outstanding, rng, choices=None)] += 1
    fluid = np.array(levels) + water_fill(np.array(levels, dtype=float), amount)
    assert sorted(outstanding.values()) == pytest.approx(sorted(fluid))


def test_least_outstanding_takes_the_first_of_equals():
    assert least_outstanding([3, 1, 1]) == 1
    with pytest.raises(AutoscaleError, match="no replica"):
        least_outstanding([])


# -- the replica model from the committed perf report --------------------------------------------------------------


def test_service_curve_from_the_committed_movielens_report():
    curve = load_service_curve(PERF_REPORT)
    assert curve.source == "triton_movielens.json: optimized_onnx_python, http, client batch 1"
    assert curve.concurrency.tolist() == [1, 2, 4, 8, 16]
    assert curve.throughput_rps[-1] == pytest.approx(5547.72)
    model = ReplicaModel.from_curve(curve, slo_ms=10.0)
    # near zero load a request takes about the concurrency-1 latency (p50 0.717 ms measured)
    assert 0.6 < float(np.interp(0.5, model.cdf[1], model.edges_ms)) < 0.85
    # open-loop arrivals queue more than the closed-loop sweep: the SLO capacity is below its best point
    assert 0.8 * 5547.72 < model.capacity_at_slo_rps < 5547.72
    assert model.replicas_for(20_000) == math.ceil(20_000 / model.capacity_at_slo_rps)


def test_service_curve_errors_name_the_problem(tmp_path):
    with pytest.raises(AutoscaleError, match="has no sweep of nope/http/batch 1") as err:
        load_service_curve(PERF_REPORT, model="nope")
    assert "optimized_onnx_python/grpc/batch 64" in err.value.hint
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(AutoscaleError, match="is not JSON"):
        load_service_curve(bad)
    bad.write_text('{"optimized": "m", "sweeps": [{"model": "m", "protocol": "http", "batch_size": 1, "points": [{"concurrency": 1}]}]}')
    with pytest.raises(AutoscaleError, match="point 0: field 'throughput_infer_per_s' is missing"):
        load_service_curve(bad)
    with pytest.raises(AutoscaleError, match="cannot be read"):
        load_service_curve(tmp_path / "missing.json")


# -- determinism and speed -----------------------------------------------------------------------------------------


def test_a_seed_fixes_the_result():
    model = ReplicaModel.from_curve(load_service_curve(PERF_REPORT), slo_ms=10.0)
    trace = spike(600, 20_000, rise_s=30, hold_s=120)

    def run(seed: int):
        policy = Script([(300.0, 5), (480.0, 2)])
        return simulate(trace, policy, model, sync_period_s=5, initial_replicas=2, seed=seed)

    a, b, c = run(1), run(1), run(2)
    assert a.summary() == b.summary()
    assert all(np.array_equal(a.timeline[k], b.timeline[k], equal_nan=True) for k in a.timeline)
    assert a.requests != c.requests

"""The HPA port, table-tested with cases taken from upstream's own tests
(kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator_test.go and horizontal_test.go;
each case keeps the upstream test's name). Upstream's pods have two containers of 1.0 CPU each and
per-container levels; one container of 1000 m with the same levels gives the same ratios."""

from __future__ import annotations

import pytest

from toolkit.autoscale.hpa import (
    HpaCpu,
    HpaHistory,
    HpaPod,
    HpaQueueTime,
    PodMetric,
    ScaleEvent,
    TimestampedRecommendation,
    convert_desired_replicas_with_behavior_rate,
    external_per_pod_replicas,
    plain_metric_replicas,
    reconcile,
    replicas_change_per_period,
    resource_replicas,
    scale_down_limit,
    scale_up_limit,
    stabilize_recommendation,
    store_scale_event,
    triton_queue_metric_us,
)
from toolkit.autoscale.signals import DeploymentSignals, PodSignals
from toolkit.autoscale.spec import ScalingPolicy, ScalingRules, _default_scale_down, _default_scale_up, parse_spec

NOW = 10_000.0
COOL = NOW - 600.0  # started long before the CPU initialization period (upstream's coolCpuCreationTime)
HOT = NOW  # just started (hotCpuCreationTime)


def _pods(n, *, ready=None, phase=None, deleting=None, start=None, requests=None) -> list[HpaPod]:
    pods = []
    for i in range(n):
        s = start[i] if start else COOL
        pods.append(
            HpaPod(
                name=f"test-pod-{i}",
                phase=phase[i] if phase else "Running",
                ready=ready[i] if ready else True,
                deleting=deleting[i] if deleting else False,
                start_time=s,
                ready_transition_time=s,
                request_milli=requests[i] if requests else 1000,
            )
        )
    return pods


def _metrics(levels) -> dict[str, PodMetric]:
    return {f"test-pod-{i}": PodMetric(v, NOW, 30.0) for i, v in enumerate(levels)}


T, F = True, False
R, P, X = "Running", "Pending", "Failed"

CPU_CASES = [
    # (upstream test, current, pods kwargs, levels, target %, expected replicas, expected utilization %)
    ("TestReplicaCalcScaleUp", 3, {}, [300, 500, 700], 30, 5, 50),
    ("TestReplicaCalcScaleUpUnreadyLessScale", 3, {"ready": [F, T, T]}, [300, 500, 700], 30, 4, 60),
    ("TestReplicaCalcScaleUpHotCpuLessScale", 3, {"start": [HOT, COOL, COOL]}, [300, 500, 700], 30, 4, 60),
    ("TestReplicaCalcScaleUpUnreadyNoScale", 3, {"ready": [T, F, F]}, [400, 500, 700], 30, 3, 40),
    ("TestReplicaCalcScaleHotCpuNoScale", 3, {"ready": [T, F, F], "start": [COOL, HOT, HOT]}, [400, 500, 700], 30, 3, 40),
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 2, {"n": 4, "ready": [T, T, F, F], "phase": [R, R, X, X]}, [500, 700], 30, 4, 60),
    ("TestReplicaCalcScaleUpIgnoresDeletionPods", 2, {"n": 4, "ready": [T, T, F, F], "deleting": [F, F, T, T]}, [500, 700], 30, 4, 60),
    ("TestReplicaCalcScaleDown", 5, {}, [100, 300, 500, 250, 250], 50, 3, 28),
    ("TestReplicaCalcScaleDownIncludeUnreadyPods", 5, {"ready": [T, T, T, F, F]}, [100, 300, 500, 250, 250], 50, 2, 30),
    ("TestReplicaCalcScaleDownExcludeUnscheduledPods", 5, {"ready": [T, F, F, F, F], "phase": [R, P, P, P, P]}, [100], 50, 1, 10),
    ("TestReplicaCalcScaleDownIgnoreHotCpuPods", 5, {"start": [COOL, COOL, COOL, HOT, HOT]}, [100, 300, 500, 250, 250], 50, 2, 30),
    (
        "TestReplicaCalcScaleDownIgnoresFailedPods",
        5,
        {"n": 7, "ready": [T, T, T, T, T, F, F], "phase": [R, R, R, R, R, X, X]},
        [100, 300, 500, 250, 250],
        50,
        3,
        28,
    ),
    ("TestReplicaCalcTolerance", 3, {"requests": [900, 1000, 1100]}, [1010, 1030, 1020], 100, 3, 102),
    ("TestReplicaCalcSuperfluousMetrics", 4, {}, [4000, 9500, 3000, 7000, 3200, 2000], 100, 24, 587),
    ("TestReplicaCalcMissingMetrics", 4, {}, [400, 95], 100, 3, 24),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, {}, [1000], 100, 2, 100),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, {}, [1900], 100, 2, 190),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, {}, [600], 100, 2, 60),
    ("TestReplicaCalcMissingMetricsUnreadyChange", 3, {"ready": [F, T, T]}, [100, 450], 50, 3, 45),
    ("TestReplicaCalcMissingMetricsHotCpuNoChange", 3, {"start": [HOT, COOL, COOL]}, [100, 450], 50, 3, 45),
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 3, {"ready": [F, T, T]}, [100, 2000], 50, 4, 200),
    ("TestReplicaCalcMissingMetricsHotCpuScaleUp", 3, {"ready": [F, T, T], "start": [HOT, COOL, COOL]}, [100, 2000], 50, 4, 200),
    ("TestReplicaCalcMissingMetricsUnreadyScaleDown", 4, {"ready": [F, T, T, T]}, [100, 100, 100], 50, 3, 10),
]


@pytest.mark.parametrize(
    ("name", "current", "pod_kwargs", "levels", "target", "expected", "utilization"), CPU_CASES, ids=[c[0] for c in CPU_CASES]
)
def test_resource_replicas_as_upstream(name, current, pod_kwargs, levels, target, expected, utilization) -> None:
    kwargs = dict(pod_kwargs)
    n = kwargs.pop("n", current)
    result = resource_replicas(current, target, _pods(n, **kwargs), _metrics(levels), now=NOW)
    assert (result.replicas, result.usage) == (expected, utilization)


def test_computed_tolerance_as_upstream() -> None:
    """TestReplicaCalcComputedToleranceAlgImplementation: 10 pods at 150 m of ~300 m requested; a target
    just outside the tolerance scales down to 9, one 0.6 points closer stays at 10."""
    requests = [400, 200, 310, 290, 302, 298, 301, 299, 300, 300]
    levels = [150] * 10
    target = 1 / (2 * (1 - 0.1)) + 0.01
    assert resource_replicas(10, int(target * 100), _pods(10, requests=requests), _metrics(levels), now=NOW).replicas == 9
    target = 1 / (2 * (1 - 0.1)) + 0.004
    assert resource_replicas(10, int(target * 100), _pods(10, requests=requests), _metrics(levels), now=NOW).replicas == 10


def test_no_metric_for_any_targeted_pod_is_an_error_as_upstream() -> None:
    result = resource_replicas(3, 50, _pods(3, ready=[F, F, F]), _metrics([100, 100, 100]), now=NOW)
    assert result.replicas is None and "did not receive metrics for targeted pods" in result.error
    assert plain_metric_replicas(3, 1000, _pods(3), {}, now=NOW).replicas is None


PLAIN_CASES = [
    ("TestReplicaCalcScaleUpCM", 3, {}, [20000, 10000, 30000], 15000, 4, 20000),
    (
        "TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale",
        3,
        {"ready": [T, T, F], "start": [COOL, COOL, HOT]},
        [50000, 10000, 30000],
        15000,
        6,
        30000,
    ),
    (
        "TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown",
        3,
        {"ready": [F, T, F], "start": [HOT, COOL, HOT]},
        [50000, 15000, 30000],
        15000,
        7,
        31666,
    ),
    ("TestReplicaCalcScaleDownCM", 5, {}, [12000] * 5, 20000, 3, 12000),
    ("TestReplicaCalcToleranceCM", 3, {}, [20000, 21000, 21000], 20000, 3, 20666),
]


@pytest.mark.parametrize(
    ("name", "current", "pod_kwargs", "levels", "target", "expected", "usage"), PLAIN_CASES, ids=[c[0] for c in PLAIN_CASES]
)
def test_plain_metric_replicas_as_upstream(name, current, pod_kwargs, levels, target, expected, usage) -> None:
    """Pods metrics ignore readiness (only Pending, Failed and deleted pods are set aside)."""
    result = plain_metric_replicas(current, target, _pods(current, **pod_kwargs), _metrics(levels), now=NOW)
    assert (result.replicas, result.usage) == (expected, usage)


def test_plain_metric_missing_pods_count_as_target_on_scale_down_and_zero_on_scale_up() -> None:
    # ratio 0.5 with one of two pods missing: the missing one counts at the target -> (500+1000)/2 = 750 -> 0.75 -> 2
    assert plain_metric_replicas(2, 1000, _pods(2), _metrics([500]), now=NOW).replicas == 2
    # ratio 4 with one of two missing: the missing one counts 0 -> 2000 -> 2.0 -> 4
    assert plain_metric_replicas(2, 1000, _pods(2), _metrics([4000]), now=NOW).replicas == 4


@pytest.mark.parametrize(
    ("name", "current", "value", "target", "expected", "usage"),
    [
        ("TestReplicaCalcScaleUpPerPodCMExternal", 3, 8600, 2150, 4, 2867),
        ("TestReplicaCalcScaleDownPerPodCMExternal", 5, 8600, 2867, 3, 1720),
        ("TestReplicaCalcTolerancePerPodCMExternal", 3, 8600, 2900, 3, 2867),
    ],
)
def test_external_per_pod_replicas_as_upstream(name, current, value, target, expected, usage) -> None:
    result = external_per_pod_replicas(current, target, [value])
    assert (result.replicas, result.usage) == (expected, usage)


# --- behavior ---------------------------------------------------------------------------------------------------


def _rules(pods=0, pods_period=0, percent=0, percent_period=0, window=0, select="Max") -> ScalingRules:
    """generateScalingRules in horizontal_test.go."""
    policies = []
    if pods:
        policies.append(ScalingPolicy(type="Pods", value=pods, period_seconds=pods_period))
    if percent:
        policies.append(ScalingPolicy(type="Percent", value=percent, period_seconds=percent_period))
    return ScalingRules(stabilization_window_seconds=window, select_policy=select, policies=tuple(policies))


def _uniform(changes, period) -> tuple[ScaleEvent, ...]:
    """generateEventsUniformDistribution: events at the middle of equal segments of the last ``period`` s."""
    segment = period / len(changes)
    return tuple(ScaleEvent(c, NOW - (period - segment * (i + 1) + segment / 2)) for i, c in enumerate(changes))


SCALING_WITH_RULES = [
    # (name, up events, down events, min, max, up rules, down rules, current, desired, expected, condition)
    ("prenormalized desired replicas within range", (), (), 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", (), (), 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", (), (), 1, 10, None, None, 20, 1000, 10, "TooManyReplicas"),
    ("desired replica count is more than the maximum replica count", (), (), 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
    (
        "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies",
        (),
        (),
        1,
        2000,
        _rules(0, 0, 1, 60),
        None,
        3,
        1000,
        4,
        "ScaleUpLimit",
    ),
    ("scaleUp with default behavior", (), (), 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", (), (), 1, 1000, _rules(100, 60, 100, 60), None, 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", (), (), 1, 1000, _rules(2, 60, 100, 60), None, 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with pod policy limitation", (), (), 1, 1000, _rules(30, 60), None, 10, 50, 40, "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", (), (), 1, 1000, _rules(0, 0, 200, 60), None, 10, 50, 30, "ScaleUpLimit"),
    (
        "scaleDown with percent policy larger than pod policy",
        (),
        (),
        1,
        1000,
        None,
        _rules(20, 60, 1, 60, 300),
        100,
        2,
        80,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with pod policy larger than percent policy",
        (),
        (),
        1,
        1000,
        None,
        _rules(2, 60, 1, 60, 300),
        100,
        2,
        98,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy",
        (),
        (),
        5,
        1000,
        None,
        _rules(0, 0, 100, 60, 300),
        10,
        2,
        5,
        "TooFewReplicas",
    ),
    ("scaleDown with pod policy limitation", (), (), 1, 1000, None, _rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", (), (), 1, 1000, None, _rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"),
    (
        "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
        _uniform([1, 5, 9], 120),
        (),
        1,
        1000,
        _rules(5, 120),
        None,
        100,
        500,
        100,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with pod policy and previous scale up events",
        _uniform([1, 5, 9], 120),
        (),
        1,
        1000,
        _rules(150, 120),
        None,
        100,
        500,
        235,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy and previous scale up events",
        _uniform([1, 5, 9], 120),
        (),
        1,
        1000,
        _rules(0, 0, 200, 120),
        None,
        100,
        500,
        255,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with default policy and previous events",
        (),
        _uniform([1, 5, 9], 120),
        1,
        1000,
        None,
        None,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleDown with pod policy limitation and previous events",
        (),
        _uniform([1, 5, 9], 120),
        1,
        1000,
        None,
        _rules(5, 120, 0, 0, 300),
        100,
        2,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation and previous events",
        (),
        _uniform([2, 4, 6], 120),
        1,
        1000,
        None,
        _rules(0, 0, 50, 120, 300),
        100,
        0,
        56,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with previous events preventing further scale down",
        (),
        _uniform([10, 10, 10], 120),
        1,
        1000,
        None,
        _rules(0, 0, 10, 120, 300),
        100,
        0,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with with previous events still allowing more scale down",
        (),
        _uniform([10, 10, 10], 120),
        1,
        1000,
        None,
        _rules(0, 0, 1000, 120, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "check that events were not marked 'outdated' for two different policies in the behavior for up",
        _uniform([8, 12, 9, 11], 120),
        (),
        1,
        1000,
        _rules(1000, 120, 100, 60),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
]


@pytest.mark.parametrize(
    ("name", "up_events", "down_events", "min_r", "max_r", "up", "down", "current", "desired", "expected", "condition"),
    SCALING_WITH_RULES,
    ids=[c[0] for c in SCALING_WITH_RULES],
)
def test_scaling_with_rules_as_upstream(
    name, up_events, down_events, min_r, max_r, up, down, current, desired, expected, condition
) -> None:
    """TestScalingWithRules (convertDesiredReplicasWithBehaviorRate); None rules are the API defaults."""
    up = up or _default_scale_up()
    down = down or _default_scale_down()
    replicas, reason, _ = convert_desired_replicas_with_behavior_rate(current, desired, min_r, max_r, up_events, down_events, up, down, NOW)
    assert (replicas, reason) == (expected, condition)


def test_scale_limits_with_min_select_policy_as_upstream() -> None:
    """TestCalculateScaleUpLimitWithScalingRules and TestCalculateScaleDownLimitWithBehaviors."""
    rules = _rules(2, 60, 50, 60, 300, select="Min")
    assert scale_up_limit(1, (), (), rules, NOW) == 2
    assert scale_down_limit(5, (), (), rules, NOW) == 3


def test_disabled_select_policy_never_changes_the_count() -> None:
    rules = _rules(4, 15, select="Disabled")
    assert scale_up_limit(3, (), (), rules, NOW) == 3 and scale_down_limit(3, (), (), rules, NOW) == 3


STABILIZATION = [
    # (name, recommendations [(value, age s)], current, desired, expected, up window, down window, stored values)
    ("empty recommendations for scaling down", [], 100, 5, 5, 0, 0, [5]),
    ("simple scale down stabilization", [(4, 120), (5, 60)], 100, 3, 5, 0, 180, [4, 5, 3]),
    ("simple scale up stabilization", [(4, 120), (5, 60)], 1, 7, 4, 300, 0, [4, 5, 7]),
    ("no scale down stabilization", [(1, 120), (2, 60)], 100, 3, 3, 300, 0, [1, 2, 3]),
    ("no scale up stabilization", [(4, 120), (5, 60)], 1, 3, 3, 0, 300, [4, 5, 3]),
    ("no scale down stabilization, reuse recommendation element", [(10, 600), (9, 540)], 100, 3, 3, 0, 0, [10, 3]),
    ("no scale up stabilization, reuse recommendation element", [(10, 600), (9, 540)], 1, 100, 100, 0, 0, [10, 100]),
    (
        "scale down stabilization, reuse one of obsolete recommendation element",
        [(10, 600), (4, 60), (5, 120), (9, 540)],
        100,
        3,
        5,
        0,
        180,
        [10, 4, 5, 3],
    ),
    (
        "scale up stabilization, reuse one of obsolete recommendation element",
        [(10, 6000), (6, 60), (5, 120), (9, 180)],
        1,
        100,
        5,
        300,
        0,
        [100, 6, 5, 9],
    ),
]


@pytest.mark.parametrize(
    ("name", "recs", "current", "desired", "expected", "up_w", "down_w", "stored"), STABILIZATION, ids=[c[0] for c in STABILIZATION]
)
def test_stabilization_as_upstream(name, recs, current, desired, expected, up_w, down_w, stored) -> None:
    """TestNormalizeDesiredReplicasWithBehavior (stabilizeRecommendationWithBehaviors)."""
    history = [TimestampedRecommendation(v, NOW - age) for v, age in recs]
    up, down = _rules(4, 15, window=up_w), _rules(4, 15, window=down_w)
    got, _, _, new = stabilize_recommendation(history, current, desired, up, down, NOW)
    assert got == expected
    assert [r.recommendation for r in new] == stored


@pytest.mark.parametrize(
    ("name", "previous", "rules", "expected_change", "stored"),
    [
        ("empty entries with two-policy-behavior", [], _rules(10, 60, 100, 60), 0, [(5, False)]),
        ("one outdated entry to be replaced with behavior", [(7, 61)], _rules(10, 60, 100, 60), 0, [(5, False)]),
        ("one actual entry to be not touched with behavior", [(7, 58)], _rules(10, 60, 100, 60), 7, [(7, False), (5, False)]),
        ("two entries, one of them to be replaced", [(7, 61), (6, 59)], _rules(10, 60), 6, [(5, False), (6, False)]),
        (
            "replace one entry, use policies with different periods",
            [(8, 29), (6, 59), (7, 61), (9, 61)],
            _rules(10, 60, 100, 30),
            14,
            [(8, False), (6, False), (7, True), (5, False)],
        ),
    ],
)
def test_store_scale_events_as_upstream(name, previous, rules, expected_change, stored) -> None:
    """TestStoreScaleEvents: the 60 s change before storing, and the events after storing a change of 5."""
    events = tuple(ScaleEvent(c, NOW - age) for c, age in previous)
    assert replicas_change_per_period(60, events, NOW) == expected_change
    assert [(e.replica_change, e.outdated) for e in store_scale_event(events, rules, 5, NOW)] == stored


# --- reconcile and the baselines on a fake clock ------------------------------------------------------------------

SPEC = parse_spec({"scaleTargetRef": {"name": "triton"}, "minReplicas": 1, "maxReplicas": 20, "slo": {"p99LatencyMs": 50}})


def _signals(now, replicas, cpu=None, *, starting=0, queue_us=None, rate=None) -> DeploymentSignals:
    pods = [
        PodSignals(f"p{i}", "ready", scraped_at=now, cpu_utilization=cpu, queue_us_per_request=queue_us, request_rate=rate)
        for i in range(replicas)
    ]
    pods += [PodSignals(f"s{i}", "starting") for i in range(starting)]
    return DeploymentSignals(now=now, current_replicas=replicas + starting, pods=tuple(pods))


def test_reconcile_brings_replicas_within_bounds_without_metrics() -> None:
    r = reconcile(HpaHistory(), spec=SPEC, current_replicas=25, metric=resource_replicas(25, 80, [], {}, now=NOW), metric_name="x", now=NOW)
    assert (r.desired_replicas, r.reason) == (20, "Current number of replicas above Spec.MaxReplicas")
    r = reconcile(HpaHistory(), spec=SPEC, current_replicas=0, metric=resource_replicas(0, 80, [], {}, now=NOW), metric_name="x", now=NOW)
    assert (r.desired_replicas, r.rescale) == (0, False)
    assert r.conditions[1].reason == "ScalingDisabled"


def test_reconcile_failed_metric_keeps_the_count_with_scaling_active_false() -> None:
    metric = resource_replicas(3, 80, _pods(3, ready=[F, F, F]), _metrics([900, 900, 900]), now=NOW)
    r = reconcile(
        HpaHistory(), spec=SPEC, current_replicas=3, metric=metric, metric_name="cpu resource utilization (percentage of request)", now=NOW
    )
    assert (r.desired_replicas, r.rescale) == (3, False)
    assert (r.conditions[1].type, r.conditions[1].status, r.conditions[1].reason) == ("ScalingActive", "False", "FailedGetResourceMetric")


def test_hpa_cpu_scales_up_by_max_4_pods_or_100_percent_per_15_s_ignoring_new_pods_first_samples() -> None:
    """New pods' samples taken less than one 15 s window after they became Ready are left out during
    the CPU initialization period (groupPods), so every other sync holds; the others grow by
    max(4 pods, 100%) per 15 s up to maxReplicas."""
    hpa = HpaCpu(SPEC, target_utilization=0.8)
    replicas, seen = 1, []
    for k in range(5):
        d = hpa.step(_signals(NOW + 15 * k, replicas, cpu=4.0))  # 400% used: 5x the 80% target
        replicas = d.desired_replicas
        seen.append(replicas)
    assert seen == [5, 5, 10, 20, 20]
    assert d.conditions[2].reason == "TooManyReplicas"


def test_hpa_cpu_repeats_its_decision_between_15_s_syncs() -> None:
    hpa = HpaCpu(SPEC)
    first = hpa.step(_signals(NOW, 2, cpu=1.6))  # 160% used: 2x the target
    assert first.desired_replicas == 4
    assert hpa.step(_signals(NOW + 5, 4, cpu=0.1)) is first
    assert hpa.step(_signals(NOW + 15, 4, cpu=1.6)).desired_replicas == 4  # the 2 new pods' samples are too fresh
    assert hpa.step(_signals(NOW + 30, 4, cpu=1.6)).desired_replicas == 8


def test_hpa_cpu_scales_down_only_after_the_300_s_window_holding_the_highest_recommendation() -> None:
    hpa = HpaCpu(SPEC)
    t, replicas = NOW, 8
    d = hpa.step(_signals(t, replicas, cpu=0.8))  # at target: 8 recorded (and the initial recommendation 8)
    assert d.desired_replicas == 8
    for k in range(1, 20):  # 285 s at 10%: the recommendation of 8 made at t stays in the 300 s window
        d = hpa.step(_signals(t + 15 * k, replicas, cpu=0.1))
        assert d.desired_replicas == 8, k
        assert d.conditions[0].reason == "ScaleDownStabilized"
    d = hpa.step(_signals(t + 315, replicas, cpu=0.1))  # t is now outside the window: the lower recommendations apply
    assert d.desired_replicas == 1
    assert d.reason.startswith("New size: 1; reason: All metrics below target")


def test_hpa_cpu_counts_starting_pods_as_upstream_counts_unready_ones() -> None:
    hpa = HpaCpu(SPEC)
    # 2 ready at 160% (ratio 2) + 2 starting pods without a CPU sample (missing, 0 on the way up):
    # 3200 m of 4000 m = 80% = the target -> within tolerance -> keep 4
    d = hpa.step(_signals(NOW, 2, cpu=1.6, starting=2))
    assert d.desired_replicas == 4
    hpa2 = HpaCpu(SPEC)
    # 2 ready at 320% (ratio 4): with the two starting pods at 0: 640/400 -> ratio 2 -> ceil(2*4) = 8
    assert hpa2.step(_signals(NOW, 2, cpu=3.2, starting=2)).desired_replicas == 8


@pytest.mark.parametrize(("models", "expected"), [(1, 1000.0 * 300 / 301), (3, 1000.0 / 3 * 300 / 301)])
def test_triton_queue_metric_under_reports_by_the_number_of_models(models, expected) -> None:
    assert triton_queue_metric_us(1000.0, 10.0, models=models) == pytest.approx(expected)


def test_hpa_queue_time_scales_later_when_the_rule_averages_over_models() -> None:
    target_ms = 1.0
    one, three = (
        HpaQueueTime(SPEC, target_queue_ms=target_ms, models_per_pod=1),
        HpaQueueTime(SPEC, target_queue_ms=target_ms, models_per_pod=3),
    )
    sig = _signals(NOW, 2, queue_us=2500.0, rate=100.0)  # 2.5 ms queued per request: 2.5x the target
    assert one.step(sig).desired_replicas == 5  # ceil(2.5 * 2 * 3000/3001) = 5
    assert three.step(sig).desired_replicas == 2  # 0.83 ms reported: below the target, ceil(0.83 * 2) = 2, no change
    assert three.history.recommendations[-1].recommendation == 2


def test_hpa_queue_time_lags_by_its_30_s_window() -> None:
    hpa = HpaQueueTime(SPEC, target_queue_ms=1.0)
    for k in range(6):  # 30 s at the target
        hpa.step(_signals(NOW + 5 * k, 2, queue_us=1000.0, rate=100.0))
    d = hpa.step(_signals(NOW + 30, 2, queue_us=4000.0, rate=100.0))  # a sync: the jump is 1 of 6 samples in the window
    assert d.desired_replicas == 3  # (5*1 + 4) / 6 = 1.5 ms -> ceil(1.5 * 2 * 3000/3001) = 3, not 8

"""The Kubernetes HorizontalPodAutoscaler (``autoscaling/v2``) as pure functions, and two baselines
built on it: the HPA on CPU utilization (:class:`HpaCpu`) and the HPA on Triton's published
queue-time rule (:class:`HpaQueueTime`).

A port of ``kubernetes/kubernetes`` ``pkg/controller/podautoscaler`` (v1.33-era; the rules have been
stable since v1.18):

* ``replica_calculator.go``: :func:`group_pods` (``groupPods``), :func:`resource_replicas`
  (``GetResourceReplicas``), :func:`plain_metric_replicas` (``calcPlainMetricReplicas``, behind
  ``GetMetricReplicas`` for Pods metrics), :func:`external_per_pod_replicas`
  (``GetExternalPerPodMetricReplicas``, what KEDA's AverageValue targets use);
* ``metrics/utilization.go``: the usage ratios (``GetResourceUtilizationRatio``,
  ``GetMetricUsageRatio``), with Go's integer arithmetic on milli-values;
* ``horizontal.go``: :func:`reconcile` (the replica part of ``reconcileAutoscaler``),
  :func:`stabilize_recommendation` (``stabilizeRecommendationWithBehaviors``),
  :func:`convert_desired_replicas_with_behavior_rate` (``convertDesiredReplicasWithBehaviorRate``),
  :func:`scale_up_limit` / :func:`scale_down_limit` (``calculateScaleUpLimitWithScalingRules``,
  ``calculateScaleDownLimitWithBehaviors``), :func:`store_scale_event` (``storeScaleEvent``,
  ``markScaleEventsOutdated``), :func:`replicas_change_per_period` (``getReplicasChangePerPeriod``).

Constants: tolerance 0.1 (``--horizontal-pod-autoscaler-tolerance``), sync period 15 s
(``--horizontal-pod-autoscaler-sync-period``), CPU initialization period 120 s and initial readiness
delay 10 s (``--horizontal-pod-autoscaler-cpu-initialization-period``,
``--horizontal-pod-autoscaler-initial-readiness-delay``), and the behavior defaults of
``pkg/apis/autoscaling/v2/defaults.go`` (in :mod:`toolkit.autoscale.spec`).

Upstream keeps its state (recommendations, scale events) in the controller and reads ``time.Now()``;
here the state is an immutable :class:`HpaHistory` passed in and returned, and ``now`` is an argument,
so the same code runs on the controller's clock, the simulator's and a test's fake clock. Times are
seconds; metric values are milli-units (``Quantity.MilliValue()``) as upstream computes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from toolkit.autoscale.signals import Condition, DeploymentSignals, PodSignals, ScaleDecision
from toolkit.autoscale.spec import AutoscalerSpec, ScalingPolicy, ScalingRules

__all__ = [
    "TOLERANCE",
    "SYNC_PERIOD_SECONDS",
    "CPU_INITIALIZATION_PERIOD_SECONDS",
    "INITIAL_READINESS_DELAY_SECONDS",
    "HpaPod",
    "PodMetric",
    "MetricResult",
    "ScaleEvent",
    "TimestampedRecommendation",
    "HpaHistory",
    "Reconciled",
    "group_pods",
    "resource_replicas",
    "plain_metric_replicas",
    "external_per_pod_replicas",
    "replicas_change_per_period",
    "scale_up_limit",
    "scale_down_limit",
    "stabilize_recommendation",
    "convert_desired_replicas_with_behavior_rate",
    "store_scale_event",
    "reconcile",
    "triton_queue_metric_us",
    "drop_samples_before",
    "HpaCpu",
    "HpaQueueTime",
]

#: Default ``--horizontal-pod-autoscaler-tolerance``: no scaling while the usage ratio is within 1 ± 0.1.
TOLERANCE = 0.1
#: Default ``--horizontal-pod-autoscaler-sync-period``.
SYNC_PERIOD_SECONDS = 15.0
#: Default ``--horizontal-pod-autoscaler-cpu-initialization-period``.
CPU_INITIALIZATION_PERIOD_SECONDS = 120.0
#: Default ``--horizontal-pod-autoscaler-initial-readiness-delay``.
INITIAL_READINESS_DELAY_SECONDS = 10.0

PodPhaseK8s = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class HpaPod:
    """What the replica calculator reads of one pod (``v1.Pod``).

    Attributes:
        name: the pod's name.
        phase: ``status.phase``.
        ready: the Ready condition's status (True/False), or None when the pod has no Ready condition.
        deleting: ``metadata.deletionTimestamp`` is set.
        start_time: ``status.startTime`` (seconds), or None.
        ready_transition_time: the Ready condition's ``lastTransitionTime`` (seconds), or None.
        request_milli: the pod's request of the resource (millicores for CPU), summed over containers.
    """

    name: str
    phase: PodPhaseK8s = "Running"
    ready: bool | None = True
    deleting: bool = False
    start_time: float | None = None
    ready_transition_time: float | None = None
    request_milli: int = 1000


@dataclass(frozen=True)
class PodMetric:
    """One pod's sample (``metricsclient.PodMetric``): value in milli-units, when it was taken and over
    which window (seconds)."""

    value: int
    timestamp: float = 0.0
    window: float = 0.0


@dataclass(frozen=True)
class MetricResult:
    """A replica proposal from one metric, or why there is none.

    Attributes:
        replicas: the proposed replica count, or None when it could not be computed.
        usage: the metric's current value as upstream reports it (percent for utilization, milli-units
            otherwise), or None.
        error: upstream's error text when ``replicas`` is None (``"did not receive metrics for targeted
            pods (pods might be unready)"``).
        ready_pods, unready_pods, missing_pods, ignored_pods: how :func:`group_pods` sorted the pods.
    """

    replicas: int | None
    usage: int | None = None
    error: str | None = None
    ready_pods: int = 0
    unready_pods: frozenset[str] = frozenset()
    missing_pods: frozenset[str] = frozenset()
    ignored_pods: frozenset[str] = frozenset()


def _ceil(x: float) -> int:
    return int(math.ceil(x))


def _within_tolerance(ratio: float, tolerance: float) -> bool:
    # Tolerances.isWithin with equal up and down tolerances (the flag's value for both).
    return (1.0 - tolerance) <= ratio <= (1.0 + tolerance)


def group_pods(
    pods: Iterable[HpaPod],
    metrics: Mapping[str, PodMetric],
    *,
    cpu: bool,
    now: float,
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD_SECONDS,
    delay_of_initial_readiness_status: float = INITIAL_READINESS_DELAY_SECONDS,
) -> tuple[int, set[str], set[str], set[str]]:
    """Sort pods as upstream ``groupPods`` does.

    Deleted or Failed pods are ignored; Pending pods are unready; a pod without a sample is missing;
    for CPU only, a Running pod is unready when it has no Ready condition or start time, or while in
    its CPU initialization period it is not Ready or its sample was taken less than one window after
    it became Ready, or after that period it is not Ready and never was (its Ready condition changed
    within ``delay_of_initial_readiness_status`` of its start). Other metrics ignore readiness.

    Returns:
        ``(ready_pod_count, unready, missing, ignored)`` (sets of pod names).
    """
    ready_count = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        metric = metrics.get(pod.name)
        if metric is None:
            missing.add(pod.name)
            continue
        if cpu:
            if pod.ready is None or pod.start_time is None or pod.ready_transition_time is None:
                is_unready = True
            elif pod.start_time + cpu_initialization_period > now:
                is_unready = (not pod.ready) or metric.timestamp < pod.ready_transition_time + metric.window
            else:
                is_unready = (not pod.ready) and pod.start_time + delay_of_initial_readiness_status > pod.ready_transition_time
            if is_unready:
                unready.add(pod.name)
                continue
        ready_count += 1
    return ready_count, unready, missing, ignored


def _resource_utilization_ratio(metrics: Mapping[str, int], requests: Mapping[str, int], target_utilization: int) -> tuple[float, int, int]:
    # metrics/utilization.go GetResourceUtilizationRatio (integer percent, integer average)
    metrics_total = requests_total = entries = 0
    for name, value in metrics.items():
        if name not in requests:
            continue
        metrics_total += value
        requests_total += requests[name]
        entries += 1
    if requests_total == 0:
        raise ValueError("no metrics returned matched known pods")
    utilization = (metrics_total * 100) // requests_total
    return utilization / target_utilization, utilization, metrics_total // entries


def _metric_usage_ratio(metrics: Mapping[str, int], target_usage: int) -> tuple[float, int]:
    # metrics/utilization.go GetMetricUsageRatio (Go's int64 division truncates; values here are >= 0)
    usage = sum(metrics.values()) // len(metrics)
    return usage / target_usage, usage


#: The error of a proposal when no pod that counts has a sample (upstream's message).
_NO_METRICS_ERROR = "did not receive metrics for targeted pods (pods might be unready)"


def _counted_samples(
    pods: Sequence[HpaPod], metrics: Mapping[str, PodMetric], *, cpu: bool, now: float
) -> tuple[set[str], set[str], dict[str, frozenset[str] | int], dict[str, int]]:
    """:func:`group_pods`, then the samples that count: ``(unready, missing, groups, values)``, with
    ``groups`` the :class:`MetricResult` fields of the grouping and ``values`` pod name -> sample
    (milli-units) of every pod neither ignored nor unready. Like upstream, samples of pods the selector
    no longer lists stay in (the opening both ``GetResourceReplicas`` and ``calcPlainMetricReplicas`` share)."""
    ready_count, unready, missing, ignored = group_pods(pods, metrics, cpu=cpu, now=now)
    groups: dict[str, frozenset[str] | int] = {
        "ready_pods": ready_count,
        "unready_pods": frozenset(unready),
        "missing_pods": frozenset(missing),
        "ignored_pods": frozenset(ignored),
    }
    values = {name: m.value for name, m in metrics.items() if name not in ignored and name not in unready}
    return unready, missing, groups, values


def _replicas_counting_missing_and_unready(
    current_replicas: int,
    usage_ratio: float,
    usage: int,
    values: dict[str, int],
    unready: set[str],
    missing: set[str],
    groups: Mapping[str, frozenset[str] | int],
    *,
    missing_on_scale_down: Callable[[str], int],
    ratio_of: Callable[[Mapping[str, int]], float],
    tolerance: float,
) -> MetricResult:
    """The proposal from ``usage_ratio`` (of ``values``, the ready pods' samples), where upstream's
    ``GetResourceReplicas`` and ``calcPlainMetricReplicas`` run the same steps: with no unready pods to
    count on a scale-up and none missing, ``ceil(ratio × ready pods)`` outside the tolerance; else the
    missing pods count as ``missing_on_scale_down(name)`` on a scale-down and as 0 on a scale-up, the
    unready ones as 0 on a scale-up, the ratio is taken again (``ratio_of``) and a proposal within the
    tolerance or one that reverses direction keeps ``current_replicas``. ``values`` is filled in place."""
    scale_up_with_unready = bool(unready) and usage_ratio > 1.0
    if not scale_up_with_unready and not missing:
        if _within_tolerance(usage_ratio, tolerance):
            return MetricResult(current_replicas, usage, **groups)
        return MetricResult(_ceil(usage_ratio * groups["ready_pods"]), usage, **groups)

    if missing:
        if usage_ratio < 1.0:
            for name in missing:
                values[name] = missing_on_scale_down(name)
        elif usage_ratio > 1.0:
            for name in missing:
                values[name] = 0
    if scale_up_with_unready:
        for name in unready:
            values[name] = 0

    new_ratio = ratio_of(values)
    if _within_tolerance(new_ratio, tolerance) or (usage_ratio < 1.0 < new_ratio) or (usage_ratio > 1.0 > new_ratio):
        return MetricResult(current_replicas, usage, **groups)
    new_replicas = _ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return MetricResult(current_replicas, usage, **groups)
    return MetricResult(new_replicas, usage, **groups)


def resource_replicas(
    current_replicas: int,
    target_utilization: int,
    pods: Sequence[HpaPod],
    metrics: Mapping[str, PodMetric],
    *,
    now: float,
    tolerance: float = TOLERANCE,
    cpu: bool = True,
) -> MetricResult:
    """Desired replicas for a target utilization of a resource (``GetResourceReplicas``).

    Args:
        current_replicas: the target's ``spec.replicas``.
        target_utilization: percent of the pods' request (80 for 80%).
        pods: the pods the target's selector matches.
        metrics: pod name -> sample (milli-units of the resource, e.g. millicores).
        now: seconds, for the CPU initialization period.
        tolerance: no change while the ratio is within 1 ± tolerance.

    Returns:
        The proposal; ``usage`` is the utilization in percent. Missing pods count as 0% on a scale-up
        and as max(100%, target) of their request on a scale-down; unready pods are left out, and count
        as 0% on a scale-up; a proposal that would reverse direction once they are counted keeps the
        current count.
    """
    unready, missing, groups, values = _counted_samples(pods, metrics, cpu=cpu, now=now)
    if not values:
        return MetricResult(None, error=_NO_METRICS_ERROR, **groups)
    requests = {p.name: p.request_milli for p in pods}
    try:
        usage_ratio, utilization, _ = _resource_utilization_ratio(values, requests, target_utilization)
    except ValueError as exc:
        return MetricResult(None, error=str(exc), **groups)

    fallback = max(100, target_utilization)
    return _replicas_counting_missing_and_unready(
        current_replicas,
        usage_ratio,
        utilization,
        values,
        unready,
        missing,
        groups,
        missing_on_scale_down=lambda name: requests[name] * fallback // 100,
        ratio_of=lambda v: _resource_utilization_ratio(v, requests, target_utilization)[0],
        tolerance=tolerance,
    )


def plain_metric_replicas(
    current_replicas: int,
    target_usage: int,
    pods: Sequence[HpaPod],
    metrics: Mapping[str, PodMetric],
    *,
    now: float,
    tolerance: float = TOLERANCE,
) -> MetricResult:
    """Desired replicas for a Pods metric with an AverageValue target (``calcPlainMetricReplicas``).

    Args:
        current_replicas: the target's ``spec.replicas``.
        target_usage: the target average value in milli-units (``averageValue: 50`` is 50000).
        pods, metrics, now, tolerance: as :func:`resource_replicas` (readiness is not checked: only
            Pending, deleted and Failed pods are set aside).

    Returns:
        The proposal; ``usage`` is the average value (milli-units). Missing pods count as the target on
        a scale-down and as 0 on a scale-up; unready (Pending) pods count as 0 on a scale-up.
    """
    unready, missing, groups, values = _counted_samples(pods, metrics, cpu=False, now=now)
    if not values:
        return MetricResult(None, error=_NO_METRICS_ERROR, **groups)
    usage_ratio, usage = _metric_usage_ratio(values, target_usage)

    return _replicas_counting_missing_and_unready(
        current_replicas,
        usage_ratio,
        usage,
        values,
        unready,
        missing,
        groups,
        missing_on_scale_down=lambda name: target_usage,
        ratio_of=lambda v: _metric_usage_ratio(v, target_usage)[0],
        tolerance=tolerance,
    )


def external_per_pod_replicas(
    status_replicas: int, target_per_pod: int, values: Sequence[int], *, tolerance: float = TOLERANCE
) -> MetricResult:
    """Desired replicas for an External metric with an AverageValue target (``GetExternalPerPodMetricReplicas``;
    what KEDA's ScaledObjects create).

    Args:
        status_replicas: the target's current replicas.
        target_per_pod: the target average value per pod, milli-units.
        values: the external metric's values (milli-units), summed.

    Returns:
        ``ceil(sum / target)`` when the ratio to ``target × status_replicas`` leaves the tolerance,
        else ``status_replicas``; ``usage`` is the sum over ``status_replicas`` (rounded up).
    """
    usage = sum(values)
    replicas = status_replicas
    ratio = usage / (target_per_pod * status_replicas) if status_replicas else math.inf
    if not _within_tolerance(ratio, tolerance):
        replicas = _ceil(usage / target_per_pod)
    per_pod = _ceil(usage / status_replicas) if status_replicas else usage
    return MetricResult(replicas, per_pod)


# ---------------------------------------------------------------------------------------------------------------------
# Behavior (horizontal.go)


@dataclass(frozen=True)
class ScaleEvent:
    """One past rescale in one direction (``timestampedScaleEvent``): pods added (or removed), when."""

    replica_change: int
    timestamp: float
    outdated: bool = False


@dataclass(frozen=True)
class TimestampedRecommendation:
    """One past (unstabilized) recommendation (``timestampedRecommendation``)."""

    recommendation: int
    timestamp: float


@dataclass(frozen=True)
class HpaHistory:
    """The HPA controller's memory of one HPA: recommendations and scale events (immutable)."""

    recommendations: tuple[TimestampedRecommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


def replicas_change_per_period(period_seconds: float, events: Iterable[ScaleEvent], now: float) -> int:
    """Pods changed by the events newer than ``now - period_seconds`` (``getReplicasChangePerPeriod``)."""
    cutoff = now - period_seconds
    return sum(e.replica_change for e in events if e.timestamp > cutoff)


def _period_starts(
    current: int, up_events: Sequence[ScaleEvent], down_events: Sequence[ScaleEvent], rules: ScalingRules, now: float
) -> list[tuple[ScalingPolicy, int]]:
    """Each policy of ``rules`` with the replicas at the start of its period: ``current`` − pods added +
    pods removed within it (what both ``calculateScaleUpLimitWithScalingRules`` and
    ``calculateScaleDownLimitWithBehaviors`` count from)."""
    starts = []
    for policy in rules.policies or ():
        added = replicas_change_per_period(policy.period_seconds, up_events, now)
        removed = replicas_change_per_period(policy.period_seconds, down_events, now)
        starts.append((policy, current - added + removed))
    return starts


def scale_up_limit(
    current: int, up_events: Sequence[ScaleEvent], down_events: Sequence[ScaleEvent], rules: ScalingRules, now: float
) -> int:
    """Highest replica count the scale-up policies allow now (``calculateScaleUpLimitWithScalingRules``).

    Each policy counts from the replicas at the start of its period (current − added + removed within
    it): ``Pods`` adds ``value``; ``Percent`` multiplies by ``1 + value/100``, rounded up. ``selectPolicy``
    Max takes the largest proposal, Min the smallest, Disabled returns ``current``.
    """
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy, start in _period_starts(current, up_events, down_events, rules, now):
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(_ceil(start * (1 + policy.value / 100)))
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(
    current: int, up_events: Sequence[ScaleEvent], down_events: Sequence[ScaleEvent], rules: ScalingRules, now: float
) -> int:
    """Lowest replica count the scale-down policies allow now (``calculateScaleDownLimitWithBehaviors``):
    ``Pods`` removes ``value``, ``Percent`` multiplies by ``1 - value/100`` truncated (Go's ``int32()``);
    Max (most change) takes the smallest, Min the largest, Disabled returns ``current``."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy, start in _period_starts(current, up_events, down_events, rules, now):
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def stabilize_recommendation(
    recommendations: Sequence[TimestampedRecommendation],
    current: int,
    desired: int,
    up_rules: ScalingRules,
    down_rules: ScalingRules,
    now: float,
) -> tuple[int, str, str, tuple[TimestampedRecommendation, ...]]:
    """Stabilize ``desired`` against the recent recommendations (``stabilizeRecommendationWithBehaviors``).

    On the way up the lowest recommendation within the scale-up window applies, on the way down the
    highest within the scale-down window (the 300 s default: "taking the max recommendation in the
    window"). ``desired`` is then recorded, replacing one recommendation older than both windows.

    Returns:
        ``(stabilized, reason, message, recommendations)``: reason ``ScaleUpStabilized`` or
        ``ScaleDownStabilized`` (used only when ``stabilized != desired``).
    """
    up_cutoff = now - (up_rules.stabilization_window_seconds or 0)
    down_cutoff = now - (down_rules.stabilization_window_seconds or 0)
    up_rec = down_rec = desired
    old_index = None
    for i, rec in enumerate(recommendations):
        if rec.timestamp > up_cutoff:
            up_rec = min(rec.recommendation, up_rec)
        if rec.timestamp > down_cutoff:
            down_rec = max(rec.recommendation, down_rec)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = i
    recommendation = current
    if recommendation < up_rec:
        recommendation = up_rec
    if recommendation > down_rec:
        recommendation = down_rec
    new = TimestampedRecommendation(desired, now)
    recs = list(recommendations)
    if old_index is not None:
        recs[old_index] = new
    else:
        recs.append(new)
    if desired >= current:
        reason, message = (
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )
    else:
        reason, message = (
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    return recommendation, reason, message, tuple(recs)


def convert_desired_replicas_with_behavior_rate(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    up_rules: ScalingRules,
    down_rules: ScalingRules,
    now: float,
) -> tuple[int, str, str]:
    """Apply the rate limits and min/max (``convertDesiredReplicasWithBehaviorRate``).

    Returns:
        ``(replicas, reason, message)`` with reason ``ScaleUpLimit``, ``TooManyReplicas``,
        ``ScaleDownLimit``, ``TooFewReplicas`` or ``DesiredWithinRange`` (HPA's own strings).
    """
    if desired > current:
        limit = max(scale_up_limit(current, up_events, down_events, up_rules, now), current)
        if max_replicas > limit:
            maximum, reason, message = limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"
        else:
            maximum, reason, message = max_replicas, "TooManyReplicas", "the desired replica count is more than the maximum replica count"
        if desired > maximum:
            return maximum, reason, message
    elif desired < current:
        limit = min(scale_down_limit(current, up_events, down_events, down_rules, now), current)
        if min_replicas < limit:
            minimum, reason, message = limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            minimum, reason, message = min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
        if desired < minimum:
            return minimum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def _mark_outdated(events: Sequence[ScaleEvent], longest_period: float, now: float) -> list[ScaleEvent]:
    cutoff = now - longest_period
    return [replace(e, outdated=True) if e.timestamp < cutoff else e for e in events]


def store_scale_event(events: Sequence[ScaleEvent], rules: ScalingRules, replica_change: int, now: float) -> tuple[ScaleEvent, ...]:
    """Record a rescale of ``replica_change`` pods in one direction's events (``storeScaleEvent``): events
    older than the direction's longest policy period are marked outdated and the last of them is
    replaced by the new one; otherwise it is appended."""
    longest = max((p.period_seconds for p in rules.policies or ()), default=0)
    marked = _mark_outdated(events, longest, now)
    new = ScaleEvent(replica_change, now)
    old = [i for i, e in enumerate(marked) if e.outdated]
    if old:
        marked[old[-1]] = new
    else:
        marked.append(new)
    return tuple(marked)


@dataclass(frozen=True)
class Reconciled:
    """What one HPA sync decided.

    Attributes:
        desired_replicas: the count to set.
        rescale: True when it differs from the current count (a ``SuccessfulRescale`` Event upstream).
        reason: upstream's rescale reason (``"cpu resource utilization (percentage of request) above
            target"``, ``"All metrics below target"``, ``"Current number of replicas above
            Spec.MaxReplicas"``) or why nothing was done.
        conditions: AbleToScale, ScalingActive, ScalingLimited as upstream sets them.
        history: the updated history.
    """

    desired_replicas: int
    rescale: bool
    reason: str
    conditions: tuple[Condition, ...]
    history: HpaHistory


def reconcile(
    history: HpaHistory,
    *,
    spec: AutoscalerSpec,
    current_replicas: int,
    metric: MetricResult,
    metric_name: str,
    now: float,
) -> Reconciled:
    """One HPA sync for one metric: the replica part of ``reconcileAutoscaler`` with behaviors.

    Args:
        history: the HPA's recommendations and scale events so far.
        spec: min/max replicas and ``behavior`` (the HPA's own fields; the rest is not read).
        current_replicas: the target's ``scale.spec.replicas``.
        metric: the metric's proposal (:func:`resource_replicas`, :func:`plain_metric_replicas`, ...).
        metric_name: how upstream names it in reasons (``"cpu resource utilization (percentage of request)"``,
            ``"pods metric avg_time_queue_us"``, ``"external metric s0-prometheus"``); its kind picks the
            ``FailedGet{Resource,Pods,External}Metric`` reason when the metric fails.
        now: seconds.

    Returns:
        The decision. A target at 0 replicas is left alone (``ScalingDisabled``); one above max or below
        min is brought to the bound without stabilization; a metric that cannot be computed changes
        nothing (``ScalingActive`` False, ``FailedGetPodsMetric``/``FailedGetResourceMetric``); otherwise
        the proposal is stabilized and rate-limited, and a rescale is recorded as a scale event.
    """
    up, down = spec.behavior.scale_up, spec.behavior.scale_down
    if not history.recommendations:  # recordInitialRecommendation
        history = replace(history, recommendations=(TimestampedRecommendation(current_replicas, now),))
    able = Condition("AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale")
    conditions: dict[str, Condition] = {"AbleToScale": able}
    if current_replicas == 0 and spec.min_replicas != 0:
        conditions["ScalingActive"] = Condition(
            "ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero"
        )
        return Reconciled(0, False, "scaling is disabled since the replica count of the target is zero", _ordered(conditions), history)
    if current_replicas > spec.max_replicas:
        desired, reason = spec.max_replicas, "Current number of replicas above Spec.MaxReplicas"
    elif current_replicas < spec.min_replicas:
        desired, reason = spec.min_replicas, "Current number of replicas below Spec.MinReplicas"
    else:
        if metric.replicas is None:
            kind = "Resource" if "resource" in metric_name else "External" if metric_name.startswith("external") else "Pods"
            failed = f"FailedGet{kind}Metric"
            conditions["ScalingActive"] = Condition(
                "ScalingActive", "False", failed, f"the HPA was unable to compute the replica count: {metric.error}"
            )
            return Reconciled(
                current_replicas, False, f"failed to compute desired number of replicas: {metric.error}", _ordered(conditions), history
            )
        conditions["ScalingActive"] = Condition(
            "ScalingActive", "True", "ValidMetricFound", f"the HPA was able to successfully calculate a replica count from {metric_name}"
        )
        proposal = metric.replicas
        reason = f"{metric_name} above target" if proposal > current_replicas else "All metrics below target"
        stabilized, stab_reason, stab_message, recs = stabilize_recommendation(
            history.recommendations, current_replicas, proposal, up, down, now
        )
        history = replace(history, recommendations=recs)
        if stabilized != proposal:
            conditions["AbleToScale"] = Condition("AbleToScale", "True", stab_reason, stab_message)
        else:
            conditions["AbleToScale"] = Condition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
        desired, lim_reason, lim_message = convert_desired_replicas_with_behavior_rate(
            current_replicas,
            stabilized,
            spec.min_replicas,
            spec.max_replicas,
            history.scale_up_events,
            history.scale_down_events,
            up,
            down,
            now,
        )
        conditions["ScalingLimited"] = Condition("ScalingLimited", "False" if desired == stabilized else "True", lim_reason, lim_message)
    rescale = desired != current_replicas
    if rescale:
        if desired > current_replicas:
            history = replace(history, scale_up_events=store_scale_event(history.scale_up_events, up, desired - current_replicas, now))
        else:
            history = replace(
                history, scale_down_events=store_scale_event(history.scale_down_events, down, current_replicas - desired, now)
            )
    return Reconciled(desired, rescale, reason, _ordered(conditions), history)


def _ordered(conditions: Mapping[str, Condition]) -> tuple[Condition, ...]:
    return tuple(conditions[t] for t in ("AbleToScale", "ScalingActive", "ScalingLimited") if t in conditions)


# ---------------------------------------------------------------------------------------------------------------------
# The two HPA baselines, as Autoscalers


@dataclass
class _PodClock:
    """When each pod was first seen and first seen ready (for upstream's CPU initialization rules)."""

    first_seen: dict[str, float] = field(default_factory=dict)
    ready_since: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None

    def observe(self, signals: DeploymentSignals) -> None:
        if self.started_at is None:
            # pods that exist when the HPA starts are taken as long running (past every initialization period)
            self.started_at = signals.now
            for pod in signals.pods:
                self.first_seen[pod.pod] = -math.inf
                if pod.phase == "ready":
                    self.ready_since[pod.pod] = -math.inf
        for pod in signals.pods:
            self.first_seen.setdefault(pod.pod, signals.now)
            if pod.phase == "ready":
                self.ready_since.setdefault(pod.pod, signals.now)
            else:
                self.ready_since.pop(pod.pod, None)

    def hpa_pod(self, pod: PodSignals) -> HpaPod:
        start = self.first_seen.get(pod.pod)
        if pod.phase == "ready":
            return HpaPod(pod.pod, "Running", True, False, start, self.ready_since.get(pod.pod, start))
        if pod.phase == "starting":
            # a Triton pod loading its models: Running (its container started), not Ready yet
            return HpaPod(pod.pod, "Running", False, False, start, start)
        return HpaPod(pod.pod, "Running", False, True, start, start)


class _HpaAutoscaler:
    """Shared loop: sync every ``sync_period_seconds`` (the HPA's 15 s); between syncs repeat the last decision."""

    name = "hpa"
    metric_name = "metric"

    def __init__(self, spec: AutoscalerSpec, *, sync_period_seconds: float = SYNC_PERIOD_SECONDS, tolerance: float = TOLERANCE) -> None:
        self.spec = spec
        self.sync_period_seconds = sync_period_seconds
        self.tolerance = tolerance
        self.history = HpaHistory()
        self.pods = _PodClock()
        self._last_sync: float | None = None
        self._last: ScaleDecision | None = None

    def _metric(self, signals: DeploymentSignals) -> tuple[MetricResult, dict[str, float]]:
        raise NotImplementedError

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        """One call per sync period of the caller; the HPA itself reconciles every ``sync_period_seconds``."""
        self.pods.observe(signals)
        self._observe(signals)
        if self._last is not None and self._last_sync is not None and signals.now - self._last_sync < self.sync_period_seconds:
            return self._last
        self._last_sync = signals.now
        metric, numbers = self._metric(signals)
        result = reconcile(
            self.history,
            spec=self.spec,
            current_replicas=signals.current_replicas,
            metric=metric,
            metric_name=self.metric_name,
            now=signals.now,
        )
        self.history = result.history
        numbers = {**numbers, "current_replicas": float(signals.current_replicas), "desired_replicas": float(result.desired_replicas)}
        if metric.replicas is not None:
            numbers["proposed_replicas"] = float(metric.replicas)
        reason = f"New size: {result.desired_replicas}; reason: {result.reason}" if result.rescale else result.reason
        self._last = ScaleDecision(result.desired_replicas, reason, result.conditions, numbers, hold=metric.replicas is None)
        return self._last

    def _observe(self, signals: DeploymentSignals) -> None:
        """Hook for metric windows (called on every step)."""


class HpaCpu(_HpaAutoscaler):
    """The HPA on CPU utilization: ``metrics: [{type: Resource, resource: {name: cpu, target:
    {type: Utilization, averageUtilization: 80}}}]``, through :func:`resource_replicas` and
    :func:`reconcile` every 15 s.

    Pod mapping: a ``ready`` pod is Running and Ready (Ready since this autoscaler first saw it so;
    pods present at the first step count as long running), a ``starting`` pod is Running and not Ready
    (its CPU sample, when the signals carry one, makes it unready; without one it is missing),
    a ``terminating`` pod is being deleted (ignored). A pod's sample is
    :attr:`PodSignals.cpu_utilization` × a 1000 m request, taken at ``scraped_at`` over a 15 s window
    (metrics-server's default resolution).

    Args:
        spec: the TritonAutoscaler spec (min/max replicas and behavior are read).
        target_utilization: CPU used over CPU requested, 0..1 (0.8 = the usual 80%).
        sync_period_seconds: seconds between reconciles (15).
        tolerance: 0.1.
    """

    name = "hpa_cpu"
    metric_name = "cpu resource utilization (percentage of request)"
    #: metrics-server's ``--metric-resolution`` default, the window of each CPU sample.
    METRIC_WINDOW_SECONDS = 15.0

    def __init__(
        self,
        spec: AutoscalerSpec,
        target_utilization: float = 0.8,
        *,
        sync_period_seconds: float = SYNC_PERIOD_SECONDS,
        tolerance: float = TOLERANCE,
    ) -> None:
        if not 0 < target_utilization:
            raise ValueError(f"target_utilization must be > 0 (a fraction of the CPU request), got {target_utilization}")
        super().__init__(spec, sync_period_seconds=sync_period_seconds, tolerance=tolerance)
        self.target_percent = round(target_utilization * 100)

    def _metric(self, signals: DeploymentSignals) -> tuple[MetricResult, dict[str, float]]:
        pods = [self.pods.hpa_pod(p) for p in signals.pods]
        metrics = {
            p.pod: PodMetric(
                _ceil(p.cpu_utilization * 1000), p.scraped_at if p.scraped_at is not None else signals.now, self.METRIC_WINDOW_SECONDS
            )
            for p in signals.pods
            if p.cpu_utilization is not None and p.phase != "terminating"
        }
        result = resource_replicas(signals.current_replicas, self.target_percent, pods, metrics, now=signals.now, tolerance=self.tolerance)
        numbers = {"cpu_target_utilization_pct": float(self.target_percent)}
        if result.usage is not None:
            numbers["cpu_utilization_pct"] = float(result.usage)
        return result, numbers


def drop_samples_before(samples: dict[str, list[tuple[float, ...]]], cutoff: float) -> None:
    """Keep, in place, each series' samples taken after ``cutoff`` (seconds; a sample's first item is
    its time) and remove the series left empty: a series whose last sample is older than the range is
    gone from a range query (Prometheus' staleness), as for the HPA's and KEDA's windows here."""
    for name in list(samples):
        kept = [s for s in samples[name] if s[0] > cutoff]
        if kept:
            samples[name] = kept
        else:
            del samples[name]


def triton_queue_metric_us(queue_us_per_request: float, request_rate: float, *, models: int = 1, window_seconds: float = 30.0) -> float:
    """One pod's ``avg_time_queue_us`` as Triton's published prometheus-adapter rule computes it
    (``triton-inference-server/server`` ``deploy/k8s-onprem/values.yaml``)::

        avg(delta(nv_inference_queue_duration_us[30s]) / (1 + delta(nv_inference_request_success[30s]))) by (pod)

    The ``avg`` runs over the pod's per-model series, and each request waits in the queue of every
    model of the pipeline (an ensemble's steps), so with ``models`` series the rule reports the
    per-request queue time divided by ``models``; the ``1 +`` in the denominator lowers it further
    when few requests arrive in the window.

    Args:
        queue_us_per_request: queue time per request summed over the pod's models (µs;
            :attr:`PodSignals.queue_us_per_request`), spread evenly over the ``models`` series.
        request_rate: requests per second through the pod (each model sees every request).
        models: model series on the pod (``nv_inference_queue_duration_us`` has one per loaded model).
        window_seconds: the range of ``delta`` (30 s).

    Returns:
        The value in µs.
    """
    n = request_rate * window_seconds
    return (queue_us_per_request / models) * n / (1.0 + n)


class HpaQueueTime(_HpaAutoscaler):
    """The HPA on Triton's published queue-time rule: a Pods metric ``avg_time_queue_us`` from
    prometheus-adapter (:func:`triton_queue_metric_us`) with an AverageValue target, through
    :func:`plain_metric_replicas` and :func:`reconcile` every 15 s.

    The published chart (``deploy/k8s-onprem``) targets ``averageValue: 50`` (µs) and its older
    versions used ``autoscaling/v2beta2``, removed in Kubernetes 1.26. The rule averages over the
    per-model series of each pod, so it under-reports a request's queue time by about the number of
    models on the pod (``models_per_pod``); the HPA then scales later than the target suggests.

    The 30 s ``delta`` window is emulated: each pod's value is taken over the samples of the last
    ``window_seconds`` (request-weighted), so the metric lags a change by up to a window as Prometheus'
    does. A pod whose signals lack ``queue_us_per_request`` or ``request_rate`` has no series (missing).

    Args:
        spec: the TritonAutoscaler spec (min/max replicas and behavior are read).
        target_queue_ms: the AverageValue target, in milliseconds (the published 50 µs is 0.05).
        models_per_pod: model series per pod that the rule averages over (an ensemble of a
            preprocessor and a ranker has 3: the ensemble and its two steps).
        window_seconds: the rule's ``delta`` range (30).
        sync_period_seconds: seconds between reconciles (15).
        tolerance: 0.1.
    """

    name = "hpa_queue_time"
    metric_name = "pods metric avg_time_queue_us"

    def __init__(
        self,
        spec: AutoscalerSpec,
        target_queue_ms: float = 0.05,
        *,
        models_per_pod: int = 1,
        window_seconds: float = 30.0,
        sync_period_seconds: float = SYNC_PERIOD_SECONDS,
        tolerance: float = TOLERANCE,
    ) -> None:
        if not target_queue_ms > 0:
            raise ValueError(f"target_queue_ms must be > 0, got {target_queue_ms}")
        if models_per_pod < 1:
            raise ValueError(f"models_per_pod must be >= 1, got {models_per_pod}")
        super().__init__(spec, sync_period_seconds=sync_period_seconds, tolerance=tolerance)
        self.target_queue_us = target_queue_ms * 1000.0
        self.models_per_pod = models_per_pod
        self.window_seconds = window_seconds
        self._samples: dict[str, list[tuple[float, float, float]]] = {}

    def _observe(self, signals: DeploymentSignals) -> None:
        for pod in signals.pods:
            if pod.queue_us_per_request is None or pod.request_rate is None or pod.scraped_at is None:
                continue
            series = self._samples.setdefault(pod.pod, [])
            if not series or series[-1][0] != pod.scraped_at:
                series.append((pod.scraped_at, pod.queue_us_per_request, pod.request_rate))
        drop_samples_before(self._samples, signals.now - self.window_seconds)

    def _metric(self, signals: DeploymentSignals) -> tuple[MetricResult, dict[str, float]]:
        pods = [self.pods.hpa_pod(p) for p in signals.pods]
        metrics = {}
        for pod in signals.pods:
            series = self._samples.get(pod.pod)
            if not series or pod.phase == "terminating":
                continue
            rate = sum(s[2] for s in series) / len(series)
            weight = sum(s[2] for s in series)
            queue = sum(s[1] * s[2] for s in series) / weight if weight > 0 else 0.0
            value_us = triton_queue_metric_us(queue, rate, models=self.models_per_pod, window_seconds=self.window_seconds)
            metrics[pod.pod] = PodMetric(_ceil(value_us * 1000), series[-1][0], self.window_seconds)
        result = plain_metric_replicas(
            signals.current_replicas, _ceil(self.target_queue_us * 1000), pods, metrics, now=signals.now, tolerance=self.tolerance
        )
        numbers = {"avg_time_queue_us_target": self.target_queue_us}
        if result.usage is not None:
            numbers["avg_time_queue_us"] = result.usage / 1000.0
        return result, numbers

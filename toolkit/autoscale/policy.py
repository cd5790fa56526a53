"""Our scaling policy: size a Triton Deployment from capacity, as a pure function of (signals,
history, spec, now), and :class:`TritonrecAutoscaler`, the :class:`~toolkit.autoscale.signals.Autoscaler`
that carries its history (named ``tritonrec``).

The decision, in order (:func:`decide`):

1. **Inputs.** Only *ready* pods have load signals. A ready pod is *complete* when its last scrape
   succeeded, is fresh (at most :data:`STALE_AFTER_SYNC_PERIODS` sync periods old) and carries
   ``request_rate`` and ``pending_requests`` with no policy metric missing; otherwise it is failing
   (its endpoint did not answer), stale, or partial (a pod's first scrape has no rates yet), and the
   decision *holds*: it may scale up on what the complete pods show, never down, and a
   ``ScalingActive=False`` condition names each such pod and what it lacks. When every ready pod has
   failed ``spec.fallback.failedScrapes`` scrapes in a row the fallback count applies
   (``spec.fallback.replicas``, as a floor: it scales up to it, never down; unset: hold).
2. **Arrival rate** λ (requests/s): each complete pod's ``request_rate`` and ``rejected_rate`` (what
   its queue policy turned away arrived too: without it a queue timeout would hide the overload it
   sheds) plus the growth of its own pending requests since the last decision (negative while it drains a backlog), summed and scaled
   up to all ready pods (the router spreads load evenly), averaged over the short panic window
   (``spec.panicWindowSeconds``). While a pod is in its first scrape, load is moving to it from the
   others, whose numbers then under-read the arrivals: the last estimate holds (never less), and the
   decision adds no sample to the trend.
3. **Trend.** When every interval of the last :data:`TREND_WINDOW_SECONDS` rose (at least two), the
   smallest of those slopes is projected over the time a new pod takes to start (learned from the
   pods' own starts, :data:`DEFAULT_START_DELAY_SECONDS` until one is seen) plus one sync period, if
   that adds more than :data:`TREND_TOLERANCE` of λ. What a forecast asked for is not taken back before
   that horizon has passed, and while the arrivals rise nothing is scaled down.
   **Seasonal forecast** (``spec.forecast``, :mod:`toolkit.autoscale.forecast`): each decision's
   arrival rate is kept for ``historySeconds``; once that history repeats (its autocorrelation has a
   peak of at least ``minCorrelation`` at a period it holds twice), the forecast is at least the
   highest rate of the same window one period ago, so a recurring burst gets its pods a pod start
   before it arrives instead of after.
4. **Capacity** c (requests/s one replica serves within the SLO) starts from ``spec.capacity``
   (``perReplicaRps``, or the best throughput within the SLO of a ``tritonrec perf`` report,
   :func:`seed_capacity_from_perf_report`) and is learned from the ready pods' own counters. The
   counters give means: a pod whose mean queue + compute time per request is at most
   ``slo.p99LatencyMs / slo.p99ToMeanRatio`` (and queue:compute at most ``slo.queueComputeRatio``) is
   surely within the SLO, so c is at least its ``request_rate`` (c rises to it); a pod whose mean
   exceeds the SLO itself (a p99 is never below the mean) because requests queue (queue >= compute
   time), or that rejected requests (``rejected_rate`` > 0), is surely over it, so c is at most about
   its rate (c moves toward it by :data:`CAPACITY_LEARNING_RATE`, only when the pod was so at the
   previous decision too: one that became saturated within the interval served less than it can for
   part of it). The policy plans for ``spec.capacity.targetUtilization`` of c.
5. **Needed replicas** = (forecast λ + excess backlog / τ) / (c × targetUtilization), rounded up: the
   excess backlog is the pending requests beyond what Little's law puts in the queue at the latency
   budget (λ × budget), drained within τ = max(the SLO, one sync period, a pod's start: replicas
   asked for now serve no sooner). Pods that are starting or loading models are part of the
   Deployment's current replicas, so they count as capacity on the way: the need is compared with the
   whole count, not with the ready pods.
6. **Panic** (Knative's KPA, ``knative/serving`` ``pkg/autoscaler/scaling/autoscaler.go``): when the
   need reaches ``spec.panicThresholdPercent`` of the current replicas (200%), the policy panics: it
   scales straight to the need (no rate limit but ``maxReplicas``), and never scales down while in
   panic; panic ends :data:`PANIC_STABLE_WINDOW_SECONDS` (Knative's stable window, 60 s) after the last
   time the threshold was crossed.
7. **Otherwise** the HPA's behavior applies (:mod:`toolkit.autoscale.hpa`, the same functions as the HPA
   baseline): scale-up by the ``scaleUp`` policies; scale-down to the highest *steady* need (λ alone,
   no forecast, no backlog) of the ``scaleDown`` stabilization window (300 s by default), never below
   the current need, and rate-limited by its policies (bounded steps). When the history repeats, the
   highest need it expects within the next window replaces the window's memory where that is lower:
   the window keeps capacity for load that comes back, and the history says whether it does. When the
   arrivals of the whole window fell steadily (a least-squares line through them falls with R^2 >=
   :data:`DECLINE_MIN_R2`), the line's value now plus :data:`DECLINE_MARGIN_SD` standard deviations of
   the rates about it replaces the window's memory where that is lower: a window that only fell holds
   no burst to come back, and a diurnal evening is followed down instead of 300 s behind.
8. **No ready pod** (all starting, or none at all): the policy cannot see load; it keeps the current
   count, brings it to ``minReplicas``, and scales up to the last need it saw (within the scale-down
   window), so a Deployment whose pods all restarted, or one at zero, is sized again.

``spec.shadow`` only marks the decision (its reason starts with ``shadow:``; the controller acts on it).
Conditions use the HPA's types and, where they apply, its reasons (``ScaleDownStabilized``,
``ScaleUpLimit``, ``TooManyReplicas``, ``TooFewReplicas``, ``DesiredWithinRange``...).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolkit.autoscale.forecast import fit_seasonal
from toolkit.autoscale.hpa import (
    ScaleEvent,
    TimestampedRecommendation,
    convert_desired_replicas_with_behavior_rate,
    stabilize_recommendation,
    store_scale_event,
)
from toolkit.autoscale.signals import Condition, DeploymentSignals, PodSignals, ScaleDecision
from toolkit.autoscale.spec import AutoscalerSpec
from toolkit.errors import PerfError

__all__ = [
    "STALE_AFTER_SYNC_PERIODS",
    "PANIC_STABLE_WINDOW_SECONDS",
    "CAPACITY_LEARNING_RATE",
    "TREND_WINDOW_SECONDS",
    "TREND_TOLERANCE",
    "DEFAULT_START_DELAY_SECONDS",
    "DECLINE_MIN_R2",
    "DECLINE_MARGIN_SD",
    "DECLINE_MIN_SAMPLES",
    "History",
    "PodView",
    "decide",
    "initial_history",
    "seed_capacity_from_perf_report",
    "TritonrecAutoscaler",
]

#: A ready pod whose last successful scrape is older than this many sync periods is stale.
STALE_AFTER_SYNC_PERIODS = 3.0
#: How long panic lasts after the need last crossed the panic threshold (Knative's default stable
#: window, ``pkg/autoscaler/config/config.go`` ``stable-window: 60s``).
PANIC_STABLE_WINDOW_SECONDS = 60.0
#: Weight of a new over-the-SLO observation when the capacity estimate moves down toward it
#: (an exponential moving average: a few observations move it most of the way; one outlier does not).
CAPACITY_LEARNING_RATE = 0.3
#: Seconds of arrival samples the trend is read from (inclusive: 4 samples, 3 intervals, at a 5 s sync
#: period): long enough that noise seldom rises in every interval (on the Azure LLM 2023 trace 10 s
#: forecast 74 scale-ups and -downs an hour against 25 at 15 s), short enough to stop soon after a rise.
TREND_WINDOW_SECONDS = 15.0
#: The trend counts only when it would add more than this share of the arrival rate within a pod's
#: start: below that it is noise, and following it would scale up on every upward wiggle.
TREND_TOLERANCE = 0.3
#: A scale-down may follow a *steady decline* instead of holding the window's highest need: when a
#: least-squares line through the arrival rates of the whole scale-down window falls and explains at
#: least this share of their variance (R^2). Measured with perf/results/autoscale_headroom.py's traces:
#: the smooth falls of the generated diurnal and spike traces qualify; no window of the Azure LLM 2023
#: and Azure Functions 2019 traces, whose rates step up and down, does.
DECLINE_MIN_R2 = 0.9
#: What a steady decline keeps above the line's value now, in standard deviations of the rates about
#: the line (about the 97.7th percentile of normal residuals).
DECLINE_MARGIN_SD = 2.0
#: Fewest arrival samples, spanning at least 90% of the scale-down window, that a decline is read from.
DECLINE_MIN_SAMPLES = 10
#: A pod's start (scheduling, image, server start, model load) until one has been seen: then the
#: learned value (an average of the starts seen) replaces it.
DEFAULT_START_DELAY_SECONDS = 30.0


@dataclass(frozen=True)
class History:
    """What :func:`decide` remembers between decisions (immutable; :func:`decide` returns the next one).

    Attributes:
        capacity_rps: requests/s one replica serves within the SLO, or None (not known yet).
        capacity_source: where the estimate comes from (``"spec.capacity.perReplicaRps"``, a perf
            report path, ``"learned"``), for the status.
        arrivals: ``(time, arrival rate)`` samples of the last panic window or trend window.
        last_pending: ``(time, ((pod, pending requests), ...))`` of the previous decision, for the backlog's growth.
        recommendations: past needs, for the scale-down stabilization window (as the HPA keeps them).
        scale_up_events, scale_down_events: past rescales, for the rate limits.
        panic_since: when the current panic began (None: not panicking).
        last_over_threshold: the last time the need crossed the panic threshold.
        max_panic_replicas: the highest count asked for during the current panic.
        last_need: ``(time, replicas)`` the last time the need could be computed (for decisions with
            no ready pod).
        last_scale_time: when the count last changed.
        starting_since: ``(pod, first seen starting)`` of the pods starting now.
        start_delay_s: the pods' start (first seen starting to ready) as seen so far, averaged, or None.
        trend_rps_per_s: the arrival rate's rise per second at the last decision (0 when not rising).
        forecasts: ``(time, replicas)`` asked for a forecast rise, kept for the rise's horizon (a pod's
            start plus a sync period): what a forecast asked for is not taken back before it could serve.
        saturated_pods: the pods surely over the SLO because requests queued at the last decision (only
            a pod saturated at two decisions in a row teaches a lower capacity).
        rate_samples: ``(time, arrival rate)`` of every decision within ``spec.forecast.historySeconds``
            (for the seasonal forecast) or the scale-down window, whichever is longer (for a steady decline).
    """

    capacity_rps: float | None = None
    capacity_source: str = ""
    arrivals: tuple[tuple[float, float], ...] = ()
    last_pending: tuple[float, tuple[tuple[str, float], ...]] | None = None
    recommendations: tuple[TimestampedRecommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()
    panic_since: float | None = None
    last_over_threshold: float | None = None
    max_panic_replicas: int = 0
    last_need: tuple[float, int] | None = None
    last_scale_time: float | None = None
    starting_since: tuple[tuple[str, float], ...] = ()
    start_delay_s: float | None = None
    trend_rps_per_s: float = 0.0
    forecasts: tuple[tuple[float, int], ...] = ()
    saturated_pods: tuple[str, ...] = ()
    rate_samples: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class PodView:
    """One ready pod as the policy judges it.

    Attributes:
        pod: its name.
        problem: why its signals cannot be used (``"metrics endpoint failed 2 scrapes"``, ``"lacks
            nv_inference_queue_duration_us"``, ``"last scraped 21 s ago"``), or None when complete.
        kind: the condition reason for the problem: ``FailedScrape``, ``MetricsStale`` or ``MetricsMissing``.
        warming: scraped now but without rates yet (a pod's first scrape): its load is unknown for one period.
        latency_ms: mean queue + compute time per request (ms), or None when no request completed.
        queue_ms, compute_ms: its two parts per request (ms), or None.
        within_slo: surely within the SLO: its mean latency is at most ``p99LatencyMs / p99ToMeanRatio``
            (and its queue:compute ratio at most ``queueComputeRatio``); None: cannot tell.
        over_slo: surely over it: its mean latency exceeds ``p99LatencyMs`` itself (a p99 is never below
            the mean), or its queue:compute ratio exceeds ``queueComputeRatio``, or requests wait and
            none completed.
        queueing: its queue time per request is at least its compute time (the load, not the model,
            makes it slow).
    """

    pod: str
    problem: str | None
    kind: str = ""
    warming: bool = False
    latency_ms: float | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    within_slo: bool | None = None
    over_slo: bool = False
    queueing: bool = False

    @property
    def saturated(self) -> bool:
        """Surely over the SLO because requests queue (or are rejected): what teaches a lower capacity."""
        return self.over_slo and self.queueing


def _latency_budget_ms(spec: AutoscalerSpec) -> float | None:
    if spec.slo.p99_latency_ms is None:
        return None
    return spec.slo.p99_latency_ms / spec.slo.p99_to_mean_ratio


def _view(pod: PodSignals, spec: AutoscalerSpec, now: float) -> PodView:
    if pod.failed_scrapes > 0:
        return PodView(
            pod.pod, f"metrics endpoint failed {pod.failed_scrapes} scrape{'s' if pod.failed_scrapes > 1 else ''}", "FailedScrape"
        )
    if pod.scraped_at is None:
        return PodView(pod.pod, "never scraped", "MetricsStale")
    age = now - pod.scraped_at
    if age > STALE_AFTER_SYNC_PERIODS * spec.sync_period_seconds:
        return PodView(pod.pod, f"last scraped {age:.0f} s ago (stale)", "MetricsStale")
    if pod.missing:
        return PodView(pod.pod, "lacks " + ", ".join(pod.missing), "MetricsMissing")
    lacking = [name for name, value in (("request_rate", pod.request_rate), ("pending_requests", pod.pending_requests)) if value is None]
    if lacking:
        return PodView(
            pod.pod, "has no " + " or ".join(lacking) + " yet (first scrape, or a counter without a previous value)", "MetricsMissing", True
        )
    queue_ms = None if pod.queue_us_per_request is None else pod.queue_us_per_request / 1000.0
    compute_ms = None
    if pod.compute_us_per_inference is not None:
        per_request = 1.0
        if pod.inference_rate is not None and pod.request_rate:
            per_request = pod.inference_rate / pod.request_rate
        compute_ms = pod.compute_us_per_inference * per_request / 1000.0
    latency_ms = None if queue_ms is None else queue_ms + (compute_ms or 0.0)
    budget = _latency_budget_ms(spec)
    slo = spec.slo.p99_latency_ms
    ratio = spec.slo.queue_compute_ratio
    within: bool | None = None
    over = False
    if latency_ms is not None:
        ratio_ok = ratio is None or compute_ms is None or queue_ms <= ratio * compute_ms
        within = (budget is None or latency_ms <= budget) and ratio_ok
        over = (slo is not None and latency_ms > slo) or not ratio_ok
    elif (pod.pending_requests or 0) > 0 and not pod.request_rate:
        over = True  # requests waiting and none completed in the interval: saturated
    queueing = queue_ms is not None and queue_ms > 0 and queue_ms >= (compute_ms or 0.0)
    if latency_ms is None and over:
        queueing = True
    if pod.rejected_rate:
        # its queue timeout turned requests away: it is saturated, whatever the served requests' mean
        # says (with a queue timeout near the SLO that mean stays low)
        within, over, queueing = False, True, True
    return PodView(pod.pod, None, "", False, latency_ms, queue_ms, compute_ms, within, over, queueing)


def _saturated(pods: Sequence[tuple[PodSignals, PodView]]) -> tuple[str, ...]:
    """The pods surely over the SLO because requests queue (or are rejected) at this decision."""
    return tuple(sorted(p.pod for p, v in pods if v.saturated))


def _learn_capacity(
    capacity: float | None, pods: Sequence[tuple[PodSignals, PodView]], saturated_before: Sequence[str]
) -> tuple[float | None, bool]:
    """The capacity estimate after this decision's observations, and whether they changed it.

    The estimate moves down only on pods that were saturated at the previous decision too: a pod that
    became saturated within the interval served less than its throughput for part of it, and its mean
    rate would teach too low a capacity (on_off's rises taught 4,600 req/s for a 5,500 req/s replica)."""
    lower_bounds = [p.request_rate for p, v in pods if v.within_slo and p.request_rate]
    before = set(saturated_before)
    saturated = [p.request_rate for p, v in pods if v.saturated and p.request_rate and p.pod in before]
    new = capacity
    if lower_bounds:
        new = max(new or 0.0, max(lower_bounds))
    if saturated:
        rate = sum(saturated) / len(saturated)  # one observation per decision, however many pods made it
        if new is None:
            new = rate
        elif rate < new:
            new = new + CAPACITY_LEARNING_RATE * (rate - new)
    return new, new != capacity


def _slope(samples: Sequence[tuple[float, float]]) -> float:
    """A conservative trend of ``(t, y)`` samples in y per second: the smallest slope between consecutive
    samples when every one rises, else 0 (a step followed by a level, or noise, is no trend); 0 with
    fewer than 3 samples (one rising interval may be a step)."""
    if len(samples) < 3:
        return 0.0
    slopes = [(y1 - y0) / (t1 - t0) for (t0, y0), (t1, y1) in zip(samples, samples[1:], strict=False) if t1 > t0]
    return min(slopes) if slopes and all(k > 0 for k in slopes) else 0.0


def _steady_decline(samples: Sequence[tuple[float, float]], now: float, window_s: float) -> float | None:
    """The arrival rate a steady decline leaves now, or None when the rates of the window are no steady decline.

    ``samples``: ``(time s, arrival rate req/s)``. Those within ``window_s`` of ``now`` (at least
    :data:`DECLINE_MIN_SAMPLES`, spanning at least 90% of the window) are fitted with an ordinary
    least-squares line (``statistics.linear_regression``); when its slope is negative and its R^2
    (``statistics.correlation`` squared) at least :data:`DECLINE_MIN_R2`, the result is the line at
    ``now`` plus :data:`DECLINE_MARGIN_SD` standard deviations of the residuals (n - 2 degrees of freedom).
    """
    kept = [(t, y) for t, y in samples if now - t <= window_s + 1e-9]
    if len(kept) < DECLINE_MIN_SAMPLES or kept[-1][0] - kept[0][0] < 0.9 * window_s:
        return None
    ts, ys = [t for t, _ in kept], [y for _, y in kept]
    if len(set(ys)) < 2:
        return None  # constant rates: no decline (and no correlation to compute)
    slope, intercept = statistics.linear_regression(ts, ys)
    if slope >= 0 or statistics.correlation(ts, ys) ** 2 < DECLINE_MIN_R2:
        return None
    residual_sd = math.sqrt(sum((y - (intercept + slope * t)) ** 2 for t, y in kept) / (len(kept) - 2))
    return intercept + slope * now + DECLINE_MARGIN_SD * residual_sd


def _learn_start_delay(history: History, signals: DeploymentSignals, now: float) -> History:
    """Track when each starting pod was first seen; a pod seen ready after that adds its start to the average."""
    since = dict(history.starting_since)
    delay = history.start_delay_s
    for pod in signals.pods:
        if pod.phase == "starting":
            since.setdefault(pod.pod, now)
        elif pod.phase == "ready" and pod.pod in since:
            observed = now - since.pop(pod.pod)
            delay = observed if delay is None else delay + 0.5 * (observed - delay)
    starting = {p.pod for p in signals.pods if p.phase == "starting"}
    kept = tuple(sorted((name, t) for name, t in since.items() if name in starting))
    return replace(history, starting_since=kept, start_delay_s=delay)


def initial_history(spec: AutoscalerSpec, *, capacity_rps: float | None = None, capacity_source: str = "") -> History:
    """The history of a new autoscaler: the capacity seed from ``capacity_rps`` (e.g. from
    :func:`seed_capacity_from_perf_report`) or ``spec.capacity.perReplicaRps``."""
    if capacity_rps is None and spec.capacity.per_replica_rps is not None:
        capacity_rps, capacity_source = spec.capacity.per_replica_rps, "spec.capacity.perReplicaRps"
    return History(capacity_rps=capacity_rps, capacity_source=capacity_source)


def _clamp(value: int, spec: AutoscalerSpec) -> tuple[int, str, str]:
    if value > spec.max_replicas:
        return spec.max_replicas, "TooManyReplicas", "the desired replica count is more than the maximum replica count"
    if value < spec.min_replicas:
        return spec.min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    return value, "DesiredWithinRange", "the desired count is within the acceptable range"


def _record_scale(history: History, spec: AutoscalerSpec, current: int, desired: int, now: float) -> History:
    if desired > current:
        events = store_scale_event(history.scale_up_events, spec.behavior.scale_up, desired - current, now)
        return replace(history, scale_up_events=events, last_scale_time=now)
    if desired < current:
        events = store_scale_event(history.scale_down_events, spec.behavior.scale_down, current - desired, now)
        return replace(history, scale_down_events=events, last_scale_time=now)
    return history


def _finish(
    history: History,
    spec: AutoscalerSpec,
    signals: DeploymentSignals,
    desired: int,
    reason: str,
    conditions: tuple[Condition, ...],
    numbers: dict[str, float],
    hold: bool,
    now: float,
) -> tuple[ScaleDecision, History]:
    current = signals.current_replicas
    history = _record_scale(history, spec, current, desired, now)
    numbers = {**numbers, "current_replicas": float(current), "desired_replicas": float(desired), "shadow": float(spec.shadow)}
    if history.capacity_rps is not None:
        numbers["capacity_rps_per_replica"] = history.capacity_rps
    if spec.shadow:
        reason = f"shadow: would set {desired} replicas: {reason}"
    return ScaleDecision(desired, reason, conditions, numbers, hold), history


def decide(signals: DeploymentSignals, history: History, spec: AutoscalerSpec, now: float) -> tuple[ScaleDecision, History]:
    """One decision of our policy (see the module docstring for the rules and their sources).

    Args:
        signals: every pod of the target Deployment and its ``spec.replicas`` (:attr:`DeploymentSignals.current_replicas`).
        history: what earlier decisions left (:func:`initial_history` for the first one).
        spec: the TritonAutoscaler spec.
        now: the decision time (seconds, the caller's clock; normally ``signals.now``).

    Returns:
        ``(decision, next history)``. ``decision.desired_replicas`` is within min/max and the
        behavior's limits (panic: within max only); ``decision.hold`` is True when incomplete inputs
        kept the count from going down; ``decision.signals`` holds ``arrival_rate_rps``,
        ``forecast_rate_rps``, ``served_rate_rps``, ``capacity_rps_per_replica``, ``needed_replicas``
        (before rounding), ``steady_replicas``, ``pending_requests``, ``excess_backlog``, ``ready_pods``,
        ``starting_pods``, ``start_delay_s``, ``panic`` (1/0), ``shadow`` (1/0), ``current_replicas``,
        ``desired_replicas`` and ``mean_latency_ms`` of the ready pods, and while the history repeats
        ``seasonal_period_s``, ``seasonal_correlation``, ``seasonal_rate_rps`` (the highest rate expected
        within a pod's start) and ``seasonal_window_replicas`` (the highest need expected within the
        scale-down window) (those that apply).
    """
    current = signals.current_replicas
    ready = signals.ready_pods
    starting = signals.starting_pods
    history = _learn_start_delay(history, signals, now)
    numbers: dict[str, float] = {"ready_pods": float(len(ready)), "starting_pods": float(len(starting))}
    able_ok = Condition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")

    # --- 8. no ready pod: no load to see ----------------------------------------------------------------------
    if not ready:
        window = spec.behavior.scale_down.stabilization_window_seconds or 0
        last = history.last_need[1] if history.last_need is not None and now - history.last_need[0] <= window else 0
        target, lim_reason, lim_message = _clamp(max(current, last, spec.min_replicas), spec)
        active = Condition(
            "ScalingActive",
            "False",
            "NoReadyPods",
            f"no ready pod to read load from ({len(starting)} starting): holding at {target}"
            + (f", the last need seen ({last})" if last > current else ""),
        )
        limited = Condition("ScalingLimited", "True" if lim_reason != "DesiredWithinRange" else "False", lim_reason, lim_message)
        reason = f"no ready pod ({len(starting)} starting of {current}): {'scaling to' if target != current else 'holding at'} {target}"
        return _finish(history, spec, signals, target, reason, (able_ok, active, limited), numbers, target <= current, now)

    # --- 1. which ready pods can be read ----------------------------------------------------------------------
    views = [(pod, _view(pod, spec, now)) for pod in ready]
    complete = [(p, v) for p, v in views if v.problem is None]
    problems = [(p, v) for p, v in views if v.problem is not None]
    problem_text = "; ".join(f"pod {p.pod} {v.problem}" for p, v in problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    if problems:
        reasons = {v.kind for _, v in problems}
        problem_reason = reasons.pop() if len(reasons) == 1 else "MetricsIncomplete"
    else:
        problem_reason = ""

    if not complete:
        failing_long = all(p.failed_scrapes >= spec.fallback.failed_scrapes for p, _ in problems)
        if failing_long and spec.fallback.replicas is not None:
            # at least the fallback count: missing metrics never scale down, even through the fallback
            target = max(spec.fallback.replicas, current)
            active = Condition(
                "ScalingActive",
                "False",
                "FallbackReplicas",
                f"every ready pod failed {spec.fallback.failed_scrapes}+ scrapes ({problem_text}): "
                f"spec.fallback.replicas = {spec.fallback.replicas}, holding at least {current}",
            )
            limited = Condition("ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the acceptable range")
            reason = f"no metrics from any ready pod: fallback to {target} replicas"
            return _finish(history, spec, signals, target, reason, (able_ok, active, limited), numbers, target == current, now)
        target, lim_reason, lim_message = _clamp(max(current, spec.min_replicas), spec)
        active = Condition("ScalingActive", "False", problem_reason, f"holding at {target}: {problem_text}")
        limited = Condition("ScalingLimited", "True" if lim_reason != "DesiredWithinRange" else "False", lim_reason, lim_message)
        return _finish(
            history, spec, signals, target, f"holding at {target}: {problem_text}", (able_ok, active, limited), numbers, True, now
        )

    # --- 4. capacity ------------------------------------------------------------------------------------------
    capacity, learned = _learn_capacity(history.capacity_rps, complete, history.saturated_pods)
    history = replace(history, saturated_pods=_saturated(complete))
    if learned:
        history = replace(history, capacity_rps=capacity, capacity_source="learned")

    # --- 2, 3. arrival rate, and its trend -----------------------------------------------------------------------
    # each complete pod's arrivals = what it served + the growth of its own backlog since the last
    # decision (negative while it drains one), scaled up to every ready pod (the router spreads load
    # evenly); the backlog itself is each ready pod's own fresh gauge (a new pod's is not its elders')
    limit = STALE_AFTER_SYNC_PERIODS * spec.sync_period_seconds
    gauges = {
        p.pod: p.pending_requests
        for p in ready
        if p.pending_requests is not None
        and p.failed_scrapes == 0
        and p.scraped_at is not None
        and now - p.scraped_at <= limit
        and "nv_inference_pending_request_count" not in p.missing
    }
    pending = sum(gauges.values())
    before: dict[str, float] = {}
    elapsed = 0.0
    if history.last_pending is not None and now > history.last_pending[0]:
        before, elapsed = dict(history.last_pending[1]), now - history.last_pending[0]
    served = sum(p.request_rate or 0.0 for p, _ in complete) * len(ready) / len(complete)
    own = 0.0
    for p, _ in complete:
        own += (p.request_rate or 0.0) + (p.rejected_rate or 0.0)  # rejected requests arrived too
        if p.pod in before and p.pod in gauges:
            own += (gauges[p.pod] - before[p.pod]) / elapsed
    arrival_now = max(0.0, own) * len(ready) / len(complete)
    warming = any(v.warming for _, v in problems)
    short = max(spec.panic_window_seconds, spec.sync_period_seconds)
    memory = max(short, TREND_WINDOW_SECONDS)
    kept = tuple(a for a in history.arrivals if now - a[0] <= memory + 1e-9)
    if warming and history.arrivals:
        # pods that just became ready take load from the others before their own rates are known, so the
        # others' numbers under-read the arrivals: the last estimate holds (never less), and this decision
        # adds no sample, so the trend is neither broken nor fed. Carrying the estimate on along the trend
        # instead fed back on itself: each scale-up brings warming pods, whose decision extrapolated
        # further, asking for more pods (on_off, 10 s pod start: 23 replicas for 12 needed, 118% of
        # static peak's replica-seconds)
        arrival_now = max(arrival_now, history.arrivals[-1][1])
        arrivals = kept
    else:
        arrivals = kept + ((now, arrival_now),)
    recent = [a for t, a in arrivals if now - t < short and t < now] + [arrival_now]
    arrival = sum(recent) / len(recent)
    start_delay = history.start_delay_s if history.start_delay_s is not None else DEFAULT_START_DELAY_SECONDS
    lead = start_delay + spec.sync_period_seconds  # pods asked now serve from then until the next ones do
    trend_samples = [a for a in arrivals if now - a[0] <= TREND_WINDOW_SECONDS + 1e-9]
    trend = history.trend_rps_per_s if warming else max(0.0, _slope(trend_samples))
    rise = trend * lead
    forecast = max(arrival, arrival_now + rise) if rise > TREND_TOLERANCE * arrival else arrival
    window = spec.behavior.scale_down.stabilization_window_seconds or 0
    keep_s = max(spec.forecast.history_seconds if spec.forecast.seasonal else 0.0, float(window))
    samples = tuple(s for s in history.rate_samples if now - s[0] <= keep_s) + ((now, arrival_now),)
    seasonal = None
    if spec.forecast.seasonal:
        fc = spec.forecast
        seasonal = fit_seasonal(samples, now, bin_s=fc.bin_seconds, min_period_s=fc.min_period_seconds, min_correlation=fc.min_correlation)
        if seasonal is not None:
            seasonal_rate = seasonal.peak_within(lead)
            numbers.update(seasonal_period_s=seasonal.period_s, seasonal_correlation=seasonal.correlation, seasonal_rate_rps=seasonal_rate)
            forecast = max(forecast, seasonal_rate)
    history = replace(
        history, arrivals=arrivals, trend_rps_per_s=trend, last_pending=(now, tuple(sorted(gauges.items()))), rate_samples=samples
    )
    latencies = [v.latency_ms for _, v in complete if v.latency_ms is not None]
    numbers.update(arrival_rate_rps=arrival, forecast_rate_rps=forecast, served_rate_rps=served, pending_requests=pending)
    numbers["start_delay_s"] = start_delay
    if latencies:
        numbers["mean_latency_ms"] = sum(latencies) / len(latencies)

    if capacity is None or capacity <= 0:
        target, lim_reason, lim_message = _clamp(current, spec)
        active = Condition(
            "ScalingActive",
            "False",
            "NoCapacityEstimate",
            "no per-replica capacity yet: set spec.capacity.perReplicaRps or spec.capacity.fromPerfReport, "
            "or wait until a pod runs over the SLO",
        )
        limited = Condition("ScalingLimited", "True" if lim_reason != "DesiredWithinRange" else "False", lim_reason, lim_message)
        return _finish(
            history, spec, signals, target, f"no capacity estimate yet: holding at {target}", (able_ok, active, limited), numbers, True, now
        )

    # --- 5. needed replicas -----------------------------------------------------------------------------------
    plan = capacity * spec.capacity.target_utilization
    budget_ms = _latency_budget_ms(spec)
    budget_s = (budget_ms / 1000.0) if budget_ms is not None else 0.0
    excess = max(0.0, pending - arrival * budget_s)
    drain_s = max(spec.slo_seconds or 0.0, spec.sync_period_seconds, start_delay)
    needed_raw = (forecast + excess / drain_s) / plan
    needed = max(1, math.ceil(needed_raw - 1e-9))
    # what the scale-down window remembers: the arrivals, not their forecast rise (a rise that stops
    # would hold its overshoot for the whole window) nor the backlog, which drains; while the arrivals
    # rise, nothing is taken back
    steady = max(1, math.ceil(arrival / plan - 1e-9))
    numbers.update(needed_replicas=needed_raw, steady_replicas=float(steady), excess_backlog=excess)
    forecasts = tuple(f for f in history.forecasts if now - f[0] < lead)
    if forecast > arrival:
        forecasts += ((now, needed),)
    history = replace(history, forecasts=forecasts)
    history = replace(history, last_need=(now, needed))

    # --- 6. panic ---------------------------------------------------------------------------------------------
    over_threshold = needed / max(1, current) >= spec.panic_threshold_percent / 100.0
    panic_since, last_over, max_panic = history.panic_since, history.last_over_threshold, history.max_panic_replicas
    if over_threshold:
        panic_since = panic_since if panic_since is not None else now
        last_over = now
    elif panic_since is not None and last_over is not None and now - last_over > PANIC_STABLE_WINDOW_SECONDS:
        panic_since, max_panic = None, 0
    history = replace(history, panic_since=panic_since, last_over_threshold=last_over, max_panic_replicas=max_panic)
    numbers["panic"] = 1.0 if panic_since is not None else 0.0
    why = f"arrival {arrival:.1f} req/s"
    if seasonal is not None and forecast == numbers["seasonal_rate_rps"] and forecast > arrival:
        why += (
            f" (the history repeats every {seasonal.period_s:g} s, autocorrelation {seasonal.correlation:.2f}: "
            f"{forecast:.1f} within the {lead:g} s a new pod takes)"
        )
    elif forecast > arrival:
        why += f" (rising to {forecast:.1f} within the {lead:g} s a new pod takes)"
    why += f" over {plan:.1f} req/s per replica ({spec.capacity.target_utilization:g} of {capacity:.1f} at the SLO)"
    if excess > 0:
        why += f" plus {excess:.0f} backlogged requests to drain in {drain_s:g} s"
    why += f": {needed} replicas"

    # the steady need is recorded either way, so that the scale-down window remembers bursts (but not the
    # backlog they left, which drains); the first decision also records the current count (the HPA's
    # recordInitialRecommendation), so that a new autoscaler does not scale down within its first window
    up, down = spec.behavior.scale_up, spec.behavior.scale_down
    recs_before = history.recommendations or (TimestampedRecommendation(current, now),)
    stabilized, stab_reason, stab_message, recs = stabilize_recommendation(recs_before, current, steady, up, down, now)
    history = replace(history, recommendations=recs)
    if needed > current:
        # up: the lowest recommendation of the scale-up window, as the HPA (no window by default)
        up_window = up.stabilization_window_seconds or 0
        lowest = min((r.recommendation for r in recs_before if up_window > 0 and r.timestamp > now - up_window), default=needed)
        stabilized = max(current, min(needed, lowest))
        stab_reason, stab_message = (
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )
        stable_match = stabilized == needed
    else:
        # down: the highest steady need of the scale-down window, but never below what the backlog needs now
        stable_match = stabilized == steady
        declining = _steady_decline(samples, now, window) if window > 0 else None
        if declining is not None:
            # the window keeps the highest need of its arrivals so that noise does not flap; arrivals that
            # fell steadily over all of it are no noise, and their line says what is left of them
            expected = max(steady, math.ceil(declining / plan - 1e-9))
            numbers.update(declining_rate_rps=declining, declining_window_replicas=float(expected))
            if expected < stabilized:
                stabilized, stable_match = expected, True
                why += f"; the arrivals fell steadily over the {window:g} s window, to {declining:.1f} req/s: {expected} kept"
        if seasonal is not None and window > 0:
            # the window keeps capacity for load that comes back within it; a history that repeats says
            # whether it does: then the highest need it expects over the next window is enough
            expected = max(1, math.ceil(seasonal.peak_within(window) / plan - 1e-9))
            numbers["seasonal_window_replicas"] = float(expected)
            if expected < stabilized:
                stabilized, stable_match = expected, True
                why += f"; the history repeats every {seasonal.period_s:g} s and expects at most {expected} within the {window:g} s window"
        stabilized = max(stabilized, needed, max((n for _, n in forecasts), default=0))

    if current < spec.min_replicas or current > spec.max_replicas:
        # as the HPA does before it reads metrics: above max -> max; below min -> min, or the need if higher
        target, lim_reason, lim_message = _clamp(needed if current < spec.min_replicas else spec.max_replicas + 1, spec)
        able = able_ok
        side = "below Spec.MinReplicas" if current < spec.min_replicas else "above Spec.MaxReplicas"
        reason = f"Current number of replicas {side}; {why}"
    elif panic_since is not None:
        target = max(needed, max_panic, current)
        target, lim_reason, lim_message = _clamp(target, spec)
        history = replace(history, max_panic_replicas=max(max_panic, target))
        able = Condition("AbleToScale", "True", "Panic", f"in panic since {panic_since:g} s: scaling up at once, never down")
        reason = f"panic ({needed} needed >= {spec.panic_threshold_percent:g}% of {current}): {why}"
    else:
        able = able_ok if stable_match else Condition("AbleToScale", "True", stab_reason, stab_message)
        target, lim_reason, lim_message = convert_desired_replicas_with_behavior_rate(
            current, stabilized, spec.min_replicas, spec.max_replicas, history.scale_up_events, history.scale_down_events, up, down, now
        )
        reason = why

    if trend > 0 and target < current:
        target = current
        reason += "; not scaling down while the arrivals rise"
    hold = False
    if problems and target < current:
        target, hold = current, True
    elif problems and target == current:
        hold = True
    if problems:
        active = Condition(
            "ScalingActive", "False", problem_reason, f"not scaling down on partial metrics ({problem_text}); up only, from the other pods"
        )
        reason += f"; holding down-scaling: {problem_text}"
    else:
        active = Condition(
            "ScalingActive", "True", "ValidMetricFound", f"the policy computed the need from {len(complete)} ready pods' metrics"
        )
    limited_status = "False" if lim_reason == "DesiredWithinRange" else "True"
    limited = Condition("ScalingLimited", limited_status, lim_reason, lim_message)
    return _finish(history, spec, signals, target, reason, (able, active, limited), numbers, hold, now)


# ---------------------------------------------------------------------------------------------------------------------
# The capacity seed from a perf report


def seed_capacity_from_perf_report(
    path: str | Path,
    slo_ms: float | None,
    *,
    queue_compute_ratio: float | None = None,
    model: str | None = None,
    protocol: str | None = None,
    batch_size: int | None = None,
) -> float:
    """Requests per second one replica serves within the SLO, from a ``tritonrec perf`` report JSON
    (:func:`toolkit.perf.report.write_perf_report`: ``{"optimized": model, "sweeps": [{"model",
    "protocol", "batch_size", "points": [{"throughput_infer_per_s", "p99_latency_ms", "batch_size",
    "server_queue_ms", "server_compute_*_ms", ...}]}]}``).

    The report's p99 is perf_analyzer's, end to end at the client: at least the server's queue +
    compute time the SLO is about, so the seed errs low. Requests/s is inferences/s over the
    client batch size.

    Args:
        path: the report.
        slo_ms: the p99 budget in ms (``slo.p99LatencyMs``), or None to judge by the ratio only.
        queue_compute_ratio: also require server queue time <= this × server compute time (``slo.queueComputeRatio``).
        model: the sweeps' model to use (default: the report's ``optimized`` model, else every model).
        protocol: ``"grpc"`` or ``"http"`` (default: every protocol).
        batch_size: client batch size (default: 1 when the report has batch-1 sweeps, else every size).

    Returns:
        The highest requests/s among the matching load levels within the SLO.

    Raises:
        PerfError: the file is missing or not such a report, or no matching load level meets the SLO
            (the message names the file, the model and the best p99 it measured).
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text())
        sweeps = report["sweeps"]
    except FileNotFoundError as exc:
        raise PerfError(
            f"perf report {path} does not exist", hint="run `tritonrec perf` first, or set spec.capacity.perReplicaRps"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PerfError(f"{path} is not a `tritonrec perf` report (expected JSON with a 'sweeps' list): {exc}") from exc
    if slo_ms is None and queue_compute_ratio is None:
        raise PerfError("seed_capacity_from_perf_report needs slo_ms or queue_compute_ratio")
    model = model or report.get("optimized")
    chosen = [s for s in sweeps if (model is None or s.get("model") == model) and (protocol is None or s.get("protocol") == protocol)]
    if batch_size is None and any(s.get("batch_size") == 1 for s in chosen):
        batch_size = 1
    chosen = [s for s in chosen if batch_size is None or s.get("batch_size") == batch_size]
    if not chosen:
        raise PerfError(f"{path} has no sweep of model {model!r} (protocol {protocol or 'any'}, client batch {batch_size or 'any'})")
    best, best_p99 = None, math.inf
    for sweep in chosen:
        for point in sweep.get("points", []):
            try:
                p99 = float(point["p99_latency_ms"])
                rps = float(point["throughput_infer_per_s"]) / float(point.get("batch_size") or sweep.get("batch_size") or 1)
                queue = float(point.get("server_queue_ms", 0.0))
                compute = sum(
                    float(point.get(k, 0.0)) for k in ("server_compute_input_ms", "server_compute_infer_ms", "server_compute_output_ms")
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise PerfError(f"{path}: a load point of {sweep.get('model')} lacks {exc} (expected perf_analyzer's fields)") from exc
            best_p99 = min(best_p99, p99)
            if slo_ms is not None and p99 > slo_ms:
                continue
            if queue_compute_ratio is not None and queue > queue_compute_ratio * compute:
                continue
            best = rps if best is None else max(best, rps)
    if best is None:
        raise PerfError(
            f"no load level of {model!r} in {path} meets the SLO (p99 <= {slo_ms} ms, queue:compute <= {queue_compute_ratio}); "
            f"its best p99 was {best_p99:.2f} ms",
            hint="set spec.capacity.perReplicaRps, or measure at lower load",
        )
    return best


# ---------------------------------------------------------------------------------------------------------------------
# The Autoscaler


@dataclass
class TritonrecAutoscaler:
    """Our policy as an :class:`~toolkit.autoscale.signals.Autoscaler` (``name = "tritonrec"``): keeps
    the :class:`History` and calls :func:`decide` on each step.

    ``TritonrecAutoscaler(spec)``: the capacity seed is ``spec.capacity.perReplicaRps``, else the perf
    report at ``spec.capacity.fromPerfReport`` (read once, here; a relative path is taken from the
    current directory), else none (learned online).

    Raises:
        PerfError: ``spec.capacity.fromPerfReport`` names a report that cannot be read or has no load
            level within the SLO.
    """

    spec: AutoscalerSpec
    history: History = field(init=False)
    name: str = field(default="tritonrec", init=False)

    def __post_init__(self) -> None:
        cap = self.spec.capacity
        if cap.per_replica_rps is None and cap.from_perf_report is not None:
            rps = seed_capacity_from_perf_report(
                cap.from_perf_report, self.spec.slo.p99_latency_ms, queue_compute_ratio=self.spec.slo.queue_compute_ratio
            )
            self.history = initial_history(self.spec, capacity_rps=rps, capacity_source=cap.from_perf_report)
        else:
            self.history = initial_history(self.spec)

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        """Decide for ``signals`` at ``signals.now`` and keep the new history."""
        decision, self.history = decide(signals, self.history, self.spec, signals.now)
        return decision

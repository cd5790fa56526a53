"""KEDA-like threshold scaling of a Triton Deployment with KEDA's Prometheus scaler, as an
:class:`~toolkit.autoscale.signals.Autoscaler` (:class:`KedaThreshold`, named ``keda_threshold``).

What KEDA (kedacore/keda v2) does, and what is modelled here:

* A ``ScaledObject`` with a ``prometheus`` trigger becomes an HPA (``pkg/scaling/resolver``,
  ``controllers/keda/hpa.go``) with one External metric whose target is ``AverageValue: threshold``
  and ``minReplicas = max(minReplicaCount, 1)``; the HPA computes ``ceil(value / threshold)`` through
  ``GetExternalPerPodMetricReplicas``, stabilizes and rate-limits with its default behavior. That part
  reuses :mod:`toolkit.autoscale.hpa` unchanged (15 s syncs, 0.1 tolerance, 300 s scale-down window).
* The scaler runs the PromQL query each time the HPA asks (``useCachedMetrics: false``, the default)
  or once per ``pollingInterval`` (30 s) when cached. An empty result reads as 0 when
  ``ignoreNullValues`` is true, its default (``pkg/scalers/prometheus_scaler.go``, ``ExecutePromQuery``:
  "allow for zero element or single element result sets"); otherwise it is an error ("target may be
  lost, the result is empty"). An empty result is what Prometheus answers when no pod's series exist,
  e.g. every pod's metrics endpoint is down, so KEDA then sees zero load and scales toward the minimum.
* The operator loop polls every ``pollingInterval`` (30 s) for activity (value > ``activationThreshold``);
  with ``minReplicaCount: 0`` it scales an idle target to 0 once ``cooldownPeriod`` (300 s) has passed
  since it was last active, and an active target at 0 to 1 (``pkg/scaling/executor/scale_scaledobjects.go``).
  The cooldown does not apply between 1 and N replicas: there the HPA's 300 s stabilization window does.
* ``fallback`` (``pkg/fallback/fallback.go``): after ``failureThreshold`` consecutive scaler errors the
  metric is reported as ``fallback.replicas × threshold``, so the HPA goes to the fallback count.

The PromQL queries are evaluated on the signals: ``request_rate`` is
``sum(rate(nv_inference_request_success[1m]))`` (requests/s, threshold = requests/s per replica) and
``pending_requests`` is ``sum(nv_inference_pending_request_count)`` (threshold = pending requests per
replica); a pod has the series when its signals carry the value and do not list the metric as missing;
``rate(...[1m])`` is emulated by averaging each pod's samples of the last ``rate_window_seconds``.
"""

from __future__ import annotations

import math
from typing import Literal

from toolkit.autoscale.hpa import (
    SYNC_PERIOD_SECONDS,
    TOLERANCE,
    HpaHistory,
    MetricResult,
    drop_samples_before,
    external_per_pod_replicas,
    reconcile,
)
from toolkit.autoscale.signals import Condition, DeploymentSignals, PodSignals, ScaleDecision
from toolkit.autoscale.spec import AutoscalerSpec

__all__ = ["KedaThreshold", "KEDA_METRICS"]

KedaMetric = Literal["request_rate", "pending_requests"]
#: The queries :class:`KedaThreshold` can run: name -> (the PromQL it stands for, the Triton metric it reads).
KEDA_METRICS: dict[str, tuple[str, str]] = {
    "request_rate": ("sum(rate(nv_inference_request_success[1m]))", "nv_inference_request_success"),
    "pending_requests": ("sum(nv_inference_pending_request_count)", "nv_inference_pending_request_count"),
}


class KedaThreshold:
    """KEDA's Prometheus scaler feeding an HPA with an AverageValue target (see the module docstring).

    Args:
        spec: the TritonAutoscaler spec (min/max replicas and behavior are read, as the HPA KEDA
            creates would carry them).
        threshold: the trigger's ``threshold`` in the metric's unit (requests/s per replica for
            ``request_rate``, pending requests per replica for ``pending_requests``).
        metric: which query (:data:`KEDA_METRICS`).
        activation_threshold: ``activationThreshold`` (0): active while the value is above it.
        polling_interval_seconds: ``pollingInterval`` (30).
        cooldown_period_seconds: ``cooldownPeriod`` (300), before an idle target goes to 0.
        min_replica_count: ``minReplicaCount``; None takes ``spec.minReplicas``; 0 allows scale to zero.
        ignore_null_values: ``ignoreNullValues`` (True): an empty result is 0 rather than an error.
        use_cached_metrics: ``useCachedMetrics`` (False): the HPA reads the value of the last poll
            instead of querying at each of its syncs.
        fallback_failure_threshold, fallback_replicas: ``fallback.failureThreshold`` and
            ``fallback.replicas`` (both or neither).
        rate_window_seconds: the ``[1m]`` range of ``rate`` (60).
        sync_period_seconds: the HPA's sync period (15).
    """

    name = "keda_threshold"

    def __init__(
        self,
        spec: AutoscalerSpec,
        threshold: float,
        *,
        metric: KedaMetric = "request_rate",
        activation_threshold: float = 0.0,
        polling_interval_seconds: float = 30.0,
        cooldown_period_seconds: float = 300.0,
        min_replica_count: int | None = None,
        ignore_null_values: bool = True,
        use_cached_metrics: bool = False,
        fallback_failure_threshold: int | None = None,
        fallback_replicas: int | None = None,
        rate_window_seconds: float = 60.0,
        sync_period_seconds: float = SYNC_PERIOD_SECONDS,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if metric not in KEDA_METRICS:
            raise ValueError(f"metric must be one of {sorted(KEDA_METRICS)}, got {metric!r}")
        if (fallback_failure_threshold is None) != (fallback_replicas is None):
            raise ValueError("fallback_failure_threshold and fallback_replicas go together (KEDA's fallback needs both)")
        self.spec = spec
        self.threshold = threshold
        self.metric = metric
        self.activation_threshold = activation_threshold
        self.polling_interval_seconds = polling_interval_seconds
        self.cooldown_period_seconds = cooldown_period_seconds
        self.min_replica_count = spec.min_replicas if min_replica_count is None else min_replica_count
        self.ignore_null_values = ignore_null_values
        self.use_cached_metrics = use_cached_metrics
        self.fallback_failure_threshold = fallback_failure_threshold
        self.fallback_replicas = fallback_replicas
        self.rate_window_seconds = rate_window_seconds
        self.sync_period_seconds = sync_period_seconds
        # the HPA KEDA creates: minReplicas = max(minReplicaCount, 1), the rest from the spec
        self.hpa_spec = spec.model_copy(update={"min_replicas": max(self.min_replica_count, 1)})
        self.history = HpaHistory()
        self._samples: dict[str, list[tuple[float, float]]] = {}
        self._last_poll: float | None = None
        self._last_sync: float | None = None
        self._last_active: float | None = None
        self._cached: float | None = None
        self._cached_error: str | None = None
        self._failures = 0
        self._last: ScaleDecision | None = None

    # --- the scaler -------------------------------------------------------------------------------------------

    def _value_of(self, pod: PodSignals) -> float | None:
        triton_metric = KEDA_METRICS[self.metric][1]
        if triton_metric in pod.missing or pod.phase == "terminating":
            return None
        return pod.request_rate if self.metric == "request_rate" else pod.pending_requests

    def _observe(self, signals: DeploymentSignals) -> None:
        for pod in signals.pods:
            value = self._value_of(pod)
            if value is None or pod.scraped_at is None or pod.failed_scrapes > 0:
                continue
            series = self._samples.setdefault(pod.pod, [])
            if not series or series[-1][0] != pod.scraped_at:
                series.append((pod.scraped_at, value))
        # a series whose last sample is older than the range is gone from the query (Prometheus' staleness)
        drop_samples_before(self._samples, signals.now - self.rate_window_seconds)

    def query(self, signals: DeploymentSignals) -> tuple[float | None, str | None]:
        """The trigger's value now: ``(value, None)``, or ``(None, error)`` when the result is empty and
        ``ignore_null_values`` is off. Pods listed in ``signals`` without current series do not count."""
        present = {p.pod for p in signals.pods}
        series = {name: s for name, s in self._samples.items() if name in present}
        if not series:
            if self.ignore_null_values:
                return 0.0, None
            return None, "prometheus metrics 'prometheus' target may be lost, the result is empty"
        if self.metric == "request_rate":
            return sum(sum(v for _, v in s) / len(s) for s in series.values()), None
        return sum(s[-1][1] for s in series.values()), None

    # --- the Autoscaler -----------------------------------------------------------------------------------------

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        """One call per sync period of the caller: polls every ``polling_interval_seconds``, reconciles the
        HPA every ``sync_period_seconds``, and otherwise repeats the last decision."""
        now = signals.now
        self._observe(signals)
        polled = self._last_poll is None or now - self._last_poll >= self.polling_interval_seconds
        if polled:
            self._last_poll = now
            self._cached, self._cached_error = self.query(signals)
            self._failures = self._failures + 1 if self._cached is None else 0
            if self._cached is not None and self._cached > self.activation_threshold:
                self._last_active = now
            zero = self._scale_to_or_from_zero(signals)
            if zero is not None:
                self._last = zero
                return zero
        if self._last is not None and self._last_sync is not None and now - self._last_sync < self.sync_period_seconds:
            return self._last
        self._last_sync = now
        value, error = (self._cached, self._cached_error) if self.use_cached_metrics else self.query(signals)
        if not self.use_cached_metrics and not polled:
            self._failures = self._failures + 1 if value is None else 0
        numbers = {f"keda_{self.metric}_threshold": self.threshold}
        fallback = False
        if value is None and self.fallback_failure_threshold is not None and self._failures >= self.fallback_failure_threshold:
            value, fallback = float(self.fallback_replicas) * self.threshold, True
        if value is None:
            metric = MetricResult(None, error=error)
        else:
            numbers[f"keda_{self.metric}"] = value
            metric = (
                external_per_pod_replicas(signals.current_replicas, _milli(self.threshold), [_milli(value)], tolerance=TOLERANCE)
                if signals.current_replicas > 0
                else MetricResult(0, _milli(value))
            )
        result = reconcile(
            self.history,
            spec=self.hpa_spec,
            current_replicas=signals.current_replicas,
            metric=metric,
            metric_name="external metric s0-prometheus",
            now=now,
        )
        self.history = result.history
        reason = f"New size: {result.desired_replicas}; reason: {result.reason}" if result.rescale else result.reason
        if fallback:
            reason += f" (KEDA fallback after {self._failures} failed queries: {self.fallback_replicas} replicas)"
        numbers.update(current_replicas=float(signals.current_replicas), desired_replicas=float(result.desired_replicas))
        self._last = ScaleDecision(result.desired_replicas, reason, result.conditions, numbers, hold=metric.replicas is None)
        return self._last

    def _scale_to_or_from_zero(self, signals: DeploymentSignals) -> ScaleDecision | None:
        """KEDA's operator: 0 -> 1 when active, N -> 0 after the cooldown when idle (``minReplicaCount: 0`` only)."""
        if self.min_replica_count != 0:
            return None
        active = self._last_active == signals.now
        numbers = {f"keda_{self.metric}": self._cached if self._cached is not None else math.nan}
        if signals.current_replicas == 0 and active:
            cond = Condition("AbleToScale", "True", "ScaledFromZero", "the trigger is active: scaling from zero")
            return ScaleDecision(
                1, f"keda: {self.metric} {self._cached:g} > activation threshold {self.activation_threshold:g}", (cond,), numbers
            )
        idle_since = self._last_active if self._last_active is not None else -math.inf
        if signals.current_replicas > 0 and not active and signals.now - idle_since >= self.cooldown_period_seconds:
            cond = Condition(
                "AbleToScale", "True", "ScaledToZero", f"the trigger was idle for the {self.cooldown_period_seconds:g} s cooldown period"
            )
            return ScaleDecision(0, f"keda: idle for {self.cooldown_period_seconds:g} s: scaling to zero", (cond,), numbers)
        return None


def _milli(value: float) -> int:
    """``Quantity.MilliValue()`` of a float (rounded up, as resource.Quantity does)."""
    return int(math.ceil(value * 1000 - 1e-9))

"""KEDA-like threshold scaling on a fake clock: the AverageValue arithmetic of the HPA KEDA creates,
empty Prometheus results read as zero load (ignoreNullValues), fallback, the rate window, cached
metrics, and the cooldown before scaling to zero."""

from __future__ import annotations

import pytest

from toolkit.autoscale.keda import KedaThreshold
from toolkit.autoscale.signals import DeploymentSignals, PodSignals
from toolkit.autoscale.spec import parse_spec

SPEC = parse_spec({"scaleTargetRef": {"name": "triton"}, "minReplicas": 1, "maxReplicas": 20, "slo": {"p99LatencyMs": 50}})
T0 = 1_000.0


def _signals(now, replicas, rate, *, failed=(), missing=()) -> DeploymentSignals:
    pods = []
    for i in range(replicas):
        name = f"p{i}"
        if name in failed:
            pods.append(PodSignals(name, "ready", scraped_at=T0, failed_scrapes=int((now - T0) // 5) + 1, request_rate=rate))
        else:
            miss = ("nv_inference_request_success",) if name in missing else ()
            pods.append(PodSignals(name, "ready", scraped_at=now, request_rate=None if miss else rate, missing=miss))
    return DeploymentSignals(now=now, current_replicas=replicas, pods=tuple(pods))


def test_desired_is_the_sum_over_the_threshold_as_the_hpa_computes_for_average_value() -> None:
    keda = KedaThreshold(SPEC, threshold=50.0)
    d = keda.step(_signals(T0, 3, 100.0))  # 300 req/s over 50 per replica
    assert d.desired_replicas == 6
    assert d.signals["keda_request_rate"] == pytest.approx(300.0)
    assert d.conditions[1].reason == "ValidMetricFound"


def test_within_the_tolerance_nothing_changes() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0)
    assert keda.step(_signals(T0, 4, 105.0)).desired_replicas == 4  # 420 / 400 = 1.05


def test_an_empty_result_reads_as_zero_load_and_scales_down_after_the_hpa_window() -> None:
    """Every pod's metrics endpoint stops answering at T0+15: once their last samples leave the 1 m
    rate window, the query is empty, KEDA reads 0, and the HPA scales to the minimum after its 300 s
    stabilization window."""
    keda = KedaThreshold(SPEC, threshold=100.0)
    assert keda.step(_signals(T0, 4, 100.0)).desired_replicas == 4
    failed = {"p0", "p1", "p2", "p3"}
    for k in range(1, 23):  # up to T0 + 330
        d = keda.step(_signals(T0 + 15 * k, 4, 100.0, failed=failed))
        assert d.desired_replicas == 4, k
    assert d.signals["keda_request_rate"] == 0.0
    d = keda.step(_signals(T0 + 345, 4, 100.0, failed=failed))  # the last 4 was recommended at T0+45
    assert d.desired_replicas == 1
    assert d.conditions[2].reason == "TooFewReplicas"


def test_with_ignore_null_values_off_an_empty_result_is_an_error_and_the_hpa_holds() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0, ignore_null_values=False)
    keda.step(_signals(T0, 4, 100.0))
    for k in range(1, 30):
        d = keda.step(_signals(T0 + 15 * k, 4, 100.0, failed={"p0", "p1", "p2", "p3"}))
        assert d.desired_replicas == 4
    assert d.hold
    assert (d.conditions[1].status, d.conditions[1].reason) == ("False", "FailedGetExternalMetric")
    assert "the result is empty" in d.conditions[1].message


def test_a_pod_missing_the_metric_makes_the_sum_under_report() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0)
    keda.step(_signals(T0, 3, 100.0))
    sig = _signals(T0 + 75, 3, 100.0, missing={"p2"})
    keda.step(sig)
    assert keda.query(sig) == (pytest.approx(200.0), None)


def test_fallback_replicas_after_the_failure_threshold() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0, ignore_null_values=False, fallback_failure_threshold=3, fallback_replicas=5)
    failed = {"p0", "p1"}
    seen = [keda.step(_signals(T0 + 15 * k, 2, 100.0, failed=failed)).desired_replicas for k in range(3)]
    assert seen == [2, 2, 5]


def test_the_rate_window_averages_the_last_minute() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0)
    keda.step(_signals(T0, 2, 100.0))
    d = keda.step(_signals(T0 + 15, 2, 400.0))  # rate over [1m]: (100 + 400) / 2 per pod
    assert d.signals["keda_request_rate"] == pytest.approx(500.0)
    assert d.desired_replicas == 5


def test_cached_metrics_are_read_once_per_polling_interval() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0, use_cached_metrics=True)
    keda.step(_signals(T0, 2, 100.0))
    assert keda.step(_signals(T0 + 15, 2, 400.0)).desired_replicas == 2  # the HPA reads the T0 poll
    # polled: (100 + 400 + 400) / 3 per pod, 600 req/s in all -> 6 (within the max(2 + 4, 200%) limit)
    assert keda.step(_signals(T0 + 30, 2, 400.0)).desired_replicas == 6


def test_idle_target_goes_to_zero_after_the_cooldown_with_min_replica_count_zero() -> None:
    keda = KedaThreshold(SPEC, threshold=100.0, min_replica_count=0)
    replicas = 2
    keda.step(_signals(T0, replicas, 50.0))  # active at T0 and at the T0+30 poll (the 50 is still in the window)
    decisions = {}
    for k in range(1, 24):
        now = T0 + 15 * k
        d = keda.step(_signals(now, replicas, 0.0))
        replicas = d.desired_replicas
        decisions[now - T0] = replicas
    assert decisions[300] == 1  # the HPA's scale-down after its window
    assert decisions[315] == 1
    assert decisions[330] == 0  # 300 s after the last active poll (T0+30): KEDA scales to zero
    assert decisions[345] == 0  # and the HPA leaves a target at zero alone


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold must be > 0"):
        KedaThreshold(SPEC, threshold=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        KedaThreshold(SPEC, threshold=1, metric="cpu")
    with pytest.raises(ValueError, match="go together"):
        KedaThreshold(SPEC, threshold=1, fallback_replicas=3)

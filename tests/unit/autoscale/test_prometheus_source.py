"""PrometheusSource's pure part (one round's answers -> PodSignals) on hand-made rounds, its checks of
its settings, and a Prometheus that cannot be reached. tests/integration/test_prometheus_source.py
runs it against a real Prometheus."""

from __future__ import annotations

import socket

import pytest

from toolkit.autoscale.prometheus_source import PrometheusRound, PrometheusSource, signals_from_round
from toolkit.autoscale.scrape import COUNTER_METRICS, GAUGE_METRICS, ScrapeTarget
from toolkit.autoscale.signals import POLICY_METRICS

POD = ScrapeTarget("triton-0", "10.0.0.7:8002", uid="a")
RATES = {  # per second, summed over the pod's models
    "nv_inference_request_success": 40.0,
    "nv_inference_count": 80.0,
    "nv_inference_exec_count": 30.0,
    "nv_inference_queue_duration_us": 12_000.0,
    "nv_inference_compute_input_duration_us": 400.0,
    "nv_inference_compute_infer_duration_us": 16_000.0,
    "nv_inference_compute_output_duration_us": 800.0,
}


def _round(*, up: float = 1.0, absent: tuple[str, ...] = (), rates: dict | None = None, pending: float = 3.0) -> PrometheusRound:
    return PrometheusRound(
        evaluated_ts=1_000.0,
        up={"triton-0": up},
        scraped_ts={"triton-0": 998.5},
        present={f: {"triton-0": 2.0} for f in COUNTER_METRICS + GAUGE_METRICS if f not in absent},
        rates={f: {"triton-0": v} for f, v in (RATES if rates is None else rates).items()},
        pending={"triton-0": pending},
    )


def test_a_round_gives_the_same_arithmetic_as_the_scraper():
    s = signals_from_round(POD, _round(), now=50.0)
    assert s.request_rate == 40.0 and s.inference_rate == 80.0
    assert s.queue_us_per_request == 12_000.0 / 40.0
    assert s.compute_us_per_inference == (400.0 + 16_000.0 + 800.0) / 80.0
    assert s.pending_requests == 3.0 and s.missing == () and s.failed_scrapes == 0
    assert s.scraped_at == 50.0 - 1.5  # the last scrape was 1.5 s before the evaluation, on the caller's clock


@pytest.mark.parametrize("up", [0.0, None])
def test_a_pod_whose_scrape_failed_or_that_prometheus_does_not_know_has_no_round(up):
    answers = _round(up=0.0) if up == 0.0 else PrometheusRound(evaluated_ts=1_000.0)
    assert signals_from_round(POD, answers, now=50.0) is None


def test_a_family_the_pod_lacks_is_named_not_read_as_zero():
    s = signals_from_round(POD, _round(absent=("nv_inference_queue_duration_us", "nv_inference_pending_request_count")), now=0.0)
    assert s.missing == ("nv_inference_queue_duration_us", "nv_inference_pending_request_count")
    assert s.queue_us_per_request is None and s.pending_requests is None and s.request_rate == 40.0


def test_a_pod_with_too_few_samples_in_the_window_has_unknown_rates_and_names_nothing():
    s = signals_from_round(POD, _round(rates={}), now=0.0)
    assert s.request_rate is None and s.queue_us_per_request is None and s.missing == ()


def test_an_idle_pod_has_zero_queue_time():
    s = signals_from_round(POD, _round(rates=dict.fromkeys(RATES, 0.0), pending=0.0), now=0.0)
    assert (s.request_rate, s.queue_us_per_request, s.compute_us_per_inference) == (0.0, 0.0, None)


def test_every_policy_metric_is_asked_for():
    query = PrometheusSource("http://127.0.0.1:9", selector='namespace="prod"', window_s=20).query()
    assert all(name in query for name in POLICY_METRICS)
    assert 'rate(nv_inference_queue_duration_us{namespace="prod"}[20s])' in query
    assert 'max by (pod) (up{namespace="prod"})' in query
    # of the failures, only the queue policy's rejections are load
    assert 'rate(nv_inference_request_failure{namespace="prod",reason="REJECTED"}[20s])' in query


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"selector": "{job='triton'}"}, "selector must be label matchers"),
        ({"selector": "job=triton"}, "selector must be label matchers"),
        ({"pod_label": "pod-name"}, "pod_label must be a Prometheus label name, got 'pod-name'"),
        ({"window_s": 0}, "window_s and timeout_s must be > 0 seconds, got 0 and 5.0"),
        ({"timeout_s": -1}, "window_s and timeout_s must be > 0 seconds, got 30.0 and -1"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PrometheusSource("http://127.0.0.1:9", **kwargs)


def test_an_unreachable_prometheus_is_a_failed_scrape_of_every_scraped_pod():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    starting = ScrapeTarget("triton-1", None, phase="starting")
    with PrometheusSource(f"http://127.0.0.1:{port}", timeout_s=1) as source:
        first = source.signals([POD, starting])
        second = source.signals([POD, starting])
    assert [s.failed_scrapes for s in first] == [1, 0] and [s.failed_scrapes for s in second] == [2, 0]
    assert second[0].scraped_at is None and second[0].request_rate is None

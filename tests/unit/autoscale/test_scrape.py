"""Signals from saved /metrics texts of a real Triton 2.51 server (tests/fixtures/metrics/README.md),
on a fake clock; and PodScraper's fetching against plain HTTP servers on loopback.

Expected numbers are computed here from the fixtures' own sample lines, read with a regular
expression (an oracle independent of prometheus-client's parser)."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.autoscale.scrape import (
    COUNTER_METRICS,
    COUNTER_SERIES,
    GAUGE_METRICS,
    MetricsTracker,
    PodScraper,
    ScrapeResult,
    ScrapeTarget,
    counter_increase,
    parse_metrics,
    pod_signals,
)
from toolkit.autoscale.signals import POLICY_METRICS
from toolkit.errors import MetricsError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"
TEXTS = {p.stem: p.read_text() for p in sorted(FIXTURES.glob("*.txt"))}
MODELS = ("fast", "slow")
GAP_S = 3.0  # the fake clock's step between two scrapes (make_fixtures.SCRAPE_GAP_S)
POD = ScrapeTarget("triton-0", "127.0.0.1:8002", uid="uid-a")
COMPUTE = ("nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us")


def labels(family: str, model: str) -> dict[str, str]:
    """The labels of the series of ``family`` the scraper reads for ``model`` (Triton writes them sorted)."""
    only = dict([COUNTER_SERIES[family]]) if family in COUNTER_SERIES else {}
    return dict(sorted({"model": model, "version": "1", **only}.items()))


def value(fixture: str, family: str, model: str) -> float:
    """The sample of ``family`` for ``model`` in the saved text, read straight from its line."""
    written = ",".join(f'{k}="{v}"' for k, v in labels(family, model).items())
    pattern = rf"^{family}{{{written}}} (\S+)$"
    matches = re.findall(pattern, TEXTS[fixture], flags=re.MULTILINE)
    assert len(matches) == 1, f"{fixture}: {pattern} matched {len(matches)} lines"
    return float(matches[0])


def total(fixture: str, family: str) -> float:
    return sum(value(fixture, family, m) for m in MODELS)


def delta(before: str, after: str, family: str, model: str | None = None) -> float:
    models = MODELS if model is None else (model,)
    return sum(value(after, family, m) - value(before, family, m) for m in models)


def observe(tracker: MetricsTracker, fixture: str, at: float, target: ScrapeTarget = POD):
    return tracker.observe(ScrapeResult(target, at, text=TEXTS[fixture]))


# -- parsing -------------------------------------------------------------------------------------


def test_the_fixtures_are_the_ones_the_readme_lists():
    assert set(TEXTS) == {"two_models_t0", "two_models_t1", "restarted", "missing_queue_duration", "shutting_down"}
    readme = (FIXTURES / "README.md").read_text()
    assert all(f"`{name}.txt`" in readme for name in TEXTS) and "triton 2.51" in readme


@pytest.mark.parametrize("fixture", sorted(TEXTS))
def test_parse_reads_every_model_of_every_family_the_fixture_has(fixture: str):
    sample = parse_metrics(TEXTS[fixture], source=fixture)
    absent = {
        "missing_queue_duration": {"nv_inference_queue_duration_us"},
        # its models are unloaded; the failure counters stay until the port closes
        "shutting_down": set(COUNTER_METRICS + GAUGE_METRICS) - {"nv_inference_request_failure"},
    }.get(fixture, set())
    assert set(sample.series) == set(COUNTER_METRICS + GAUGE_METRICS) - absent
    for family, series in sample.series.items():
        assert series == {tuple(labels(family, m).items()): value(fixture, family, m) for m in MODELS}
        assert sample.total(family) == total(fixture, family)
    assert sample.missing == tuple(name for name in POLICY_METRICS if name in absent)


def test_parse_refuses_text_that_is_not_the_prometheus_format_naming_its_source():
    with pytest.raises(MetricsError, match=r"pod triton-0 \(10\.0\.0\.7:8002\): not Prometheus' text format") as info:
        parse_metrics("<html><body>404</body></html>\n", source="pod triton-0 (10.0.0.7:8002)")
    assert "port 8002" in info.value.hint


def test_parse_refuses_a_repeated_series():
    line = 'nv_inference_count{model="fast",version="1"} 5\n'
    with pytest.raises(MetricsError, match=r'nv_inference_count\{model="fast",version="1"\} appears twice'):
        parse_metrics("# TYPE nv_inference_count counter\n" + line + line, source="x")


def test_an_empty_text_lacks_every_policy_metric():
    assert parse_metrics("").missing == POLICY_METRICS


def test_counter_increase_counts_a_reset_and_a_new_series_from_zero_and_ignores_a_gone_one():
    a, b, c = (("model", "a"),), (("model", "b"),), (("model", "c"),)
    assert counter_increase({a: 10, b: 5}, {a: 25, b: 5}) == 15  # plain increase
    assert counter_increase({a: 10}, {a: 4}) == 4  # went down: reset, counts from zero
    assert counter_increase({a: 10}, {a: 10, c: 7}) == 7  # c loaded since: from zero
    assert counter_increase({a: 10, b: 5}, {a: 12}) == 2  # b unloaded: adds nothing


# -- signals from two scrapes (fake clock) -------------------------------------------------------


def test_rates_between_two_scrapes_of_a_server_with_two_models():
    tracker = MetricsTracker()
    first = observe(tracker, "two_models_t0", at=100.0)
    assert first.request_rate is None and first.queue_us_per_request is None  # one scrape: unknown, not zero
    assert first.scraped_at == 100.0 and first.pending_requests == 0 and first.missing == ()

    s = observe(tracker, "two_models_t1", at=100.0 + GAP_S)
    before, after = "two_models_t0", "two_models_t1"
    requests = delta(before, after, "nv_inference_request_success")
    inferences = delta(before, after, "nv_inference_count")
    assert requests > 0 and inferences > requests  # 2-row requests: two inferences each
    assert s.request_rate == pytest.approx(requests / GAP_S, rel=1e-12)  # float division only
    assert s.inference_rate == pytest.approx(inferences / GAP_S, rel=1e-12)
    assert s.queue_us_per_request == pytest.approx(delta(before, after, "nv_inference_queue_duration_us") / requests, rel=1e-12)
    compute = sum(delta(before, after, f) for f in COMPUTE)
    assert s.compute_us_per_inference == pytest.approx(compute / inferences, rel=1e-12)
    assert s.pending_requests == total(after, "nv_inference_pending_request_count") == 0
    assert (s.scraped_at, s.failed_scrapes, s.missing, s.phase, s.pod) == (103.0, 0, (), "ready", "triton-0")


def test_queue_time_per_request_is_summed_over_models_before_dividing_not_averaged_per_model():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t0", at=0.0)
    s = observe(tracker, "two_models_t1", at=GAP_S)
    before, after = "two_models_t0", "two_models_t1"
    per_model = [
        delta(before, after, "nv_inference_queue_duration_us", m) / delta(before, after, "nv_inference_request_success", m) for m in MODELS
    ]
    mean_of_ratios = sum(per_model) / len(per_model)
    # The fixture makes them differ: `slow` has few requests that queue long, `fast` many that queue briefly.
    assert abs(s.queue_us_per_request - mean_of_ratios) > 0.2 * s.queue_us_per_request
    assert min(per_model) < s.queue_us_per_request < max(per_model)


def test_a_restarted_server_counts_its_counters_from_zero():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t1", at=0.0)
    s = observe(tracker, "restarted", at=GAP_S)
    for family in COUNTER_METRICS:  # the fixture's premise: every counter went down (none failed: 0 and 0)
        assert total("restarted", family) < total("two_models_t1", family) or total("two_models_t1", family) == 0, family
    assert s.request_rate == pytest.approx(total("restarted", "nv_inference_request_success") / GAP_S, rel=1e-12)
    assert s.inference_rate == pytest.approx(total("restarted", "nv_inference_count") / GAP_S, rel=1e-12)
    queue = total("restarted", "nv_inference_queue_duration_us")
    assert s.queue_us_per_request == pytest.approx(queue / total("restarted", "nv_inference_request_success"), rel=1e-12)
    compute = sum(total("restarted", f) for f in COMPUTE)
    assert s.compute_us_per_inference == pytest.approx(compute / total("restarted", "nv_inference_count"), rel=1e-12)


def test_a_missing_policy_metric_is_named_and_its_signal_is_unknown():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t0", at=0.0)
    s = observe(tracker, "missing_queue_duration", at=GAP_S)
    assert s.missing == ("nv_inference_queue_duration_us",)
    assert s.queue_us_per_request is None
    # what does not depend on it is still there (the file is two_models_t1.txt less that family)
    assert s.request_rate == pytest.approx(delta("two_models_t0", "two_models_t1", "nv_inference_request_success") / GAP_S, rel=1e-12)
    assert s.compute_us_per_inference is not None and s.pending_requests == 0
    # and the next complete scrape names nothing
    assert observe(tracker, "two_models_t1", at=2 * GAP_S).missing == ()


def test_a_server_shutting_down_serves_none_of_the_policy_metrics_and_says_so():
    # What a pod that got SIGTERM serves for about half a second (tests/fixtures/metrics/README.md):
    # every policy metric is named missing and nothing reads as zero load.
    tracker = MetricsTracker()
    observe(tracker, "restarted", at=0.0)
    s = observe(tracker, "shutting_down", at=GAP_S)
    assert s.missing == POLICY_METRICS and s.failed_scrapes == 0 and s.scraped_at == GAP_S
    assert (s.request_rate, s.inference_rate, s.queue_us_per_request, s.compute_us_per_inference, s.pending_requests) == (None,) * 5


def test_an_idle_interval_has_zero_rates_zero_queue_time_and_unknown_compute_time():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t1", at=0.0)
    s = observe(tracker, "two_models_t1", at=GAP_S)
    assert (s.request_rate, s.inference_rate, s.queue_us_per_request) == (0.0, 0.0, 0.0)
    assert s.compute_us_per_inference is None  # no inference: nothing measured


def test_queue_time_is_unknown_when_no_request_completed_while_some_are_pending():
    text = TEXTS["two_models_t1"]
    series = 'nv_inference_pending_request_count{model="slow",version="1"}'
    stuck = text.replace(f"{series} 0", f"{series} 7")
    assert stuck != text
    previous = parse_metrics(text)
    s = pod_signals(POD, previous, parse_metrics(stuck), elapsed_s=GAP_S, scraped_at=GAP_S)
    assert s.request_rate == 0.0 and s.pending_requests == 7 and s.queue_us_per_request is None


def test_elapsed_time_that_is_not_positive_gives_unknown_rates():
    sample = parse_metrics(TEXTS["two_models_t0"])
    for elapsed in (0.0, -1.0, None):
        s = pod_signals(POD, sample, parse_metrics(TEXTS["two_models_t1"]), elapsed_s=elapsed)
        assert s.request_rate is None and s.pending_requests == 0


def test_a_failed_scrape_counts_and_keeps_the_last_signals_stale_until_the_next_success():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t0", at=0.0)
    good = observe(tracker, "two_models_t1", at=GAP_S)
    failed = tracker.observe(ScrapeResult(POD, 2 * GAP_S, error="GET http://127.0.0.1:8002/metrics: connection refused"))
    assert failed.failed_scrapes == 1 and failed.scraped_at == good.scraped_at == GAP_S
    assert failed.request_rate == good.request_rate and failed.queue_us_per_request == good.queue_us_per_request
    assert "connection refused" in tracker.last_error("triton-0")
    bad_text = tracker.observe(ScrapeResult(POD, 3 * GAP_S, text="<html>502 Bad Gateway</html>"))
    assert bad_text.failed_scrapes == 2 and bad_text.scraped_at == GAP_S
    assert "pod triton-0 (127.0.0.1:8002): not Prometheus' text format" in tracker.last_error("triton-0")
    # the next success is compared with the last successful sample, over the whole time since
    back = observe(tracker, "two_models_t1", at=4 * GAP_S)
    assert back.failed_scrapes == 0 and back.scraped_at == 4 * GAP_S and tracker.last_error("triton-0") is None
    assert back.request_rate == 0.0  # same counters as at GAP_S


def test_a_pod_that_fails_its_first_scrape_has_no_signals():
    s = MetricsTracker().observe(ScrapeResult(POD, 1.0, error="timed out"))
    assert (s.failed_scrapes, s.scraped_at, s.request_rate, s.pending_requests) == (1, None, None, None)


def test_a_new_pod_under_a_reused_name_is_never_compared_with_the_old_one():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t0", at=0.0)
    replaced = ScrapeTarget("triton-0", "127.0.0.9:8002", uid="uid-b")
    s = observe(tracker, "two_models_t1", at=GAP_S, target=replaced)
    assert s.request_rate is None and s.address == "127.0.0.9:8002"  # first scrape of the new pod
    assert observe(tracker, "two_models_t1", at=2 * GAP_S, target=replaced).request_rate == 0.0


def test_a_starting_pod_is_not_scraped_and_forgotten_pods_start_over():
    tracker = MetricsTracker()
    observe(tracker, "two_models_t0", at=0.0)
    starting = ScrapeTarget("triton-1", None, phase="starting", uid="uid-c")
    assert tracker.unscraped(starting).failed_scrapes == 0 and not starting.scraped
    tracker.retain(["triton-1"])
    assert observe(tracker, "two_models_t1", at=GAP_S).request_rate is None  # triton-0 was forgotten


# -- fetching (plain HTTP servers on loopback) ---------------------------------------------------


class _Endpoint(http.server.BaseHTTPRequestHandler):
    body = b""
    delay_s = 0.0

    def do_GET(self):  # noqa: N802 (http.server's name)
        time.sleep(self.delay_s)
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint() -> Iterator:
    """Start loopback HTTP servers serving a fixture text (``endpoint(fixture, delay_s)`` -> ``host:port``)."""
    servers = []

    def start(fixture: str, delay_s: float = 0.0) -> str:
        handler = type("Handler", (_Endpoint,), {"body": TEXTS[fixture].encode(), "delay_s": delay_s})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scraper_fetches_pods_at_once_and_a_slow_or_dead_one_fails_alone(endpoint):
    timeout_s = 0.5
    with PodScraper(timeout_s=timeout_s, clock=lambda: 10.0) as scraper:
        fast = ScrapeTarget("fast-pod", endpoint("two_models_t0"), uid="1")
        slow = ScrapeTarget("slow-pod", endpoint("two_models_t0", delay_s=5 * timeout_s), uid="2")
        dead = ScrapeTarget("dead-pod", f"127.0.0.1:{_closed_port()}", uid="3")
        starting = ScrapeTarget("new-pod", None, phase="starting", uid="4")
        started = time.monotonic()
        signals = {s.pod: s for s in scraper.scrape([fast, slow, dead, starting])}
        took = time.monotonic() - started
    # bounded by the round's deadline, not by the slow pod's 2.5 s (scheduling slack on 2 busy cores: +1 s)
    assert took < timeout_s + 1.0
    assert list(signals) == ["fast-pod", "slow-pod", "dead-pod", "new-pod"]
    assert signals["fast-pod"].failed_scrapes == 0 and signals["fast-pod"].scraped_at == 10.0
    assert signals["fast-pod"].pending_requests == 0 and signals["fast-pod"].missing == ()
    # the request's own read timeout and the round's deadline are both 0.5 s: either may say so first
    assert signals["slow-pod"].failed_scrapes == 1
    assert re.search(r"within 0\.5 s|Read timed out", scraper.tracker.last_error("slow-pod"))
    assert signals["dead-pod"].failed_scrapes == 1 and f"GET http://{dead.address}/metrics" in scraper.tracker.last_error("dead-pod")
    assert signals["new-pod"].failed_scrapes == 0 and signals["new-pod"].scraped_at is None


def test_scraper_computes_rates_over_two_rounds_on_its_clock(endpoint):
    now = [50.0]
    first, second = endpoint("two_models_t0"), endpoint("two_models_t1")
    with PodScraper(timeout_s=2.0, clock=lambda: now[0]) as scraper:
        scraper.scrape([ScrapeTarget("p", first, uid="u")])
        now[0] += GAP_S
        (s,) = scraper.scrape([ScrapeTarget("p", second, uid="u")])  # same pod (uid), the text of 3 s later
    assert s.scraped_at == 53.0
    assert s.request_rate == pytest.approx(delta("two_models_t0", "two_models_t1", "nv_inference_request_success") / GAP_S, rel=1e-12)


def test_scraper_reports_an_http_error_status(endpoint):
    address = endpoint("two_models_t0")
    with PodScraper(timeout_s=2.0, path="/not-metrics") as scraper:
        (s,) = scraper.scrape([ScrapeTarget("p", address)])
    assert s.failed_scrapes == 1 and scraper.tracker.last_error("p") == f"GET http://{address}/not-metrics: HTTP 404"


def test_scraper_refuses_duplicate_pod_names_and_bad_settings():
    with PodScraper() as scraper, pytest.raises(ValueError, match="triton-0 more than once"):
        scraper.scrape([POD, POD])
    with pytest.raises(ValueError, match="timeout_s must be > 0 seconds, got 0"):
        PodScraper(timeout_s=0)
    with pytest.raises(ValueError, match="max_workers must be >= 1, got 0"):
        PodScraper(max_workers=0)


# -- rejections (Triton's queue policy) --------------------------------------------------------------


def _with_rejected(text: str, fast: int, slow: int) -> str:
    """``text`` with its REJECTED failure counters set (the bundled server's texts, taken without a
    queue policy, have 0 there)."""
    for model, n in (("fast", fast), ("slow", slow)):
        text = text.replace(
            f'nv_inference_request_failure{{model="{model}",reason="REJECTED",version="1"}} 0',
            f'nv_inference_request_failure{{model="{model}",reason="REJECTED",version="1"}} {n}',
        )
    return text


def test_rejected_requests_are_a_rate_summed_over_models_and_other_failures_are_not_counted():
    t0 = _with_rejected(TEXTS["two_models_t0"], 10, 0)
    t1 = _with_rejected(TEXTS["two_models_t1"], 40, 30)
    t1 = t1.replace(
        'nv_inference_request_failure{model="fast",reason="BACKEND",version="1"} 0',
        'nv_inference_request_failure{model="fast",reason="BACKEND",version="1"} 500',
    )
    assert all(f'model="{m}",reason="REJECTED",version="1"}} {n}' in t1 for m, n in (("fast", 40), ("slow", 30)))  # the edits took
    assert 'reason="BACKEND",version="1"} 500' in t1
    tracker = MetricsTracker()
    tracker.observe(ScrapeResult(POD, 0.0, text=t0))
    s = tracker.observe(ScrapeResult(POD, GAP_S, text=t1))
    assert s.rejected_rate == pytest.approx((30 + 30) / GAP_S, rel=1e-12)  # BACKEND errors are not load


def test_failures_without_a_reason_label_leave_rejections_unknown_not_zero():
    old = "\n".join(
        [
            "# TYPE nv_inference_request_failure counter",
            'nv_inference_request_failure{model="fast",version="1"} 7',
        ]
    )
    assert not parse_metrics(old).has("nv_inference_request_failure")
    tracker = MetricsTracker()
    tracker.observe(ScrapeResult(POD, 0.0, text=TEXTS["two_models_t0"]))
    s = tracker.observe(ScrapeResult(POD, GAP_S, text=TEXTS["two_models_t1"]))
    assert s.rejected_rate == 0.0  # labelled, and none rejected
    stripped = (
        "\n".join(line for line in TEXTS["two_models_t1"].splitlines() if "nv_inference_request_failure" not in line) + "\n" + old + "\n"
    )
    s = tracker.observe(ScrapeResult(POD, 2 * GAP_S, text=stripped))
    assert s.rejected_rate is None and s.request_rate is not None

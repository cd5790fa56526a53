"""PrometheusSource against a real Prometheus (Debian's 2.42 binary, unpacked by `make test-deps`)
scraping a real Triton server on loopback: two scrape jobs of the same server stand for two pods,
one of which drops a metric the policy uses (metric_relabel_configs), as a Prometheus set-up could."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.autoscale.prometheus_source import PrometheusSource
from toolkit.autoscale.scrape import ScrapeTarget
from toolkit.autoscale.signals import POLICY_METRICS
from toolkit.errors import MetricsError
from toolkit.serving import TritonServer, free_port, free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or str(ROOT / ".venv" / "prometheus" / "bin" / "prometheus")
_MAKE = ROOT / "tests" / "fixtures" / "metrics" / "make_fixtures.py"
_spec = importlib.util.spec_from_file_location("tritonrec_test_make_metrics_fixtures_prom", _MAKE)
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)

SCRAPE_INTERVAL_S = 1.0
BURST = {"fast": 60, "slow": 12}
PODS = (ScrapeTarget("triton-0", "127.0.0.1:8002", uid="a"), ScrapeTarget("triton-1", "127.0.0.1:8002", uid="b"))


def _wait_for(check, timeout_s: float, what: str):
    """Poll ``check()`` every 0.2 s until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout_s} s")


@contextlib.contextmanager
def prometheus(tmp_path: Path, metrics_port: int) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping the metrics port every second as pods triton-0 and triton-1
    (triton-1's job drops nv_inference_queue_duration_us); yields its URL; stopped by its PID."""
    target = [f"127.0.0.1:{metrics_port}"]
    config = {  # JSON is YAML: Prometheus reads it as its YAML configuration
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S:g}s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {"job_name": "triton", "static_configs": [{"targets": target, "labels": {"pod": "triton-0"}}]},
            {
                "job_name": "triton-partial",
                "static_configs": [{"targets": target, "labels": {"pod": "triton-1"}}],
                "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "nv_inference_queue_duration_us", "action": "drop"}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        _wait_for(ready, 20, "Prometheus was not ready")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.skipif(not Path(PROMETHEUS).is_file(), reason=f"no Prometheus binary at {PROMETHEUS} (`make test-deps` unpacks Debian's)")
def test_prometheus_source_gives_rates_names_a_dropped_metric_and_counts_failed_scrapes(tmp_path: Path):
    repo = make_fixtures.write_repository(tmp_path / "model_repository")
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=tmp_path / "triton.log", startup_timeout_s=60
    )
    with server, prometheus(tmp_path, metrics_port) as url, PrometheusSource(url, window_s=10 * SCRAPE_INTERVAL_S) as source:
        _wait_for(lambda: all(s.failed_scrapes == 0 for s in source.signals(PODS)), 10, "Prometheus did not scrape Triton")
        assert make_fixtures.send_load(server, BURST) == sum(BURST.values())
        # the burst's last counters in at least two scrapes (rate() needs two samples in its window)
        time.sleep(2.5 * SCRAPE_INTERVAL_S)
        full, partial = source.signals(PODS)

        for s in (full, partial):
            assert s.failed_scrapes == 0 and s.request_rate > 0 and s.pending_requests == 0
            # 2 rows per request; rate() extrapolates both series over the same sample times (5% for its edge cases)
            assert s.inference_rate == pytest.approx(2 * s.request_rate, rel=0.05)
            assert s.compute_us_per_inference > 0
        assert full.missing == () and full.queue_us_per_request >= 0
        assert partial.missing == ("nv_inference_queue_duration_us",) and partial.queue_us_per_request is None

        server.stop()  # by its PID (TritonServer.stop)
        rounds = [(full, partial)]
        _wait_for(lambda: rounds.append(source.signals(PODS)) or rounds[-1][0].failed_scrapes, 10, "a stopped server's scrape did not fail")
        stale, last_good = rounds[-1], rounds[-2]
        assert stale[0].failed_scrapes == 1 and last_good[0].failed_scrapes == 0
        # the last good round's signals, kept as they were (one query per round: never a half-seen failed scrape)
        assert (stale[0].request_rate, stale[0].scraped_at, stale[0].missing) == (
            last_good[0].request_rate,
            last_good[0].scraped_at,
            last_good[0].missing,
        )
        # Triton unloads its models on SIGINT and serves /metrics without them for about 0.5 s before
        # the port closes (tests/fixtures/metrics/shutting_down.txt): a scrape in that window names them all
        assert last_good[0].missing in ((), POLICY_METRICS)

    # Prometheus itself is gone now: a failed round for every pod, signals kept
    after = source.signals(PODS)
    assert [s.failed_scrapes for s in after] == [stale[0].failed_scrapes + 1, stale[1].failed_scrapes + 1]


@pytest.mark.skipif(not Path(PROMETHEUS).is_file(), reason=f"no Prometheus binary at {PROMETHEUS} (`make test-deps` unpacks Debian's)")
def test_a_selector_prometheus_refuses_is_an_error_naming_the_query(tmp_path: Path):
    with prometheus(tmp_path, free_port()) as url, PrometheusSource(url, selector='job=~"(triton"') as source:
        with pytest.raises(MetricsError, match=r"refused the query for selector 'job=~\"\(triton\"' and pod label 'pod'.*400.*regexp"):
            source.signals(PODS)

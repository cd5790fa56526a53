"""PodScraper against a real Triton server on loopback: two scrapes around a bounded burst of
requests, then one after the server is stopped (by its PID, through TritonServer.stop)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from toolkit.autoscale.scrape import PodScraper, ScrapeTarget
from toolkit.serving import TritonServer, free_ports

pytestmark = pytest.mark.integration

_MAKE = Path(__file__).resolve().parents[1] / "fixtures" / "metrics" / "make_fixtures.py"
_spec = importlib.util.spec_from_file_location("tritonrec_test_make_metrics_fixtures", _MAKE)
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)

BURST = {"fast": 60, "slow": 12}  # requests per model: bounded in count (and send_load's 20 s)


def test_scrapes_of_a_real_server_give_rates_after_a_burst_and_a_failure_once_it_is_stopped(tmp_path: Path):
    repo = make_fixtures.write_repository(tmp_path / "model_repository")
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=tmp_path / "server.log", startup_timeout_s=60
    )
    target = ScrapeTarget("triton-0", f"127.0.0.1:{metrics_port}", uid="uid-0")
    with PodScraper(timeout_s=2.0) as scraper:
        with server:
            (before,) = scraper.scrape([target])
            assert before.failed_scrapes == 0 and before.missing == () and before.request_rate is None  # first scrape
            sent = make_fixtures.send_load(server, BURST)
            assert sent == sum(BURST.values())
            (after,) = scraper.scrape([target])
        assert server.process is not None and server.process.poll() is not None  # stopped
        (gone,) = scraper.scrape([target])

    assert after.failed_scrapes == 0 and after.missing == ()
    assert after.request_rate > 0 and after.inference_rate == pytest.approx(2 * after.request_rate)  # 2 rows per request
    assert after.pending_requests == 0  # every request of the burst has finished
    assert after.queue_us_per_request >= 0 and after.compute_us_per_inference > 0
    # the server's counters are exact: all the burst's requests, over the time between the scrapes
    assert after.request_rate * (after.scraped_at - before.scraped_at) == pytest.approx(sent, rel=1e-9)
    assert gone.failed_scrapes == 1 and gone.scraped_at == after.scraped_at and gone.request_rate == after.request_rate

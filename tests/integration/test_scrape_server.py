"""PodScraper against a real Triton server on loopback: two scrapes around a bounded burst of
requests, then one after the server is stopped (by its PID, through TritonServer.stop)."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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


def _queue_policy(repo: Path, name: str, **policy) -> None:
    """Copy the ``slow`` model (20 ms per execution, one instance) as ``name``, one request per execution,
    no batching delay, with ``dynamic_batching.default_queue_policy`` fields ``policy``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse((repo / "slow" / "config.pbtxt").read_text(), mc.ModelConfig())
    config.name, config.max_batch_size = name, 1
    config.dynamic_batching.max_queue_delay_microseconds = 0
    for key, value in policy.items():
        setattr(config.dynamic_batching.default_queue_policy, key, value)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text((repo / "slow" / "1" / "model.py").read_text())
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))


def test_requests_the_queue_timeout_rejects_are_the_rejected_rate(tmp_path: Path):
    """The bundled server counts requests whose queue timeout expired (``timeout_action: REJECT``) as
    ``nv_inference_request_failure{reason="REJECTED"}``, and the scraper's ``rejected_rate`` over the
    interval is exactly what the clients saw fail. 8 clients at once, 5 requests each (bounded), into a
    20 ms model with a 2 ms queue timeout: most are rejected.

    What a full queue (``max_queue_size``) turns away is *not* counted by Triton 2.51 (the client gets
    "Exceeds maximum queue size", every failure counter stays 0): the second model checks that, so
    the docs that say to bound the queue with a timeout rather than a size stay true."""
    from tritonclient.grpc import model_config_pb2 as mc

    from toolkit.serving import InferenceClient

    repo = make_fixtures.write_repository(tmp_path / "model_repository")
    _queue_policy(repo, "timeout", default_timeout_microseconds=2000, timeout_action=mc.ModelQueuePolicy.REJECT)
    _queue_policy(repo, "full", max_queue_size=1)
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=tmp_path / "server.log", startup_timeout_s=60
    )
    target = ScrapeTarget("triton-0", f"127.0.0.1:{metrics_port}", uid="uid-0")

    def client(model: str) -> tuple[int, list[str]]:
        ok, errors = 0, []
        with InferenceClient(server.http_url, protocol="http", model_name=model) as c:
            for _ in range(5):
                try:
                    c.infer({"x": np.asarray([[0, 1, 2]], dtype=np.int64)})
                    ok += 1
                except Exception as e:  # the rejection, as the client sees it
                    errors.append(str(e))
        return ok, errors

    def burst(model: str) -> tuple[int, list[str]]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(client, [model] * 8))
        return sum(r[0] for r in results), [e for r in results for e in r[1]]

    with PodScraper(timeout_s=2.0) as scraper, server:
        (before,) = scraper.scrape([target])
        ok, errors = burst("timeout")
        (after,) = scraper.scrape([target])
        ok_full, errors_full = burst("full")
        (after_full,) = scraper.scrape([target])
    assert ok + len(errors) == 40 and errors and ok > 0
    elapsed = after.scraped_at - before.scraped_at
    assert after.rejected_rate * elapsed == pytest.approx(len(errors), rel=1e-9)
    assert after.request_rate * elapsed == pytest.approx(ok, rel=1e-9)
    assert ok_full + len(errors_full) == 40 and errors_full and all("Exceeds maximum queue size" in e for e in errors_full)
    assert after_full.rejected_rate == 0.0  # Triton 2.51 does not count them

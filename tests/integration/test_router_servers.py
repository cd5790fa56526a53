"""The router against real Triton servers on 127.0.0.31-33 (the same ports on each, as pods): load-aware
picks, ejection of a stopped server with one retry elsewhere and its re-admission once restarted, and
endpoint sets that change (a static list, and a Service's EndpointSlices in kmock's emulator).

Each server serves toolkit.serving.delay_model: two fast replicas (5 ms per request, 2 instances,
400 requests/s each) and a slow one (20 ms, 1 instance, 50 requests/s).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import InferenceError, ServingError
from toolkit.serving import TritonServer, free_ports
from toolkit.serving.delay_model import DELAY_MODEL_INPUT, DELAY_MODEL_WIDTH, write_delay_model
from toolkit.serving.endpoints import DRAINING_ANNOTATION, EndpointSliceEndpoints, StaticEndpoints
from toolkit.serving.load import closed_loop, open_loop
from toolkit.serving.router import RoutedInferenceClient, Router

pytestmark = pytest.mark.integration

HOSTS = ("127.0.0.31", "127.0.0.32", "127.0.0.33")
SLOW = "127.0.0.33"
MODEL = "delay"
ROW = {DELAY_MODEL_INPUT: np.ones((1, DELAY_MODEL_WIDTH), np.float32)}


def _ports_free_on_every_host() -> dict[str, int]:
    for _ in range(20):
        ports = free_ports(3, HOSTS[0])
        try:
            for host in HOSTS[1:]:
                for port in ports:
                    with socket.socket() as s:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        s.bind((host, port))
        except OSError:
            continue
        return dict(zip(("http_port", "grpc_port", "metrics_port"), ports, strict=True))
    raise RuntimeError("no three ports free on every test address")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TritonServer]]:
    ports = _ports_free_on_every_host()
    started: dict[str, TritonServer] = {}
    try:
        for host in HOSTS:
            repo = tmp_path_factory.mktemp(host)
            slow = host == SLOW
            write_delay_model(repo, MODEL, delay_ms=20 if slow else 5, instances=1 if slow else 2)
            started[host] = TritonServer(repo, host=host, startup_timeout_s=60, **ports).start()
        yield started
    finally:
        # Triton takes ~3 s to stop (it polls its models' unloading once a second): stop them side by side
        stoppers = [threading.Thread(target=server.stop, kwargs={"timeout_s": 10}) for server in started.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def _send_through(client: RoutedInferenceClient) -> Callable[[int, object], str]:
    def send(i: int, connection: object) -> str:
        client.infer(ROW, connection=connection)
        return client.last_address

    return send


def test_load_aware_policies_send_less_traffic_to_the_slow_replica_than_round_robin(servers: dict[str, TritonServer]) -> None:
    addresses = [servers[h].grpc_url for h in HOSTS]
    slow = servers[SLOW].grpc_url
    results = {}
    for policy in ("least_outstanding", "peak_ewma", "round_robin"):
        router = Router(addresses, protocol="grpc", policy=policy, model_name=MODEL, seed=0)
        with RoutedInferenceClient(router, model_name=MODEL) as client:
            # 150 requests/s for 3 s: round-robin gives the slow replica 50/s, all it can take
            results[policy] = open_loop(_send_through(client), rate_rps=150, n_requests=450, max_duration_s=10, connections=6, seed=1)
            # 64 threads shared the router: its counts add up and nothing is left in flight
            statuses = router.replicas()
            assert sum(r.requests for r in statuses) == 450 and all(r.outstanding == 0 for r in statuses), statuses
    lo, ewma, rr = results["least_outstanding"], results["peak_ewma"], results["round_robin"]
    assert lo.errors == ewma.errors == rr.errors == 0
    assert rr.shares()[slow] == pytest.approx(1 / 3, abs=0.01)  # by construction
    # least-outstanding sends to the slow replica only when both fast ones have more in flight
    # (about 10% measured here); 0.2 leaves room for a loaded machine, and is far from 1/3
    assert lo.shares().get(slow, 0.0) < 0.2, lo.shares()
    assert lo.percentile_ms(99) < rr.percentile_ms(99)
    # peak EWMA learns the slow replica's 4x latency from the router's observations of its answers
    # and sends to it only when the fast ones hold 4x the work: less than least-outstanding does
    assert ewma.shares().get(slow, 0.0) < 0.2, ewma.shares()
    assert ewma.percentile_ms(99) < rr.percentile_ms(99)


def test_a_malformed_request_is_neither_retried_nor_held_against_the_replica(servers: dict[str, TritonServer]) -> None:
    import tritonclient.grpc as grpcclient

    address = servers[HOSTS[0]].grpc_url
    with Router([address], protocol="grpc", model_name=MODEL, start=False) as router:
        bad = grpcclient.InferInput(DELAY_MODEL_INPUT, [1, 3], "FP32")
        bad.set_data_from_numpy(np.ones((1, 3), np.float32))
        with pytest.raises(InferenceError, match="unexpected shape"):
            router.infer(MODEL, [bad])
        (status,) = router.replicas()
        assert status.healthy and status.requests == 1 and status.failures == 0 and status.outstanding == 0


def test_endpoint_list_changes_are_picked_up_within_a_refresh(servers: dict[str, TritonServer]) -> None:
    a, b = servers[HOSTS[0]].http_url, servers[HOSTS[1]].http_url
    source = StaticEndpoints([a])
    router = Router(source, protocol="http", model_name=MODEL, refresh_every_s=0.2, health_every_s=0.2)
    with RoutedInferenceClient(router, model_name=MODEL) as client:
        source.set([a, b])  # scale-up
        waited = _wait_for(lambda: router.healthy() == sorted([a, b]), 3, "the new endpoint is admitted")
        assert waited < 2
        seen = Counter()
        for _ in range(20):
            client.infer(ROW)
            seen[client.last_address] += 1
        assert set(seen) == {a, b}
        # tritonclient.http's client is per thread: four threads at once, none of them fails
        load = closed_loop(_send_through(client), concurrency=4, n_requests=80, max_duration_s=20)
        assert load.errors == 0 and len(load.records) == 80 and set(load.shares()) == {a, b}
        assert all(r.outstanding == 0 for r in router.replicas())
        source.set([b])  # scale-down
        _wait_for(lambda: [r.address for r in router.replicas()] == [b], 3, "the removed endpoint leaves the set")
        for _ in range(10):
            client.infer(ROW)
            assert client.last_address == b


def test_a_stopped_replica_is_ejected_retried_elsewhere_and_readmitted_after_restart(servers: dict[str, TritonServer]) -> None:
    import tritonclient.http as httpclient

    a, b = servers[HOSTS[0]], servers[HOSTS[1]]
    x = httpclient.InferInput(DELAY_MODEL_INPUT, [1, DELAY_MODEL_WIDTH], "FP32")
    x.set_data_from_numpy(ROW[DELAY_MODEL_INPUT])
    # no background checks yet: both routers still count a healthy when it stops, as between two
    # checks when a pod crashes; round-robin goes to a (the first, sorted) first
    once = Router([a.http_url, b.http_url], protocol="http", policy="round_robin", start=False)
    retry = Router([a.http_url, b.http_url], protocol="http", policy="round_robin", model_name=MODEL, health_every_s=0.2, start=False)
    try:
        assert once.healthy() == retry.healthy() == [a.http_url, b.http_url]
        a.stop(timeout_s=1)  # SIGINT, then SIGKILL after 1 s: Triton would wait out its clients' open connections
        with pytest.raises(ServingError, match=f"failed on {a.http_url} "):
            once.infer(MODEL, [x], idempotent=False)  # not resent
        assert once.healthy() == [b.http_url]

        first = retry.infer(MODEL, [x])
        assert (first.address, first.attempts) == (b.http_url, 2)  # retried once, elsewhere
        stopped = next(r for r in retry.replicas() if r.address == a.http_url)
        assert not stopped.healthy and stopped.failures == 1 and "refused" in stopped.last_error.lower()
        assert all(retry.infer(MODEL, [x]).address == b.http_url for _ in range(4))

        retry.start()  # the background readiness checks re-admit it once it answers
        a.start()
        waited = _wait_for(lambda: a.http_url in retry.healthy(), 10, "the restarted server is re-admitted")
        assert waited < 5  # checks every 0.2 s; the server's own start-up is most of it
        seen = Counter(retry.infer(MODEL, [x]).address for _ in range(10))
        assert seen == {a.http_url: 5, b.http_url: 5}
    finally:
        once.close()
        retry.close()


def test_endpoint_slices_give_ready_pods_that_are_not_draining(servers: dict[str, TritonServer], kube_api) -> None:
    from kubernetes import client

    ns, service = "default", "triton"
    configuration = client.Configuration()
    configuration.host = kube_api.url
    api = client.ApiClient(configuration)
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    hosts = {f"triton-{i}": h for i, h in enumerate(HOSTS)}
    for name in hosts:
        metadata = {"name": name, "namespace": ns, "labels": {"app": "triton"}}
        core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata})
    http_port = servers[HOSTS[0]].http_port

    def endpoint(name: str, ready: bool) -> dict:
        return {"addresses": [hosts[name]], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": name, "namespace": ns}}

    slice_body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "triton-abc", "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": http_port, "protocol": "TCP"}, {"name": "grpc", "port": 1, "protocol": "TCP"}],
        "endpoints": [endpoint("triton-0", True), endpoint("triton-1", True), endpoint("triton-2", False)],
    }
    other = {**slice_body, "metadata": {"name": "other-xyz", "namespace": ns, "labels": {"kubernetes.io/service-name": "other"}}}
    discovery.create_namespaced_endpoint_slice(ns, slice_body)
    discovery.create_namespaced_endpoint_slice(ns, other)  # another Service's slice: never ours

    source = EndpointSliceEndpoints(service, ns, port="http", api_client=api)
    a, b = f"{HOSTS[0]}:{http_port}", f"{HOSTS[1]}:{http_port}"
    assert sorted(source.endpoints()) == [a, b]  # triton-2 is not ready; no Service object yet: all pods are read
    service_path = f"/api/v1/namespaces/{ns}/services/{service}"
    core.create_namespaced_service(
        ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service}, "spec": {"selector": {"app": "triton"}}}
    )
    assert sorted(source.endpoints()) == [a, b]  # the pods are listed with its selector now
    assert kube_api.requests("get", service_path) == 2
    assert sorted(EndpointSliceEndpoints(service, ns, port=http_port, api_client=api).endpoints()) == [a, b]
    assert EndpointSliceEndpoints(service, ns, port="metrics", api_client=api).endpoints() == []  # no such port

    router = Router(source, protocol="http", model_name=MODEL, refresh_every_s=0.2, health_every_s=0.2)
    with RoutedInferenceClient(router, model_name=MODEL) as routed:
        assert router.healthy() == [a, b]
        # the controller marks triton-1 to go in a scale-down: the router drops it within a refresh
        core.patch_namespaced_pod("triton-1", ns, {"metadata": {"annotations": {DRAINING_ANNOTATION: "true"}}})
        waited = _wait_for(lambda: [r.address for r in router.replicas()] == [a], 3, "the draining pod leaves the set")
        assert waited < 2
        for _ in range(5):
            routed.infer(ROW)
            assert routed.last_address == a
    api.close()


def test_endpoint_slice_source_names_the_service_when_the_api_cannot_be_read() -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens
    with client.ApiClient(configuration) as api:
        source = EndpointSliceEndpoints("triton", "prod", port="grpc", api_client=api, request_timeout_s=1)
        with pytest.raises(ServingError, match="cannot read the EndpointSlices of Service prod/triton"):
            source.endpoints()


def test_cli_infer_spreads_a_served_dlrm_over_two_replicas(trained_movielens, movielens_dir: Path, tmp_path: Path) -> None:
    from toolkit.repository import build_repository

    repository = tmp_path / "model_repository"
    build_repository(repository, checkpoint=trained_movielens.checkpoint, onnx_model=trained_movielens.onnx, variants=["onnx_python"])
    ports = _ports_free_on_every_host()
    replicas = [TritonServer(repository, host=h, startup_timeout_s=120, **ports) for h in HOSTS[:2]]
    try:
        for server in replicas:
            server.start()
        urls = [arg for server in replicas for arg in ("--url", server.grpc_url)]
        done = subprocess.run(
            [sys.executable, "-m", "toolkit", "infer", "--model", "dlrm_onnx_python", *urls, "--protocol", "grpc"]
            + ["--routing", "round_robin", "--checkpoint", str(trained_movielens.checkpoint), "--data-dir", str(movielens_dir)]
            + ["--rows", "512", "--batch-size", "64", "--latency-requests", "20"],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        for server in replicas:
            server.stop()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out  # exit 0: served AUC equals offline AUC through the router
    assert "2 replicas (round_robin)" in out
    # 512 rows in 8 batches of 64, then 10 warm-up and 20 timed single rows: 38 requests, split 19/19
    for server in replicas:
        assert f"{server.grpc_url} 19 (50%, 0 failed)" in out, out


def test_cli_infer_refuses_an_unknown_routing_policy() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "infer", "--model", "m", "--url", "a:1", "--url", "b:2", "--routing", "fastest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "fastest" in out and "least_outstanding, peak_ewma, round_robin, pinned" in out, out
    assert "Traceback" not in out

"""EndpointSliceEndpoints(watch=True) against kmock's Kubernetes API over HTTP: a router whose periodic
refresh is 30 s sees a scale event within about a second because the source's watch wakes it, and in
steady state it answers from its list without reading the API."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kubernetes import client

from toolkit.errors import ServingError
from toolkit.serving import free_ports
from toolkit.serving.endpoints import DRAINING_ANNOTATION, EndpointSliceEndpoints
from toolkit.serving.router import Router

NS, SERVICE = "default", "triton"
SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
# Nothing listens on these: the router lists them as endpoints (not healthy), which is all this checks.
HOSTS = ("127.0.0.41", "127.0.0.42", "127.0.0.43")


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _slice(port: int, names: list[str]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "triton-abc", "namespace": NS, "labels": {"kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [HOSTS[int(n[-1])]], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": n, "namespace": NS}}
            for n in names
        ],
    }


@pytest.fixture
def api(kube_api):
    configuration = client.Configuration()
    configuration.host = kube_api.url
    with client.ApiClient(configuration) as api_client:
        yield api_client


def test_a_watched_source_wakes_the_router_at_a_scale_event_and_reads_nothing_in_between(kube_api, api) -> None:
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    for i in range(3):
        metadata = {"name": f"triton-{i}", "namespace": NS, "labels": {"app": "triton"}}
        core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata})
    port = free_ports(1)[0]
    a, b, c = (f"{h}:{port}" for h in HOSTS)
    discovery.create_namespaced_endpoint_slice(NS, _slice(port, ["triton-0", "triton-1"]))

    source = EndpointSliceEndpoints(SERVICE, NS, port="http", api_client=api, watch=True, resync_every_s=60, min_relist_interval_s=0.05)
    router = Router(source, protocol="http", refresh_every_s=30, health_every_s=30, health_timeout_s=0.2)
    try:
        assert sorted(r.address for r in router.replicas()) == [a, b]
        # a scale-up: the EndpointSlice controller adds the new pod to the slice
        discovery.patch_namespaced_endpoint_slice("triton-abc", NS, _slice(port, ["triton-0", "triton-1", "triton-2"]))
        waited = _wait_for(lambda: sorted(r.address for r in router.replicas()) == [a, b, c], 5, "the new endpoint joins")
        assert waited < 2  # the router's own refresh is 30 s away: only the watch can have woken it
        # the controller marks triton-1 to go: the pod watch sees the annotation
        core.patch_namespaced_pod("triton-1", NS, {"metadata": {"annotations": {DRAINING_ANNOTATION: "true"}}})
        waited = _wait_for(lambda: sorted(r.address for r in router.replicas()) == [a, c], 5, "the draining pod leaves")
        assert waited < 2
        # steady state: nothing changes, nothing is read (a polling source would list twice a second here)
        lists_before = kube_api.requests("get", SLICES_PATH)
        router.refresh()
        assert sorted(source.endpoints()) == [a, c]
        time.sleep(1.0)
        assert kube_api.requests("get", SLICES_PATH) == lists_before
    finally:
        router.close()
    relist_thread = next(t for t in source._threads if t.name == "endpointslice-relist")
    assert not relist_thread.is_alive()  # it stops with the router
    start = time.monotonic()
    assert source.wait_changed(5) is False
    assert time.monotonic() - start < 1  # closed: returns at once


def test_a_watched_source_that_cannot_read_the_api_names_the_service() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens
    with client.ApiClient(configuration) as api_client:
        source = EndpointSliceEndpoints("triton", "prod", port="grpc", api_client=api_client, request_timeout_s=1, watch=True)
        try:
            with pytest.raises(ServingError, match="cannot read the EndpointSlices of Service prod/triton"):
                source.endpoints()
        finally:
            source.close()


@pytest.mark.parametrize(("field", "value"), [("resync_every_s", 0.0), ("watch_timeout_s", 0.5), ("min_relist_interval_s", -1.0)])
def test_bad_watch_settings_are_refused_with_the_value(field: str, value: float) -> None:
    with pytest.raises(ServingError, match=rf"EndpointSlice watch of default/triton: need resync_every_s > 0.*{value}"):
        EndpointSliceEndpoints("triton", port="http", watch=True, **{field: value})


def test_the_controller_marks_pods_with_the_annotation_the_routers_leave_out() -> None:
    from toolkit.autoscale import kube

    # two definitions (the controller does not import the serving package): they must not drift apart
    assert kube.DRAINING_ANNOTATION == DRAINING_ANNOTATION == "tritonrec.io/draining"

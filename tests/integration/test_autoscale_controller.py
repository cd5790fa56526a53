"""The controller end to end: kmock's Kubernetes API emulator over HTTP, real Triton servers on
127.0.0.2-4 standing in for the Deployment's pods, load from the router over tritonclient.

A test-side stand-in for the kubelet (:class:`Kubelet`) watches the Deployment's ``spec.replicas``
through the API, starts or stops a bundled Triton server per pod on its own loopback address
(same ports, ``--http-address/--grpc-address/--metrics-address``), writes the Pod objects (pod IP;
Ready only after the server answers ``/v2/health/ready``) and the Service's EndpointSlice, and
removes pods as a ReplicaSet does (not-ready first, then the lowest ``pod-deletion-cost``).

One scenario, in order (each step checks one claim of issue 10's "Real runs"):

1. a 409 is injected on the scale patch; two controllers start, one leads;
2. under load the leader scales up (through the 409);
3. under steady load the replica count does not flap;
4. one server stops answering (SIGSTOP): with the load gone the controller holds instead of
   scaling down, and a condition names the pod;
5. the leader is killed (its thread stopped, the Lease not released): the standby takes over
   within the lease duration;
6. with the server back and light load, the new leader scales down after the (shortened)
   stabilization window, gracefully: the pod chosen to go is drained first and no request fails.
"""

from __future__ import annotations

import logging
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.autoscale import controller as ctl
from toolkit.autoscale.kube import DELETION_COST_ANNOTATION, DRAINING_ANNOTATION, KubeClient, RetryPolicy, TargetInfo, rfc3339
from toolkit.autoscale.leader import LeaderElectionConfig
from toolkit.serving import TritonServer, free_ports

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

NS = "recs"
APP = "ranker"
MODEL = "slow"
SERVICE_TIME_S = 0.04  # per request, one instance, no batching: ~25 requests/s per replica
SELECTOR = TargetInfo(APP, 0, f"app={APP}")
IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
POLICY = None  # the controller's default: toolkit.autoscale.policy.TritonrecAutoscaler
# short, for the test; generous enough for two cores shared by three servers, the load and the emulator
LEASE = {"lease_duration_s": 3.0, "renew_deadline_s": 2.0, "retry_period_s": 0.5}

SLOW_MODEL = f"""
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            time.sleep({SERVICE_TIME_S})
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", (x * 2).astype(np.float32))]))
        return responses
"""


def _write_model(repo: Path) -> Path:
    config = mc.ModelConfig(
        name=MODEL,
        backend="python",
        max_batch_size=0,
        input=[mc.ModelInput(name="x", data_type=mc.TYPE_FP32, dims=[1])],
        output=[mc.ModelOutput(name="y", data_type=mc.TYPE_FP32, dims=[1])],
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "config.pbtxt").write_text(text_format.MessageToString(config))
    (repo / MODEL / "1" / "model.py").write_text(textwrap.dedent(SLOW_MODEL))
    return repo


# -- the kubelet stand-in --------------------------------------------------------------------------
@dataclass
class FakePod:
    name: str
    ip: str
    server: TritonServer
    created: float
    frozen: bool = False


class Kubelet(threading.Thread):
    """Keeps one Triton server per replica of the Deployment, and the Pod and EndpointSlice objects in step."""

    def __init__(self, kube: KubeClient, repo: Path, ports: dict[str, int], log_dir: Path) -> None:
        super().__init__(name="kubelet", daemon=True)
        self.kube, self.repo, self.ports, self.log_dir = kube, repo, ports, log_dir
        self.pods: dict[str, FakePod] = {}
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.replica_history: list[tuple[float, int]] = []  # (time, spec.replicas) at each change seen
        self._lock = threading.Lock()
        self._count = 0

    def run(self) -> None:  # servers are started from this thread, which outlives them (pdeathsig)
        try:
            while not self.stop_event.is_set():
                self._reconcile()
                self.stop_event.wait(0.1)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
            log.exception("kubelet stand-in failed")
        finally:
            for pod in list(self.pods.values()):
                self._stop_server(pod)

    def _reconcile(self) -> None:
        replicas = self.kube.read_target(NS, APP).replicas
        if not self.replica_history or self.replica_history[-1][1] != replicas:
            self.replica_history.append((time.monotonic(), replicas))
        if len(self.pods) < replicas:
            self._add_pod()
        elif len(self.pods) > replicas:
            self._remove_pod()

    def _add_pod(self) -> None:
        used = {p.ip for p in self.pods.values()}
        ip = next(i for i in IPS if i not in used)
        name = f"{APP}-{self._count}"
        self._count += 1
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": APP}, "uid": f"uid-{name}", "creationTimestamp": rfc3339()},
            "spec": {"containers": [{"name": "triton", "image": "tritonserver"}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "False"}]},
        }
        self.kube.core.create_namespaced_pod(NS, body)
        server = TritonServer(self.repo, host=ip, log_path=self.log_dir / f"{name}.log", startup_timeout_s=60, **self.ports)
        server.start()  # returns once /v2/health/ready and the model are ready
        with self._lock:
            self.pods[name] = FakePod(name, ip, server, time.monotonic())
        self.kube.core.patch_namespaced_pod_status(name, NS, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        self._write_endpoints()

    def _remove_pod(self) -> None:
        listed = {p.name: p for p in self.kube.list_pods(NS, SELECTOR)}

        def rank(pod: FakePod) -> tuple:  # the ReplicaSet's order: not ready first, lowest cost, newest
            info = listed.get(pod.name)
            cost = int((info.annotations if info else {}).get(DELETION_COST_ANNOTATION, 0))
            return (bool(info and info.ready), cost, -pod.created)

        victim = min(self.pods.values(), key=rank)
        with self._lock:
            del self.pods[victim.name]
        self.kube.core.delete_namespaced_pod(victim.name, NS)
        self._write_endpoints()
        time.sleep(0.5)  # the routers re-read the endpoints about every 0.5 s (a pod's preStop sleep)
        self._stop_server(victim)

    def _stop_server(self, pod: FakePod) -> None:
        if pod.frozen and pod.server.process is not None:
            os.kill(pod.server.process.pid, signal.SIGCONT)
        pod.server.stop()

    def _write_endpoints(self) -> None:
        """The Service's EndpointSlice, as the EndpointSlice controller keeps it (ready pods' HTTP ports)."""
        endpoints = [
            {"addresses": [p.ip], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": p.name, "namespace": NS}}
            for p in sorted(self.pods.values(), key=lambda p: p.name)
        ]
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{APP}-http", "namespace": NS, "labels": {"kubernetes.io/service-name": APP}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": self.ports["http_port"], "protocol": "TCP"}],
            "endpoints": endpoints,
        }
        self._put_slice(body)

    def _put_slice(self, body: dict) -> None:
        from kubernetes import client

        discovery = client.DiscoveryV1Api(self.kube.api_client)
        try:
            discovery.create_namespaced_endpoint_slice(NS, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            discovery.patch_namespaced_endpoint_slice(body["metadata"]["name"], NS, {"endpoints": body["endpoints"]})

    def freeze(self, name: str) -> None:
        """Stop the pod's server answering anything (SIGSTOP), as a hung process or a dropped network."""
        pod = self.pods[name]
        pod.frozen = True
        os.kill(pod.server.process.pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        pod = self.pods[name]
        os.kill(pod.server.process.pid, signal.SIGCONT)
        pod.frozen = False

    def ready_count(self) -> int:
        return len(self.pods)


# -- load ------------------------------------------------------------------------------------------
@dataclass
class Load:
    """Closed-loop load from ``threads`` threads through one router, bounded in time and count."""

    router: object
    threads: int
    max_requests: int = 20_000
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.threads):
            worker = threading.Thread(target=self._loop, name=f"load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _loop(self) -> None:
        x = httpclient.InferInput("x", [1], "FP32")
        x.set_data_from_numpy(np.ones(1, np.float32))
        while not self._stop.is_set():
            with self._lock:
                if self.ok + len(self.errors) >= self.max_requests:
                    return
            try:
                self.router.infer(MODEL, [x])
            except Exception as exc:  # counted, and asserted on by the test
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            with self._lock:
                self.ok += 1

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)


# -- the scenario ----------------------------------------------------------------------------------
def _wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.1, explain=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s: {what}" + (f"; {explain()}" if explain else ""))


class Candidate:
    """One controller process stand-in: ``ctl.run`` in a thread with its own client and Lease identity."""

    def __init__(self, url: str, identity: str, config: ctl.ControllerConfig) -> None:
        self.kube = KubeClient.for_url(url, RetryPolicy(attempts=4, initial_backoff_s=0.05, max_backoff_s=0.2, request_timeout_s=2.0))
        self.identity = identity
        self.stop = threading.Event()
        election = LeaderElectionConfig(
            namespace=NS, lease_name="tritonrec-autoscaler", identity=identity, release_on_cancel=False, **LEASE
        )
        controller = ctl.Controller(self.kube, config, **({"policy": POLICY} if POLICY is not None else {}))
        self.thread = threading.Thread(
            target=ctl.run, args=(self.kube, config, election, self.stop), kwargs={"controller": controller}, name=identity, daemon=True
        )

    def start(self) -> Candidate:
        self.thread.start()
        return self

    def kill(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def _autoscaler(metrics_port: int) -> dict:
    return {
        "apiVersion": "tritonrec.io/v1alpha1",
        "kind": "TritonAutoscaler",
        "metadata": {"name": APP, "namespace": NS, "uid": "uid-autoscaler", "generation": 1},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": 1,
            "maxReplicas": 3,
            "slo": {"p99LatencyMs": 150},
            "capacity": {"perReplicaRps": 20},
            "syncPeriodSeconds": 1,
            "panicWindowSeconds": 2,
            "metricsPort": metrics_port,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 6, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 2}]},
            },
        },
    }


def _deployment() -> dict:
    labels = {"app": APP}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "triton", "image": "tritonserver"}]}},
        },
        "status": {"replicas": 1},
    }


@pytest.fixture
def world(kube_api, tmp_path: Path) -> Iterator[dict]:
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    kube = KubeClient.for_url(kube_api.url)
    kube.apps.create_namespaced_deployment(NS, _deployment())
    kube.custom.create_namespaced_custom_object("tritonrec.io", "v1alpha1", NS, "tritonautoscalers", _autoscaler(ports["metrics_port"]))
    repo = _write_model(tmp_path / "repo")
    kubelet = Kubelet(kube, repo, ports, tmp_path)
    kubelet.start()
    try:
        yield {"api": kube_api, "kube": kube, "kubelet": kubelet, "ports": ports}
    finally:
        kubelet.stop_event.set()
        kubelet.join(timeout=60)


def _status(kube: KubeClient) -> dict:
    return kube.custom.get_namespaced_custom_object("tritonrec.io", "v1alpha1", NS, "tritonautoscalers", APP).get("status", {})


def _replicas(kube: KubeClient) -> int:
    return kube.read_target(NS, APP).replicas


def _holder(kube: KubeClient) -> str | None:
    lease = kube.read_lease(NS, "tritonrec-autoscaler")
    return (lease or {}).get("spec", {}).get("holderIdentity")


def test_controller_scales_real_triton_pods_up_and_gracefully_down_with_a_standby(world: dict) -> None:
    from toolkit.serving.endpoints import EndpointSliceEndpoints
    from toolkit.serving.router import Router

    api, kube, kubelet = world["api"], world["kube"], world["kubelet"]
    started = time.monotonic()
    _wait_for(lambda: kubelet.ready_count() == 1, 60, "the first pod's server is ready")

    # 1. a conflict on the first scale patch; two controllers, the first leads
    conflict = api.fail("patch", f"/apis/apps/v1/namespaces/{NS}/deployments/{APP}/scale", 409, times=1)
    config = ctl.ControllerConfig(namespaces=(NS,), tick_s=0.2, drain_grace_s=1.0, drain_timeout_s=10.0, scrape_timeout_s=0.5)
    leader = Candidate(api.url, "controller-a", config).start()
    _wait_for(lambda: _holder(kube) == "controller-a", 5, "controller-a leads")
    standby = Candidate(api.url, "controller-b", config).start()

    router = Router(
        EndpointSliceEndpoints(APP, NS, port="http", api_client=kube.api_client, request_timeout_s=2.0),
        protocol="http",
        model_name=MODEL,
        refresh_every_s=0.3,
        health_every_s=0.5,
        request_timeout_s=10.0,
    )
    try:
        # 2. scale up under load (8 closed-loop clients against one ~25 req/s replica), through the 409
        load = Load(router, threads=8).start()
        load_started = time.monotonic()
        _wait_for(lambda: _replicas(kube) >= 2, 25, "scale-up under load", explain=lambda: _status(kube))
        assert api.count(conflict) == 1, "the injected 409 was met"
        _wait_for(lambda: kubelet.ready_count() == _replicas(kube) >= 2, 30, "the new pods are ready")
        scaled_up_to = _replicas(kube)
        scale_up_s = time.monotonic() - load_started

        # 3. steady load: no flapping for 6 s (the count may still rise, never fall)
        steady_from = time.monotonic()
        time.sleep(6)
        during = [n for t, n in kubelet.replica_history if t >= steady_from]
        assert all(b >= a for a, b in zip([scaled_up_to, *during], during, strict=False)), kubelet.replica_history
        load.stop()
        assert not load.errors, load.errors[:3]
        peak = _replicas(kube)

        # 4. one server stops answering; the load is gone: hold (no scale-down) for longer than the window
        frozen = sorted(kubelet.pods)[-1]
        kubelet.freeze(frozen)
        time.sleep(8)  # > the 6 s scale-down stabilization window plus a few syncs
        assert _replicas(kube) >= peak, "no scale-down while a ready pod's metrics are missing"
        status = _status(kube)
        messages = " ".join(c.get("message", "") for c in status.get("conditions", []))
        assert frozen in messages, status.get("conditions")

        # 5. kill the leader; the standby takes over within the lease duration
        killed_at = time.monotonic()
        leader.kill()
        _wait_for(
            # client-go's rule: the standby counts the lease from when it last saw it change (up to one retry period
            # after the leader's last renewal) and tries once per retry period, so lease + 2 retry periods is the
            # ideal; the controllers, the emulator and the kubelet stand-in share this process's GIL with a load
            # generator on a 2-core machine, so two more retry periods and 1 s of scheduling slack are allowed.
            lambda: _holder(kube) == "controller-b",
            LEASE["lease_duration_s"] + 4 * LEASE["retry_period_s"] + 1.0,
            "standby takes over",
        )
        took_over_s = time.monotonic() - killed_at

        # 6. the server answers again, light load: the new leader scales down gracefully
        kubelet.thaw(frozen)
        light = Load(router, threads=1).start()
        light_started = time.monotonic()
        _wait_for(lambda: _replicas(kube) < peak, 45, "scale-down after the stabilization window", explain=lambda: _status(kube))
        scale_down_s = time.monotonic() - light_started
        drained = [p for p in kube.list_pods(NS, SELECTOR) if p.annotations.get(DRAINING_ANNOTATION) == "true"]
        events = {e.reason for e in kube.core.list_namespaced_event(NS).items}
        assert "Draining" in events and "SuccessfulRescale" in events
        _wait_for(lambda: kubelet.ready_count() == _replicas(kube), 20, "the drained pod is gone")
        time.sleep(1)
        light.stop()
        assert light.ok > 0
        assert not light.errors, f"requests failed during the scale-down: {light.errors[:3]}"
        assert not drained or all(p.name not in kubelet.pods for p in drained)
        status = _status(kube)
        assert status["currentReplicas"] <= peak and status["lastScaleTime"]
        log.info(
            "scenario %.1f s: 1 -> %d replicas %.1f s after the load began (all ready), peak %d, take-over %.2f s after the kill, "
            "first scale-down %.1f s into the light load, %d light-load requests, 0 failed",
            time.monotonic() - started,
            scaled_up_to,
            scale_up_s,
            peak,
            took_over_s,
            scale_down_s,
            light.ok,
        )
    finally:
        router.close()
        standby.kill()
        leader.kill() if leader.thread.is_alive() else None
    assert kubelet.error is None, kubelet.error


def test_run_command_leads_through_a_kubeconfig_and_releases_the_lease_on_sigterm(kube_api, tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": kube_api.url}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    kube = KubeClient.for_url(kube_api.url)
    command = [sys.executable, "-m", "toolkit", "autoscale", "run", "-n", NS, "--kubeconfig", str(kubeconfig), "--identity", "cli-1"]
    command += ["--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _holder(kube) == "cli-1", 20, "the command takes the Lease")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert "cli-1 watching recs" in output
    assert _holder(kube) == ""  # released on a clean stop, so a standby takes over at once

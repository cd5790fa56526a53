"""``tritonrec k8s render``: the chart's manifests for users who do not run Helm, rendered by Helm's
library through the same templates (:mod:`toolkit.deploy.helm`), written one object per file with
a ``kustomization.yaml`` so that ``kubectl apply -k DIR`` (or ``kubectl apply -f DIR``) installs them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from toolkit.deploy.generate import HEADER, write_objects
from toolkit.deploy.helm import CHART_DIR, DEFAULT_KUBE_VERSION, Rendering, render
from toolkit.errors import DeployError

__all__ = ["repository_values", "parse_set", "merge_values", "load_values", "render_to_dir"]

_OBJECT_STORE = re.compile(r"^(s3|gs|as)://.+")
_PVC = re.compile(r"^pvc://([a-z0-9]([-a-z0-9.]*[a-z0-9])?)(/(.+))?$")


def repository_values(url: str) -> dict[str, Any]:
    """The chart values for a model repository given as a URL.

    ``s3://bucket/path``, ``gs://bucket/path``, ``as://account/container/path``: Triton reads the
    object store itself (``repository.source: objectStore``); ``pvc://claim[/sub/path]``: a
    PersistentVolumeClaim (``repository.source: pvc``).

    Raises:
        DeployError: any other form (the message names it and lists the accepted ones).
    """
    if _OBJECT_STORE.match(url):
        return {"repository": {"source": "objectStore", "objectStore": {"url": url}}}
    match = _PVC.match(url)
    if match:
        return {"repository": {"source": "pvc", "pvc": {"claimName": match.group(1), "subPath": match.group(4) or ""}}}
    raise DeployError(
        f"--repository {url!r} is not a model repository URL: expected s3://bucket/path, gs://bucket/path, "
        "as://account/container/path or pvc://claim-name[/sub/path]",
        hint="for a repository inside an image set repository.source: image in --values",
    )


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """``["triton.replicas=3", "gpu=true"]`` -> nested values; each value is read as YAML (a number,
    a boolean, a string, a list like ``[a, b]``).

    Raises:
        DeployError: an assignment without ``=`` or with an empty key.
    """
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise DeployError(f"--set {item!r} is not KEY=VALUE with a dotted KEY (e.g. triton.replicas=3)")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DeployError(f"--set {item!r}: {part} is set to a value and used as a map")
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return values


def merge_values(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge values mappings left to right as Helm merges ``-f`` files and ``--set``: maps merge
    key by key, anything else (lists included) is replaced by the later layer."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge_values(out[key], value)
            else:
                out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def load_values(path: Path) -> dict[str, Any]:
    """Read a values file (YAML mapping).

    Raises:
        DeployError: the file is missing, not YAML, or not a mapping.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DeployError(f"values file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise DeployError(f"values file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DeployError(f"values file {path} holds a {type(data).__name__}, expected a mapping of values")
    return data


def render_to_dir(
    out: Path,
    values: Mapping[str, Any],
    *,
    chart: Path = CHART_DIR,
    release: str = "tritonrec",
    namespace: str = "default",
    kube_version: str = DEFAULT_KUBE_VERSION,
    api_versions: Sequence[str] = (),
    force: bool = False,
) -> Rendering:
    """Render the chart and write its objects (CRDs first), one per file, plus a
    ``kustomization.yaml`` listing them, into ``out``. The folder is written beside ``out`` and
    renamed into place: a failed render leaves what was there.

    Raises:
        DeployError: the values are rejected (the message names the value), or ``out`` exists, is
            not empty and ``force`` is not set.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DeployError(f"{out} exists and is not empty", hint="choose another --out or pass --force to replace it")
    rendering = render(values, chart=chart, release=release, namespace=namespace, kube_version=kube_version, api_versions=api_versions)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = write_objects(rendering, staging)
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": files}
        (staging / "kustomization.yaml").write_text(
            HEADER.replace("python -m toolkit.deploy.generate", "tritonrec k8s render") + yaml.safe_dump(kustomization, sort_keys=False)
        )
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rendering

"""An in-memory Kubernetes API on loopback (kmock's ``KubernetesEmulator``) that Helm's own install
action can talk to: the place where ``tritonrec k8s render`` lets Helm render the chart.

Two things differ from kmock 0.8 as it comes:

- kmock's discovery answers ``/api/v1`` with ``groupVersion: "/v1"`` (an empty group joined with a
  slash); client-go's REST mapper then finds no ``v1`` kinds at all ("no matches for kind
  "ConfigMap" in version "v1""). :class:`HelmEmulator` answers ``v1`` there, as a kube-apiserver does.
- ``/version`` reports the Kubernetes version a render is for (``.Capabilities.KubeVersion`` in the
  templates) instead of kmock's fixed ``v1.26.4+k3s1``.

The resources it serves in discovery are built-ins, either kmock's bundled list (a K3s cluster's,
``builtins="bundled"``) or the few the chart's kinds need (:data:`BUILTINS`, ``builtins="chart"``:
a third of the discovery round trips, which are most of a render's time), plus whatever
:func:`declare` adds: the chart's CRDs, and the API versions a render is asked to assume present
(the Prometheus Operator's ``monitoring.coreos.com/v1``), which is how ``.Capabilities.APIVersions``
gets them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import kmock

__all__ = ["HelmEmulator", "declare", "declare_crds", "BUILTINS", "OPTIONAL_API_VERSIONS", "KUBE_VERSION", "PROMETHEUS_OPERATOR_KINDS"]

# The kinds of monitoring.coreos.com/v1 the chart may create (prometheus-operator's CRDs).
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors"}
# The API versions a render may be told to assume present, and the kinds they bring into discovery.
OPTIONAL_API_VERSIONS: dict[str, dict[str, str]] = {"monitoring.coreos.com/v1": PROMETHEUS_OPERATOR_KINDS}
KUBE_VERSION = re.compile(r"v?(\d+)\.(\d+)(\.\d+)?([-+].*)?")
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
# The built-in kinds a render needs in discovery (Helm maps every rendered kind through it): fewer
# API groups than kmock's bundled K3s list means fewer discovery round trips per render.
BUILTINS: dict[str, dict[str, tuple[str, bool]]] = {
    "v1": {
        "ConfigMap": ("configmaps", True),
        "Secret": ("secrets", True),
        "Service": ("services", True),
        "ServiceAccount": ("serviceaccounts", True),
        "Pod": ("pods", True),
        "Endpoints": ("endpoints", True),
        "Event": ("events", True),
        "PersistentVolumeClaim": ("persistentvolumeclaims", True),
        "Namespace": ("namespaces", False),
    },
    "apps/v1": {"Deployment": ("deployments", True), "StatefulSet": ("statefulsets", True), "ReplicaSet": ("replicasets", True)},
    "policy/v1": {"PodDisruptionBudget": ("poddisruptionbudgets", True)},
    "rbac.authorization.k8s.io/v1": {
        "Role": ("roles", True),
        "RoleBinding": ("rolebindings", True),
        "ClusterRole": ("clusterroles", False),
        "ClusterRoleBinding": ("clusterrolebindings", False),
    },
    "networking.k8s.io/v1": {"NetworkPolicy": ("networkpolicies", True)},
    "coordination.k8s.io/v1": {"Lease": ("leases", True)},
    "apiextensions.k8s.io/v1": {"CustomResourceDefinition": ("customresourcedefinitions", False)},
    "discovery.k8s.io/v1": {"EndpointSlice": ("endpointslices", True)},
}


class HelmEmulator(kmock.KubernetesEmulator):
    """kmock's stateful Kubernetes API emulator with core-group discovery fixed and a settable
    server version.

    Args:
        kube_version: what ``/version`` reports, e.g. ``"v1.37.1"`` (``gitVersion``; major and
            minor are parsed from it).
        builtins: ``"bundled"`` (kmock's list of a K3s cluster's resources) or ``"chart"``
            (:data:`BUILTINS`).

    Raises:
        ValueError: ``kube_version`` is not a version like ``v1.37.1``, or ``builtins`` is unknown.
    """

    def __init__(self, kube_version: str = "v1.37.1", builtins: str = "bundled", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        match = KUBE_VERSION.fullmatch(kube_version)
        if match is None:
            raise ValueError(f"kube_version {kube_version!r} is not a Kubernetes version like v1.37.1")
        self._kube_version = (match.group(1), match.group(2), "v" + kube_version.lstrip("v"))
        if builtins not in ("bundled", "chart"):
            raise ValueError(f"builtins {builtins!r} is neither 'bundled' nor 'chart'")
        if builtins == "bundled":
            with warnings.catch_warnings():  # kmock 0.8 reads its bundled file with importlib.resources.read_binary
                warnings.simplefilter("ignore", DeprecationWarning)
                self.resources.load_bundled()
        else:
            for group_version, kinds in BUILTINS.items():
                for kind, (plural, namespaced) in kinds.items():
                    declare(self, group_version, {kind: plural}, namespaced=namespaced)

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:  # type: ignore[override]
        payload = await super()._serve_version(request)
        if request.resource is not None and request.resource.group == "" and isinstance(payload, dict):
            payload["groupVersion"] = request.resource.version  # "v1", not "/v1"
        return payload

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:  # type: ignore[override]
        major, minor, git_version = self._kube_version
        return {"major": major, "minor": minor, "gitVersion": git_version, "platform": "linux/amd64"}


def declare(emulator: kmock.KubernetesEmulator, group_version: str, kinds: dict[str, str], *, namespaced: bool = True) -> None:
    """Serve ``kinds`` (kind -> plural) of ``group_version`` (``"group/version"``) in discovery."""
    for kind, plural in kinds.items():
        info = emulator.resources[f"{group_version}/{plural}"]
        info.kind = kind
        info.singular = kind.lower()
        info.namespaced = namespaced
        info.verbs = list(_VERBS)


def declare_crds(emulator: kmock.KubernetesEmulator, crds: Iterable[dict[str, Any]]) -> None:
    """Serve every version of each CustomResourceDefinition in ``crds`` (parsed manifests)."""
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            declare(
                emulator,
                f"{spec['group']}/{version['name']}",
                {spec["names"]["kind"]: spec["names"]["plural"]},
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            )
            emulator.resources[f"{spec['group']}/{version['name']}/{spec['names']['plural']}"].subresources = list(
                version.get("subresources", {}) or {}
            )

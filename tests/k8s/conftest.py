"""The chart rendered once per test session by Helm's own code (toolkit.deploy.helm: one Helm
process per batch), for every variant the tests check."""

from __future__ import annotations

import pytest

from toolkit.deploy.helm import render_many

# Each variant: the values it is rendered with (merged over the chart's values.yaml by Helm).
VARIANTS: dict[str, dict] = {
    "default": {},
    "gpu": {"gpu": True, "gpuCount": 2},
    "pvc-subpath": {"repository": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "movielens/v3"}}},
    "s3": {"repository": {"source": "objectStore", "objectStore": {"url": "s3://bucket/path", "credentialsSecret": "s3-credentials"}}},
    "gs": {"repository": {"source": "objectStore", "objectStore": {"url": "gs://bucket/path", "credentialsSecret": "gcs-key"}}},
    "as": {"repository": {"source": "objectStore", "objectStore": {"url": "as://account/container/path", "credentialsSecret": "azure"}}},
    "image": {"repository": {"source": "image", "image": {"repository": "registry.example/models", "tag": "v3"}}},
    "more-namespaces": {"autoscaler": {"namespaces": ["recs-a", "recs-b"]}},
    "all-namespaces": {"autoscaler": {"watchAllNamespaces": True}},
    "router-clients": {
        "routerClients": {"serviceAccounts": ["recommender-api"]},
        "autoscaler": {"imagePullSecrets": [{"name": "regcred"}]},
    },
    "poll": {"triton": {"modelControlMode": "poll", "restrictedApis": {"enabled": False}}},
    "no-autoscaler": {"autoscaler": {"enabled": False}},
}
# Rendered with the Prometheus Operator's API present (.Capabilities.APIVersions).
MONITORED: dict[str, dict] = {
    "podmonitor": {},
    "servicemonitor": {"metrics": {"monitor": {"kind": "ServiceMonitor"}}},
}


@pytest.fixture(scope="session")
def renderings() -> dict:
    """Variant name -> :class:`toolkit.deploy.helm.Rendering` (namespace ``serving``)."""
    plain = render_many(list(VARIANTS.values()), namespace="serving")
    monitored = render_many(list(MONITORED.values()), namespace="serving", api_versions=["monitoring.coreos.com/v1"])
    out = dict(zip(VARIANTS, plain, strict=True)) | dict(zip(MONITORED, monitored, strict=True))
    failed = {name: str(r) for name, r in out.items() if isinstance(r, Exception)}
    assert not failed, failed
    return out

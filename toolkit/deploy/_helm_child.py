"""The process in which Helm's library runs (``python -m toolkit.deploy._helm_child``): each line
of stdin is a batch of jobs (a JSON list), answered by one line of stdout (the JSON list of their
results), until stdin closes.

Why a process of its own: Helm keeps its releases in Secrets unless ``HELM_DRIVER`` says otherwise,
client-go writes those Secrets as protobuf, and kmock's emulator reads JSON only. ``HELM_DRIVER=memory``
keeps the release in memory instead, but the Go runtime inside ``helm-sdkpy``'s shared library reads
the environment the process *started* with (the block after ``argv`` on the initial stack), so
setting ``os.environ`` in a running Python process does not reach it: the parent starts this one
with the variable set (:mod:`toolkit.deploy.helm`).

A job is ``{"action": "lint", "chart": DIR}`` (Helm's ``lint``: the chart's own values against its
``values.schema.json``, template syntax, Chart.yaml) or ``{"action": "install", "chart": DIR,
"release": NAME, "namespace": NS, "values": {...}, "kube_version": "v1.37.1", "api_versions":
["monitoring.coreos.com/v1"], "crds": [...], "existing": [{"resource": "apps/v1/deployments",
"object": {...}}]}``: Helm's install action against a fresh
:class:`~toolkit.deploy.emulator.HelmEmulator` on 127.0.0.1 (``wait=False``; holding the
``existing`` objects first, which Helm then takes over, so that ``lookup`` sees them as in a
``helm upgrade``), whose result carries the rendered ``manifest``. Each result is
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import helm_sdkpy
import kmock
import yaml

from toolkit.deploy.emulator import OPTIONAL_API_VERSIONS, HelmEmulator, declare, declare_crds


def _kubeconfig(server: str, namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": server}}],
            "users": [{"name": "render", "user": {"token": "render"}}],
            "contexts": [{"name": "render", "context": {"cluster": "emulator", "user": "render", "namespace": namespace}}],
            "current-context": "render",
        }
    )


async def _install(job: dict[str, Any]) -> dict[str, Any]:
    emulator = HelmEmulator(kube_version=job.get("kube_version", "v1.37.1"), builtins="chart")
    for group_version in job.get("api_versions", []):
        declare(emulator, group_version, OPTIONAL_API_VERSIONS[group_version])
    declare_crds(emulator, job.get("crds", []))
    existing = job.get("existing", [])
    for item in existing:  # what the cluster already holds, as for a `helm upgrade`
        meta = item["object"]["metadata"]
        emulator.objects[item["resource"], meta.get("namespace"), meta["name"]] = item["object"]
    async with emulator as api, kmock.Server(api, host="127.0.0.1") as server:
        config = helm_sdkpy.Configuration(namespace=job["namespace"], kubeconfig=_kubeconfig(str(server.url).rstrip("/"), job["namespace"]))
        install = helm_sdkpy.Install(config)
        values = job.get("values") or {}
        release = await install.run(job["release"], job["chart"], values=values, wait=False, timeout=60, take_ownership=bool(existing))
        return {"ok": True, "manifest": release.get("manifest", ""), "notes": release.get("info", {}).get("notes", "")}


async def _lint(job: dict[str, Any]) -> dict[str, Any]:
    result = await helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(job["chart"])
    messages = [
        {"severity": m.get("Severity"), "path": m.get("Path"), "error": str(m.get("Err") or "")} for m in result.get("Messages") or []
    ]
    return {"ok": True, "messages": messages, "errors": [str(e) for e in result.get("Errors") or []]}


async def _run(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for job in jobs:
        try:
            results.append(await (_lint(job) if job["action"] == "lint" else _install(job)))
        except helm_sdkpy.HelmError as exc:
            results.append({"ok": False, "error": str(exc)})
    return results


def main() -> None:
    """Serve batches until stdin closes: each line of stdin is a JSON list of jobs, answered by one
    line of stdout, the JSON list of their results."""
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(asyncio.run(_run(json.loads(line)))) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

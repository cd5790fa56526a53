"""``tritonrec autoscale``: the Kubernetes controller that scales Triton on its own load metrics
(``run``), and the trace simulator that compares it with the HPA and KEDA (``simulate``)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Scale Triton Deployments on Triton's own load metrics, or simulate the policies on a load trace.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

"""The ``tritonrec`` command: one Typer app assembled from one module per command group.

Known errors (:class:`toolkit.errors.ToolkitError`) print as one line plus a hint and
exit with status 1; set ``TRITONREC_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from toolkit.cli import autoscale, build, compress, data, demo, export, infer, k8s, perf, serve, train, tune, validate, verify
from toolkit.cli._common import console
from toolkit.errors import ToolkitError

app = typer.Typer(
    name="tritonrec",
    help="Train, export, build, serve and measure PyTorch recommenders on NVIDIA Triton Inference Server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
app.add_typer(data.app, name="data")
app.command()(train.train)
app.command(name="compress")(compress.compress_command)
app.command()(export.export)
app.command()(build.build)
app.command()(validate.validate)
app.command()(verify.verify)
app.command()(serve.serve)
app.command()(infer.infer)
app.command()(perf.perf)
app.command(name="tune")(tune.tune_command)
app.command()(demo.demo)
app.add_typer(autoscale.app, name="autoscale")
app.add_typer(k8s.app, name="k8s")


def main() -> None:
    """Console-script entry point (``tritonrec``; ``python -m toolkit`` does the same)."""
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting, and raises
        # usage errors instead of printing them: both are handled here.
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # usage errors (bad option values, missing arguments)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(getattr(exc, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except ToolkitError as exc:
        if os.environ.get("TRITONREC_DEBUG"):
            raise
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if exc.hint:
            console.print(f"[dim]hint:[/dim] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)

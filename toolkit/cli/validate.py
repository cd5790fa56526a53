"""``tritonrec validate``: find what Triton would reject in a model repository, before a server does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit._io import atomic_write_json
from toolkit.cli._common import DEFAULT_REPOSITORY, console


def validate(
    model_repository: Annotated[Path, typer.Argument(help="The model repository folder to check.")] = DEFAULT_REPOSITORY,
    out: Annotated[Path | None, typer.Option(help="Also write the findings as JSON to this file.")] = None,
    server: Annotated[
        str,
        typer.Option(
            help="The server whose backends the models need: 'default' (the one `tritonrec serve` starts here; a backend only "
            "the stock container has, like onnxruntime on the bundled server, is a warning), 'here' (the same server, every "
            "missing backend an error) or 'stock' (nvcr.io/nvidia/tritonserver:<yy.mm>-py3)."
        ),
    ] = "default",
    backend_directory: Annotated[
        Path | None, typer.Option(help="Check against the server whose --backend-directory this is (strictly; overrides --server).")
    ] = None,
) -> None:
    """Check every model's config.pbtxt against Triton's schema, its model files, Triton's ensemble rules and the server's backends.

    Each finding names the model, the config field and the fix. Exits 1 when any finding is an
    error (warnings, such as a TensorRT engine that cannot be inspected without a GPU, do not fail).
    `tritonrec build` runs the same checks on every build before it installs anything.
    """
    from toolkit.repository.validate import ServingTarget, validate_repository
    from toolkit.repository.versions import model_folders

    targets = {"default": ServingTarget.default, "here": lambda: ServingTarget.default(strict=True), "stock": ServingTarget.stock_container}
    if server not in targets:
        raise typer.BadParameter(f"--server must be one of {', '.join(targets)}, got {server!r}")
    target = ServingTarget.from_backend_directory(backend_directory) if backend_directory is not None else targets[server]()
    findings = validate_repository(model_repository, target=target)
    if out is not None:
        atomic_write_json(out, [f.__dict__ for f in findings])
    models = model_folders(model_repository)
    errors = [f for f in findings if f.severity == "error"]
    if findings:
        table = Table(title=f"{model_repository}: {len(errors)} error(s), {len(findings) - len(errors)} warning(s)")
        for column in ("model", "field", "severity", "finding", "fix"):
            table.add_column(column, overflow="fold")
        for f in findings:
            style = "red" if f.severity == "error" else "yellow"
            table.add_row(escape(f.model), escape(f.field), f"[{style}]{f.severity}[/{style}]", escape(f.message), escape(f.fix))
        console.print(table)
    console.print(
        f"checked {len(models)} model(s) in {model_repository} for {escape(target.name)}: "
        + ("valid" if not errors else f"{len(errors)} error(s)")
    )
    if errors:
        raise typer.Exit(1)

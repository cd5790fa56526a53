"""``tritonrec data ...``: obtain and inspect MovieLens-100K."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from toolkit.cli._common import DEFAULT_DATA_DIR, DataDir, console
from toolkit.data import fetch_movielens, load_movielens

app = typer.Typer(help="Obtain and inspect MovieLens-100K.", no_args_is_help=True)


@app.command()
def fetch(
    dest: Annotated[Path, typer.Option(help="Folder to put the three files in (git-ignored cache).")] = DEFAULT_DATA_DIR,
    wheel: Annotated[Path | None, typer.Option(help="Use this local recbole-1.2.1 wheel instead of downloading it.")] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even if DEST already holds a complete copy.")] = False,
) -> None:
    """Download MovieLens-100K (inside the recbole==1.2.1 wheel from PyPI) into DEST.

    MovieLens' licence forbids redistribution, so the project never commits it: it is
    obtained at set-up time. Does nothing when DEST already holds a complete copy.
    """
    path = fetch_movielens(dest, wheel=wheel, force=force)
    console.print(f"MovieLens-100K ready in [bold]{path}[/bold]")


@app.command()
def info(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Print the size and label balance of a MovieLens-100K folder (either layout)."""
    ml = load_movielens(data_dir)
    table = Table(title=f"MovieLens-100K in {data_dir} ({ml.layout} layout)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("ratings", f"{len(ml):,}")
    table.add_row("users", f"{len(ml.users):,}")
    table.add_row("items", f"{len(ml.items):,}")
    table.add_row("positive rate (rating >= 4)", f"{float(np.mean(ml.ratings >= 4)):.3f}")
    console.print(table)

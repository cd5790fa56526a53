"""``tritonrec train``: train a recommender (DLRM, DCN-v2, DeepFM) on MovieLens-100K and compare it with baselines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, DataDir, ModelOption, console, progress
from toolkit.cli._tables import train_report_table

if TYPE_CHECKING:
    from toolkit.train import EpochStats


def train(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    model: ModelOption = "dlrm",
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write (replaced atomically).")] = DEFAULT_CHECKPOINT,
    max_epochs: Annotated[int, typer.Option(help="Upper bound on epochs; early stopping usually ends sooner.")] = 20,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation AUC before stopping.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Rows per optimizer step.")] = 256,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    embedding_dim: Annotated[int, typer.Option(help="Width of every embedding and of the bottom MLP output.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the 80/10/10 split and of training.")] = 42,
    baselines: Annotated[bool, typer.Option(help="Also fit item-popularity and logistic-regression baselines.")] = True,
) -> None:
    """Train a DLRM (Naumov et al., 2019), DCN-v2 (Wang et al., 2021) or DeepFM (Guo et al., 2017)
    on MovieLens-100K with early stopping on validation AUC.

    Prints and saves (in the checkpoint's metrics.json) the test AUC and log loss of the
    model and of two baselines on the same split: item popularity and logistic regression.
    """
    from toolkit.train import TrainConfig, train_checkpoint

    config = TrainConfig(
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        learning_rate=learning_rate,
        embedding_dim=embedding_dim,
        seed=seed,
        architecture=model,
    )
    with progress() as bar:
        task = bar.add_task("epoch 1", total=None)

        def on_step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def on_epoch(stats: EpochStats) -> None:
            bar.console.print(
                f"epoch {stats.epoch}: train loss {stats.train_loss:.4f}, validation AUC {stats.val_auc:.4f} ({stats.seconds:.1f} s)"
            )
            bar.update(task, description=f"epoch {stats.epoch + 1}", completed=0)

        report = train_checkpoint(data_dir, out, config, split_seed=seed, baselines=baselines, on_step=on_step, on_epoch=on_epoch)
        bar.update(task, description=f"done (best epoch {report.result.best_epoch})")
    console.print(train_report_table(report))
    if baselines and not report.beats_baselines:
        console.print(f"[yellow]warning: the {model} model does not beat every baseline on test AUC[/yellow]")
    console.print(f"checkpoint written to [bold]{out}[/bold]")

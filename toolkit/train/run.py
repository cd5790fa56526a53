"""The ``train`` stage: data folder in, checkpoint with test metrics and baselines out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.data.dataset import load_splits
from toolkit.metrics import evaluate
from toolkit.train.baselines import BaselineResult, item_popularity, logistic_regression
from toolkit.train.checkpoint import save_checkpoint
from toolkit.train.loop import EpochStats, TrainConfig, TrainResult, predict, train_model

__all__ = ["TrainReport", "train_checkpoint"]


@dataclass
class TrainReport:
    """Test metrics of the trained model and of the baselines on the same split."""

    checkpoint: Path
    test_auc: float
    test_log_loss: float
    baselines: list[BaselineResult]
    result: TrainResult

    @property
    def architecture(self) -> str:
        """The trained model's registered architecture (``dlrm``, ``dcnv2``, ...)."""
        return self.result.model.config.to_dict()["architecture"]

    @property
    def beats_baselines(self) -> bool:
        """True when the model's test AUC is above every baseline's."""
        return all(self.test_auc > b.test_auc for b in self.baselines)


def train_checkpoint(
    data_dir: Path,
    out: Path,
    config: TrainConfig | None = None,
    *,
    split_seed: int = 42,
    baselines: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainReport:
    """Train a model of ``config.architecture`` (a DLRM by default) on MovieLens-100K in
    ``data_dir`` and save it with its metrics to ``out``.

    The split is random 80/10/10 with ``split_seed``; vocabularies are fitted on the
    training split. ``metrics.json`` records the test AUC and log loss of the model and
    (with ``baselines``) of item popularity and logistic regression on the same split,
    the training history and the split seed (so later stages rebuild the same test split).

    Raises:
        DataError: see :func:`toolkit.data.load_splits`. TrainError: see :func:`~toolkit.train.loop.train_model`.
    """
    config = config or TrainConfig()
    splits = load_splits(data_dir, seed=split_seed)
    result = train_model(splits.train, splits.val, splits.encoder, config, on_step=on_step, on_epoch=on_epoch)
    test = evaluate(splits.test.labels, predict(result.model, splits.test))
    found: list[BaselineResult] = []
    if baselines:
        found.append(item_popularity(splits.train, splits.test))
        found.append(logistic_regression(splits.train, splits.val, splits.test, splits.encoder.cardinalities))
    metrics = {
        "split": {
            "kind": "random",
            "fractions": [0.8, 0.1, 0.1],
            "seed": split_seed,
            "n_train": len(splits.train),
            "n_val": len(splits.val),
            "n_test": len(splits.test),
        },
        "architecture": config.architecture,
        "test": {"auc": test["auc"], "log_loss": test["log_loss"]},
        "baselines": [asdict(b) for b in found],
        "best_epoch": result.best_epoch,
        "history": result.history_dicts(),
        "train_config": asdict(config),
    }
    save_checkpoint(out, result.model, splits.encoder, metrics)
    return TrainReport(Path(out), test["auc"], test["log_loss"], found, result)

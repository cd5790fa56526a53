"""Mini-batch training of a DLRM with early stopping on validation AUC."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from toolkit.data.features import EncodedRows, FeatureEncoder
from toolkit.errors import TrainError
from toolkit.metrics import evaluate
from toolkit.models.dlrm import DLRM, DLRMConfig

__all__ = ["TrainConfig", "EpochStats", "TrainResult", "dlrm_config_for", "fit_model", "predict", "train_dlrm"]


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults reach about 0.785 test AUC on MovieLens-100K.

    Attributes:
        max_epochs: upper bound on passes over the training split.
        patience: stop after this many epochs without a better validation AUC, then
            restore the best epoch's weights (early stopping).
        batch_size: rows per optimizer step.
        learning_rate: Adam's step size.
        embedding_dim: E of :class:`~toolkit.models.dlrm.DLRMConfig`.
        bottom_mlp, top_mlp: hidden widths of the two MLPs.
        dropout: dropout after each top-MLP hidden layer.
        seed: seeds torch's generator (initialization and shuffling).
        max_train_rows: use only the first N training rows (tests and quick runs); None for all.
    """

    max_epochs: int = 20
    patience: int = 2
    batch_size: int = 256
    learning_rate: float = 1e-3
    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [64])
    top_mlp: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0
    seed: int = 42
    max_train_rows: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_epochs", "patience", "batch_size", "embedding_dim"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise TrainError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass
class EpochStats:
    """One epoch: its number (from 1), mean training log loss, validation AUC and log loss, seconds taken."""

    epoch: int
    train_loss: float
    val_auc: float
    val_log_loss: float
    seconds: float


@dataclass
class TrainResult:
    """The trained model (best epoch's weights) and its history."""

    model: DLRM
    history: list[EpochStats]
    best_epoch: int

    def history_dicts(self) -> list[dict]:
        return [asdict(h) for h in self.history]


def dlrm_config_for(encoder: FeatureEncoder, config: TrainConfig) -> DLRMConfig:
    """The :class:`DLRMConfig` for data encoded by ``encoder`` (table sizes from its vocabularies)."""
    cards = encoder.cardinalities
    n_sparse = len(cards) - 1
    return DLRMConfig(
        num_dense=len(encoder.dense_mean),
        sparse_cardinalities=cards[:n_sparse],
        multi_hot_cardinalities=cards[n_sparse:],
        multi_hot_lengths=[encoder.max_genres],
        embedding_dim=config.embedding_dim,
        bottom_mlp=list(config.bottom_mlp),
        top_mlp=list(config.top_mlp),
        dropout=config.dropout,
    )


def _tensors(rows: EncodedRows) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(x)) for x in rows.inputs().values()]


@torch.no_grad()
def predict(model: torch.nn.Module, rows: EncodedRows, *, batch_size: int = 4096) -> np.ndarray:
    """(N,) float32 probabilities of ``model`` on ``rows``, in eval mode."""
    model.eval()
    xs = _tensors(rows)
    out = [model(*(x[i : i + batch_size] for x in xs)).reshape(-1) for i in range(0, len(rows), batch_size)]
    return torch.cat(out).numpy()


def train_dlrm(
    train: EncodedRows,
    val: EncodedRows,
    encoder: FeatureEncoder,
    config: TrainConfig | None = None,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train a new DLRM sized by ``encoder``'s vocabularies (see :func:`fit_model`).

    Args:
        train, val: encoded splits (see :class:`~toolkit.data.features.EncodedRows`).
        encoder: the encoder that produced them (gives the table sizes).
        config: hyper-parameters (defaults: :class:`TrainConfig`).

    Raises:
        TrainError: empty splits or invalid hyper-parameters.
    """
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    model = DLRM(dlrm_config_for(encoder, config))
    return fit_model(model, train, val, config, on_step=on_step, on_epoch=on_epoch)


def fit_model(
    model: DLRM,
    train: EncodedRows,
    val: EncodedRows,
    config: TrainConfig | None = None,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam on binary cross-entropy, early-stopping on validation AUC.

    Only the optimization fields of ``config`` are used (epochs, patience, batch size,
    learning rate, seed, max_train_rows); the architecture is the model's own.

    Args:
        on_step: called with (rows done, rows per epoch) after every step (progress bars).
        on_epoch: called with each epoch's :class:`EpochStats`.

    Raises:
        TrainError: empty splits.
    """
    config = config or TrainConfig()
    if config.max_train_rows is not None:
        train = train.take(slice(0, config.max_train_rows))
    if len(train) == 0 or len(val) == 0:
        raise TrainError(f"need non-empty training and validation splits, got {len(train)} and {len(val)} rows")
    shuffle = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xs, y = _tensors(train), torch.from_numpy(train.labels)
    n = len(train)
    history: list[EpochStats] = []
    best: tuple[float, int, dict] | None = None
    for epoch in range(1, config.max_epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = loss_fn(model.logits(*(x[idx] for x in xs)).squeeze(1), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            if on_step is not None:
                on_step(min(i + config.batch_size, n), n)
        metrics = evaluate(val.labels, predict(model, val))
        stats = EpochStats(epoch, total / n, metrics["auc"], metrics["log_loss"], time.perf_counter() - start)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if best is None or stats.val_auc > best[0]:
            best = (stats.val_auc, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    assert best is not None  # max_epochs >= 1
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model, history, best[1])

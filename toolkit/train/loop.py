"""Mini-batch training of any registered architecture with early stopping on validation AUC."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from toolkit.data.features import EncodedRows, FeatureEncoder
from toolkit.errors import TrainError
from toolkit.metrics import evaluate
from toolkit.models.dlrm import DLRMConfig
from toolkit.models.protocol import FeatureSizes, call_by_name, check_input_names
from toolkit.models.registry import get_architecture

__all__ = [
    "TrainConfig",
    "EpochStats",
    "TrainResult",
    "dlrm_config_for",
    "feature_sizes",
    "fit_model",
    "model_config_for",
    "predict",
    "train_dlrm",
    "train_model",
]


@dataclass
class TrainConfig:
    """Training hyper-parameters; with the DLRM, the defaults reach about 0.785 test AUC on MovieLens-100K.

    Attributes:
        max_epochs: upper bound on passes over the training split.
        patience: stop after this many epochs without a better validation AUC, then
            restore the best epoch's weights (early stopping).
        batch_size: rows per optimizer step.
        learning_rate: Adam's step size.
        embedding_dim: E, the width of every embedding (any architecture).
        bottom_mlp, top_mlp: hidden widths of the DLRM's two MLPs (used only by architectures
            whose config has fields of these names).
        dropout: dropout after each hidden layer of the architecture's MLP(s).
        seed: seeds torch's generator (initialization and shuffling).
        max_train_rows: use only the first N training rows (tests and quick runs); None for all.
        architecture: the registered architecture to train (``dlrm``, ``dcnv2``, ``deepfm``, ...).
        model_options: other fields of that architecture's config (e.g. ``{"cross_rank": 32}``
            for DCN-v2); an unknown one is an error naming the ones it takes.
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
    architecture: str = "dlrm"
    model_options: dict[str, Any] = field(default_factory=dict)

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

    model: torch.nn.Module
    history: list[EpochStats]
    best_epoch: int

    def history_dicts(self) -> list[dict]:
        return [asdict(h) for h in self.history]


def feature_sizes(encoder: FeatureEncoder) -> FeatureSizes:
    """The table sizes and widths of data encoded by ``encoder`` (its vocabularies; the last one is genres)."""
    cards = encoder.cardinalities
    n_sparse = len(cards) - 1
    return FeatureSizes(
        num_dense=len(encoder.dense_mean),
        sparse_cardinalities=cards[:n_sparse],
        multi_hot_cardinalities=cards[n_sparse:],
        multi_hot_lengths=[encoder.max_genres],
    )


def model_config_for(encoder: FeatureEncoder, config: TrainConfig) -> Any:
    """The config of ``config.architecture`` for data encoded by ``encoder``.

    The fields ``embedding_dim``, ``bottom_mlp``, ``top_mlp`` and ``dropout`` of ``config`` go to
    the architecture's config when it has fields of those names; ``config.model_options`` are
    passed on as they are.

    Raises:
        TrainError: an unknown architecture (listing the registered ones), an option its config
            does not take, or a value its config refuses.
    """
    try:
        arch = get_architecture(config.architecture)
    except ValueError as exc:
        raise TrainError(str(exc), hint="pass one of the registered architectures") from exc
    accepted = {f.name for f in fields(arch.config_class)}
    shared = {k: v for k, v in asdict(config).items() if k in ("embedding_dim", "bottom_mlp", "top_mlp", "dropout") and k in accepted}
    try:
        return arch.config_for(feature_sizes(encoder), {**shared, **config.model_options})
    except (TypeError, ValueError) as exc:
        raise TrainError(f"{config.architecture} model options: {exc}") from exc


def dlrm_config_for(encoder: FeatureEncoder, config: TrainConfig) -> DLRMConfig:
    """The :class:`DLRMConfig` for data encoded by ``encoder`` (table sizes from its vocabularies), whatever ``config.architecture``."""
    sizes = feature_sizes(encoder)
    return DLRMConfig(
        **sizes.as_fields(),
        embedding_dim=config.embedding_dim,
        bottom_mlp=list(config.bottom_mlp),
        top_mlp=list(config.top_mlp),
        dropout=config.dropout,
    )


def _tensors(rows: EncodedRows) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(x)) for name, x in rows.inputs().items()}


@torch.no_grad()
def predict(model: torch.nn.Module, rows: EncodedRows, *, batch_size: int = 4096) -> np.ndarray:
    """(N,) float32 probabilities of ``model`` on ``rows``, in eval mode (inputs passed by name)."""
    model.eval()
    xs = _tensors(rows)
    out = [call_by_name(model, {n: x[i : i + batch_size] for n, x in xs.items()}).reshape(-1) for i in range(0, len(rows), batch_size)]
    return torch.cat(out).numpy()


def train_model(
    train: EncodedRows,
    val: EncodedRows,
    encoder: FeatureEncoder,
    config: TrainConfig | None = None,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train a new model of ``config.architecture`` sized by ``encoder``'s vocabularies (see :func:`fit_model`).

    Args:
        train, val: encoded splits (see :class:`~toolkit.data.features.EncodedRows`).
        encoder: the encoder that produced them (gives the table sizes).
        config: hyper-parameters (defaults: :class:`TrainConfig`, a DLRM).

    Raises:
        TrainError: empty splits, an unknown architecture or invalid hyper-parameters.
    """
    config = config or TrainConfig()
    model_config = model_config_for(encoder, config)
    torch.manual_seed(config.seed)
    model = get_architecture(config.architecture).build(model_config)
    return fit_model(model, train, val, config, on_step=on_step, on_epoch=on_epoch)


#: The name from before the other architectures; trains ``config.architecture`` (a DLRM by default).
train_dlrm = train_model


def fit_model(
    model: torch.nn.Module,
    train: EncodedRows,
    val: EncodedRows,
    config: TrainConfig | None = None,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam on binary cross-entropy, early-stopping on validation AUC.

    Only the optimization fields of ``config`` are used (epochs, patience, batch size,
    learning rate, seed, max_train_rows); the architecture is the model's own. ``model`` is
    any module with ``logits(**inputs) -> (B, 1)`` whose parameters are named after the
    encoded inputs (``dense_features``, ``sparse_ids``, ``multi_hot_ids``): they are passed by name.

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
    try:
        check_input_names(model.logits, xs)  # once, before the loop; then plain keyword calls
    except (AttributeError, TypeError) as exc:
        raise TrainError(f"cannot train {type(model).__name__}: {exc}") from exc
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
            loss = loss_fn(model.logits(**{name: x[idx] for name, x in xs.items()}).squeeze(1), y[idx])
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

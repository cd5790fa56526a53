"""Mini-batch training of any registered architecture with early stopping on validation AUC."""

from __future__ import annotations

import copy
import math
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
    "train_epochs",
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
    history, best_epoch = train_epochs(
        model,
        _tensors(train),
        torch.from_numpy(train.labels),
        val,
        max_epochs=config.max_epochs,
        patience=config.patience,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
        on_step=on_step,
        on_epoch=on_epoch,
    )
    return TrainResult(model, history, best_epoch)


#: ``loss_of(logits, idx)``: the batch loss from the batch's (B,) logits and its (B,) int64 row indices.
LossOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_epochs(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    val: EncodedRows,
    *,
    max_epochs: int,
    patience: int | None,
    learning_rate: float,
    batch_size: int,
    loss_of: LossOf | None = None,
    generator: torch.Generator | None = None,
    score_before: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> tuple[list[EpochStats], int]:
    """The one training loop: training, fine-tuning after pruning and distillation all run it.

    Each epoch shuffles the N training rows, takes Adam steps on ``loss_of`` over batches of
    ``batch_size`` rows (inputs passed to ``model.logits`` by name) and scores validation AUC;
    the weights of the best epoch are loaded back at the end and the model left in eval mode
    (early stopping: stop after ``patience`` epochs without a better validation AUC).

    Args:
        model: trained in place; ``logits(**inputs) -> (B, 1)``.
        inputs: training inputs by name, each (N, ...) (``dense_features`` float32, ids int64).
        labels: (N,) float32 in {0, 1}.
        val: validation rows with labels (AUC, log loss).
        max_epochs: epochs at most (>= 1, or 0 with ``score_before``: only score the model).
        patience: epochs without a better validation AUC before stopping; ``None`` runs every epoch.
        learning_rate: Adam's step size.
        batch_size: rows per step (>= 1).
        loss_of: the batch loss; default binary cross-entropy of the logits against ``labels``.
        generator: the shuffling generator; ``None`` draws from torch's global generator.
        score_before: score the weights as given as epoch 0, so that no training at all can be
            the best (fine-tuning that must not make a pruned model worse).
        on_step: called with (rows done, rows per epoch) after every step.
        on_epoch: called with each epoch's :class:`EpochStats` (epoch 0's train loss is NaN).

    Returns:
        The epochs' :class:`EpochStats` and the best epoch's number.

    Raises:
        TrainError: the inputs' names do not fit ``model.logits``; ``batch_size`` < 1 or
            ``max_epochs`` < 1 without ``score_before``; the training loss or the validation
            outputs became NaN/Inf (naming the epoch).
    """
    if batch_size < 1:
        raise TrainError(f"batch_size={batch_size}, expected an integer >= 1")
    if max_epochs < (0 if score_before else 1):
        raise TrainError(f"max_epochs={max_epochs}, expected at least {0 if score_before else 1}")
    try:
        check_input_names(model.logits, inputs)  # once, before the loop; then plain keyword calls
    except (AttributeError, TypeError) as exc:
        raise TrainError(f"cannot train {type(model).__name__}: {exc}") from exc
    if loss_of is None:
        bce = torch.nn.BCEWithLogitsLoss()
        loss_of = lambda logits, idx: bce(logits, labels[idx])  # noqa: E731
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    n = len(labels)
    history: list[EpochStats] = []
    best: tuple[float, int, dict] | None = None

    def score(epoch: int, train_loss: float, started: float) -> EpochStats:
        nonlocal best
        p = predict(model, val)
        if not np.all(np.isfinite(p)):
            raise TrainError(f"epoch {epoch}: the model gives {int(np.sum(~np.isfinite(p)))} NaN/Inf validation outputs")
        metrics = evaluate(val.labels, p)
        stats = EpochStats(epoch, train_loss, metrics["auc"], metrics["log_loss"], time.perf_counter() - started)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if best is None or stats.val_auc > best[0]:
            best = (stats.val_auc, epoch, copy.deepcopy(model.state_dict()))
        return stats

    if score_before:
        score(0, float("nan"), time.perf_counter())
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = loss_of(model.logits(**{name: x[idx] for name, x in inputs.items()}).squeeze(1), idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            if on_step is not None:
                on_step(min(i + batch_size, n), n)
        if not math.isfinite(total):
            raise TrainError(f"the training loss became {total / n} in epoch {epoch}")
        score(epoch, total / n, started)
        if patience is not None and epoch - best[1] >= patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    return history, best[1]

"""Knowledge distillation of a model into a smaller one of its architecture (Hinton, Vinyals and Dean, "Distilling
the Knowledge in a Neural Network", arXiv:1503.02531, 2015), adapted to one binary output.

The student has the teacher's inputs (the same embedding-table sizes, multi-hot lengths
and dense features, so the same feature encoder and serving signature) but its own
embedding dim and MLP widths (any registered architecture: DLRM, DCN-v2, DeepFM). It learns from the teacher's softened probability
``sigmoid(teacher_logit / T)`` as well as from the labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from toolkit.compress.prune import _check_labels, _check_rows, _tensors
from toolkit.compress.recipe import DistillConfig
from toolkit.data.features import EncodedRows
from toolkit.errors import CompressError, TrainError
from toolkit.models.protocol import FeatureSizes
from toolkit.models.registry import architecture_of
from toolkit.train.loop import EpochStats, train_epochs

__all__ = ["distill", "distill_into", "student_config"]


def student_config(teacher: nn.Module, config: DistillConfig) -> Any:
    """The student's config: the teacher's, with ``config``'s embedding dim, ``bottom_mlp``/``top_mlp``
    where the architecture has them (the DLRM), ``config.student``'s other fields, and float32 tables
    (``embedding_quantization="none"``) even when the teacher's are int8. The input sizes (tables,
    multi-hot lengths, dense width) and the padding id are the teacher's, so the same feature
    encoder and serving signature serve it.

    Raises:
        CompressError: ``teacher`` is not a registered architecture's model; ``config.student``
            names an input size or a field the architecture lacks (listing what it accepts); the
            resulting config is invalid (the message names the field).
    """
    arch = _architecture(teacher)
    fields = {f.name for f in dataclasses.fields(teacher.config)}
    fixed = {f.name for f in dataclasses.fields(FeatureSizes)} | {"padding_id", "embedding_quantization"}
    refused = sorted(set(config.student) - (fields - fixed))
    if refused:
        raise CompressError(
            f"distill: the student option(s) {refused} are not free fields of a {arch.name} config; "
            f"it takes {sorted(fields - fixed - {'embedding_dim'})} (and embedding_dim), the inputs stay the teacher's"
        )
    changes: dict = {"embedding_dim": int(config.embedding_dim)}
    for name in ("bottom_mlp", "top_mlp"):
        if name in fields:
            changes[name] = [int(w) for w in getattr(config, name)]
    changes.update(config.student)
    if "embedding_quantization" in fields:
        changes["embedding_quantization"] = "none"  # the student trains float32 tables
    try:
        return dataclasses.replace(teacher.config, **changes)
    except (TypeError, ValueError) as exc:
        raise CompressError(f"distill: invalid student architecture: {exc}") from exc


def _architecture(model: nn.Module):
    try:
        return architecture_of(model)
    except ValueError as exc:
        raise CompressError(
            f"distill: expected a registered architecture's model as the teacher, got {type(model).__name__}: {exc}"
        ) from exc


def _logit_fn(model: nn.Module) -> Callable[..., torch.Tensor]:
    """``model.logits``, or ``logit(model(**x))`` for a module that returns only probabilities (a user's)."""
    if hasattr(model, "logits"):
        return model.logits
    return lambda **x: torch.logit(model(**x), eps=1e-6)


@torch.no_grad()
def _logits(model: nn.Module, xs: dict[str, torch.Tensor], batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    fn = _logit_fn(model)
    n = len(next(iter(xs.values())))
    return torch.cat([fn(**{k: x[i : i + batch_size] for k, x in xs.items()}).reshape(-1) for i in range(0, n, batch_size)])


class _WithLogits(nn.Module):
    """A student that returns probabilities, with the ``logits`` the training loop calls (``logit(p)``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.module(**inputs)

    def logits(self, **inputs: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.module(**inputs), eps=1e-6)


def distill(
    teacher: nn.Module,
    config: DistillConfig,
    train: EncodedRows,
    val: EncodedRows,
    *,
    seed: int = 42,
    batch_size: int = 256,
    on_log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train a smaller student of ``teacher``'s architecture on ``train`` from ``teacher``'s soft targets and the labels.

    Per batch, with student logits ``s``, teacher logits ``t`` (teacher in eval mode, no
    gradient), labels ``y`` (all (B,) float32), ``a = config.alpha`` and
    ``T = config.temperature``::

        loss = a * BCEWithLogits(s / T, sigmoid(t / T)) + (1 - a) * BCEWithLogits(s, y)

    (Hinton et al.'s softened-softmax cross-entropy with a sigmoid in place of the
    softmax; their ``T**2`` factor on the soft term is not applied, so with ``T > 1`` the
    soft term's gradients are smaller and ``alpha`` may need to be raised.)
    The student is trained with Adam at ``config.learning_rate`` on shuffled batches, for
    at most ``config.max_epochs`` epochs, stopping after ``config.patience`` epochs
    without a better validation AUC (early stopping); the best epoch's weights are returned.

    Args:
        teacher: the trained model to imitate (left unchanged; float32, CPU).
        config: student architecture (``embedding_dim``, ``bottom_mlp``, ``top_mlp``) and
            the loss and training hyper-parameters.
        train: training rows of the teacher's input widths (dense (N, D) float32, sparse
            (N, S) int64, multi-hot (N, sum L) int64, labels (N,) float32 in {0, 1}).
        val: validation rows for early stopping (needs both labels).
        seed: seeds the student's initialization, the batch order and dropout (torch's
            global generator is left as it was).
        batch_size: rows per optimizer step.
        on_log: called with one line per epoch.

    Returns:
        The student (config from :func:`student_config`) in eval mode.

    Raises:
        CompressError: ``teacher`` is not a registered architecture's model; invalid student architecture; empty
            splits or splits of the wrong widths; single-class ``val``; ``batch_size`` < 1;
            the loss or the validation outputs became NaN/Inf.
    """
    arch = _architecture(teacher)
    if batch_size < 1:
        raise CompressError(f"distill: batch_size={batch_size}, expected an integer >= 1")
    _check_rows(teacher, train, "train")
    _check_rows(teacher, val, "val")
    _check_labels(val, "val")
    log = on_log or (lambda _msg: None)
    cfg = student_config(teacher, config)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = arch.build(cfg)
        shown = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in dataclasses.asdict(FeatureSizes(1, [1]))}
        log(f"distill: student {arch.name} " + ", ".join(f"{k}={v}" for k, v in shown.items() if k != "padding_id"))
        _train_student(teacher, student, config, train, val, batch_size=batch_size, log=log)
    return student


def _train_student(teacher: nn.Module, student: nn.Module, config: DistillConfig, train, val, *, batch_size: int, log) -> None:
    """Train ``student`` in place on the distillation loss (see :func:`distill`) with the one training loop."""
    xs = _tensors(train)
    y = torch.from_numpy(np.ascontiguousarray(train.labels, dtype=np.float32))
    was_training = teacher.training
    soft = torch.sigmoid(_logits(teacher, xs) / config.temperature)
    teacher.train(was_training)
    alpha, temperature = float(config.alpha), float(config.temperature)

    def loss_of(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        soft_loss = F.binary_cross_entropy_with_logits(logits / temperature, soft[idx])
        hard_loss = F.binary_cross_entropy_with_logits(logits, y[idx])
        return alpha * soft_loss + (1.0 - alpha) * hard_loss

    def on_epoch(stats: EpochStats) -> None:
        log(f"distill epoch {stats.epoch}/{config.max_epochs}: train loss {stats.train_loss:.4f}, val AUC {stats.val_auc:.4f}")

    trainable = student if hasattr(student, "logits") else _WithLogits(student)
    try:
        history, best_epoch = train_epochs(  # the one training loop, with the distillation loss
            trainable,
            xs,
            y,
            val,
            max_epochs=config.max_epochs,
            patience=config.patience,
            learning_rate=config.learning_rate,
            batch_size=batch_size,
            loss_of=loss_of,
            on_epoch=on_epoch,
        )
    except TrainError as exc:
        raise CompressError(f"distill: {exc}; try a lower learning_rate") from exc
    best_auc = next(h.val_auc for h in history if h.epoch == best_epoch)
    log(f"distill: best epoch {best_epoch}, val AUC {best_auc:.4f}")


def distill_into(
    teacher: nn.Module,
    student: nn.Module,
    config: DistillConfig,
    train,
    val,
    *,
    seed: int = 42,
    batch_size: int = 256,
    on_log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train the ``student`` the user names (any module taking the teacher's inputs by name) from
    ``teacher``'s soft targets and the labels: the loss, optimizer and early stopping of :func:`distill`
    (only ``config``'s loss and training fields are read; its architecture fields are :func:`distill`'s).

    A module without ``logits`` (one that returns probabilities, as a user's model file's does) is
    trained through ``logit(p)`` (clamped to [1e-6, 1 - 1e-6]).

    Args:
        teacher: the trained module (left unchanged).
        student: trained in place and returned (eval mode); pass a copy to keep the original.
        train, val: labelled rows by input name (``inputs()``, ``labels``: an
            :class:`~toolkit.data.features.EncodedRows` or :class:`toolkit.optimize.module.LabelledRows`);
            ``val`` needs both labels.
        seed: seeds the batch order and dropout (torch's global generator is left as it was).

    Raises:
        CompressError: ``batch_size`` < 1, empty rows, single-class ``val``, a student whose forward
            does not take the teacher's inputs, or a loss that became NaN/Inf.
    """
    if batch_size < 1:
        raise CompressError(f"distill: batch_size={batch_size}, expected an integer >= 1")
    if len(train) == 0 or len(val) == 0:
        raise CompressError("distill: the train and validation rows must not be empty")
    _check_labels(val, "val")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _train_student(teacher, student, config, train, val, batch_size=batch_size, log=on_log or (lambda _msg: None))
    return student.eval()

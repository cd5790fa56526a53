"""Ranking-quality metrics for binary CTR-style labels (scikit-learn's implementations).

Torch-free on purpose: serving, perf and autoscale use them without importing torch.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss as _log_loss
from sklearn.metrics import roc_auc_score

from toolkit.errors import TrainError

__all__ = ["auc", "log_loss", "evaluate"]


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise TrainError(f"{labels.size} labels but {scores.size} scores")
    if len(np.unique(labels)) < 2:
        raise TrainError("AUC needs both positive and negative labels")
    if not np.all(np.isfinite(scores)):
        raise TrainError(f"{int(np.sum(~np.isfinite(scores)))} scores are NaN or infinite")
    return labels, scores


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (any monotone score) for 0/1 ``labels``, both (N,)."""
    labels, scores = _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of ``probabilities`` in [0, 1] for 0/1 ``labels``, both (N,)."""
    labels, p = _check(labels, probabilities)
    return float(_log_loss(labels, np.clip(p, 1e-7, 1 - 1e-7), labels=[0.0, 1.0]))


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """``{"auc": ..., "log_loss": ...}`` for (N,) labels and probabilities."""
    return {"auc": auc(labels, probabilities), "log_loss": log_loss(labels, probabilities)}

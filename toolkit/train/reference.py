"""The offline reference a served model is compared with: the checkpoint's PyTorch answers on its test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.data import EncodedRows
from toolkit.data.checkpoint_split import checkpoint_splits
from toolkit.metrics import evaluate
from toolkit.train.checkpoint import load_checkpoint
from toolkit.train.loop import predict

__all__ = ["OfflineReference", "offline_reference"]


@dataclass
class OfflineReference:
    """The test split as the checkpoint encodes it, and PyTorch's answers on it.

    Attributes:
        rows: the N test rows, encoded with the checkpoint's vocabularies.
        probabilities: (N,) float32 probabilities of the checkpoint's model (PyTorch eager, FP32).
        auc: their AUC against the rows' labels.
    """

    rows: EncodedRows
    probabilities: np.ndarray
    auc: float


def offline_reference(checkpoint: Path, data_dir: Path, n_rows: int | None = None) -> OfflineReference:
    """Rebuild the checkpoint's test split (its seed and vocabularies) and score it with PyTorch.

    Args:
        checkpoint: a folder written by ``tritonrec train``.
        data_dir: the MovieLens-100K folder it was trained on.
        n_rows: only the first N test rows (default: all).

    Raises:
        CheckpointError: the checkpoint cannot be loaded or has no vocabularies.
        DataError: from reading ``data_dir``.
    """
    ckpt = load_checkpoint(checkpoint)
    rows = checkpoint_splits(checkpoint, data_dir, encoder=ckpt.encoder, metrics=ckpt.metrics).test
    if n_rows is not None:
        rows = rows.take(slice(0, n_rows))
    probabilities = predict(ckpt.model, rows)
    return OfflineReference(rows, probabilities, evaluate(rows.labels, probabilities)["auc"])

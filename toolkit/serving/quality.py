"""What a served model answers, compared with what the trained model answered offline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from toolkit.metrics import evaluate
from toolkit.serving.client import InferenceClient

__all__ = ["ServedQuality", "served_quality"]


@dataclass
class ServedQuality:
    """Served AUC and log loss over N rows, and the largest |served − reference| probability."""

    model_name: str
    protocol: str
    n_rows: int
    auc: float
    log_loss: float
    max_abs_diff: float | None


def served_quality(
    client: InferenceClient,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    output_name: str = "probability",
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> ServedQuality:
    """Send every row of ``inputs`` to the served model and score its probabilities.

    Args:
        client: an :class:`InferenceClient` for the model.
        inputs: model inputs by name, each with N rows.
        labels: (N,) 0/1 labels.
        reference: (N,) probabilities of the trained model (e.g. PyTorch offline); when
            given, the result carries the maximum absolute difference from it.
        batch_size: rows per request (capped by the model's ``max_batch_size``).
        progress: called after each request with the number of rows it answered.

    Raises:
        InferenceError, ServingError: see :class:`InferenceClient`.
    """
    served = client.infer_batched(inputs, batch_size, progress=progress)[output_name].reshape(-1)
    metrics = evaluate(labels, served)
    diff = None if reference is None else float(np.max(np.abs(served.astype(np.float64) - np.asarray(reference).reshape(-1))))
    return ServedQuality(client.model_name, client.protocol, len(served), metrics["auc"], metrics["log_loss"], diff)

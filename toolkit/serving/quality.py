"""What a served model answers, compared with what the trained model answered offline.

:func:`served_quality` scores one client's answers on N rows; :func:`measure_served` does it for a
model on one server or several replicas and also times single-row requests: what
``tritonrec infer`` and ``tritonrec demo`` report for every served variant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from toolkit.metrics import evaluate
from toolkit.serving.client import InferenceClient, LatencyStats, measure_latency
from toolkit.serving.router import ReplicaStatus, RoutedInferenceClient, Router

__all__ = ["AUC_TOLERANCE", "ServedQuality", "ServedMeasurement", "served_quality", "measure_served"]

#: An FP32 variant's served AUC must equal the offline AUC to this (the main job's acceptance bar, issue 1):
#: FP32 variants answer within 1e-5 of PyTorch (``tritonrec verify``'s bar), and such differences move
#: an AUC only where they swap the order of two scores.
AUC_TOLERANCE = 1e-4


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


@dataclass
class ServedMeasurement:
    """What :func:`measure_served` measured: quality on every row, single-row latency, requests per replica.

    Attributes:
        quality: served AUC, log loss and max |served - reference| over the rows.
        latency: percentiles of the timed single-row requests (None when none were asked for).
        replicas: what the router counted per replica (empty for one server).
    """

    quality: ServedQuality
    latency: LatencyStats | None
    replicas: list[ReplicaStatus] = field(default_factory=list)


def measure_served(
    url: str | Sequence[str],
    protocol: Literal["http", "grpc"],
    model: str,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    batch_size: int = 256,
    latency_requests: int = 0,
    routing: str = "least_outstanding",
    progress: Callable[[int], None] | None = None,
) -> ServedMeasurement:
    """Served quality of ``model`` on every row of ``inputs`` and, if ``latency_requests``, single-row latency.

    Args:
        url: ``host:port`` of one server, or of several replicas of it, whose requests a
            :class:`~toolkit.serving.router.Router` spreads with ``routing``.
        inputs, labels, reference: as :func:`served_quality` takes them (N rows; (N,) labels and
            offline probabilities).
        latency_requests: sequential single-row requests timed by :func:`~toolkit.serving.client.measure_latency`
            after the quality pass (0: none).
        progress: called after each request of the quality pass with the number of rows it answered.

    Raises:
        InferenceError, ServingError: see :class:`~toolkit.serving.client.InferenceClient`.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if len(urls) == 1:
        client: InferenceClient = InferenceClient(urls[0], protocol=protocol, model_name=model)
    else:
        client = RoutedInferenceClient(Router(urls, protocol=protocol, policy=routing, model_name=model), model_name=model)
    with client:
        quality = served_quality(client, inputs, labels, reference=reference, batch_size=batch_size, progress=progress)
        latency = measure_latency(client, inputs, latency_requests) if latency_requests else None
        replicas = client.router.replicas() if isinstance(client, RoutedInferenceClient) else []
    return ServedMeasurement(quality, latency, list(replicas))

"""Model control and measurement: load a candidate into a running server and sweep it with perf_analyzer.

One *measurement* loads a :class:`~toolkit.perf.tune.space.Candidate` into the running server
through Triton's model-control API (``load_model(name, config=<JSON>)``: the server must run with
``--model-control-mode=explicit``; nothing is written to the repository) and runs perf_analyzer
at a fixed set of concurrency levels with real rows (:class:`TritonEvaluator`).

Facts checked against the Triton 2.51 server of the nvidia-pytriton wheel (Python backend):

* ``load_model(name, config=json)`` on an explicit-mode server reloads the model with that
  config (instance count, batching and ``parameters`` all take effect; ~1.7 s for an
  ONNX Runtime Python-backend model on 2 cores). An invalid config (a preferred batch size over
  ``max_batch_size``) fails with ``failed to poll from model repository`` and leaves the loaded
  model serving.
* The override sticks: a later ``load_model(name)`` without a config is a no-op while the files
  on disk are unchanged. After :func:`~toolkit.repository.versions.write_version` changed them
  it loads the new version with the new ``config.pbtxt`` (and, under the default ``latest: 1``
  policy, unloads the old one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from toolkit.errors import PerfError, RepositoryError
from toolkit.perf.analyzer import LoadPoint, PerfAnalyzer, run_perf_analyzer, write_input_data
from toolkit.perf.tune.space import Candidate, Measurement
from toolkit.perf.tune.triton_config import candidate_config, config_json
from toolkit.repository.config import ModelConfig, config_tensor_specs, read_config
from toolkit.tensors import TensorSpec

__all__ = ["apply_candidate", "MeasureSettings", "TritonEvaluator"]

log = logging.getLogger(__name__)

_EXPLICIT_HINT = "start the server with --model-control-mode=explicit (e.g. --load-model=*), or let `tritonrec tune` start its own"


def _control_client(url: str, protocol: str) -> Any:
    return (grpcclient if protocol == "grpc" else httpclient).InferenceServerClient(url)


def _load(client: Any, model: str, config: ModelConfig | None) -> None:
    """``load_model`` with a config override (or from disk when None); PerfError when model control is off."""
    try:
        if config is None:
            client.load_model(model)
        else:
            client.load_model(model, config=config_json(config))
    except InferenceServerException as exc:
        message = exc.message() or str(exc)
        if "not allowed" in message or "polling is enabled" in message or "model control" in message.lower():
            raise PerfError(f"the server does not accept model-control requests: {message}", hint=_EXPLICIT_HINT) from exc
        raise


def apply_candidate(
    repository: Path, model: str, candidate: Candidate, *, url: str | None = None, protocol: Literal["grpc", "http"] = "grpc"
) -> ModelConfig:
    """The candidate's config for ``repository/model`` (read from its ``config.pbtxt``), loaded into the
    server at ``url`` through model control when given. Nothing is written to the repository.

    Raises:
        RepositoryError: the config is missing or does not batch.
        PerfError: the server refuses model control or the load (Triton's message).
    """
    config = candidate_config(read_config(Path(repository) / model / "config.pbtxt"), candidate)
    if url is not None:
        client = _control_client(url, protocol)
        try:
            _load(client, model, config)
        except InferenceServerException as exc:
            raise PerfError(f"the server at {url} did not load {candidate.key} of model '{model}': {exc.message()}") from exc
        finally:
            client.close()
    return config


# -- measuring on a server -------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureSettings:
    """How one candidate is measured: perf_analyzer at each concurrency level with real rows.

    Attributes:
        concurrency: the levels, each its own perf_analyzer run.
        batch_size: rows per request (``-b``); must fit the smallest ``max_batch_size`` searched.
        protocol: used for perf_analyzer and for model control.
        measurement_interval_ms, stability_percentage, max_trials: perf_analyzer's ``-p``, ``-s``, ``-r``.
        timeout_s: per level.
    """

    concurrency: tuple[int, ...] = (1, 4, 8)
    batch_size: int = 16
    protocol: Literal["grpc", "http"] = "grpc"
    measurement_interval_ms: int = 500
    stability_percentage: float = 30.0
    max_trials: int = 5
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", tuple(int(c) for c in self.concurrency))
        if not self.concurrency or any(c < 1 for c in self.concurrency) or self.batch_size < 1:
            raise PerfError("concurrency levels and the batch size must be >= 1")
        if self.protocol not in ("grpc", "http"):
            raise PerfError(f"protocol must be 'grpc' or 'http', got {self.protocol!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["concurrency"] = list(self.concurrency)
        return d


class TritonEvaluator:
    """Measures candidates on a running explicit-mode server: load through model control, then perf_analyzer.

    Args:
        model: the served model.
        url: ``host:port`` of the server's endpoint for ``settings.protocol``.
        base_config: the model's config (from its ``config.pbtxt``); candidates change its knobs.
        rows: real input rows by tensor name (written once as perf_analyzer ``--input-data``).
        input_specs: the model's inputs (default: from ``base_config``).
        out_dir: perf_analyzer's reports, one folder per candidate and level.
    """

    def __init__(
        self,
        model: str,
        url: str,
        *,
        base_config: ModelConfig,
        rows: Mapping[str, np.ndarray],
        settings: MeasureSettings,
        out_dir: Path,
        input_specs: Sequence[TensorSpec] | None = None,
        analyzer: PerfAnalyzer | None = None,
    ) -> None:
        self.model, self.url, self.base_config, self.settings, self.analyzer = model, url, base_config, settings, analyzer
        self.out_dir = Path(out_dir)
        self.input_specs = list(input_specs) if input_specs is not None else config_tensor_specs(base_config)[0]
        self.input_data = write_input_data(self.out_dir / "input_data.json", rows, batch_size=settings.batch_size)
        self._client = _control_client(url, settings.protocol)

    def __call__(self, candidate: Candidate) -> Measurement:
        if self.settings.batch_size > candidate.max_batch_size:
            return Measurement(candidate, [], error=f"client batch {self.settings.batch_size} > max_batch_size {candidate.max_batch_size}")
        try:
            config = candidate_config(self.base_config, candidate)
        except RepositoryError as exc:
            return Measurement(candidate, [], error=str(exc))
        started = time.perf_counter()
        try:
            _load(self._client, self.model, config)
            if not self._client.is_model_ready(self.model):
                raise InferenceServerException(f"model '{self.model}' is not ready after loading")
        except InferenceServerException as exc:
            return Measurement(candidate, [], error=f"load failed: {exc.message()}", load_s=time.perf_counter() - started)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        points: list[LoadPoint] = []
        level_errors: dict[int, str] = {}
        for level in self.settings.concurrency:
            try:
                points += run_perf_analyzer(
                    self.model,
                    self.url,
                    protocol=self.settings.protocol,
                    input_data=self.input_data,
                    input_specs=self.input_specs,
                    batch_size=self.settings.batch_size,
                    concurrency=[level],
                    measurement_interval_ms=self.settings.measurement_interval_ms,
                    stability_percentage=self.settings.stability_percentage,
                    max_trials=self.settings.max_trials,
                    timeout_s=self.settings.timeout_s,
                    out_dir=self.out_dir / candidate.key / f"c{level}",
                    profile_export=False,
                    analyzer=self.analyzer,
                )
            except PerfError as exc:
                if "cannot reach" in str(exc) or "not found" in str(exc):
                    raise
                level_errors[level] = str(exc)
                log.warning("%s at concurrency %d: %s", candidate.key, level, exc)
        error = None if points else "no concurrency level measured: " + "; ".join(f"c{k}: {v}" for k, v in level_errors.items())
        return Measurement(candidate, points, error, level_errors, load_s, time.perf_counter() - started)

    def load(self, config: ModelConfig | None) -> None:
        """Load ``config`` (or, with None, the repository's files) into the server."""
        _load(self._client, self.model, config)

    def close(self) -> None:
        self._client.close()

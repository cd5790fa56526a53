"""Load sweeps of served models: perf_analyzer's numbers plus Triton's own metrics and CPU use.

For every load level, perf_analyzer runs alone while the Prometheus metrics of the server
are read before and after (``nv_inference_count`` / ``nv_inference_exec_count`` give the
average batch the dynamic batcher formed) and the machine's CPU utilization is sampled
with psutil over the same window. For an ensemble the same counters of its composing models
(``composing_models``) are recorded too: they show the steps really ran, and the batch the
ranker's dynamic batcher formed behind the ensemble.

Which rows a model gets (:func:`rows_for_model`): the raw-feature ensembles
(``<model>_ensemble``, inputs :data:`toolkit.repository.raw_inputs.RAW_INPUT_SPECS`) take the
raw request (BYTES strings) of the same test rows the rankers get as encoded tensors, so the
two are measured like for like.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from toolkit.errors import PerfError, UnstableMeasurementError
from toolkit.perf.analyzer import LoadPoint, parse_profile_export, run_perf_analyzer, write_input_data
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS
from toolkit.tensors import TensorSpec

__all__ = ["SweepPoint", "Sweep", "ensemble_steps", "is_raw_feature_model", "rows_for_model", "scrape_counters", "sweep_model"]

_RAW_INPUT_NAMES = frozenset(s.name for s in RAW_INPUT_SPECS)

log = logging.getLogger(__name__)


def scrape_counters(
    metrics_url: str, names: Sequence[str] = ("nv_inference_count", "nv_inference_exec_count")
) -> dict[tuple[str, str], float]:
    """Triton's Prometheus counters by (metric name, model), summed over versions.

    Raises:
        PerfError: the metrics endpoint cannot be read.
    """
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 (loopback URL we started)
            text = response.read().decode()
    except OSError as exc:
        raise PerfError(f"cannot read Triton metrics at {metrics_url}: {exc}", hint="start the server with its metrics port open") from exc
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            base = sample.name.removesuffix("_total")
            if base in names or sample.name in names:
                key = (family.name, sample.labels.get("model", ""))
                out[key] = out.get(key, 0.0) + sample.value
    return out


@dataclass
class SweepPoint:
    """One load level: perf_analyzer's :class:`LoadPoint` plus server-side batching and CPU use.

    Attributes:
        point: perf_analyzer's numbers.
        avg_server_batch: delta ``nv_inference_count`` / delta ``nv_inference_exec_count`` of the
            swept model over the level (``None`` when it executed nothing).
        cpu_utilization_pct: the whole machine's CPU use over the level (client and server).
        profile_requests: requests in perf_analyzer's profile export (warm-up included).
        composing: per composing model (an ensemble's steps, when asked for):
            ``{"inferences": rows, "executions": model executions, "avg_batch": rows per execution or None}``,
            deltas of Triton's counters over the level.
    """

    point: LoadPoint
    avg_server_batch: float | None
    cpu_utilization_pct: float
    profile_requests: int | None = None
    composing: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = self.point.to_dict()
        d["avg_server_batch"] = self.avg_server_batch
        d["cpu_utilization_pct"] = self.cpu_utilization_pct
        d["profile_export_requests"] = self.profile_requests
        d["composing_models"] = self.composing
        return d


@dataclass
class Sweep:
    """A concurrency sweep of one model, protocol and client batch size."""

    model: str
    protocol: str
    batch_size: int
    points: list[SweepPoint]
    unstable_levels: list[float] = field(default_factory=list)

    def best_within(self, p99_budget_ms: float) -> SweepPoint | None:
        """The highest-throughput point whose p99 latency is within the budget, or None."""
        ok = [p for p in self.points if p.point.p99_latency_ms <= p99_budget_ms]
        return max(ok, key=lambda p: p.point.throughput_infer_per_s) if ok else None

    def at(self, load: float) -> SweepPoint | None:
        """The point measured at this load level (concurrency, or request rate), if any."""
        return next((p for p in self.points if p.point.load == load), None)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "protocol": self.protocol,
            "batch_size": self.batch_size,
            "points": [p.to_dict() for p in self.points],
            "unstable_levels": self.unstable_levels,
        }


def is_raw_feature_model(input_specs: Sequence[TensorSpec]) -> bool:
    """Whether a model takes the raw-feature request: every input is one of
    :data:`~toolkit.repository.raw_inputs.RAW_INPUT_SPECS` (``user_id``, ..., ``genres``, BYTES)."""
    names = {s.name for s in input_specs}
    return bool(names) and names <= _RAW_INPUT_NAMES


def rows_for_model(
    model: str,
    input_specs: Sequence[TensorSpec],
    *,
    max_batch_size: int,
    output_names: Sequence[str] = (),
    encoded: Mapping[str, np.ndarray],
    raw: Mapping[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """The perf_analyzer input rows for one served model.

    A raw-feature model (:func:`is_raw_feature_model`, e.g. ``dlrm_ensemble``) gets ``raw``, the
    BYTES request of :func:`toolkit.repository.raw_inputs.raw_request` ((N, 1) per scalar feature,
    ``genres`` (N, G)); every other model gets ``encoded`` (``EncodedRows.inputs()``:
    ``dense_features`` float32 (N, 2), ``sparse_ids`` int64 (N, 7), ``multi_hot_ids`` int64
    (N, G)). Pass both built from the same test rows, so that the ensemble and the ranker it calls
    are measured on the same data.

    Args:
        model: the model's name (for messages).
        input_specs, max_batch_size, output_names: the served model's inputs, ``max_batch_size``
            and output names (``InferenceClient``'s ``input_specs``, ``max_batch_size``,
            ``output_specs``).
        encoded: encoded rows by input name.
        raw: the raw request of the same rows, or ``None`` when there is none.

    Raises:
        PerfError: a top-K model (``<model>_topk``: ``max_batch_size: 0``, output
            ``top_item_ids``): one request is one user's whole candidate list, which perf_analyzer's
            one-row-per-entry data does not model; a raw-feature model without ``raw`` rows or
            with an input ``raw`` lacks.
    """
    raw_model = is_raw_feature_model(input_specs)
    if max_batch_size == 0 and (raw_model or "top_item_ids" in output_names):
        raise PerfError(
            f"model '{model}' is a top-K model (max_batch_size 0, outputs {', '.join(output_names) or 'none'}): one request is one "
            "user's whole candidate list, ranked together, which perf_analyzer's input data (one row per entry, -b rows per "
            "request from consecutive entries of different users) does not model",
            hint=f"sweep the ensemble (e.g. {model.removesuffix('_topk')}_ensemble) instead: it runs the same preprocess and ranker",
        )
    if not raw_model:
        return dict(encoded)
    if raw is None:
        raise PerfError(f"model '{model}' takes raw features ({', '.join(s.name for s in input_specs)}) and no raw rows were given")
    missing = [s.name for s in input_specs if s.name not in raw]
    if missing:
        raise PerfError(f"model '{model}': the raw rows lack input(s) {', '.join(missing)}")
    return {s.name: raw[s.name] for s in input_specs}


def ensemble_steps(grpc_url: str, model: str) -> list[str]:
    """The composing models of an ensemble (its ``ensemble_scheduling.step[].model_name``, in
    order), read from the server's model config over gRPC; ``[]`` for a model that is not an ensemble.

    Raises:
        PerfError: the server cannot be reached or does not know the model (names both).
    """
    try:
        with grpcclient.InferenceServerClient(grpc_url) as client:
            config = client.get_model_config(model, as_json=True)["config"]
    except InferenceServerException as exc:
        raise PerfError(f"cannot read the config of model '{model}' from {grpc_url}: {exc.message()}") from exc
    steps = config.get("ensemble_scheduling", {}).get("step", [])
    return [str(step["model_name"]) for step in steps if "model_name" in step]


def sweep_model(
    model: str,
    *,
    url: str,
    protocol: Literal["grpc", "http"],
    metrics_url: str,
    input_specs: Sequence[TensorSpec],
    rows: Mapping[str, np.ndarray],
    batch_size: int,
    concurrency: Sequence[int] | None = None,
    request_rate: Sequence[float] | None = None,
    request_distribution: Literal["constant", "poisson"] = "constant",
    out_dir: Path,
    measurement_interval_ms: int = 1000,
    stability_percentage: float = 20,
    composing_models: Sequence[str] = (),
    on_log: Callable[[str], None] | None = None,
) -> Sweep:
    """Run perf_analyzer at each concurrency level (or request rate) with real rows as input data.

    Args:
        rows: real input rows by tensor name (e.g. test-split rows: every id inside its table;
            for a raw-feature ensemble the BYTES request of the same rows, see :func:`rows_for_model`).
        batch_size: rows per request sent by the client (``-b``).
        concurrency: outstanding requests per level; or ``request_rate``: requests per second per
            level, sent with ``request_distribution`` (``poisson`` for realistic arrivals).
        out_dir: where the input data and, per level, perf_analyzer's CSV, its JSON profile
            export (``--profile-export-file``, parsed for its request count) and log go.
        stability_percentage: perf_analyzer ``-s``: how far (in %) the last windows may differ.
            20 rather than perf_analyzer's 10 because client and server share two noisy cores;
            a level that still does not settle after a retry is skipped and listed in
            ``Sweep.unstable_levels``.
        composing_models: other models whose counters are recorded per level in
            :attr:`SweepPoint.composing` (an ensemble's steps, :func:`ensemble_steps`).

    Raises:
        PerfError: perf_analyzer is missing, fails, or the server is unreachable.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (concurrency is None) == (request_rate is None):
        raise PerfError("give concurrency levels or request rates, not both and not neither")
    data = write_input_data(out_dir / "input_data.json", rows, batch_size=batch_size)
    points: list[SweepPoint] = []
    unstable: list[float] = []
    kind = "c" if concurrency is not None else "r"
    for level in concurrency if concurrency is not None else request_rate:
        before = scrape_counters(metrics_url)
        psutil.cpu_percent(interval=None)
        try:
            found = run_perf_analyzer(
                model,
                url,
                protocol=protocol,
                input_data=data,
                input_specs=input_specs,
                batch_size=batch_size,
                concurrency=[level] if kind == "c" else None,
                request_rate=[level] if kind == "r" else None,
                request_distribution=request_distribution,
                measurement_interval_ms=measurement_interval_ms,
                stability_percentage=stability_percentage,
                out_dir=out_dir / f"{kind}{level:g}",
                profile_export=True,
            )
        except UnstableMeasurementError as exc:
            # A shared machine can keep one level from settling; keep the others and say which was lost.
            log.warning("%s; skipping load level %g", exc, level)
            if on_log:
                on_log(f"{model} {protocol} b{batch_size} {kind}{level:g}: no stable measurement, level skipped")
            unstable.append(level)
            continue
        cpu = psutil.cpu_percent(interval=None)
        after = scrape_counters(metrics_url)
        inferences = after.get(("nv_inference_count", model), 0.0) - before.get(("nv_inference_count", model), 0.0)
        executions = after.get(("nv_inference_exec_count", model), 0.0) - before.get(("nv_inference_exec_count", model), 0.0)
        avg_batch = inferences / executions if executions > 0 else None
        composing = {}
        for name in composing_models:
            n_inf = after.get(("nv_inference_count", name), 0.0) - before.get(("nv_inference_count", name), 0.0)
            n_exec = after.get(("nv_inference_exec_count", name), 0.0) - before.get(("nv_inference_exec_count", name), 0.0)
            composing[name] = {"inferences": n_inf, "executions": n_exec, "avg_batch": n_inf / n_exec if n_exec > 0 else None}
        export = out_dir / f"{kind}{level:g}" / "profile_export.json"
        requests = sum(e.request_count for e in parse_profile_export(export)) if export.is_file() else None
        for p in found:
            points.append(SweepPoint(p, avg_batch, cpu, requests, composing))
            if on_log:
                on_log(
                    f"{model} {protocol} b{batch_size} {kind}{level:g}: {p.throughput_infer_per_s:,.0f} infer/s, "
                    f"p99 {p.p99_latency_ms:.2f} ms, server batch {avg_batch or 0:.1f}, CPU {cpu:.0f}%"
                )
    if not points:
        raise PerfError(f"perf_analyzer measured no load point for {model} ({protocol}, batch {batch_size})")
    return Sweep(model, protocol, batch_size, points, unstable)

"""Load sweeps of served models: perf_analyzer's numbers plus Triton's own metrics and CPU use.

For every load level, perf_analyzer runs alone while the Prometheus metrics of the server
are read before and after (``nv_inference_count`` / ``nv_inference_exec_count`` give the
average batch the dynamic batcher formed) and the machine's CPU utilization is sampled
with psutil over the same window.
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
from prometheus_client.parser import text_string_to_metric_families

from toolkit.errors import PerfError, UnstableMeasurementError
from toolkit.perf.analyzer import LoadPoint, parse_profile_export, run_perf_analyzer, write_input_data
from toolkit.tensors import TensorSpec

__all__ = ["SweepPoint", "Sweep", "scrape_counters", "sweep_model"]

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
    """One load level: perf_analyzer's :class:`LoadPoint` plus server-side batching and CPU use."""

    point: LoadPoint
    avg_server_batch: float | None
    cpu_utilization_pct: float
    profile_requests: int | None = None

    def to_dict(self) -> dict:
        d = self.point.to_dict()
        d["avg_server_batch"] = self.avg_server_batch
        d["cpu_utilization_pct"] = self.cpu_utilization_pct
        d["profile_export_requests"] = self.profile_requests
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
    on_log: Callable[[str], None] | None = None,
) -> Sweep:
    """Run perf_analyzer at each concurrency level (or request rate) with real rows as input data.

    Args:
        rows: real input rows by tensor name (e.g. test-split rows: every id inside its table).
        batch_size: rows per request sent by the client (``-b``).
        concurrency: outstanding requests per level; or ``request_rate``: requests per second per
            level, sent with ``request_distribution`` (``poisson`` for realistic arrivals).
        out_dir: where the input data and, per level, perf_analyzer's CSV, its JSON profile
            export (``--profile-export-file``, parsed for its request count) and log go.
        stability_percentage: perf_analyzer ``-s``: how far (in %) the last windows may differ.
            20 rather than perf_analyzer's 10 because client and server share two noisy cores;
            a level that still does not settle after a retry is skipped and listed in
            ``Sweep.unstable_levels``.

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
        export = out_dir / f"{kind}{level:g}" / "profile_export.json"
        requests = sum(e.request_count for e in parse_profile_export(export)) if export.is_file() else None
        for p in found:
            points.append(SweepPoint(p, avg_batch, cpu, requests))
            if on_log:
                on_log(
                    f"{model} {protocol} b{batch_size} {kind}{level:g}: {p.throughput_infer_per_s:,.0f} infer/s, "
                    f"p99 {p.p99_latency_ms:.2f} ms, server batch {avg_batch or 0:.1f}, CPU {cpu:.0f}%"
                )
    if not points:
        raise PerfError(f"perf_analyzer measured no load point for {model} ({protocol}, batch {batch_size})")
    return Sweep(model, protocol, batch_size, points, unstable)

"""The whole job: search on an explicit-mode server, write the chosen config as a new version, load it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from toolkit.perf.analyzer import PerfAnalyzer
from toolkit.perf.tune.measure import MeasureSettings, TritonEvaluator
from toolkit.perf.tune.search import CoordinateSearch, GridSearch, SearchStrategy, TuneResult, run_search, summarize
from toolkit.perf.tune.space import Measurement, Objective, SearchSpace
from toolkit.perf.tune.triton_config import candidate_config, candidate_from_config
from toolkit.repository.config import read_config
from toolkit.repository.versions import write_version
from toolkit.tensors import TensorSpec

__all__ = ["tune"]


def tune(
    model: str,
    *,
    repository: Path,
    url: str,
    rows: Mapping[str, np.ndarray],
    out_dir: Path,
    space: SearchSpace | None = None,
    objective: Objective | None = None,
    settings: MeasureSettings | None = None,
    brute_force: bool = False,
    strategy: SearchStrategy | None = None,
    write: bool = True,
    input_specs: Sequence[TensorSpec] | None = None,
    analyzer: PerfAnalyzer | None = None,
    on_log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search the space for the best config of ``model`` on the explicit-mode server at ``url``.

    Every candidate is loaded with ``load_model(model, config=...)`` and measured by
    :class:`TritonEvaluator`; the strategy is :class:`CoordinateSearch` starting from the
    model's current ``config.pbtxt`` (or :class:`GridSearch` with ``brute_force``). Afterwards,
    with ``write`` and a feasible candidate, the chosen config is written as a new version
    (:func:`write_version`) and loaded from the repository (the server then serves version N+1);
    otherwise the repository's config is loaded back.

    Args:
        repository: the model repository the server serves.
        url: ``host:port`` of the server's gRPC (or, with ``settings.protocol="http"``, HTTP) endpoint.
        rows: real input rows by tensor name.
        out_dir: perf_analyzer's input data and reports.

    Raises:
        PerfError: the server refuses model control (not in explicit mode), perf_analyzer is
            missing or the server unreachable. A candidate that fails to load or measure is
            recorded with its error and counts as infeasible.
        RepositoryError: the model's config is missing or does not batch.
    """
    started = time.perf_counter()
    space = space or SearchSpace()
    objective = objective or Objective()
    settings = settings or MeasureSettings()
    repository = Path(repository)
    base = read_config(repository / model / "config.pbtxt")
    if strategy is None:
        strategy = GridSearch(space) if brute_force else CoordinateSearch(space, objective, start=candidate_from_config(base))
    evaluator = TritonEvaluator(
        model, url, base_config=base, rows=rows, settings=settings, out_dir=Path(out_dir), input_specs=input_specs, analyzer=analyzer
    )

    def report(m: Measurement) -> None:
        if on_log is None:
            return
        op = objective.operating_point(m)
        what = (
            m.error
            if m.error
            else ", ".join(f"c{p.concurrency} {p.throughput_infer_per_s:,.0f}/s p99 {p.p99_latency_ms:.2f} ms" for p in m.points)
        )
        best = "infeasible" if op is None else f"best c{op.concurrency} {op.throughput_infer_per_s:,.0f}/s"
        on_log(f"{m.candidate.key}: {what} -> {best} (load {m.load_s:.1f} s, measure {m.measure_s:.1f} s)")

    try:
        measurements = run_search(strategy, evaluator, on_measured=report)
        result = summarize(model, strategy, measurements, objective, space, settings)
        if write and result.chosen is not None:
            config = candidate_config(base, result.chosen.candidate)
            result.version_dir = write_version(repository, model, config)
            evaluator.load(None)  # the files changed: this loads version N+1 with the new config.pbtxt
            if on_log:
                on_log(f"wrote {result.version_dir} ({result.chosen.candidate.key}) and loaded it")
        else:
            with contextlib.suppress(InferenceServerException):
                evaluator.load(base)
    finally:
        evaluator.close()
    result.elapsed_s = time.perf_counter() - started
    return result

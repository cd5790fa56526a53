"""Tune a served model's Triton config under a latency budget, loading candidates through model control.

The knobs (:class:`SearchSpace`): ``instance_group`` count, ``dynamic_batching``
``max_queue_delay_microseconds``, ``max_batch_size`` with its ``preferred_batch_size`` list, and
the ONNX Runtime intra-/inter-op thread counts (``parameters``). One *measurement* loads a
:class:`Candidate` into the running server through Triton's model-control API
(``load_model(name, config=<JSON>)``: the server must run with ``--model-control-mode=explicit``;
nothing is written to the repository while searching) and runs perf_analyzer at a fixed set of
concurrency levels with real rows. Its score (:class:`Objective`) is the highest throughput of a
level whose p99 latency is within the budget, or, with a throughput floor, the lowest p99 of a
level that reaches the floor.

One module per responsibility:

* :mod:`~toolkit.perf.tune.space`: the candidates, the space, measurements and the objective (pure data);
* :mod:`~toolkit.perf.tune.search`: the pure search (:class:`CoordinateSearch`, :class:`GridSearch`,
  :func:`run_search`), its result (:func:`summarize`) and replays of recorded measurements;
* :mod:`~toolkit.perf.tune.triton_config`: candidates to Triton configs and back, written through
  :func:`toolkit.repository.config.retuned_config`;
* :mod:`~toolkit.perf.tune.measure`: model control and measurement on a server (:class:`TritonEvaluator`);
* :mod:`~toolkit.perf.tune.job`: the whole job (:func:`tune`), which writes the chosen config as a
  new version (:func:`write_version`).

Never imports torch (``.importlinter``).
"""

from toolkit.perf.tune.job import tune
from toolkit.perf.tune.measure import MeasureSettings, TritonEvaluator, apply_candidate
from toolkit.perf.tune.search import (
    CoordinateSearch,
    GridSearch,
    SearchStrategy,
    SearchTrace,
    TuneResult,
    load_recorded,
    replay,
    run_search,
    summarize,
)
from toolkit.perf.tune.space import KNOBS, Candidate, Measurement, Objective, ParetoPoint, SearchSpace, pareto_front
from toolkit.perf.tune.triton_config import candidate_config, candidate_from_config, config_json
from toolkit.repository.versions import write_version

__all__ = [
    "KNOBS",
    "Candidate",
    "SearchSpace",
    "Objective",
    "Measurement",
    "MeasureSettings",
    "ParetoPoint",
    "SearchStrategy",
    "SearchTrace",
    "CoordinateSearch",
    "GridSearch",
    "TuneResult",
    "summarize",
    "load_recorded",
    "replay",
    "candidate_config",
    "candidate_from_config",
    "config_json",
    "apply_candidate",
    "write_version",
    "pareto_front",
    "run_search",
    "TritonEvaluator",
    "tune",
]

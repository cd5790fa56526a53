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

:class:`CoordinateSearch` is the smart strategy; :class:`GridSearch` measures every candidate
(the brute force it is compared with). Both are pure -- ``next_candidate(measured)`` depends only
on the measurements passed in -- so recorded curves replay them without a server.

Facts checked against the Triton 2.51 server of the nvidia-pytriton wheel (Python backend):

* ``load_model(name, config=json)`` on an explicit-mode server reloads the model with that
  config (instance count, batching and ``parameters`` all take effect; ~1.7 s for an
  ONNX Runtime Python-backend model on 2 cores). An invalid config (a preferred batch size over
  ``max_batch_size``) fails with ``failed to poll from model repository`` and leaves the loaded
  model serving.
* The override sticks: a later ``load_model(name)`` without a config is a no-op while the files
  on disk are unchanged. After :func:`write_version` changed them it loads the new version with
  the new ``config.pbtxt`` (and, under the default ``latest: 1`` policy, unloads the old one).

Never imports torch (``.importlinter``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from toolkit.errors import PerfError, RepositoryError
from toolkit.perf.analyzer import LoadPoint, PerfAnalyzer, run_perf_analyzer, write_input_data
from toolkit.repository.config import ModelConfig, config_tensor_specs, read_config, thread_parameter_keys
from toolkit.repository.versions import write_version
from toolkit.tensors import TensorSpec

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

log = logging.getLogger(__name__)

#: The knobs, in the order :class:`CoordinateSearch` visits them by default.
KNOBS = ("batching", "max_queue_delay_us", "instance_count", "intra_op_threads", "inter_op_threads")
_EXPLICIT_HINT = "start the server with --model-control-mode=explicit (e.g. --load-model=*), or let `tritonrec tune` start its own"


# -- candidates and the space ----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One point of the search space: the knobs a measurement loads into the server.

    Attributes:
        instance_count: ``instance_group[0].count``.
        max_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``.
        max_batch_size: ``max_batch_size``.
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size``.
        intra_op_threads, inter_op_threads: ONNX Runtime's thread counts, written as the
            model's ``parameters`` (``intra_op_threads`` for the Python-backend runners,
            ``intra_op_thread_count`` for the onnxruntime backend).
    """

    instance_count: int = 1
    max_queue_delay_us: int = 100
    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (64, 256)
    intra_op_threads: int = 1
    inter_op_threads: int = 1

    @property
    def batching(self) -> tuple[int, tuple[int, ...]]:
        """``(max_batch_size, preferred_batch_sizes)``: one knob, they are searched together."""
        return (self.max_batch_size, self.preferred_batch_sizes)

    @property
    def key(self) -> str:
        """A short stable name, e.g. ``i1_d100_b256p64-256_t1x1``."""
        preferred = "-".join(str(b) for b in self.preferred_batch_sizes) or "none"
        return (
            f"i{self.instance_count}_d{self.max_queue_delay_us}_b{self.max_batch_size}p{preferred}"
            f"_t{self.intra_op_threads}x{self.inter_op_threads}"
        )

    def value(self, knob: str) -> Any:
        """The value of one of :data:`KNOBS`."""
        if knob not in KNOBS:
            raise PerfError(f"unknown knob {knob!r}; knobs are {', '.join(KNOBS)}")
        return self.batching if knob == "batching" else getattr(self, knob)

    def with_value(self, knob: str, value: Any) -> Candidate:
        """A copy with one knob changed."""
        d = self.to_dict()
        if knob == "batching":
            d["max_batch_size"], d["preferred_batch_sizes"] = value[0], list(value[1])
        elif knob in KNOBS:
            d[knob] = value
        else:
            raise PerfError(f"unknown knob {knob!r}; knobs are {', '.join(KNOBS)}")
        return Candidate.from_dict(d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "preferred_batch_sizes" in values:
            values["preferred_batch_sizes"] = tuple(int(b) for b in values["preferred_batch_sizes"])
        return cls(**values)


def _as_batching(value: Any) -> tuple[int, tuple[int, ...]]:
    max_batch, preferred = value
    return (int(max_batch), tuple(int(b) for b in preferred))


@dataclass(frozen=True)
class SearchSpace:
    """The values tried per knob; every axis is ordered (ascending), the product is the grid.

    The defaults fit a 2-core CPU box: 1-2 instances, queue delays 0-2 ms, a small and a large
    batching setup, 1-2 intra-op threads (2 x 4 x 2 x 2 = 32 candidates).

    Raises:
        PerfError: an empty axis, repeated or unordered values, a count below its minimum, or a
            preferred batch size outside ``[1, max_batch_size]``.
    """

    instance_counts: tuple[int, ...] = (1, 2)
    max_queue_delays_us: tuple[int, ...] = (0, 100, 500, 2000)
    batchings: tuple[tuple[int, tuple[int, ...]], ...] = ((64, (32,)), (256, (64, 256)))
    intra_op_threads: tuple[int, ...] = (1, 2)
    inter_op_threads: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "instance_counts", tuple(int(v) for v in self.instance_counts))
        object.__setattr__(self, "max_queue_delays_us", tuple(int(v) for v in self.max_queue_delays_us))
        object.__setattr__(self, "batchings", tuple(_as_batching(b) for b in self.batchings))
        object.__setattr__(self, "intra_op_threads", tuple(int(v) for v in self.intra_op_threads))
        object.__setattr__(self, "inter_op_threads", tuple(int(v) for v in self.inter_op_threads))
        for knob in KNOBS:
            values = self.axis(knob)
            if not values:
                raise PerfError(f"search space: no value for {knob}")
            if list(values) != sorted(set(values)):
                raise PerfError(f"search space: {knob} values must be unique and ascending, got {list(values)}")
        minimum = {"instance_counts": 1, "max_queue_delays_us": 0, "intra_op_threads": 1, "inter_op_threads": 1}
        for name, low in minimum.items():
            if min(getattr(self, name)) < low:
                raise PerfError(f"search space: {name} must be >= {low}, got {list(getattr(self, name))}")
        for max_batch, preferred in self.batchings:
            if max_batch < 1 or any(not 1 <= b <= max_batch for b in preferred) or list(preferred) != sorted(set(preferred)):
                raise PerfError(
                    f"search space: batching max_batch_size={max_batch}, preferred {list(preferred)}: preferred sizes must be "
                    "ascending, unique and within [1, max_batch_size]"
                )

    def axis(self, knob: str) -> tuple:
        """The values of one of :data:`KNOBS`, ascending."""
        attr = {
            "batching": "batchings",
            "max_queue_delay_us": "max_queue_delays_us",
            "instance_count": "instance_counts",
            "intra_op_threads": "intra_op_threads",
            "inter_op_threads": "inter_op_threads",
        }.get(knob)
        if attr is None:
            raise PerfError(f"unknown knob {knob!r}; knobs are {', '.join(KNOBS)}")
        return getattr(self, attr)

    def candidates(self) -> list[Candidate]:
        """Every candidate (the grid), in a fixed order: instances, delay, batching, threads."""
        return [
            Candidate(i, d, b[0], b[1], t, u)
            for i, d, b, t, u in itertools.product(
                self.instance_counts, self.max_queue_delays_us, self.batchings, self.intra_op_threads, self.inter_op_threads
            )
        ]

    def __len__(self) -> int:
        return math.prod(len(self.axis(k)) for k in KNOBS)

    def __contains__(self, candidate: object) -> bool:
        return isinstance(candidate, Candidate) and all(candidate.value(k) in self.axis(k) for k in KNOBS)

    def nearest(self, candidate: Candidate) -> Candidate:
        """``candidate`` with every knob moved to the closest value of its axis (ties: the smaller)."""
        out = candidate
        for knob in KNOBS:
            values = self.axis(knob)
            if knob == "batching":
                pick = min(values, key=lambda v: (abs(v[0] - candidate.max_batch_size), v[1] != candidate.preferred_batch_sizes))
            else:
                pick = min(values, key=lambda v: abs(v - candidate.value(knob)))
            out = out.with_value(knob, pick)
        return out

    def to_dict(self) -> dict:
        return {
            "instance_counts": list(self.instance_counts),
            "max_queue_delays_us": list(self.max_queue_delays_us),
            "batchings": [{"max_batch_size": m, "preferred_batch_sizes": list(p)} for m, p in self.batchings],
            "intra_op_threads": list(self.intra_op_threads),
            "inter_op_threads": list(self.inter_op_threads),
            "size": len(self),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        return cls(
            instance_counts=tuple(d["instance_counts"]),
            max_queue_delays_us=tuple(d["max_queue_delays_us"]),
            batchings=tuple((b["max_batch_size"], tuple(b["preferred_batch_sizes"])) for b in d["batchings"]),
            intra_op_threads=tuple(d["intra_op_threads"]),
            inter_op_threads=tuple(d.get("inter_op_threads", (1,))),
        )


# -- measurements and the objective ----------------------------------------------------------


def _point_from_dict(d: Mapping[str, Any]) -> LoadPoint:
    known = {f.name for f in fields(LoadPoint)}
    return LoadPoint(**{k: v for k, v in d.items() if k in known})


@dataclass
class Measurement:
    """One candidate loaded and swept: a perf_analyzer point per concurrency level that measured.

    Attributes:
        candidate: what was loaded.
        points: one :class:`LoadPoint` per level (levels that failed are missing).
        error: why the candidate has no usable point (load failure, perf_analyzer failure), else None.
        level_errors: concurrency level -> why that level has no point.
        load_s, measure_s: seconds spent loading the candidate and running perf_analyzer.
    """

    candidate: Candidate
    points: list[LoadPoint]
    error: str | None = None
    level_errors: dict[int, str] = field(default_factory=dict)
    load_s: float = 0.0
    measure_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "candidate": self.candidate.to_dict(),
            "key": self.candidate.key,
            "points": [p.to_dict() for p in self.points],
            "error": self.error,
            "level_errors": {str(k): v for k, v in self.level_errors.items()},
            "load_s": round(self.load_s, 3),
            "measure_s": round(self.measure_s, 3),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        return cls(
            candidate=Candidate.from_dict(d["candidate"]),
            points=[_point_from_dict(p) for p in d.get("points", [])],
            error=d.get("error"),
            level_errors={int(k): v for k, v in (d.get("level_errors") or {}).items()},
            load_s=float(d.get("load_s", 0.0)),
            measure_s=float(d.get("measure_s", 0.0)),
        )


@dataclass(frozen=True)
class Objective:
    """What a measurement is worth.

    Without ``throughput_floor``: maximize throughput (inferences/s) over the levels whose p99
    latency is within ``p99_budget_ms``. With it: minimize p99 over the levels whose throughput
    reaches the floor (and whose p99 is within the budget, when one is given). A measurement
    with no such level is *infeasible* (score ``None``).
    """

    p99_budget_ms: float | None = 10.0
    throughput_floor: float | None = None

    def __post_init__(self) -> None:
        if self.p99_budget_ms is None and self.throughput_floor is None:
            raise PerfError("the objective needs a p99 budget, a throughput floor, or both")
        if (self.p99_budget_ms is not None and self.p99_budget_ms <= 0) or (
            self.throughput_floor is not None and self.throughput_floor <= 0
        ):
            raise PerfError("the p99 budget and the throughput floor must be positive")

    @property
    def mode(self) -> Literal["max_throughput", "min_p99"]:
        return "max_throughput" if self.throughput_floor is None else "min_p99"

    def feasible(self, point: LoadPoint) -> bool:
        """Whether one load point meets the budget and the floor."""
        if self.p99_budget_ms is not None and point.p99_latency_ms > self.p99_budget_ms:
            return False
        return self.throughput_floor is None or point.throughput_infer_per_s >= self.throughput_floor

    def operating_point(self, measurement: Measurement) -> LoadPoint | None:
        """The level the objective picks: the best feasible point of the measurement, or None."""
        ok = [p for p in measurement.points if self.feasible(p)]
        if not ok:
            return None
        if self.mode == "max_throughput":
            return max(ok, key=lambda p: (p.throughput_infer_per_s, -p.p99_latency_ms))
        return min(ok, key=lambda p: (p.p99_latency_ms, -p.throughput_infer_per_s))

    def score(self, measurement: Measurement) -> float | None:
        """Higher is better: the operating point's throughput, or minus its p99; None when infeasible."""
        p = self.operating_point(measurement)
        if p is None:
            return None
        return p.throughput_infer_per_s if self.mode == "max_throughput" else -p.p99_latency_ms

    def rank(self, measurement: Measurement) -> tuple[int, float]:
        """A total order of measurements, higher is better: feasible ones by :meth:`score`, then
        infeasible ones by how far their closest level misses (``p99 / budget``, ``floor / throughput``),
        then measurements without any point (errors)."""
        score = self.score(measurement)
        if score is not None:
            return (1, score)
        if not measurement.points:
            return (-1, 0.0)
        return (0, -min(self._violation(p) for p in measurement.points))

    def _violation(self, p: LoadPoint) -> float:
        over = p.p99_latency_ms / self.p99_budget_ms if self.p99_budget_ms is not None else 0.0
        short = self.throughput_floor / max(p.throughput_infer_per_s, 1e-9) if self.throughput_floor is not None else 0.0
        return max(over, short)

    def misses_latency_everywhere(self, measurement: Measurement) -> bool:
        """Every level of the measurement was measured and is over the p99 budget (so lower load would not help)."""
        return (
            self.p99_budget_ms is not None
            and bool(measurement.points)
            and not measurement.level_errors
            and all(p.p99_latency_ms > self.p99_budget_ms for p in measurement.points)
        )

    @staticmethod
    def gain(new: float | None, old: float | None) -> float:
        """Relative improvement of score ``new`` over ``old`` (``inf`` from infeasible to feasible)."""
        if new is None:
            return 0.0
        if old is None:
            return math.inf
        return (new - old) / abs(old) if old else (math.inf if new > old else 0.0)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "p99_budget_ms": self.p99_budget_ms, "throughput_floor": self.throughput_floor}


@dataclass(frozen=True)
class ParetoPoint:
    """A load point on the throughput/p99 Pareto front: no measured point is faster and lower-latency."""

    candidate: Candidate
    concurrency: int | None
    throughput_infer_per_s: float
    p99_latency_ms: float

    def to_dict(self) -> dict:
        return {
            "key": self.candidate.key,
            "candidate": self.candidate.to_dict(),
            "concurrency": self.concurrency,
            "throughput_infer_per_s": self.throughput_infer_per_s,
            "p99_latency_ms": self.p99_latency_ms,
        }


def pareto_front(measurements: Sequence[Measurement]) -> list[ParetoPoint]:
    """The non-dominated load points of all measurements (higher throughput, lower p99), by p99."""
    points = [ParetoPoint(m.candidate, p.concurrency, p.throughput_infer_per_s, p.p99_latency_ms) for m in measurements for p in m.points]
    points.sort(key=lambda q: (q.p99_latency_ms, -q.throughput_infer_per_s))
    front: list[ParetoPoint] = []
    for q in points:  # by ascending p99: a point is on the front when it is faster than everything before it
        if not front or q.throughput_infer_per_s > front[-1].throughput_infer_per_s:
            front.append(q)
    return front


# -- strategies ------------------------------------------------------------------------------


class SearchStrategy(Protocol):
    """Proposes the next candidate to measure from the measurements so far (None: done)."""

    def next_candidate(self, measured: Sequence[Measurement]) -> Candidate | None: ...


@dataclass
class SearchTrace:
    """How a strategy reached its proposal: what it pruned and why, and why it stopped."""

    pruned: dict[Candidate, str] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    stop_reason: str | None = None

    def to_dict(self) -> dict:
        return {
            "pruned": {c.key: reason for c, reason in self.pruned.items()},
            "steps": self.steps,
            "stop_reason": self.stop_reason,
        }


class GridSearch:
    """Brute force: every candidate of the space, in :meth:`SearchSpace.candidates` order or,
    with ``seed``, in a random order (so that a drift of the machine's load over the run does
    not line up with one knob)."""

    name = "grid"

    def __init__(self, space: SearchSpace, *, seed: int | None = None) -> None:
        self.space = space
        self.order = space.candidates()
        if seed is not None:
            random.Random(seed).shuffle(self.order)

    def next_candidate(self, measured: Sequence[Measurement]) -> Candidate | None:
        done = {m.candidate for m in measured}
        return next((c for c in self.order if c not in done), None)

    def trace(self, measured: Sequence[Measurement]) -> SearchTrace:
        done = self.next_candidate(measured) is None
        return SearchTrace(stop_reason="every candidate measured" if done else None)


class _Propose(Exception):
    """Raised inside the replay when the plan reaches a candidate that is not measured yet."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate


class CoordinateSearch:
    """Coordinate line search over the knobs with dominance pruning and an early stop.

    From ``start`` (the served config, projected onto the space), each *step* searches one knob
    along its ordered axis with the other knobs held at the incumbent: it measures both
    neighbours of the incumbent's value, then walks outward (the better side first) until a
    candidate is pruned; the incumbent moves to the best candidate of that line. Steps cycle
    through ``knob_order``. Two priors prune candidates before they are measured
    (:meth:`prune_reason`; every pruned candidate is recorded with its reason in the trace):

    * **unimodality** along every axis: on a line (same other knobs), a measured ``a`` that
      ranks below a measured ``b`` dominates everything beyond ``a`` as seen from ``b`` --
      the score fell from ``b`` to ``a`` and keeps falling. So a walk stops at the first value
      that does not improve, and beyond a neighbour that scored below the incumbent nothing
      is measured. (The neighbours themselves are judged only on what was known before the
      step, so one noisy point on one side cannot hide the other side.)
    * **latency grows with the queue delay** (knobs in ``latency_monotone``): when a measured
      candidate misses the p99 budget at every concurrency level, every candidate equal to it
      but with a queue delay at least as long misses it too.

    Infeasible candidates rank by how far their closest level misses the objective, so a search
    that starts outside the budget walks towards it; once it reaches a feasible candidate, every
    knob is searched again before it may stop.

    The search stops when ``patience`` consecutive steps improved the best score by less than
    ``min_gain`` (relative) after every knob was searched once, when a whole cycle measures
    nothing new, or after ``max_measurements``.

    The strategy keeps no state between calls: :meth:`next_candidate` replays the plan against
    the measurements it is given, so the same measurements always give the same proposal.
    """

    name = "coordinate"

    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        *,
        start: Candidate | None = None,
        knob_order: Sequence[str] = KNOBS,
        min_gain: float = 0.02,
        patience: int = 2,
        max_measurements: int | None = None,
        latency_monotone: Sequence[str] = ("max_queue_delay_us",),
    ) -> None:
        unknown = [k for k in (*knob_order, *latency_monotone) if k not in KNOBS]
        if unknown:
            raise PerfError(f"unknown knobs {unknown}; knobs are {', '.join(KNOBS)}")
        if min_gain < 0 or patience < 1 or (max_measurements is not None and max_measurements < 1):
            raise PerfError("min_gain must be >= 0, patience >= 1 and max_measurements >= 1")
        self.space = space
        self.objective = objective
        self.start = space.nearest(start) if start is not None else space.nearest(Candidate())
        self.knob_order = [k for k in knob_order if len(space.axis(k)) > 1]
        self.min_gain = min_gain
        self.patience = patience
        self.max_measurements = max_measurements
        self.latency_monotone = tuple(latency_monotone)

    # -- pruning --------------------------------------------------------------------------
    def prune_reason(self, candidate: Candidate, measured: Mapping[Candidate, Measurement]) -> str | None:
        """Why ``candidate`` need not be measured, given ``measured``; None when it must be."""
        rank = {c: self.objective.rank(m) for c, m in measured.items() if m.points}  # errors carry no evidence
        for knob in KNOBS:
            values = self.space.axis(knob)
            if candidate.value(knob) not in values:
                continue
            here = values.index(candidate.value(knob))
            line = {values.index(c.value(knob)): c for c in rank if _same_except(c, candidate, knob)}
            for ia, a in line.items():
                for ib, b in line.items():
                    between = ib < ia < here or here < ia < ib
                    if between and rank[b] > rank[a]:
                        return (
                            f"dominated along {knob}: the score fell from {b.key} ({self._describe(measured[b])}) "
                            f"to {a.key} ({self._describe(measured[a])}), and {knob} goes further that way"
                        )
        for knob in self.latency_monotone:
            for c, m in measured.items():
                if (
                    _same_except(c, candidate, knob)
                    and c.value(knob) <= candidate.value(knob)
                    and self.objective.misses_latency_everywhere(m)
                ):
                    return f"{c.key} misses the p99 budget at every load with a {knob} <= this one's"
        return None

    def _describe(self, m: Measurement) -> str:
        score = self.objective.score(m)
        if score is None:
            rank = self.objective.rank(m)
            return "infeasible" if rank[0] < 0 else f"infeasible, its closest level {-rank[1]:.2f}x off"
        return f"{score:,.0f}/s" if self.objective.mode == "max_throughput" else f"p99 {-score:.2f} ms"

    # -- the plan, replayed ---------------------------------------------------------------
    def next_candidate(self, measured: Sequence[Measurement]) -> Candidate | None:
        """The next candidate to measure, or None when the search is over."""
        return self._replay(measured)[0]

    def trace(self, measured: Sequence[Measurement]) -> SearchTrace:
        """What the plan pruned and why it stopped (or what it would measure next), for these measurements."""
        return self._replay(measured)[1]

    def _replay(self, measured: Sequence[Measurement]) -> tuple[Candidate | None, SearchTrace]:
        by_candidate = {m.candidate: m for m in measured}
        trace = SearchTrace()
        if self.max_measurements is not None and len(by_candidate) >= self.max_measurements:
            trace.stop_reason = f"measurement budget of {self.max_measurements} used"
            return None, trace
        try:
            trace.stop_reason = self._plan(by_candidate, trace)
        except _Propose as p:
            return p.candidate, trace
        return None, trace

    def _read(self, c: Candidate, measured: Mapping[Candidate, Measurement], known: dict[Candidate, Measurement]) -> Measurement:
        if c not in measured:
            raise _Propose(c)
        known[c] = measured[c]
        return measured[c]

    def _line_step(
        self,
        incumbent: Candidate,
        knob: str,
        measured: Mapping[Candidate, Measurement],
        known: dict[Candidate, Measurement],
        trace: SearchTrace,
    ) -> Candidate:
        """Search ``knob`` with the other knobs at the incumbent's values; returns the best candidate of that line.

        Both neighbours come first, each pruned only on what was known before this step (so one
        noisy point on one side cannot hide the other side); then the walk goes outward, the
        better side first, one value at a time, until :meth:`prune_reason` prunes a candidate or
        the axis ends (beyond a neighbour that scored worse than the incumbent, that is at once).
        """
        known_before = dict(known)
        values = self.space.axis(knob)
        here = values.index(incumbent.value(knob))
        best, best_rank = incumbent, self.objective.rank(known[incumbent])

        def consider(j: int, evidence: Mapping[Candidate, Measurement]) -> bool:
            nonlocal best, best_rank
            c = incumbent.with_value(knob, values[j])
            if c not in known:
                reason = self.prune_reason(c, evidence)
                if reason is not None:
                    trace.pruned.setdefault(c, reason)
                    return False
            r = self.objective.rank(self._read(c, measured, known))  # raises _Propose when c is not measured yet
            if r > best_rank:
                best, best_rank = c, r
            return True

        for j in (here + 1, here - 1):
            if 0 <= j < len(values):
                consider(j, known_before)
        better_side = 1 if values.index(best.value(knob)) >= here else -1
        for direction in (better_side, -better_side):
            j = here + 2 * direction
            while 0 <= j < len(values) and consider(j, known):
                j += direction
        return best

    def _plan(self, measured: dict[Candidate, Measurement], trace: SearchTrace) -> str:
        known: dict[Candidate, Measurement] = {}  # what the plan has read so far, in its own order
        incumbent = self.start
        best = self.objective.score(self._read(incumbent, measured, known))
        flat = 0
        visited: set[str] = set()
        if not self.knob_order:
            return "nothing to search: every knob has one value"
        for cycle in itertools.count():
            new_in_cycle = False
            for knob in self.knob_order:
                before, known_before = best, dict(known)
                line_best = self._line_step(incumbent, knob, measured, known, trace)
                incumbent, best = line_best, self.objective.score(known[line_best])
                gain = Objective.gain(best, before)
                if before is None and best is not None:
                    visited.clear()  # steps taken while nothing was feasible chased the budget, not the objective
                visited.add(knob)
                flat = flat + 1 if best is not None and gain < self.min_gain else 0  # never flat while nothing is feasible
                new_in_cycle = new_in_cycle or len(known) > len(known_before)
                trace.steps.append(
                    {"cycle": cycle, "knob": knob, "incumbent": incumbent.key, "score": best, "gain": gain if math.isfinite(gain) else None}
                )
                if flat >= self.patience and len(visited) == len(self.knob_order):
                    return (
                        f"flattened: the last {flat} knob steps improved the best score by less than {self.min_gain:.0%} "
                        f"(best {incumbent.key})"
                    )
            if not new_in_cycle:
                return f"converged: a whole cycle over the knobs found nothing new to measure (best {incumbent.key})"
        raise AssertionError("unreachable")  # pragma: no cover


def _same_except(a: Candidate, b: Candidate, knob: str) -> bool:
    return all(a.value(k) == b.value(k) for k in KNOBS if k != knob)


def run_search(
    strategy: SearchStrategy,
    evaluate: Callable[[Candidate], Measurement],
    *,
    on_measured: Callable[[Measurement], None] | None = None,
    max_measurements: int | None = None,
) -> list[Measurement]:
    """Ask ``strategy`` for candidates and ``evaluate`` each until it says done (or the budget is used).

    ``evaluate`` is :class:`TritonEvaluator` on a server, or a lookup into recorded measurements.
    """
    measured: list[Measurement] = []
    while max_measurements is None or len(measured) < max_measurements:
        candidate = strategy.next_candidate(measured)
        if candidate is None:
            break
        if any(m.candidate == candidate for m in measured):
            raise PerfError(f"strategy proposed {candidate.key} twice")
        m = evaluate(candidate)
        measured.append(m)
        if on_measured is not None:
            on_measured(m)
    return measured


# -- configs ---------------------------------------------------------------------------------


def _thread_keys(config: ModelConfig) -> tuple[str, str]:
    """The ``parameters`` keys for ONNX Runtime's threads: the onnxruntime backend's, or our Python runners'."""
    return thread_parameter_keys(platform=config.platform, backend=config.backend)


def candidate_config(base: ModelConfig, candidate: Candidate) -> ModelConfig:
    """A copy of ``base`` with the candidate's knobs set (instance group, dynamic batching,
    ``max_batch_size``, thread ``parameters``); tensors, backend and everything else are kept.

    Raises:
        RepositoryError: ``base`` does not batch (``max_batch_size: 0``: its dims include the
            batch dimension, so batching cannot be switched on by the config alone).
    """
    if base.max_batch_size == 0:
        raise RepositoryError(
            f"model {base.name!r} has max_batch_size 0: its dims include the batch dimension, so it cannot be tuned for batching",
            hint="build the model with --max-batch-size >= 1",
        )
    if len(base.instance_group) > 1:
        raise RepositoryError(
            f"model {base.name!r} has {len(base.instance_group)} instance groups (a heterogeneous placement); "
            "tune searches one group's instance count",
            hint="tune a build with one instance group, then add the other groups with `tritonrec build --instance-group`",
        )
    config = ModelConfig()
    config.CopyFrom(base)
    config.max_batch_size = candidate.max_batch_size
    kind = config.instance_group[0].kind if config.instance_group else ModelConfig().instance_group.add().kind
    del config.instance_group[:]
    group = config.instance_group.add()
    group.count = candidate.instance_count
    group.kind = kind
    config.dynamic_batching.max_queue_delay_microseconds = candidate.max_queue_delay_us
    del config.dynamic_batching.preferred_batch_size[:]
    config.dynamic_batching.preferred_batch_size.extend(candidate.preferred_batch_sizes)
    intra, inter = _thread_keys(config)
    config.parameters[intra].string_value = str(candidate.intra_op_threads)
    config.parameters[inter].string_value = str(candidate.inter_op_threads)
    return config


def candidate_from_config(config: ModelConfig) -> Candidate:
    """The knobs ``config`` sets (missing ones at their Triton / runner defaults)."""
    intra, inter = _thread_keys(config)
    params = config.parameters
    return Candidate(
        instance_count=config.instance_group[0].count if config.instance_group and config.instance_group[0].count else 1,
        max_queue_delay_us=int(config.dynamic_batching.max_queue_delay_microseconds) if config.HasField("dynamic_batching") else 0,
        max_batch_size=int(config.max_batch_size),
        preferred_batch_sizes=tuple(int(b) for b in config.dynamic_batching.preferred_batch_size),
        intra_op_threads=int(params[intra].string_value) if intra in params else 1,
        inter_op_threads=int(params[inter].string_value) if inter in params else 1,
    )


def config_json(config: ModelConfig) -> str:
    """The JSON Triton's ``load_model(name, config=...)`` takes (field names as in ``config.pbtxt``)."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)


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


# -- the whole job ---------------------------------------------------------------------------


@dataclass
class TuneResult:
    """What :func:`tune` measured and chose.

    Attributes:
        chosen: the best feasible measurement (None when no candidate met the objective).
        pareto: the throughput/p99 front over every measured load point.
        trace: what the strategy pruned and why it stopped.
        version_dir: the version folder written for the chosen config, or None.
    """

    model: str
    strategy: str
    space: SearchSpace
    objective: Objective
    settings: MeasureSettings | None
    measurements: list[Measurement]
    chosen: Measurement | None
    pareto: list[ParetoPoint]
    trace: SearchTrace
    version_dir: Path | None = None
    elapsed_s: float = 0.0

    @property
    def best_score(self) -> float | None:
        return None if self.chosen is None else self.objective.score(self.chosen)

    def to_dict(self) -> dict:
        op = self.objective.operating_point(self.chosen) if self.chosen is not None else None
        return {
            "model": self.model,
            "strategy": self.strategy,
            "space": self.space.to_dict(),
            "objective": self.objective.to_dict(),
            "settings": self.settings.to_dict() if self.settings is not None else None,
            "n_measurements": len(self.measurements),
            "chosen": None
            if self.chosen is None
            else {
                "key": self.chosen.candidate.key,
                "candidate": self.chosen.candidate.to_dict(),
                "operating_point": op.to_dict() if op else None,
            },
            "best_throughput_infer_per_s": op.throughput_infer_per_s if op else None,
            "best_p99_latency_ms": op.p99_latency_ms if op else None,
            "measurements": [{**m.to_dict(), "score": self.objective.score(m), "order": i + 1} for i, m in enumerate(self.measurements)],
            "pareto_front": [p.to_dict() for p in self.pareto],
            "trace": self.trace.to_dict(),
            "version_dir": str(self.version_dir) if self.version_dir else None,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def summarize(
    model: str,
    strategy: SearchStrategy,
    measurements: list[Measurement],
    objective: Objective,
    space: SearchSpace,
    settings: MeasureSettings | None = None,
) -> TuneResult:
    """A :class:`TuneResult` of measurements (no server needed: also for recorded ones)."""
    feasible = [m for m in measurements if objective.score(m) is not None]
    chosen = max(feasible, key=lambda m: objective.score(m) or 0.0) if feasible else None
    trace = strategy.trace(measurements) if hasattr(strategy, "trace") else SearchTrace()
    return TuneResult(
        model=model,
        strategy=getattr(strategy, "name", type(strategy).__name__),
        space=space,
        objective=objective,
        settings=settings,
        measurements=measurements,
        chosen=chosen,
        pareto=pareto_front(measurements),
        trace=trace,
    )


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


def load_recorded(path: Path | str) -> tuple[SearchSpace, list[Measurement], dict]:
    """Recorded measurements (``{"space": ..., "measurements": [...]}``, e.g. a brute-force run) and the rest of the file."""
    doc = json.loads(Path(path).read_text())
    return SearchSpace.from_dict(doc["space"]), [Measurement.from_dict(m) for m in doc["measurements"]], doc


def replay(recorded: Sequence[Measurement]) -> Callable[[Candidate], Measurement]:
    """An ``evaluate`` for :func:`run_search` that looks candidates up in recorded measurements."""
    table = {m.candidate: m for m in recorded}

    def evaluate(candidate: Candidate) -> Measurement:
        if candidate not in table:
            raise PerfError(f"no recorded measurement for {candidate.key}")
        return table[candidate]

    return evaluate

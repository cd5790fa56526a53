"""The search space of ``tritonrec tune``, what one measurement of a candidate holds, and what it is worth.

:class:`Candidate` is one point (the knobs in :data:`KNOBS`), :class:`SearchSpace` the values
tried per knob, :class:`Measurement` one candidate loaded and swept with perf_analyzer, and
:class:`Objective` its score: the highest throughput of a level whose p99 latency is within
the budget, or, with a throughput floor, the lowest p99 of a level that reaches the floor.
Pure data: nothing here talks to a server.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from toolkit.errors import PerfError
from toolkit.perf.analyzer import LoadPoint

__all__ = ["KNOBS", "Candidate", "SearchSpace", "Measurement", "Objective", "ParetoPoint", "pareto_front"]

#: The knobs, in the order :class:`CoordinateSearch` visits them by default.
KNOBS = ("batching", "max_queue_delay_us", "instance_count", "intra_op_threads", "inter_op_threads")


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

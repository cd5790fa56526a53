"""The pure search: strategies that propose the next candidate from the measurements so far.

:class:`CoordinateSearch` is the smart strategy; :class:`GridSearch` measures every candidate
(the brute force it is compared with). Both are pure -- ``next_candidate(measured)`` depends
only on the measurements passed in -- so recorded curves replay them without a server
(:func:`load_recorded`, :func:`replay`), and :func:`summarize` turns measurements, measured or
recorded, into a :class:`TuneResult`.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from toolkit.errors import PerfError
from toolkit.perf.tune.space import KNOBS, Candidate, Measurement, Objective, ParetoPoint, SearchSpace, pareto_front

if TYPE_CHECKING:
    from toolkit.perf.tune.measure import MeasureSettings

__all__ = [
    "SearchStrategy",
    "SearchTrace",
    "GridSearch",
    "CoordinateSearch",
    "run_search",
    "TuneResult",
    "summarize",
    "load_recorded",
    "replay",
]

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


# -- results ---------------------------------------------------------------------------


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

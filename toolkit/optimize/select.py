"""Keep a compression step only where it pays on the serving CPU.

A step such as INT8 quantization is there to make the model faster, but whether it does
depends on the CPU: ONNX Runtime's dynamic INT8 ran at 1.76x FP32 on an Intel Xeon with
VNNI and at 0.93x on an AMD EPYC with AVX2 only (``perf/results/compress_criteo.md``).
:func:`select_candidate` times the recipe's result next to the same model without its
optional steps, on this machine and side by side (interleaved rounds, one thread each, as
:func:`toolkit.optimize.bench.measure_variants` does), and keeps the fastest one that stays
within the accuracy budget, the way NVIDIA Model Navigator picks a format by
``MaxThroughput`` / ``MinLatency`` but with an accuracy budget in place of its numeric
tolerance. Accuracy is judged on the validation split (the test split stays for the report).

Optional steps: the ONNX step (dynamic/static INT8, FP16) is dropped when the model is faster
without it. ``quantize_embeddings`` (when it is the last PyTorch step) is timed too, but it is
there for size (row-wise INT8 tables are about 3x smaller), so it is kept and the report says
what it costs in speed (:data:`SIZE_STEPS`). Distillation and pruning remove
multiply-accumulates and need training to undo, so they are always kept and not re-timed.

A candidate without a step replaces the full recipe only when it is faster by more than
:data:`NOISE_MARGIN`: repeated timings of one model on these shared 2-core machines differ
by a few percent, so a smaller gain is not evidence that the step costs time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from toolkit.data.features import EncodedRows
from toolkit.optimize.bench import Variant, measure_variants

__all__ = ["NOISE_MARGIN", "SIZE_STEPS", "Objective", "OBJECTIVES", "Candidate", "Selection", "decide", "select_candidate"]

Objective = Literal["max_throughput", "min_latency", "as_written"]
OBJECTIVES: tuple[str, ...] = ("max_throughput", "min_latency", "as_written")
#: A candidate must beat the full recipe by more than this share to replace it (timing noise).
NOISE_MARGIN = 0.05
#: Steps that make the model smaller rather than faster: kept for size, their speed cost reported.
SIZE_STEPS: tuple[str, ...] = ("quantize_embeddings",)


@dataclass
class Candidate:
    """The recipe's model with some optional steps left out (``dropped``), as an ONNX file."""

    variant: Variant
    dropped: tuple[str, ...] = ()
    payload: object = None  # what the caller needs back (e.g. the PyTorch model)


@dataclass
class Selection:
    """What :func:`select_candidate` chose and why.

    Attributes:
        chosen: the candidate kept.
        steps: ``{step kind: {"kept": bool, "reason": str}}`` for every optional step.
        measured: per candidate name: ``val_auc``, ``auc_ratio`` (to the baseline's val AUC),
            ``within_budget``, ``latency_ms_b1``, ``throughput_rps_b256``, ``dropped``.
    """

    chosen: Candidate
    steps: dict[str, dict] = field(default_factory=dict)
    measured: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-safe."""
        return {"chosen": self.chosen.variant.name, "dropped": list(self.chosen.dropped), "steps": self.steps, "measured": self.measured}


def _score(row: dict, objective: str) -> float:
    """Higher is better."""
    return row["throughput_rps_b256"] if objective == "max_throughput" else -row["latency_ms_b1"]


def _ratio(a: dict, b: dict, objective: str) -> float:
    """How many times better ``a`` is than ``b`` on the objective (> 1: ``a`` is better)."""
    if objective == "max_throughput":
        return a["throughput_rps_b256"] / b["throughput_rps_b256"]
    return b["latency_ms_b1"] / a["latency_ms_b1"]


def select_candidate(
    candidates: list[Candidate],
    optional_steps: list[str],
    *,
    bench_rows: EncodedRows,
    val: EncodedRows | None,
    baseline_val_auc: float | None,
    min_auc_ratio: float,
    objective: str = "max_throughput",
    cpu_target: str = "",
    rounds: int = 3,
    b1_requests: int = 100,
    b256_batches: int = 10,
    on_log: Callable[[str], None] | None = None,
) -> Selection:
    """Time ``candidates`` side by side and keep the fastest within the accuracy budget.

    Args:
        candidates: the full recipe first (``dropped == ()``), then the same model without some
            of ``optional_steps``.
        optional_steps: the step kinds that may be dropped.
        bench_rows: rows fed to the timing loops (at least 256).
        val: labelled rows for the accuracy check (None: accuracy is not judged, every
            candidate counts as within budget).
        baseline_val_auc: the uncompressed model's AUC on ``val``.
        min_auc_ratio: the recipe's budget (candidate AUC / baseline AUC).
        objective: ``max_throughput`` (rows/s at batch 256), ``min_latency`` (batch 1), or
            ``as_written`` (keep every step, time nothing).
        cpu_target: named in the reasons (e.g. ``avx2``).
        rounds, b1_requests, b256_batches: timing size (see :func:`measure_variants`).

    Returns:
        The :class:`Selection`.

    Raises:
        ValueError: ``objective`` is unknown or the first candidate drops a step.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} must be one of {', '.join(OBJECTIVES)}")
    full = candidates[0]
    if full.dropped:
        raise ValueError("the first candidate must be the full recipe")
    if objective == "as_written" or len(candidates) == 1 or not optional_steps:
        why = "kept: the recipe asks for every step as written" if objective == "as_written" else "kept: nothing to compare"
        return Selection(full, {s: {"kept": True, "reason": why} for s in optional_steps})
    results = measure_variants(
        [c.variant for c in candidates],
        val,
        bench_rows,
        rounds=rounds,
        b1_requests=b1_requests,
        b256_batches=b256_batches,
        on_log=on_log,
    )
    measured: dict[str, dict] = {}
    for cand, r in zip(candidates, results, strict=True):
        ratio = None if r.test_auc is None or baseline_val_auc is None else r.test_auc / baseline_val_auc
        measured[cand.variant.name] = {
            "dropped": list(cand.dropped),
            "val_auc": r.test_auc,
            "auc_ratio": ratio,
            "within_budget": True if ratio is None else ratio >= min_auc_ratio,
            "latency_ms_b1": r.latency_ms_b1,
            "throughput_rps_b256": r.throughput_rps_b256,
        }
    rows = [measured[c.variant.name] for c in candidates]
    chosen_i, steps = decide(rows, [c.dropped for c in candidates], optional_steps, objective, cpu_target)
    chosen = candidates[chosen_i]
    if on_log:
        on_log(f"selected {chosen.variant.name}: " + "; ".join(f"{k} {v['reason']}" for k, v in steps.items()))
    return Selection(chosen, steps, measured)


def decide(
    rows: list[dict],
    dropped: list[tuple[str, ...]],
    optional_steps: list[str],
    objective: str,
    cpu_target: str = "",
    size_steps: tuple[str, ...] = SIZE_STEPS,
) -> tuple[int, dict[str, dict]]:
    """The pure decision of :func:`select_candidate`: which candidate to keep, and why per step.

    Args:
        rows: per candidate, ``within_budget``, ``auc_ratio``, ``latency_ms_b1`` (ms) and
            ``throughput_rps_b256`` (rows/s); ``rows[0]`` is the full recipe.
        dropped: per candidate, the optional steps it leaves out (``dropped[0] == ()``).
        optional_steps: the step kinds that may be dropped.
        objective: ``max_throughput`` or ``min_latency``.
        cpu_target: named in the reasons.
        size_steps: steps that are there to make the model smaller, not faster: they are kept
            whatever they cost in speed (and the reason says what they cost), unless the model
            with them is outside the accuracy budget.

    Returns:
        ``(index of the candidate kept, {step: {"kept": bool, "reason": str}})``. The full
        recipe is kept unless it is outside the budget, or a candidate within budget beats it
        by more than :data:`NOISE_MARGIN` on the objective.
    """
    ok = [i for i, row in enumerate(rows) if row["within_budget"] and not set(dropped[i]) & set(size_steps)]
    if not ok:  # the size steps themselves break the budget: any candidate within it
        ok = [i for i, row in enumerate(rows) if row["within_budget"]]
    chosen_i = 0
    if ok:
        best = max(ok, key=lambda i: _score(rows[i], objective))
        if not rows[0]["within_budget"] or _ratio(rows[best], rows[0], objective) > 1 + NOISE_MARGIN:
            chosen_i = best
    metric = "b256 throughput" if objective == "max_throughput" else "b1 latency"
    on = f" on this {cpu_target} CPU" if cpu_target else " on this CPU"
    steps: dict[str, dict] = {}
    for step in optional_steps:
        without = next((i for i, d in enumerate(dropped) if set(d) == {*dropped[chosen_i], step}), None)
        if step in dropped[chosen_i]:
            if not rows[0]["within_budget"]:
                reason = f"dropped: the model with it is below the accuracy budget (AUC ratio {rows[0]['auc_ratio']:.4f})"
            else:
                reason = f"dropped: {metric} is {_ratio(rows[chosen_i], rows[0], objective):.2f}x better without it{on}"
            steps[step] = {"kept": False, "reason": reason}
        elif without is None:
            steps[step] = {"kept": True, "reason": "kept: no candidate without it was measured"}
        else:
            gain = _ratio(rows[chosen_i], rows[without], objective)
            budget = "" if rows[without]["within_budget"] else "; without it the model is below the accuracy budget"
            noise = f" (within the {NOISE_MARGIN:.0%} timing noise)" if abs(gain - 1) <= NOISE_MARGIN else ""
            why = "kept for size" if step in size_steps else "kept"
            steps[step] = {"kept": True, "reason": f"{why}: {metric} is {gain:.2f}x that without it{on}{noise}{budget}"}
    return chosen_i, steps

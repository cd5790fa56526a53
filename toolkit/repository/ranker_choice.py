"""Which built ranker the ensembles call on a CPU target: the faster of INT8 and FP32, timed here.

INT8 is not faster everywhere: ONNX Runtime's dynamic INT8 ran at 1.76x FP32 on an Intel Xeon
with VNNI and at 0.93x on an AMD EPYC with AVX2 only (``perf/results/compress_criteo.md``).
So where both ``onnx_int8_python`` and ``onnx_python`` are built, :func:`choose_cpu_ranker`
times their staged ``model.onnx`` files side by side on real rows (ONNX Runtime, one thread,
as each Triton instance is configured; rounds interleaved) and keeps INT8 only when it is
faster by more than :data:`toolkit.optimize.select.NOISE_MARGIN`. Accuracy is not judged
here: ``tritonrec verify`` holds INT8 to the accuracy budget on the served model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from toolkit.optimize.bench import Variant
from toolkit.optimize.select import NOISE_MARGIN

__all__ = ["time_onnx_files", "choose_cpu_ranker", "ranker_verdict"]


def time_onnx_files(
    files: Mapping[str, Path], rows: Mapping[str, np.ndarray], *, batch_size: int = 64, rounds: int = 5
) -> dict[str, float]:
    """Rows per second of each ONNX file on ``rows`` (batches of ``batch_size``), median of ``rounds``.

    Args:
        files: ``{label: model.onnx}``.
        rows: inputs by name, N rows each (at least ``batch_size``; fewer are all used).
        batch_size: rows per call.
        rounds: interleaved rounds; each round runs every file over all the batches once.
    """
    runners = {label: Variant(label, 0, 0, 0, onnx_path=Path(path)).runner() for label, path in files.items()}  # 1 thread each
    n = len(next(iter(rows.values())))
    batches = [
        {k: np.ascontiguousarray(v[i : i + batch_size]) for k, v in rows.items()} for i in range(0, max(n - batch_size + 1, 1), batch_size)
    ]
    batch_rows = sum(len(next(iter(b.values()))) for b in batches)
    speeds: dict[str, list[float]] = {label: [] for label in files}
    for run in runners.values():  # warm-up
        run(batches[0])
    for _ in range(rounds):
        for label, run in runners.items():
            t0 = time.perf_counter()
            for b in batches:
                run(b)
            speeds[label].append(batch_rows / (time.perf_counter() - t0))
    return {label: statistics.median(v) for label, v in speeds.items()}


def choose_cpu_ranker(int8: tuple[str, Path], fp32: tuple[str, Path], rows: Mapping[str, np.ndarray], cpu_target: str) -> tuple[str, str]:
    """``(variant, reason)``: the INT8 variant when it is faster than FP32 by more than the noise margin.

    Args:
        int8, fp32: ``(variant name, its model.onnx)``.
        rows: real input rows by name.
        cpu_target: named in the reason.
    """
    speed = time_onnx_files({int8[0]: int8[1], fp32[0]: fp32[1]}, rows)
    return ranker_verdict(speed[int8[0]], speed[fp32[0]], int8[0], fp32[0], cpu_target)


def ranker_verdict(int8_rps: float, fp32_rps: float, int8: str, fp32: str, cpu_target: str) -> tuple[str, str]:
    """The pure rule of :func:`choose_cpu_ranker`: ``(variant, reason)`` from two speeds in rows/s."""
    ratio = int8_rps / fp32_rps
    measured = f"{int8_rps:,.0f} vs {fp32_rps:,.0f} rows/s at batch 64 on this {cpu_target} CPU ({ratio:.2f}x)"
    if ratio > 1 + NOISE_MARGIN:
        return int8, f"{int8}: INT8 is faster than FP32 here, {measured}"
    return fp32, f"{fp32}: INT8 is not faster than FP32 here by more than {NOISE_MARGIN:.0%}, {measured}"

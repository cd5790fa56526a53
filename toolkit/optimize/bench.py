"""Side-by-side measurement of model variants: accuracy, size, compute, CPU latency and throughput.

Every variant is run in-process, single-threaded (``torch.set_num_threads(1)``, ONNX
Runtime ``intra_op_num_threads=1``, as one Triton model instance is configured here), and
the timing rounds are interleaved across variants so that a noisy neighbour slows all of
them alike: compare variants by the ratios measured in the same run, not across runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from toolkit.cpu import machine_info as cpu_machine_info
from toolkit.data.features import EncodedRows
from toolkit.export.onnx_info import external_data_files
from toolkit.metrics import evaluate

__all__ = ["Variant", "VariantResult", "onnx_size_bytes", "measure_variants", "machine_info"]

Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass
class Variant:
    """One way of running a model.

    Attributes:
        name: e.g. ``fp32_pytorch``, ``pruned_onnx``.
        params: number of parameters of the model it came from (embeddings included).
        size_bytes: bytes on disk (ONNX file plus external data; state dict bytes for PyTorch).
        macs_per_sample: multiply-accumulates per row.
        model: the PyTorch module (for PyTorch variants).
        onnx_path: the ONNX file (for ONNX Runtime variants).
        description: what was done to it.
    """

    name: str
    params: int
    size_bytes: int
    macs_per_sample: int
    model: torch.nn.Module | None = None
    onnx_path: Path | None = None
    description: str = ""

    def runner(self) -> Runner:
        """A function from model inputs (by name, N rows) to (N,) float32 probabilities; a PyTorch
        model is called with them as keyword arguments (its forward's parameter names)."""
        if self.onnx_path is not None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            return lambda inputs: session.run(None, {n: inputs[n] for n in names})[0].reshape(-1)
        model = self.model
        if model is None:
            raise ValueError(f"variant {self.name!r} has neither a model nor an ONNX file")
        model.eval()

        def run(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return model(**{name: torch.from_numpy(v) for name, v in inputs.items()}).numpy().reshape(-1)

        return run


@dataclass
class VariantResult:
    """Measured numbers of one variant (see :func:`measure_variants`)."""

    name: str
    description: str
    params: int
    size_bytes: int
    macs_per_sample: int
    test_auc: float | None
    test_log_loss: float | None
    latency_ms_b1: float
    throughput_rps_b256: float
    extra: dict = field(default_factory=dict)


def onnx_size_bytes(onnx_path: Path) -> int:
    """Bytes of an ONNX model file plus every external data file it references."""
    return Path(onnx_path).stat().st_size + sum(p.stat().st_size for p in external_data_files(onnx_path))


def _batches(rows: EncodedRows, batch_size: int, count: int) -> list[dict[str, np.ndarray]]:
    n = len(rows)
    out = []
    for i in range(count):
        start = (i * batch_size) % max(n - batch_size, 1)
        out.append({k: np.ascontiguousarray(v[start : start + batch_size]) for k, v in rows.inputs().items()})
    return out


def measure_variants(
    variants: list[Variant],
    test: EncodedRows | None,
    bench_rows: EncodedRows,
    *,
    rounds: int = 5,
    b1_requests: int = 200,
    b256_batches: int = 20,
    on_log: Callable[[str], None] | None = None,
) -> list[VariantResult]:
    """Evaluate and time every variant side by side.

    Args:
        variants: what to measure.
        test: rows with labels for AUC and log loss (None: accuracy not measured, e.g. generated data).
        bench_rows: rows fed to the timing loops (at least 256).
        rounds: interleaved timing rounds; each variant's numbers are medians over rounds.
        b1_requests: single-row calls per round (latency: median per call, in ms).
        b256_batches: 256-row calls per round (throughput: rows per second).

    Returns:
        One :class:`VariantResult` per variant, in order.
    """
    torch.set_num_threads(1)
    runners = {v.name: v.runner() for v in variants}
    accuracy: dict[str, dict[str, float]] = {}
    if test is not None:
        for v in variants:
            probs = np.concatenate([runners[v.name](b) for b in _chunks(test, 4096)])
            accuracy[v.name] = evaluate(test.labels, probs)
            if on_log:
                on_log(f"{v.name}: test AUC {accuracy[v.name]['auc']:.4f}")
    singles = _batches(bench_rows, 1, b1_requests)
    big = _batches(bench_rows, 256, b256_batches)
    for run in runners.values():  # warm-up
        run(singles[0])
        run(big[0])
    lat: dict[str, list[float]] = {v.name: [] for v in variants}
    thr: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants:
            run = runners[v.name]
            calls = []
            for b in singles:
                t0 = time.perf_counter()
                run(b)
                calls.append(time.perf_counter() - t0)
            lat[v.name].append(statistics.median(calls) * 1e3)
            t0 = time.perf_counter()
            for b in big:
                run(b)
            thr[v.name].append(256 * len(big) / (time.perf_counter() - t0))
        if on_log:
            on_log(f"timing round {r + 1}/{rounds} done")
    return [
        VariantResult(
            v.name,
            v.description,
            v.params,
            v.size_bytes,
            v.macs_per_sample,
            accuracy.get(v.name, {}).get("auc"),
            accuracy.get(v.name, {}).get("log_loss"),
            statistics.median(lat[v.name]),
            statistics.median(thr[v.name]),
        )
        for v in variants
    ]


def _chunks(rows: EncodedRows, size: int) -> list[dict[str, np.ndarray]]:
    return [{k: np.ascontiguousarray(v[i : i + size]) for k, v in rows.inputs().items()} for i in range(0, len(rows), size)]


def machine_info() -> dict:
    """CPU model, core count, OS and library versions (recorded with every benchmark)."""
    return cpu_machine_info(torch=torch.__version__, onnxruntime=ort.__version__) | {"threads_per_variant": 1}

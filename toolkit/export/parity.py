"""Numerical parity between a PyTorch model and its ONNX export, run in ONNX Runtime on CPU.

"Does the served model give the same answers as the trained one" is the first thing users
judge: every export is checked on real rows before it goes into a repository.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export.onnx_info import check_onnx_inputs, external_data_files, read_io_specs
from toolkit.tensors import TensorSpec

__all__ = ["ParityReport", "check_parity"]


@dataclass(frozen=True)
class ParityReport:
    """Result of :func:`check_parity`.

    Attributes:
        max_abs_diff: largest ``|onnx - torch|`` over every compared output element
            (in the outputs' own units, e.g. probability); ``inf`` where one side is NaN
            and the other is not.
        n_rows: number of input rows compared; for a fixed-shape export whose inputs differ in
            their first dimension (flat ids and offsets), the number of requests compared,
            each one whole feed of the graph's shapes.
        atol: the absolute tolerance the check used.
        passed: ``max_abs_diff <= atol``.
        worst_output: name of the output where ``max_abs_diff`` occurred.
    """

    max_abs_diff: float
    n_rows: int
    atol: float
    passed: bool
    worst_output: str = ""

    def to_dict(self) -> dict:
        """The report as a JSON-serializable dict."""
        return asdict(self)


def _to_numpy_outputs(result: object, model_name: str) -> list[np.ndarray]:
    if isinstance(result, torch.Tensor):
        result = (result,)
    if not isinstance(result, (tuple, list)) or not all(isinstance(r, torch.Tensor) for r in result):
        raise ExportError(
            f"{model_name}.forward returned {type(result).__name__}, expected a tensor or a tuple of tensors",
            hint="parity is checked output by output, in the order forward returns them",
        )
    return [r.detach().cpu().numpy() for r in result]


def _abs_diff_max(got: np.ndarray, want: np.ndarray) -> float:
    got64 = got.astype(np.float64, copy=False)
    want64 = want.astype(np.float64, copy=False)
    if got64.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(got64 - want64)
    diff[got64 == want64] = 0.0  # equal infinities
    nan_got, nan_want = np.isnan(got64), np.isnan(want64)
    diff[nan_got & nan_want] = 0.0  # both NaN: agree
    diff[nan_got ^ nan_want] = np.inf  # one NaN: disagree
    return float(diff.max())


def _stacked_requests(onnx_path: Path, in_specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Whole requests of a fixed-shape graph whose inputs differ in their first dimension, as (K, *shape) arrays.

    Each array is one request (exactly its input's shape) or K of them stacked on a new first
    axis; all arrays must do the same.

    Raises:
        ExportError: a missing or unexpected input, a wrong dtype, a shape that is neither the
            graph's nor K stacked copies of it, or arrays that mix one and K requests.
    """
    names = [s.name for s in in_specs]
    shapes = " and ".join(f"'{s.name}' {list(s.shape)}" for s in in_specs)
    if set(inputs) != set(names):
        # the names are checked (and reported) the same way as for row inputs
        check_onnx_inputs(onnx_path, inputs, role="parity inputs")
    stacked = {}
    for spec in in_specs:
        arr = np.asarray(inputs[spec.name])
        if arr.shape == spec.shape:
            arr = arr[np.newaxis]
        elif arr.shape[1:] != spec.shape:
            raise ExportError(
                f"parity input '{spec.name}' has shape {list(arr.shape)}, but {onnx_path.name} takes fixed shapes "
                f"{shapes} that do not share a batch dimension: pass one request of exactly those shapes, "
                "or K requests stacked on a new first axis",
                hint=f"e.g. '{spec.name}' of shape {list(spec.shape)} (one request) or {[8, *spec.shape]} (8 requests)",
            )
        stacked[spec.name] = arr
    counts = {n: int(a.shape[0]) for n, a in stacked.items()}
    if len(set(counts.values())) > 1:
        raise ExportError(
            f"parity inputs for {onnx_path.name} stack different numbers of requests: {counts}",
            hint="give every input the same number of requests on its first axis (or one request each, unstacked)",
        )
    return check_onnx_inputs(onnx_path, stacked, role="parity inputs")


def _takes_by_name(model: nn.Module, names: Sequence[str]) -> bool:
    """True when every name is a parameter of ``model.forward`` (so the inputs can be passed by name)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(n in params for n in names)


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    inputs: Mapping[str, np.ndarray],
    *,
    output_name: str | None = None,
    atol: float = 1e-5,
    batch_size: int = 1024,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Run ``model`` (PyTorch) and ``onnx_path`` (ONNX Runtime, CPUExecutionProvider) on the same rows.

    How the inputs are fed depends on the graph's first dimensions:

    * all dynamic (``dynamic_batch=True``): rows in batches of ``batch_size``;
    * fixed and equal (``dynamic_batch=False`` with one row per sample, e.g. 16 rows):
      batches of exactly that many rows, so ``N`` must be a multiple of it;
    * fixed and different (``dynamic_batch=False`` with inputs that do not share a batch
      dimension, e.g. an ``nn.EmbeddingBag``'s flat ids int64[T] and offsets int64[B]):
      the inputs are whole requests, either one (each array of exactly the graph's shape,
      ``{"ids": int64[T], "offsets": int64[B]}``) or ``K`` stacked on a new first axis
      (``{"ids": int64[K, T], "offsets": int64[K, B]}``), and each request is one run.

    The model runs in eval mode under ``torch.no_grad()`` (its mode is restored
    afterwards). It is given the inputs by name when every graph input is named after one of
    its ``forward``'s parameters (how :func:`~toolkit.export.torch2onnx.export_onnx` binds
    them), otherwise positionally in the ONNX graph's input order.

    Args:
        model: the PyTorch model the file was exported from.
        onnx_path: the ``.onnx`` file (its external data files next to it).
        inputs: ``{ONNX input name: array}``, one entry per graph input, with the graph's
            dtypes: all with the same number of rows ``N``, e.g. ``{"x": float32[N, 4],
            "ids": int64[N, 3]}``, or whole requests as above.
        output_name: compare only this output; ``None`` compares all outputs.
        atol: absolute tolerance on ``|onnx - torch|``, in the output's units.
        batch_size: rows per run (>= 1).
        raise_on_failure: raise :class:`ExportError` when ``max_abs_diff > atol``; when False,
            return the report with ``passed=False`` instead.

    Returns:
        A :class:`ParityReport` over all ``N`` rows.

    Raises:
        ExportError: inputs missing, unexpected, of the wrong dtype or of different row
            counts; no rows; requests whose arrays do not have the graph's fixed shapes (or
            differ in how many requests they stack); ``output_name`` not an output; the number or shapes of outputs
            differ between PyTorch and ONNX; either runtime failed (chained); the difference
            exceeds ``atol`` (with ``raise_on_failure``), naming the output, the max
            difference and the tolerance.
    """
    onnx_path = Path(onnx_path)
    if batch_size < 1:
        raise ExportError(f"batch_size={batch_size} for the parity check must be >= 1", hint="e.g. batch_size=1024")
    if not atol >= 0:
        raise ExportError(f"atol={atol} for the parity check must be >= 0", hint="e.g. atol=1e-5")
    in_specs, out_specs = read_io_specs(onnx_path)
    external_data_files(onnx_path)  # clear error for missing weight files before ORT fails obscurely
    firsts = [s.shape[0] if s.shape else None for s in in_specs]
    whole_requests = all(s.shape and None not in s.shape for s in in_specs) and len(set(firsts)) > 1
    if whole_requests:
        arrays = _stacked_requests(onnx_path, in_specs, inputs)
    else:
        arrays = check_onnx_inputs(onnx_path, inputs, role="parity inputs")
    expected = list(arrays)
    n_rows = len(next(iter(arrays.values())))

    out_names = [s.name for s in out_specs]
    if output_name is not None and output_name not in out_names:
        raise ExportError(
            f"output_name={output_name!r} is not an output of {onnx_path.name} (outputs: {out_names})",
            hint="pass one of the model's output names, or None to compare all",
        )
    compared = [i for i, n in enumerate(out_names) if output_name is None or n == output_name]

    fixed = {s.shape[0] for s in in_specs if s.shape and s.shape[0] is not None}
    if whole_requests:
        step = 1  # one request of the graph's shapes per run
    elif fixed:
        step = min(fixed)
        if len(fixed) > 1 or n_rows % step:
            raise ExportError(
                f"{onnx_path.name} has a fixed batch dimension of {step} rows, but the parity check got "
                f"{n_rows} rows, not a multiple of it",
                hint=f"pass a multiple of {step} rows, or re-export with a dynamic batch dimension",
            )
    else:
        step = batch_size

    import onnxruntime as ort  # heavy import, only needed here

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"ONNX Runtime could not load {onnx_path}: {type(exc).__name__}: {str(exc)[:500]}",
            hint="the file may be corrupt or use operators this ONNX Runtime lacks; re-export it",
        ) from exc

    model_name = type(model).__name__
    by_name = _takes_by_name(model, expected)
    worst = 0.0
    worst_output = out_names[compared[0]] if compared else ""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n_rows, step):
            if whole_requests:
                feeds = {n: np.ascontiguousarray(a[start]) for n, a in arrays.items()}
                where = f"request {start}"
            else:
                feeds = {n: np.ascontiguousarray(a[start : start + step]) for n, a in arrays.items()}
                where = f"rows {start}..{start + len(next(iter(feeds.values()))) - 1}"
            try:
                onnx_outs = session.run(out_names, feeds)
            except Exception as exc:
                raise ExportError(
                    f"ONNX Runtime failed on {where} of {onnx_path.name}: {type(exc).__name__}: {str(exc)[:500]}",
                    hint="check the input shapes against read_io_specs(onnx_path)",
                ) from exc
            with torch.no_grad():
                try:
                    tensors = {n: torch.from_numpy(np.array(feeds[n], copy=True)) for n in expected}
                    torch_result = model(**tensors) if by_name else model(*tensors.values())
                except Exception as exc:
                    raise ExportError(
                        f"{model_name}.forward failed on {where} of the parity inputs: {type(exc).__name__}: {str(exc)[:500]}",
                        hint="the parity inputs must be valid inputs of the PyTorch model",
                    ) from exc
            torch_outs = _to_numpy_outputs(torch_result, model_name)
            if len(torch_outs) != len(onnx_outs):
                raise ExportError(
                    f"{model_name} returns {len(torch_outs)} output(s), but {onnx_path.name} has {len(onnx_outs)} ({out_names})",
                    hint="the ONNX file was exported from a different model; re-export it",
                )
            for i in compared:
                got, want = onnx_outs[i], torch_outs[i]
                if got.shape != want.shape:
                    raise ExportError(
                        f"output '{out_names[i]}' of {onnx_path.name} has shape {got.shape}, but PyTorch "
                        f"gives {want.shape} for the same inputs ({where})",
                        hint="the ONNX file was exported from a different model; re-export it",
                    )
                diff = _abs_diff_max(got, want)
                if diff > worst:
                    worst, worst_output = diff, out_names[i]
    finally:
        model.train(was_training)

    passed = bool(worst <= atol)
    report = ParityReport(max_abs_diff=worst, n_rows=n_rows, atol=atol, passed=passed, worst_output=worst_output)
    if not passed and raise_on_failure:
        raise ExportError(
            f"ONNX output '{worst_output}' of {onnx_path.name} differs from PyTorch by up to {worst:.3g} "
            f"(max abs diff over {n_rows} {'requests' if whole_requests else 'rows'}), above the tolerance atol={atol:g}",
            hint=(
                "the ONNX file does not match this model: re-export it from this model; if the model is "
                "numerically sensitive (float16, large logits), raise atol deliberately"
            ),
        )
    return report

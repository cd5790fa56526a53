"""Row-wise INT8 embedding tables: int8 codes, an FP16 scale and an int8 zero point per row.

Embedding tables are most of a recommender's bytes; MLP weights are a rounding error. Each
row ``w`` (E floats) is quantized asymmetrically over ``[lo, hi] = [min(w, 0), max(w, 0)]``
(0 is always inside, so 0.0 is represented exactly by the row's zero point)::

    scale = round_up_to_fp16((hi - lo) / 254)
    zero_point = -128 - round(lo / scale)                       # int8, in [-128, 126]
    code = clamp(round(w / scale) + zero_point, -128, 127)      # int8
    w ≈ (code - zero_point) * scale

**Error bound.** The codes are computed with the scale *after* its rounding to FP16 (not
with the exact FP32 scale), and the FP16 scale is rounded *up*, so the whole range still
fits in 255 steps and no code is clamped. The rounding of the scale therefore adds no error
of its own beyond making the step slightly larger; each element's error is half a step::

    |w - (code - zero_point) * scale| <= scale / 2              (+ float32 rounding, <= max|w| * 2**-23)
    scale <= (hi - lo) / 254 * (1 + 2**-10) + 2**-24            (FP16 round-up: 10 mantissa bits;
                                                                  2**-24 = FP16's subnormal step)

:func:`row_error_bound` gives this a-priori bound per row from the FP32 weights. Dividing
the range by 254 rather than 255 leaves the one step of slack that rounding ``lo / scale``
to the integer zero point can take, so the top of the range never clips to 127.

**Bytes.** ``E + 2 + 1`` bytes per row instead of ``4 E``: 19/64 = 29.7% for E = 16.

The quantized model is a :class:`~toolkit.models.dlrm.DLRM` with
``embedding_quantization="int8_rowwise"``: its tables are
:class:`~toolkit.models.dlrm.RowwiseInt8Embedding` modules that gather int8 rows and
dequantize only those (ONNX: ``Gather`` on an int8 initializer, then ``Cast``/``Sub``/``Mul``).
Its state dict round-trips through ``save_checkpoint``/``load_checkpoint`` unchanged.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn

from toolkit.compress.recipe import QuantizeEmbeddingsConfig
from toolkit.errors import CompressError
from toolkit.models.dlrm import DLRM, RowwiseInt8Embedding, RowwiseInt8EmbeddingCollection

__all__ = [
    "QMIN",
    "QMAX",
    "quantize_rows",
    "dequantize_rows",
    "row_error_bound",
    "quantize_embeddings",
    "embedding_bytes",
]

QMIN, QMAX = -128, 127
#: Steps the range [lo, hi] is divided into: one less than QMAX - QMIN, the slack the
#: integer zero point's rounding needs so that no code ever clips.
_STEPS = QMAX - QMIN - 1  # 254
_FP16_MAX = float(np.finfo(np.float16).max)  # 65504
_FP16_REL = 2.0**-10  # relative spacing of normal FP16 numbers
_FP16_TINY = 2.0**-24  # FP16's smallest subnormal (absolute spacing below 2**-14)
_F32_REL = 2.0**-24  # unit roundoff of the float32 dequantization


def _round_up_fp16(x: np.ndarray) -> np.ndarray:
    """The smallest FP16 values >= ``x`` (float64 in, float16 out)."""
    h = x.astype(np.float16)
    low = h.astype(np.float64) < x
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h


def quantize_rows(weight: torch.Tensor, *, name: str = "weight") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize each row of a 2-D float table to int8 codes, an FP16 scale and an int8 zero point.

    Args:
        weight: (N, E) floating tensor (any float dtype; computed in float64).
        name: what to call the table in error messages (e.g. ``"sparse_embeddings.0"``).

    Returns:
        ``(codes int8 (N, E), scales float16 (N,), zero_points int8 (N,))`` with
        ``(codes - zero_points[:, None]) * scales[:, None] ≈ weight``. Per row the max abs
        error is at most ``scales[i] / 2`` (plus float32 rounding of the product, at most
        ``max|row| * 2**-23``), and ``scales[i] <= (hi - lo) / 254 * (1 + 2**-10) + 2**-24`` where
        ``[lo, hi] = [min(row, 0), max(row, 0)]``; see :func:`row_error_bound` and the module
        docstring. An all-zero row gets scale 1.0 and codes equal to its zero point
        (reconstructed exactly).

    Raises:
        CompressError: ``weight`` is not a 2-D floating tensor; a row holds NaN or Inf, or
            its range exceeds what an FP16 scale can step (``(hi - lo) / 254 > 65504``), naming
            the table and row.
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or not weight.is_floating_point():
        got = f"{tuple(weight.shape)} {weight.dtype}" if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise CompressError(f"quantize_rows expects a 2-D floating (N, E) table for {name}, got {got}")
    w = weight.detach().to("cpu", torch.float64).numpy()
    if w.size and not np.isfinite(w).all():
        row = int(np.nonzero(~np.isfinite(w).all(axis=1))[0][0])
        raise CompressError(f"embedding table {name} row {row} holds NaN or Inf; only finite rows can be quantized")
    n = w.shape[0]
    if w.shape[1] == 0:
        return torch.zeros(w.shape, dtype=torch.int8), torch.ones(n, dtype=torch.float16), torch.zeros(n, dtype=torch.int8)
    lo = np.minimum(w.min(axis=1), 0.0)
    hi = np.maximum(w.max(axis=1), 0.0)
    step = (hi - lo) / _STEPS
    too_wide = step > _FP16_MAX
    if too_wide.any():
        row = int(np.nonzero(too_wide)[0][0])
        raise CompressError(
            f"embedding table {name} row {row} spans [{lo[row]:.6g}, {hi[row]:.6g}]: its step {step[row]:.6g} "
            f"exceeds the largest FP16 scale {_FP16_MAX:g}",
            hint="such weights are broken (exploded training); retrain or clip the table before quantizing",
        )
    scales16 = _round_up_fp16(step)
    scales16[step == 0.0] = np.float16(1.0)  # all-zero rows: any positive scale reconstructs 0 exactly
    s = scales16.astype(np.float64)
    zero_points = QMIN - np.rint(lo / s)  # in [-128, 126]: 0 <= -lo/s <= 254
    codes = np.clip(np.rint(w / s[:, None]) + zero_points[:, None], QMIN, QMAX)
    return (
        torch.from_numpy(codes.astype(np.int8)),
        torch.from_numpy(scales16),
        torch.from_numpy(zero_points.astype(np.int8)),
    )


def dequantize_rows(codes: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor) -> torch.Tensor:
    """(N, E) float32 rows ``(codes - zero_points) * scales``, computed as the model does (float32)."""
    return (codes.to(torch.float32) - zero_points.to(torch.float32).unsqueeze(-1)) * scales.to(torch.float32).unsqueeze(-1)


def row_error_bound(weight: torch.Tensor) -> torch.Tensor:
    """(N,) float64 a-priori bound on ``max |w - dequantize(quantize(w))|`` of each row.

    ``(hi - lo) / 254 * (1 + 2**-10) / 2 + 2**-25 + max|w| * 2**-23``: half the largest step
    the FP16 round-up can give, plus the float32 rounding of the dequantized product
    (``|product| <= |w| + scale / 2 <= 2 max|w|``).
    """
    w = weight.detach().to("cpu", torch.float64)
    lo = w.min(dim=1).values.clamp(max=0.0)
    hi = w.max(dim=1).values.clamp(min=0.0)
    return (hi - lo) / _STEPS * (1 + _FP16_REL) / 2 + _FP16_TINY / 2 + w.abs().max(dim=1).values * 2 * _F32_REL


def _quantized_table(emb: nn.Module, name: str) -> RowwiseInt8Embedding:
    if isinstance(emb, RowwiseInt8Embedding):
        return copy.deepcopy(emb)
    if not isinstance(emb, nn.Embedding):
        raise CompressError(f"embedding table {name} is a {type(emb).__name__}, expected nn.Embedding or RowwiseInt8Embedding")
    codes, scales, zero_points = quantize_rows(emb.weight, name=name)
    table = RowwiseInt8Embedding(emb.num_embeddings, emb.embedding_dim)
    table.codes.copy_(codes)
    table.scales.copy_(scales)
    table.zero_points.copy_(zero_points)
    return table


def quantize_embeddings(model: DLRM, config: QuantizeEmbeddingsConfig | None = None) -> DLRM:
    """A new DLRM whose embedding tables are row-wise INT8 copies of ``model``'s.

    Every table (single- and multi-valued) is quantized with :func:`quantize_rows` (the
    single-valued ones into one fused :class:`RowwiseInt8EmbeddingCollection`); the
    MLP weights and biases are copied unchanged. The new model's config is ``model.config``
    with ``embedding_quantization="int8_rowwise"``, so ``DLRM(new.config).load_state_dict(
    new.state_dict())`` rebuilds it (what ``load_checkpoint`` does). ``model`` is not modified.
    An already-quantized model is copied as it is. The result is in eval mode.

    Args:
        model: a trained FP32 :class:`~toolkit.models.dlrm.DLRM`.
        config: the recipe step (it has no options yet; ``None`` means the defaults).

    Raises:
        CompressError: ``model`` is not a DLRM, or a table cannot be quantized (NaN/Inf rows,
            ranges beyond FP16), naming the table and row.
    """
    if config is not None and not isinstance(config, QuantizeEmbeddingsConfig):
        raise CompressError(f"quantize_embeddings expects a QuantizeEmbeddingsConfig, got {type(config).__name__}")
    if not isinstance(model, DLRM):
        raise CompressError(f"quantize_embeddings expects a DLRM, got {type(model).__name__}")
    new_config = dataclasses.replace(model.config, embedding_quantization="int8_rowwise")
    quantized = DLRM(new_config)
    with torch.no_grad():
        if isinstance(model.sparse_embeddings, RowwiseInt8EmbeddingCollection):
            quantized.sparse_embeddings = copy.deepcopy(model.sparse_embeddings)
        else:
            # Rows are quantized independently, so quantizing the stacked tables is the same as one by one.
            fused = quantized.sparse_embeddings.tables
            stacked = torch.cat([emb.weight for emb in model.sparse_embeddings])
            for buffer, values in zip(
                (fused.codes, fused.scales, fused.zero_points), quantize_rows(stacked, name="sparse_embeddings"), strict=True
            ):
                buffer.copy_(values)
        for i, emb in enumerate(model.multi_hot_embeddings):
            quantized.multi_hot_embeddings[i] = _quantized_table(emb, f"multi_hot_embeddings.{i}")
        for attr in ("bottom_mlp", "top_mlp"):
            getattr(quantized, attr).load_state_dict(getattr(model, attr).state_dict())
    quantized.eval()
    return quantized


def embedding_bytes(model: nn.Module) -> int:
    """Bytes held by the embedding tables of ``model``.

    ``nn.Embedding``/``nn.EmbeddingBag``: the weight's bytes; :class:`RowwiseInt8Embedding`:
    codes + scales + zero points (``N * (E + 3)``). Other modules are not counted.
    """
    total = 0
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            total += module.weight.numel() * module.weight.element_size()
        elif isinstance(module, RowwiseInt8Embedding):
            total += sum(b.numel() * b.element_size() for b in (module.codes, module.scales, module.zero_points))
    return total

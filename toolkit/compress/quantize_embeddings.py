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

**A registered architecture whose config has ``embedding_quantization``** (DLRM, DCN-v2 and
DeepFM; :class:`~toolkit.models.layers.FeatureFieldsConfig`) becomes a new model built by its
architecture from the config with ``embedding_quantization="int8_rowwise"`` (the single-valued
tables fused into one :class:`~toolkit.models.layers.RowwiseInt8EmbeddingCollection`, each
multi-valued table a :class:`~toolkit.models.layers.RowwiseInt8Embedding`, as
:func:`~toolkit.models.layers.sparse_tables` and :func:`~toolkit.models.layers.multi_hot_tables`
build them), found through the protocol's ``embedding_tables``, not by class, so its state dict
round-trips through ``save_checkpoint``/``load_checkpoint`` unchanged.

**Any other module.** :func:`quantize_embeddings` walks the module tree (``named_modules``, not
field names) and replaces every ``nn.Embedding`` with a
:class:`~toolkit.models.layers.RowwiseInt8Embedding` and every ``nn.EmbeddingBag`` with a
:class:`~toolkit.models.layers.RowwiseInt8EmbeddingBag` (defined in :mod:`toolkit.models.layers`,
re-exported here) wherever it sits, so a user's own module gets int8 tables too.
Both gather int8 rows and dequantize only those (ONNX: ``Gather`` on an int8 initializer, then
``Cast``/``Sub``/``Mul``). Such a module's config says nothing of its tables' storage: its
checkpoint's ``structure.json`` records the tables made int8 (path, shape and, for a bag, its mode,
``padding_idx`` and ``include_last_offset``), which ``load_checkpoint`` and the PyTorch variant's
Triton runner re-apply (:func:`rebuilds_from_config` tells whether a model rebuilds).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from toolkit.compress.errors import StepRefused
from toolkit.compress.recipe import QuantizeEmbeddingsConfig
from toolkit.errors import CompressError
from toolkit.models.layers import RowwiseInt8Embedding, RowwiseInt8EmbeddingBag, RowwiseInt8EmbeddingCollection

__all__ = [
    "QMIN",
    "QMAX",
    "quantize_rows",
    "dequantize_rows",
    "row_error_bound",
    "quantize_embeddings",
    "embedding_bytes",
    "rebuilds_from_config",
    "RowwiseInt8EmbeddingBag",
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


def _quantized_bag(bag: nn.EmbeddingBag, name: str) -> RowwiseInt8EmbeddingBag:
    quantized = RowwiseInt8EmbeddingBag(
        bag.num_embeddings, bag.embedding_dim, mode=bag.mode, padding_idx=bag.padding_idx, include_last_offset=bag.include_last_offset
    )
    for buffer, values in zip(
        (quantized.table.codes, quantized.table.scales, quantized.table.zero_points), quantize_rows(bag.weight, name=name), strict=True
    ):
        buffer.copy_(values)
    return quantized


def quantize_embeddings(
    model: nn.Module, config: QuantizeEmbeddingsConfig | None = None, *, example_inputs: Mapping[str, torch.Tensor] | None = None
) -> nn.Module:
    """A copy of ``model`` whose embedding tables are row-wise INT8 (:func:`quantize_rows`).

    * A model of a registered architecture whose config has an ``embedding_quantization`` field
      (DLRM, DCN-v2, DeepFM): a new model built by its architecture from ``model.config``
      with ``embedding_quantization="int8_rowwise"`` (the single-valued tables fused into one
      :class:`RowwiseInt8EmbeddingCollection`, each multi-valued table a :class:`RowwiseInt8Embedding`,
      DeepFM's 1-wide first-order tables too), its int8 buffers filled and every other tensor of the
      state dict copied, so ``type(new)(new.config).load_state_dict(new.state_dict())`` rebuilds it
      (what ``load_checkpoint`` does). An already-quantized one is copied as it is.
    * Any other module (a user's own): every ``nn.Embedding`` found by walking
      ``named_modules`` becomes a :class:`RowwiseInt8Embedding` and every ``nn.EmbeddingBag`` a
      :class:`RowwiseInt8EmbeddingBag` at the same path (a table registered under two paths stays
      one shared table). Everything else is copied unchanged, the config included.

    The copy is then run on ``example_inputs`` (default: its registered architecture's example
    inputs, when it has one) to prove that ``forward`` works with the new tables. ``model`` is not
    modified; the result is in eval mode.

    Args:
        model: a trained float32 module (CPU).
        config: the recipe step (it has no options yet; ``None`` means the defaults).
        example_inputs: ``{forward parameter: tensor}`` for the check (optional).

    Raises:
        StepRefused: the module has no ``nn.Embedding``/``nn.EmbeddingBag``; a table renormalizes
            its rows at lookup (``max_norm``); or its ``forward`` fails with the int8 tables (it
            reads a table's ``weight`` itself) — each naming the module path and why.
        CompressError: a table cannot be quantized (NaN/Inf rows, ranges beyond FP16), naming the
            table and row.
    """
    if config is not None and not isinstance(config, QuantizeEmbeddingsConfig):
        raise CompressError(f"quantize_embeddings expects a QuantizeEmbeddingsConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise CompressError(f"quantize_embeddings expects an nn.Module, got {type(model).__name__}")
    arch = _rebuilt_int8_by(model)
    if arch is not None:
        return _quantize_architecture(model, arch)
    kind = type(model).__name__
    tables = [(n, m) for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    if not tables:
        if any(isinstance(m, RowwiseInt8Embedding) for m in model.modules()):
            return copy.deepcopy(model).eval()  # already quantized
        raise StepRefused(
            "quantize_embeddings",
            f"quantize_embeddings: {kind} has no nn.Embedding or nn.EmbeddingBag (it has {_layer_kinds(model)}); "
            "there is no embedding table to quantize",
        )
    for name, table in tables:
        if table.max_norm is not None:
            raise StepRefused(
                "quantize_embeddings",
                f"quantize_embeddings: {name or kind} ({type(table).__name__}, max_norm={table.max_norm}) renormalizes its "
                "rows at each lookup, which fixed int8 codes cannot do",
                hint="renormalize the table's rows once (torch.renorm) and set max_norm=None before compressing",
            )
    quantized = copy.deepcopy(model)
    replacements: dict[int, nn.Module] = {}
    with torch.no_grad():
        for name, table in list(quantized.named_modules(remove_duplicate=False)):
            if not isinstance(table, nn.Embedding | nn.EmbeddingBag):
                continue
            if id(table) not in replacements:
                where = name or kind
                quantize = _quantized_table if isinstance(table, nn.Embedding) else _quantized_bag
                replacements[id(table)] = quantize(table, where)
            if not name:  # the module is itself one table
                return replacements[id(table)].eval()
            parent, _, attr = name.rpartition(".")
            setattr(quantized.get_submodule(parent), attr, replacements[id(table)])
    quantized.eval()
    inputs = example_inputs if example_inputs is not None else _registered_example_inputs(model)
    if inputs is not None:
        try:
            with torch.no_grad():
                quantized(**inputs)
        except Exception as exc:
            names = ", ".join(dict.fromkeys(n for n, _ in tables))
            raise StepRefused(
                "quantize_embeddings",
                f"quantize_embeddings: {kind}'s forward fails once its tables ({names}) are int8 "
                f"({type(exc).__name__}: {exc}); it must call each table (table(ids)), not read its weight",
            ) from exc
    return quantized


def _layer_kinds(model: nn.Module) -> str:
    kinds = sorted({type(m).__name__ for m in model.modules() if m is not model and not list(m.children())})
    return ", ".join(kinds) or "no layers"


def _registered_architecture(model: nn.Module):
    """``model``'s registered architecture, or None for a module of none (a user's module without a config)."""
    from toolkit.models.registry import architecture_of

    try:
        return architecture_of(model)
    except (ValueError, TypeError, AttributeError):
        return None


def _registered_example_inputs(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Its architecture's example inputs (4 rows), or None for a module of no registered architecture."""
    arch = _registered_architecture(model)
    return None if arch is None else arch.example_inputs(model.config, 4)


def _rebuilt_int8_by(model: nn.Module):
    """The registered architecture that rebuilds ``model`` with int8 tables from its config (its
    config dataclass has an ``embedding_quantization`` field), or None (a user's module: quantized in place)."""
    arch = _registered_architecture(model)
    if arch is None:
        return None
    config = model.config
    if not dataclasses.is_dataclass(config) or "embedding_quantization" not in {f.name for f in dataclasses.fields(config)}:
        return None
    return arch


def _quantize_architecture(model: nn.Module, arch) -> nn.Module:
    """``model`` rebuilt by ``arch`` with ``embedding_quantization="int8_rowwise"`` (see :func:`quantize_embeddings`).

    Each of the architecture's ``embedding_tables`` (float, one per input field) goes where the int8
    config builds it: a :class:`RowwiseInt8Embedding` at the same path (multi-valued tables), or, when
    that path is gone, the :class:`RowwiseInt8EmbeddingCollection` at its parent path (single-valued
    tables fused, filled in the tables' order).
    """
    if model.config.embedding_quantization == "int8_rowwise":
        return copy.deepcopy(model).eval()
    quantized = arch.build(dataclasses.replace(model.config, embedding_quantization="int8_rowwise"))
    tables = arch.embedding_tables(model)
    fused: dict[str, list[nn.Module]] = {}  # collection path -> its float tables, in order
    prefixes = set(tables)
    with torch.no_grad():
        for name, source in tables.items():
            try:
                target = quantized.get_submodule(name)
            except AttributeError:  # the int8 config fused this table into its parent collection
                target = None
            parent, _, attr = name.rpartition(".")
            if isinstance(target, RowwiseInt8Embedding):
                setattr(quantized.get_submodule(parent), attr, _quantized_table(source, name))
            elif target is None and isinstance(quantized.get_submodule(parent), RowwiseInt8EmbeddingCollection):
                fused.setdefault(parent, []).append(source)
                prefixes.add(parent)
            else:
                raise CompressError(
                    f"quantize_embeddings: {arch.name}'s int8 config builds {type(target).__name__} at {name}, expected a "
                    "RowwiseInt8Embedding or a RowwiseInt8EmbeddingCollection holding it "
                    "(toolkit.models.layers.sparse_tables / multi_hot_tables)"
                )
        for parent, sources in fused.items():
            _fill_collection(quantized.get_submodule(parent), sources, parent)

        # everything but the tables (MLPs, cross layers, DeepFM's dense vectors) is copied as it is
        def is_table(key: str) -> bool:
            return any(key.startswith(f"{name}.") for name in prefixes)

        rest = {k: v for k, v in model.state_dict().items() if not is_table(k)}
        missing, unexpected = quantized.load_state_dict(rest, strict=False)
        not_tables = [k for k in missing if not is_table(k)]
        if unexpected or not_tables:
            raise CompressError(
                f"quantize_embeddings: {type(model).__name__}'s state dict does not fit its int8 layout "
                f"(unexpected {sorted(unexpected)[:3]}, missing {not_tables[:3]})"
            )
    return quantized.eval()


def _fill_collection(fused: RowwiseInt8EmbeddingCollection, tables: nn.Module, name: str) -> None:
    """Fill ``fused`` with the int8 rows of ``tables`` (S float ``nn.Embedding``s, or tables already
    quantized in place), table s at rows ``offsets[s] ..``. Rows are quantized independently, so one
    table at a time gives what the stacked tables would."""
    parts = []
    for s, emb in enumerate(tables):
        if isinstance(emb, RowwiseInt8Embedding):
            parts.append((emb.codes, emb.scales, emb.zero_points))
        elif isinstance(emb, nn.Embedding):
            parts.append(quantize_rows(emb.weight, name=f"{name}.{s}"))
        else:
            raise CompressError(f"embedding table {name}.{s} is a {type(emb).__name__}, expected nn.Embedding or RowwiseInt8Embedding")
    for buffer, values in zip((fused.tables.codes, fused.tables.scales, fused.tables.zero_points), zip(*parts, strict=True), strict=True):
        buffer.copy_(torch.cat(values))


def rebuilds_from_config(model: nn.Module) -> str | None:
    """Why ``load_checkpoint`` could not rebuild ``model`` from its checkpoint; None when it can.

    A DLRM, DCN-v2 or DeepFM with int8 tables rebuilds (its config says so, as
    :func:`quantize_embeddings` writes it). A module whose ``nn.Embedding`` tables were made
    :class:`~toolkit.models.layers.RowwiseInt8Embedding` in place rebuilds too: its checkpoint's
    ``structure.json`` records them (:func:`toolkit.train.checkpoint.model_structure`) and
    ``load_checkpoint`` re-applies them to the model its config builds; so does one whose
    ``nn.EmbeddingBag`` tables were made :class:`~toolkit.models.layers.RowwiseInt8EmbeddingBag`.
    What no checkpoint records (any other replaced module) is named: the state dict's keys or
    shapes that the rebuilt model does not have.
    """
    from toolkit.models.layers import apply_structure, replaced_tables
    from toolkit.models.registry import architecture_of

    try:
        arch = architecture_of(model)
    except (ValueError, TypeError, AttributeError) as exc:
        return f"{type(model).__name__} is no registered architecture's model ({exc})"
    with torch.random.fork_rng(devices=[]):
        try:
            rebuilt = arch.build(model.config)
        except Exception as exc:  # a user's factory may fail in any way
            return f"its config does not build ({type(exc).__name__}: {exc})"
    try:  # what structure.json records, re-applied as load_checkpoint does
        apply_structure(rebuilt, replaced_tables(model, rebuilt))
    except ValueError as exc:  # an int8 table of another shape than its config's
        return f"its int8 tables do not fit the model its config builds ({exc})"
    expected = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if set(expected) != set(got):
        extra = sorted(set(got) - set(expected))
        return (
            f"a {arch.name} config builds float32 tables, while this model's state dict holds {', '.join(extra[:3])}"
            f"{', ...' if len(extra) > 3 else ''} (int8 tables quantized in place that a checkpoint does not record: "
            "its structure.json records nn.Embedding -> RowwiseInt8Embedding and nn.EmbeddingBag -> RowwiseInt8EmbeddingBag only)"
        )
    wrong = [f"{k} {got[k]} (its config builds {expected[k]})" for k in sorted(got) if got[k] != expected[k]]
    if wrong:
        more = ", ..." if len(wrong) > 3 else ""
        return f"this model's state dict holds {', '.join(wrong[:3])}{more}: its config does not record those shapes"
    return None


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

"""Pieces the DLRM, DCN-v2 and DeepFM share: field embedding tables (FP32 or row-wise INT8) and
their lookups (a masked sum for multi-valued features), the checks of the common config fields, the config's dict form.

This file imports only torch and the standard library: the Triton repository builder copies
it next to the architecture's own file (``dlrm.py``, ``dcnv2.py``, ``deepfm.py``) and the
PyTorch baseline's ``model.py``, where it is imported as the top-level module ``layers``.

Multi-valued features are padded ids with a masked sum over ``nn.Embedding`` lookups, not
``nn.EmbeddingBag`` (TensorRT has no EmbeddingBag); :class:`RowwiseInt8EmbeddingBag` is the int8
form of a user's own ``nn.EmbeddingBag``.

Every architecture's tables are stored as its config's ``embedding_quantization`` says
(:attr:`FeatureFieldsConfig.embedding_quantization`): FP32 ``nn.Embedding``s, or row-wise INT8
tables (:class:`RowwiseInt8Embedding`; the single-valued ones fused into one
:class:`RowwiseInt8EmbeddingCollection`) that look up int8 codes and per-row scale/zero point
first and dequantize only the gathered rows, so the exported graph is an int8 ``Gather``
followed by ``Cast``/``Sub``/``Mul`` and the table stays int8 in memory. The config says which,
so ``load_checkpoint`` rebuilds a quantized DLRM, DCN-v2 or DeepFM from its config and state dict.

A model whose config says nothing of its tables' storage (a user's or a test's architecture) gets
int8 tables in place instead (``nn.Embedding`` -> :class:`RowwiseInt8Embedding`, ``nn.EmbeddingBag``
-> :class:`RowwiseInt8EmbeddingBag`); :func:`replaced_tables` records which (a checkpoint's
``structure.json``) and :func:`apply_structure` re-applies that record to the model its config
builds, here and in the PyTorch variant's Triton runner (which imports a copy of this file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

import torch
from torch import nn

__all__ = [
    "EMBEDDING_QUANTIZATIONS",
    "RowwiseInt8Embedding",
    "RowwiseInt8EmbeddingCollection",
    "RowwiseInt8EmbeddingBag",
    "embedding_tables",
    "sparse_tables",
    "multi_hot_tables",
    "init_embeddings",
    "sparse_fields",
    "multi_hot_fields",
    "stacked_sparse_fields",
    "check_feature_fields",
    "check_embedding_quantization",
    "check_dropout",
    "FeatureFieldsConfig",
    "relu_mlp",
    "STRUCTURE_FORMAT_VERSION",
    "replaced_tables",
    "apply_structure",
]

#: Values of :attr:`FeatureFieldsConfig.embedding_quantization`.
EMBEDDING_QUANTIZATIONS = ("none", "int8_rowwise")


class RowwiseInt8Embedding(nn.Module):
    """An embedding table stored as row-wise asymmetric INT8: ``E + 3`` bytes per row.

    Buffers (all in the state dict):

    * ``codes``: (N, E) int8,
    * ``scales``: (N,) float16, the step of each row (> 0),
    * ``zero_points``: (N,) int8, the code that stands for 0.0 in each row.

    Row ``i`` reads ``(codes[i].float() - zero_points[i].float()) * scales[i].float()``.
    :meth:`forward` gathers the rows of ``ids`` first and dequantizes only those, so a call
    costs O(len(ids) * E), never a dequantization of the whole table. For E=16 a row takes
    16 + 2 + 1 = 19 bytes instead of 64 (29.7%). The buffers are filled by
    ``toolkit.compress.quantize_embeddings.quantize_rows``; a fresh module holds zeros.

    Args:
        num_embeddings: N, the number of rows.
        embedding_dim: E, the width of a row.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(
                f"RowwiseInt8Embedding needs num_embeddings >= 1 and embedding_dim >= 1, got {num_embeddings}, {embedding_dim}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.register_buffer("codes", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, dtype=torch.float16))
        self.register_buffer("zero_points", torch.zeros(num_embeddings, dtype=torch.int8))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` int64 of any shape (...) -> float32 (..., E)."""
        # F.embedding exports as ONNX Gather on the int8/fp16 tables (tensor indexing would give GatherND).
        codes = nn.functional.embedding(ids, self.codes).to(torch.float32)  # (..., E)
        zero_points = nn.functional.embedding(ids, self.zero_points.unsqueeze(1)).to(torch.float32)  # (..., 1)
        scales = nn.functional.embedding(ids, self.scales.unsqueeze(1)).to(torch.float32)  # (..., 1)
        return (codes - zero_points) * scales

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 row-wise"


class RowwiseInt8EmbeddingCollection(nn.Module):
    """S row-wise INT8 tables stored as one :class:`RowwiseInt8Embedding` of ``sum(N_s)`` rows.

    Table s occupies rows ``offsets[s] .. offsets[s] + N_s - 1``; one lookup serves all S
    features (the fused-table layout of FBGEMM's table-batched embeddings). In ONNX this is
    three Gathers and one dequantization for all features instead of S of each, which
    matters on CPU where every node costs a few microseconds of overhead.

    Args:
        cardinalities: N_s of each table.
        embedding_dim: E.

    ``forward(ids)``: (B, S) int64, column s indexing table s -> (B, S, E) float32.
    """

    def __init__(self, cardinalities: list[int], embedding_dim: int) -> None:
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.tables = RowwiseInt8Embedding(sum(self.cardinalities), embedding_dim)
        starts = [0]
        for n in self.cardinalities[:-1]:
            starts.append(starts[-1] + n)
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.int64), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, S) int64 -> (B, S, E) float32."""
        return self.tables(ids + self.offsets)


class RowwiseInt8EmbeddingBag(nn.Module):
    """An ``nn.EmbeddingBag`` stored as row-wise INT8: ``E + 3`` bytes per row, called as the bag it replaces.

    The rows live in :attr:`table`, a :class:`RowwiseInt8Embedding`
    (state-dict keys ``table.codes``, ``table.scales``, ``table.zero_points``).
    ``forward(input, offsets=None, per_sample_weights=None)`` takes what ``nn.EmbeddingBag`` takes:
    ``input`` (B, L) int64 (one bag per row) or (N,) int64 with ``offsets`` (B,) int64 (bag
    starts), the same ``mode`` (``"sum"``, ``"mean"``, ``"max"``), ``padding_idx`` (its ids left out
    of the bag, as PyTorch does) and ``include_last_offset``, and returns (B, E) float32. Only the
    rows of ``input`` are gathered and dequantized; a (B, L) input (sum or mean, or max without
    ``padding_idx``) is then a masked reduction over L, which exports to ONNX as an int8
    ``Gather`` and a ``ReduceSum``/``ReduceMax``; other calls reduce the dequantized rows with
    ``F.embedding_bag``.

    The buffers are filled by ``toolkit.compress.quantize_embeddings.quantize_embeddings``; a fresh
    module holds zeros (``load_state_dict`` fills it, as :func:`apply_structure` leaves it).

    Args:
        num_embeddings: N, the number of rows.
        embedding_dim: E, the width of a row.
        mode: ``"sum"``, ``"mean"`` or ``"max"``, as ``nn.EmbeddingBag``'s.
        padding_idx: the id left out of every bag, in ``[-N, N)`` (a negative one counts from the
            end, as ``nn.EmbeddingBag`` has it, and is stored as ``N + padding_idx``); ``None``: none.
        include_last_offset: ``offsets`` has B + 1 entries, the last one the end of the last bag.

    Raises:
        ValueError: another ``mode``, sizes below 1, or a ``padding_idx`` outside ``[-N, N)``.
    """

    #: The values of ``mode``.
    MODES: ClassVar[tuple[str, ...]] = ("sum", "mean", "max")

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        mode: str = "mean",
        padding_idx: int | None = None,
        include_last_offset: bool = False,
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"RowwiseInt8EmbeddingBag mode must be 'sum', 'mean' or 'max', got {mode!r}")
        self.table = RowwiseInt8Embedding(num_embeddings, embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"RowwiseInt8EmbeddingBag padding_idx must lie in [-{num_embeddings}, {num_embeddings}), got {padding_idx}"
                )
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.mode, self.padding_idx, self.include_last_offset = mode, padding_idx, include_last_offset

    def forward(
        self, input: torch.Tensor, offsets: torch.Tensor | None = None, per_sample_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """See the class docstring: (B, L) ids, or (N,) ids with (B,) offsets -> (B, E) float32."""
        rows = self.table(input)  # (B, L, E) or (N, E): only the looked-up rows are dequantized
        padded = self.padding_idx is not None
        fixed_bags = input.dim() == 2 and offsets is None
        if fixed_bags and (per_sample_weights is None or self.mode == "sum") and not (self.mode == "max" and padded):
            if per_sample_weights is not None:
                rows = rows * per_sample_weights.unsqueeze(-1).to(rows.dtype)
            if self.mode == "max":
                return rows.amax(dim=1)
            if not padded:
                return rows.sum(dim=1) if self.mode == "sum" else rows.mean(dim=1)
            mask = (input != self.padding_idx).unsqueeze(-1).to(rows.dtype)  # (B, L, 1)
            total = (rows * mask).sum(dim=1)
            return total if self.mode == "sum" else total / mask.sum(dim=1).clamp(min=1.0)  # an all-padding bag is 0, as in PyTorch
        flat = rows.reshape(-1, self.embedding_dim)
        n = flat.shape[0]
        index = torch.arange(n, device=input.device).reshape(input.shape)
        pad = None
        if padded:  # padding ids point at an extra zero row that F.embedding_bag leaves out
            flat = torch.cat([flat, flat.new_zeros(1, self.embedding_dim)])
            index = torch.where(input == self.padding_idx, torch.full_like(index, n), index)
            pad = n
        return nn.functional.embedding_bag(
            index,
            flat,
            offsets,
            mode=self.mode,
            per_sample_weights=per_sample_weights,
            include_last_offset=self.include_last_offset,
            padding_idx=pad,
        )

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}, int8 row-wise"


def embedding_tables(cardinalities: Sequence[int], width: int) -> nn.ModuleList:
    """One ``nn.Embedding(n, width)`` per table size ``n`` (a ModuleList: state-dict keys ``<name>.<i>.weight``)."""
    return nn.ModuleList(nn.Embedding(n, width) for n in cardinalities)


def sparse_tables(cardinalities: Sequence[int], width: int, quantization: str) -> nn.Module:
    """The S single-valued features' tables as ``quantization`` stores them.

    ``"none"``: :func:`embedding_tables` (state-dict keys ``<name>.<s>.weight``);
    ``"int8_rowwise"``: one :class:`RowwiseInt8EmbeddingCollection` (``<name>.tables.codes``,
    ``.scales``, ``.zero_points``), looked up once for all S features.

    Raises:
        ValueError: ``quantization`` is not one of :data:`EMBEDDING_QUANTIZATIONS`.
    """
    check_embedding_quantization(quantization)
    if quantization == "int8_rowwise":
        return RowwiseInt8EmbeddingCollection(list(cardinalities), width)
    return embedding_tables(cardinalities, width)


def multi_hot_tables(cardinalities: Sequence[int], width: int, quantization: str) -> nn.ModuleList:
    """The M multi-valued features' tables as ``quantization`` stores them: one ``nn.Embedding(n, width)``
    (``"none"``) or one :class:`RowwiseInt8Embedding` (``"int8_rowwise"``) per table size ``n``.

    Raises:
        ValueError: ``quantization`` is not one of :data:`EMBEDDING_QUANTIZATIONS`.
    """
    check_embedding_quantization(quantization)
    if quantization == "int8_rowwise":
        return nn.ModuleList(RowwiseInt8Embedding(n, width) for n in cardinalities)
    return embedding_tables(cardinalities, width)


def check_embedding_quantization(value: object) -> None:
    """Raises ``ValueError`` naming ``embedding_quantization`` unless ``value`` is one of :data:`EMBEDDING_QUANTIZATIONS`."""
    if value not in EMBEDDING_QUANTIZATIONS:
        raise ValueError(f"embedding_quantization must be one of {list(EMBEDDING_QUANTIZATIONS)}, got {value!r}")


def init_embeddings(model: nn.Module) -> None:
    """Draw every ``nn.Embedding`` weight in ``model`` from N(0, 0.01²), in ``model.modules()`` order."""
    for emb in model.modules():
        if isinstance(emb, nn.Embedding):
            nn.init.normal_(emb.weight, std=0.01)


def sparse_fields(sparse_ids: torch.Tensor, tables: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The single-valued features' embeddings: (B, S) int64, column s indexing ``tables[s]`` -> S tensors (B, E) float32.

    For S separate tables (``nn.Embedding`` or any module mapping (B,) ids to (B, E)); a
    :class:`RowwiseInt8EmbeddingCollection` is called once instead: see :func:`stacked_sparse_fields`.
    """
    return [emb(sparse_ids[:, s]) for s, emb in enumerate(tables)]


def stacked_sparse_fields(sparse_ids: torch.Tensor, tables: nn.Module) -> torch.Tensor:
    """The single-valued features' embeddings stacked: (B, S) int64 -> (B, S, E) float32.

    ``tables`` is what :func:`sparse_tables` builds: one fused lookup of a
    :class:`RowwiseInt8EmbeddingCollection`, or the S tables' lookups (:func:`sparse_fields`) stacked.
    """
    if isinstance(tables, RowwiseInt8EmbeddingCollection):
        return tables(sparse_ids)
    return torch.stack(sparse_fields(sparse_ids, tables), dim=1)


def multi_hot_fields(
    multi_hot_ids: torch.Tensor | None,
    tables: Sequence[nn.Module],
    lengths: Sequence[int],
    padding_id: int,
    *,
    model_name: str,
    dtype: torch.dtype = torch.float32,
    keepdim: bool = False,
) -> list[torch.Tensor]:
    """The multi-valued features' embeddings: the masked sum of each feature's looked-up rows.

    Args:
        multi_hot_ids: (B, sum L_m) int64, the M features' padded ids side by side; may be
            ``None`` only when there are no multi-valued features.
        tables: the M tables (``nn.Embedding`` or any module mapping (B, L) ids to (B, L, E)).
        lengths: L_m of each feature.
        padding_id: the id masked out of each sum.
        model_name: names the model in the error.
        dtype: dtype of the 0/1 mask the rows are multiplied by.
        keepdim: give (B, 1, E) tensors instead of (B, E).

    Returns:
        M tensors (B, E) (or (B, 1, E)): ``sum_l mask_l * table(ids_l)``.

    Raises:
        ValueError: the model has multi-valued features and ``multi_hot_ids`` is ``None``.
    """
    out = []
    start = 0
    for length, emb in zip(lengths, tables, strict=True):
        if multi_hot_ids is None:
            raise ValueError(f"this {model_name} has multi-valued features: pass multi_hot_ids")
        ids = multi_hot_ids[:, start : start + length]
        mask = (ids != padding_id).unsqueeze(-1).to(dtype)  # (B, L, 1)
        out.append((emb(ids) * mask).sum(dim=1, keepdim=keepdim))
        start += length
    return out


def check_feature_fields(config: Any, positive_lists: Sequence[str]) -> None:
    """Check the fields every architecture's config has: ``num_dense`` >= 1, at least one
    sparse table, one multi-hot length per multi-hot table, positive integers in each field
    named in ``positive_lists`` (the table sizes, lengths and hidden widths),
    ``embedding_dim`` >= 1 and ``embedding_quantization`` one of :data:`EMBEDDING_QUANTIZATIONS`.

    Raises:
        ValueError: naming the first field that fails and its value.
    """
    if config.num_dense < 1:
        raise ValueError(f"num_dense must be >= 1, got {config.num_dense}")
    if not config.sparse_cardinalities:
        raise ValueError("sparse_cardinalities must name at least one table")
    if len(config.multi_hot_cardinalities) != len(config.multi_hot_lengths):
        raise ValueError(
            f"multi_hot_cardinalities has {len(config.multi_hot_cardinalities)} tables but "
            f"multi_hot_lengths has {len(config.multi_hot_lengths)} lengths"
        )
    for name in positive_lists:
        bad = [v for v in getattr(config, name) if not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"{name} must hold positive integers, got {bad}")
    if config.embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {config.embedding_dim}")
    check_embedding_quantization(config.embedding_quantization)


def check_dropout(dropout: float) -> None:
    """Raises ``ValueError`` unless ``0 <= dropout < 1``."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")


@dataclass
class FeatureFieldsConfig:
    """The fields every architecture's config starts with (those :class:`~toolkit.models.protocol.FeatureSizes`
    fills from the data, then the embedding width), and the config's dict form (``model_config.json``).

    A subclass is a dataclass that adds its own fields (all with defaults) and sets the class
    variables ``ARCHITECTURE`` (its registry name) and ``FORMAT_VERSION``.

    Attributes:
        num_dense: D, the number of dense features (``dense_features`` float32 (B, D)).
        sparse_cardinalities: table sizes of the S single-valued categorical features
            (``sparse_ids`` int64 (B, S)).
        multi_hot_cardinalities: table sizes of the M multi-valued categorical features (one
            padded id tensor each; the config's ``padding_id`` is masked out).
        multi_hot_lengths: padded length L_m of each multi-valued feature
            (``multi_hot_ids`` int64 (B, sum L_m)).
        embedding_dim: E, the width of every field embedding.
        embedding_quantization: how the embedding tables are stored: ``"none"`` (FP32
            ``nn.Embedding``) or ``"int8_rowwise"`` (every table row-wise INT8: the single-valued
            ones one :class:`RowwiseInt8EmbeddingCollection`, each multi-valued one a
            :class:`RowwiseInt8Embedding`; see :func:`sparse_tables`, :func:`multi_hot_tables`). Built by
            ``toolkit.compress.quantize_embeddings.quantize_embeddings``. Configs saved before this
            field existed load as ``"none"``.
    """

    ARCHITECTURE: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]

    num_dense: int
    sparse_cardinalities: list[int]
    multi_hot_cardinalities: list[int] = field(default_factory=list)
    multi_hot_lengths: list[int] = field(default_factory=list)
    embedding_dim: int = 16
    embedding_quantization: str = "none"

    def to_dict(self) -> dict:
        """JSON-safe form led by ``format_version`` and ``architecture`` (saved as ``model_config.json``)."""
        return {"format_version": self.FORMAT_VERSION, "architecture": self.ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: another format version or architecture, missing, unknown or invalid fields.
        """
        d = dict(d)
        version = d.pop("format_version", None)
        arch = d.pop("architecture", None)
        if version != cls.FORMAT_VERSION or arch != cls.ARCHITECTURE:
            raise ValueError(f"expected a {cls.ARCHITECTURE} config of format_version {cls.FORMAT_VERSION}, got {arch!r} v{version!r}")
        try:
            return cls(**d)
        except TypeError as exc:  # missing or unknown fields, values of the wrong type
            raise ValueError(f"invalid {cls.ARCHITECTURE} config: {exc}") from exc


def relu_mlp(widths: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU (+ Dropout when ``dropout`` > 0) for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# -- tables made int8 in place, after the model was built from its config -----------------------

#: ``format_version`` of :func:`replaced_tables`' record (a checkpoint's ``structure.json``).
STRUCTURE_FORMAT_VERSION = 1


#: ``nn.EmbeddingBag`` attributes a ``RowwiseInt8EmbeddingBag`` entry records (besides its sizes): its constructor's options.
_BAG_OPTIONS = ("mode", "padding_idx", "include_last_offset")


def replaced_tables(model: nn.Module, built: nn.Module) -> dict:
    """The record of ``model``'s tables that were made int8 after ``built`` (its config's model) was built.

    Every module path where ``model`` holds a :class:`RowwiseInt8Embedding` and ``built`` an
    ``nn.Embedding``, or ``model`` a :class:`RowwiseInt8EmbeddingBag` and ``built`` an
    ``nn.EmbeddingBag`` (a table quantized in place, as ``toolkit.compress.quantize_embeddings``
    does for a model whose config says nothing of its tables' storage), is listed with its shape
    (and, for a bag, the options its constructor takes)::

        {"format_version": 1, "replaced_modules": [
            {"path": "sparse_embeddings.0", "type": "RowwiseInt8Embedding", "num_embeddings": 11, "embedding_dim": 4},
            {"path": "genres", "type": "RowwiseInt8EmbeddingBag", "num_embeddings": 19, "embedding_dim": 8,
             "mode": "sum", "padding_idx": null, "include_last_offset": false}, ...]}

    Paths where both hold the same kind of module are not listed: a DLRM, DCN-v2 or DeepFM whose
    config says ``embedding_quantization="int8_rowwise"`` gives an empty list. A bag's own table
    (``<path>.table``) is part of its entry. ``built`` may live on the meta device (only its module
    types and table shapes are read).
    """
    entries = []
    for path, module in model.named_modules(remove_duplicate=False):
        if not path or not isinstance(module, RowwiseInt8Embedding | RowwiseInt8EmbeddingBag):
            continue
        try:
            was = built.get_submodule(path)
        except AttributeError:  # a path the config's model does not have (e.g. the table inside an int8 EmbeddingBag)
            continue
        sizes = {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
        if isinstance(module, RowwiseInt8Embedding) and isinstance(was, nn.Embedding):
            entries.append({"path": path, "type": "RowwiseInt8Embedding", **sizes})
        elif isinstance(module, RowwiseInt8EmbeddingBag) and isinstance(was, nn.EmbeddingBag):
            options = {name: getattr(module, name) for name in _BAG_OPTIONS}
            entries.append({"path": path, "type": "RowwiseInt8EmbeddingBag", **sizes, **options})
    return {"format_version": STRUCTURE_FORMAT_VERSION, "replaced_modules": entries}


#: What each recorded type replaces.
_REPLACED_TYPES: dict[str, type[nn.Module]] = {"RowwiseInt8Embedding": nn.Embedding, "RowwiseInt8EmbeddingBag": nn.EmbeddingBag}


def _bag_options(path: str, entry: dict) -> dict:
    """The options of a ``RowwiseInt8EmbeddingBag`` entry, checked (see :func:`apply_structure`)."""
    missing = [name for name in _BAG_OPTIONS if name not in entry]
    if missing:
        raise ValueError(f"module {path}: a RowwiseInt8EmbeddingBag entry needs {', '.join(_BAG_OPTIONS)}; it lacks {', '.join(missing)}")
    mode, padding_idx, last = (entry[name] for name in _BAG_OPTIONS)
    if mode not in RowwiseInt8EmbeddingBag.MODES:
        raise ValueError(f"module {path}: mode must be one of {list(RowwiseInt8EmbeddingBag.MODES)}, got {mode!r}")
    n = entry["num_embeddings"]
    if padding_idx is not None and (not isinstance(padding_idx, int) or isinstance(padding_idx, bool) or not 0 <= padding_idx < n):
        raise ValueError(f"module {path}: padding_idx must be null or an integer in [0, {n}), got {padding_idx!r}")
    if not isinstance(last, bool):
        raise ValueError(f"module {path}: include_last_offset must be true or false, got {last!r}")
    return {"mode": mode, "padding_idx": padding_idx, "include_last_offset": last}


def apply_structure(model: nn.Module, structure: object) -> nn.Module:
    """Re-apply a :func:`replaced_tables` record to ``model`` (freshly built from its config), in place.

    Each listed path's ``nn.Embedding`` becomes a fresh :class:`RowwiseInt8Embedding` of the same
    shape, and each listed ``nn.EmbeddingBag`` a fresh :class:`RowwiseInt8EmbeddingBag` of the same
    shape and options (zeros: ``load_state_dict`` fills them); a table registered under several
    paths stays one shared table. Returns ``model``.

    Raises:
        ValueError: ``structure`` is not such a record (not an object, another ``format_version``, an
            entry without ``path``/``type``/sizes, an unknown ``type``, a bag entry without ``mode``,
            ``padding_idx`` or ``include_last_offset`` or with a value they cannot take), or an entry's
            path is not in ``model``, is not the module its type replaces there (``nn.Embedding``,
            ``nn.EmbeddingBag``), or has another shape or (a bag) other options; the message names the
            entry's path.
    """
    if not isinstance(structure, dict) or structure.get("format_version") != STRUCTURE_FORMAT_VERSION:
        raise ValueError(f"expected an object of format_version {STRUCTURE_FORMAT_VERSION} with 'replaced_modules'")
    entries = structure.get("replaced_modules")
    if not isinstance(entries, list):
        raise ValueError(f"'replaced_modules' must be a list, got {type(entries).__name__}")
    replacements: dict[int, nn.Module] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"replaced_modules[{i}] must be an object with a non-empty 'path', got {entry!r}")
        path, kind = entry["path"], entry.get("type")
        if kind not in _REPLACED_TYPES:
            raise ValueError(f"module {path}: unknown type {kind!r} (the recorded types are {list(_REPLACED_TYPES)})")
        sizes = (entry.get("num_embeddings"), entry.get("embedding_dim"))
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(f"module {path}: num_embeddings and embedding_dim must be positive integers, got {sizes}")
        options = _bag_options(path, entry) if kind == "RowwiseInt8EmbeddingBag" else {}
        try:
            table = model.get_submodule(path)
        except AttributeError as exc:
            raise ValueError(f"module {path}: not in the {type(model).__name__} its config builds ({exc})") from exc
        replaced = _REPLACED_TYPES[kind]
        if id(table) in replacements:
            new = replacements[id(table)]
            if type(new).__name__ != kind:
                raise ValueError(f"module {path}: recorded as a {kind}, but the same table is recorded as a {type(new).__name__} elsewhere")
        elif isinstance(table, replaced):
            if (table.num_embeddings, table.embedding_dim) != sizes:
                raise ValueError(
                    f"module {path}: recorded as {sizes[0]} x {sizes[1]}, but the config builds "
                    f"{table.num_embeddings} x {table.embedding_dim}"
                )
            built_options = {name: getattr(table, name) for name in options}
            if built_options != options:
                raise ValueError(f"module {path}: recorded with {options}, but the config builds an nn.EmbeddingBag with {built_options}")
            table_class = RowwiseInt8EmbeddingBag if kind == "RowwiseInt8EmbeddingBag" else RowwiseInt8Embedding
            new = replacements[id(table)] = table_class(*sizes, **options)
        else:
            raise ValueError(f"module {path}: is a {type(table).__name__} in the model its config builds, not an nn.{replaced.__name__}")
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
    return model

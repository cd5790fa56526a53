"""DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", arXiv:1906.00091, 2019), written to export to ONNX and TensorRT.

This file imports only torch, the standard library and :mod:`toolkit.models.layers`: the Triton
repository builder copies it and ``layers.py`` next to the PyTorch baseline's ``model.py`` so
that a served model folder is self-contained.

Export-friendly choices:

* Multi-valued features are padded id tensors with a masked sum over
  ``nn.Embedding`` lookups, not ``nn.EmbeddingBag`` (TensorRT has no EmbeddingBag).
* The pairwise-interaction indices are a precomputed buffer used with
  ``index_select``, not ``torch.tril_indices`` at run time (the TorchScript ONNX
  exporter fails on ``tril_indices``).
* Row-wise INT8 tables (:class:`RowwiseInt8Embedding`, ``embedding_quantization=
  "int8_rowwise"``) look up int8 codes and per-row scale/zero point first and dequantize
  only the gathered rows, so the exported graph is an int8 ``Gather`` followed by
  ``Cast``/``Sub``/``Mul`` and the table stays int8 in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

if __package__:  # toolkit.models.dlrm
    from toolkit.models import layers
else:  # the copy in a Triton Python-backend version folder, next to layers.py
    import layers

__all__ = ["DLRMConfig", "DLRM", "RowwiseInt8Embedding", "RowwiseInt8EmbeddingCollection", "EMBEDDING_QUANTIZATIONS"]

CONFIG_FORMAT_VERSION = 1

#: Values of :attr:`DLRMConfig.embedding_quantization`.
EMBEDDING_QUANTIZATIONS = ("none", "int8_rowwise")


@dataclass
class DLRMConfig(layers.FeatureFieldsConfig):
    """Hyper-parameters of a :class:`DLRM`.

    Attributes:
        num_dense, sparse_cardinalities, multi_hot_cardinalities, multi_hot_lengths, embedding_dim:
            the feature fields (see :class:`toolkit.models.layers.FeatureFieldsConfig`); E is also
            the width of the bottom MLP's output.
        bottom_mlp: hidden widths of the bottom MLP (its output layer has width E).
        top_mlp: hidden widths of the top MLP (its output layer has width 1).
        dropout: dropout probability after each top-MLP hidden layer (training only).
        padding_id: the id that marks padding in multi-valued features.
        embedding_quantization: how the embedding tables are stored: ``"none"`` (FP32
            ``nn.Embedding``) or ``"int8_rowwise"`` (:class:`RowwiseInt8Embedding` for every
            table, single- and multi-valued; built by
            ``toolkit.compress.quantize_embeddings.quantize_embeddings``). Configs saved before
            this field existed load as ``"none"``.
    """

    ARCHITECTURE: ClassVar[str] = "dlrm"
    FORMAT_VERSION: ClassVar[int] = CONFIG_FORMAT_VERSION

    bottom_mlp: list[int] = field(default_factory=lambda: [64])
    top_mlp: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0
    padding_id: int = 0
    embedding_quantization: str = "none"

    def __post_init__(self) -> None:
        layers.check_feature_fields(self, ("sparse_cardinalities", "multi_hot_cardinalities", "multi_hot_lengths", "bottom_mlp", "top_mlp"))
        layers.check_dropout(self.dropout)
        if self.embedding_quantization not in EMBEDDING_QUANTIZATIONS:
            raise ValueError(f"embedding_quantization must be one of {list(EMBEDDING_QUANTIZATIONS)}, got {self.embedding_quantization!r}")


def _mlp(widths: list[int], *, last_activation: bool, dropout: float = 0.0) -> nn.Sequential:
    modules: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        modules.append(nn.Linear(w_in, w_out))
        last = i == len(widths) - 2
        if not last or last_activation:
            modules.append(nn.ReLU())
            if dropout > 0 and not last:
                modules.append(nn.Dropout(dropout))
    return nn.Sequential(*modules)


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


class DLRM(nn.Module):
    """DLRM with dot-product interaction, returning click/like probabilities.

    Inputs (B is the batch size, D the dense features, S the single-valued sparse
    features, L the padded length of the multi-valued feature):

    * ``dense_features``: (B, D) float32, standardized dense features.
    * ``sparse_ids``: (B, S) int64, column s indexes table s (``0 <= id < sparse_cardinalities[s]``).
    * ``multi_hot_ids``: (B, sum(L_m)) int64, the multi-valued features' padded ids side by side
      (``padding_id`` marks padding; its embedding is masked out of the sum). Only when the
      config has multi-valued features (M > 0); otherwise the model takes two inputs.

    Output: (B, 1) float32 probabilities in (0, 1).

    With ``config.embedding_quantization == "int8_rowwise"`` the single-valued tables are one
    :class:`RowwiseInt8EmbeddingCollection` and each multi-valued table a
    :class:`RowwiseInt8Embedding` (int8 buffers, no trainable embedding parameters).

    Layout: bottom MLP D → ... → E (ReLU); S + M embedding lookups of width E; the
    F = 1 + S + M vectors' pairwise dot products (F·(F−1)/2 values, strictly lower
    triangle) concatenated with the bottom MLP's output; top MLP → 1; sigmoid.
    """

    def __init__(self, config: DLRMConfig) -> None:
        super().__init__()
        self.config = config
        e = config.embedding_dim
        self.bottom_mlp = _mlp([config.num_dense, *config.bottom_mlp, e], last_activation=True)
        quantized = config.embedding_quantization == "int8_rowwise"
        table = RowwiseInt8Embedding if quantized else nn.Embedding
        self.sparse_embeddings: nn.Module = (
            RowwiseInt8EmbeddingCollection(config.sparse_cardinalities, e)
            if quantized
            else layers.embedding_tables(config.sparse_cardinalities, e)
        )
        self.multi_hot_embeddings = nn.ModuleList(table(n, e) for n in config.multi_hot_cardinalities)
        n_vectors = 1 + len(config.sparse_cardinalities) + len(config.multi_hot_cardinalities)
        rows, cols = torch.tril_indices(n_vectors, n_vectors, offset=-1)
        self.register_buffer("interaction_index", rows * n_vectors + cols, persistent=False)
        n_interactions = n_vectors * (n_vectors - 1) // 2
        self.top_mlp = _mlp([e + n_interactions, *config.top_mlp, 1], last_activation=False, dropout=config.dropout)
        layers.init_embeddings(self)

    def forward(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """See the class docstring for shapes and dtypes."""
        return torch.sigmoid(self.logits(dense_features, sparse_ids, multi_hot_ids))

    def logits(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1) float32 logits (the pre-sigmoid scores used by the training loss)."""
        x = self.bottom_mlp(dense_features)
        if isinstance(self.sparse_embeddings, RowwiseInt8EmbeddingCollection):
            vectors = [x.unsqueeze(1), self.sparse_embeddings(sparse_ids)]  # (B, 1, E), (B, S, E)
        else:
            vectors = [x.unsqueeze(1)] + [v.unsqueeze(1) for v in layers.sparse_fields(sparse_ids, self.sparse_embeddings)]
        cfg = self.config
        vectors += layers.multi_hot_fields(
            multi_hot_ids, self.multi_hot_embeddings, cfg.multi_hot_lengths, cfg.padding_id, model_name="DLRM", dtype=x.dtype, keepdim=True
        )  # (B, 1, E) each
        t = torch.cat(vectors, dim=1)  # (B, F, E)
        dots = torch.bmm(t, t.transpose(1, 2)).flatten(1)  # (B, F*F)
        interactions = torch.index_select(dots, 1, self.interaction_index)
        return self.top_mlp(torch.cat([x, interactions], dim=1))

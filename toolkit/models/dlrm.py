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
* Row-wise INT8 tables (``embedding_quantization="int8_rowwise"``: the shared
  :class:`~toolkit.models.layers.RowwiseInt8Embedding` and
  :class:`~toolkit.models.layers.RowwiseInt8EmbeddingCollection`, re-exported here) look up
  int8 codes and per-row scale/zero point first and dequantize only the gathered rows, so the
  exported graph is an int8 ``Gather`` followed by ``Cast``/``Sub``/``Mul`` and the table stays
  int8 in memory.
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

# One implementation, in layers.py (shared with DCN-v2 and DeepFM); importable from here as before.
EMBEDDING_QUANTIZATIONS = layers.EMBEDDING_QUANTIZATIONS
RowwiseInt8Embedding = layers.RowwiseInt8Embedding
RowwiseInt8EmbeddingCollection = layers.RowwiseInt8EmbeddingCollection


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

    ``embedding_quantization`` (``"none"`` or ``"int8_rowwise"``) is one of the feature fields
    (:class:`toolkit.models.layers.FeatureFieldsConfig`).
    """

    ARCHITECTURE: ClassVar[str] = "dlrm"
    FORMAT_VERSION: ClassVar[int] = CONFIG_FORMAT_VERSION

    bottom_mlp: list[int] = field(default_factory=lambda: [64])
    top_mlp: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0
    padding_id: int = 0

    def __post_init__(self) -> None:
        layers.check_feature_fields(self, ("sparse_cardinalities", "multi_hot_cardinalities", "multi_hot_lengths", "bottom_mlp", "top_mlp"))
        layers.check_dropout(self.dropout)


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
        self.sparse_embeddings = layers.sparse_tables(config.sparse_cardinalities, e, config.embedding_quantization)
        self.multi_hot_embeddings = layers.multi_hot_tables(config.multi_hot_cardinalities, e, config.embedding_quantization)
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

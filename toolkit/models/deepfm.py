"""DeepFM (Guo, Tang, Ye, Li and He, "DeepFM: A Factorization-Machine based Neural Network
for CTR Prediction", IJCAI 2017, arXiv:1703.04247), written to export to ONNX and TensorRT.

This file imports only torch, the standard library and :mod:`toolkit.models.layers`: the Triton
repository builder copies it and ``layers.py`` next to the PyTorch baseline's ``model.py``.

Model (the paper's Figure 1 and equations 1–4): ``ŷ = sigmoid(y_FM + y_DNN)`` where the FM
and the deep network share the field embeddings.

* Fields: each of the S single-valued features is one field (embedding ``e_s`` of width E),
  each of the M multi-valued features one field whose embedding is the masked sum of its
  ids' rows, and each of the D dense features one field ``x_d · v_d`` (a value times its
  own latent vector, as a factorization machine treats a real-valued feature; Rendle,
  "Factorization Machines", ICDM 2010). F = S + M + D fields in all.
* ``y_FM = b + Σ first-order weights + ½ Σ_e [(Σ_f e_f)² − Σ_f e_f²]``: the first-order
  weights are one scalar per id (summed over a multi-valued feature's ids) and ``w · x_dense``;
  the second term is the FM's pairwise ⟨e_i, e_j⟩ over fields in O(F·E) (Rendle's
  equation 5). Pairs of ids inside one multi-valued field are not crossed (it is one field).
* ``y_DNN``: a ReLU MLP on the F field embeddings concatenated (F·E wide), then a linear layer → 1.

Export-friendly: multi-valued features are padded ids with a masked sum over
``nn.Embedding`` lookups (no ``nn.EmbeddingBag``, which TensorRT lacks), as in the DLRM.
With ``embedding_quantization="int8_rowwise"`` every table (the E-wide field tables and the
1-wide first-order ones) is row-wise INT8, as in the DLRM
(:class:`~toolkit.models.layers.RowwiseInt8EmbeddingCollection` for the single-valued ones,
:class:`~toolkit.models.layers.RowwiseInt8Embedding` for each multi-valued one): the export
gathers int8 rows and dequantizes only those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

if __package__:  # toolkit.models.deepfm
    from toolkit.models import layers
else:  # the copy in a Triton Python-backend version folder, next to layers.py
    import layers

__all__ = ["DeepFMConfig", "DeepFM"]

CONFIG_FORMAT_VERSION = 1
ARCHITECTURE = "deepfm"


@dataclass
class DeepFMConfig(layers.FeatureFieldsConfig):
    """Hyper-parameters of a :class:`DeepFM`.

    Attributes:
        num_dense, sparse_cardinalities, multi_hot_cardinalities, multi_hot_lengths, embedding_dim:
            the feature fields (see :class:`toolkit.models.layers.FeatureFieldsConfig`); each dense
            feature is one FM field, and E is the FM's latent dimension k.
        deep_mlp: hidden widths of the deep network (ReLU after each), at least one.
        dropout: dropout probability after each deep hidden layer (training only).
        padding_id: the id that marks padding in multi-valued features.

    ``embedding_quantization`` (``"none"`` or ``"int8_rowwise"``) is one of the feature fields
    (:class:`toolkit.models.layers.FeatureFieldsConfig`).
    """

    ARCHITECTURE: ClassVar[str] = ARCHITECTURE
    FORMAT_VERSION: ClassVar[int] = CONFIG_FORMAT_VERSION

    deep_mlp: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    padding_id: int = 0

    def __post_init__(self) -> None:
        layers.check_feature_fields(self, ("sparse_cardinalities", "multi_hot_cardinalities", "multi_hot_lengths", "deep_mlp"))
        if not self.deep_mlp:
            raise ValueError("deep_mlp must name at least one hidden width")
        layers.check_dropout(self.dropout)

    @property
    def num_fields(self) -> int:
        """F = S + M + D."""
        return len(self.sparse_cardinalities) + len(self.multi_hot_cardinalities) + self.num_dense


class DeepFM(nn.Module):
    """DeepFM returning click/like probabilities (see the module docstring for the layout).

    Inputs (B is the batch size, D the dense features, S the single-valued sparse features,
    sum L the padded multi-valued ids side by side):

    * ``dense_features``: (B, D) float32, standardized.
    * ``sparse_ids``: (B, S) int64, column s indexes table s.
    * ``multi_hot_ids``: (B, sum L_m) int64, ``padding_id`` masked out of each feature's sum;
      only when M > 0.

    Output: (B, 1) float32 probabilities in (0, 1).

    Parameters: ``sparse_embeddings``/``multi_hot_embeddings`` (E-wide tables shared by the FM
    and the deep network), ``sparse_weights``/``multi_hot_weights`` (1-wide first-order tables),
    ``dense_vectors`` (D, E), ``dense_weights`` (D→1 linear, holding the global bias b),
    ``deep_mlp`` and ``output_layer``. With ``config.embedding_quantization == "int8_rowwise"``
    ``sparse_embeddings``/``sparse_weights`` are each one
    :class:`~toolkit.models.layers.RowwiseInt8EmbeddingCollection` and the multi-valued tables
    :class:`~toolkit.models.layers.RowwiseInt8Embedding`s (int8 buffers, no embedding parameters).
    """

    def __init__(self, config: DeepFMConfig) -> None:
        super().__init__()
        self.config = config
        e = config.embedding_dim
        q = config.embedding_quantization
        self.sparse_embeddings = layers.sparse_tables(config.sparse_cardinalities, e, q)
        self.multi_hot_embeddings = layers.multi_hot_tables(config.multi_hot_cardinalities, e, q)
        self.sparse_weights = layers.sparse_tables(config.sparse_cardinalities, 1, q)
        self.multi_hot_weights = layers.multi_hot_tables(config.multi_hot_cardinalities, 1, q)
        self.dense_vectors = nn.Parameter(torch.randn(config.num_dense, e) * 0.01)
        self.dense_weights = nn.Linear(config.num_dense, 1)
        self.deep_mlp = layers.relu_mlp([config.num_fields * e, *config.deep_mlp], config.dropout)
        self.output_layer = nn.Linear(config.deep_mlp[-1], 1)
        layers.init_embeddings(self)

    def forward(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """See the class docstring for shapes and dtypes."""
        return torch.sigmoid(self.logits(dense_features, sparse_ids, multi_hot_ids))

    def logits(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1) float32 logits ``y_FM + y_DNN`` (the pre-sigmoid scores used by the training loss)."""
        lengths, padding_id = self.config.multi_hot_lengths, self.config.padding_id
        multi_hot = layers.multi_hot_fields(
            multi_hot_ids, self.multi_hot_embeddings, lengths, padding_id, model_name="DeepFM", keepdim=True
        )
        first = self.dense_weights(dense_features)  # (B, 1): w · x_dense + b
        if isinstance(self.sparse_weights, layers.RowwiseInt8EmbeddingCollection):
            first = first + self.sparse_weights(sparse_ids).sum(dim=1)  # (B, S, 1) from one fused lookup -> (B, 1)
        else:
            for weight in layers.sparse_fields(sparse_ids, self.sparse_weights):  # (B, 1) each
                first = first + weight
        for weight in layers.multi_hot_fields(multi_hot_ids, self.multi_hot_weights, lengths, padding_id, model_name="DeepFM"):
            first = first + weight
        sparse = layers.stacked_sparse_fields(sparse_ids, self.sparse_embeddings)  # (B, S, E)
        dense = dense_features.unsqueeze(-1) * self.dense_vectors  # (B, D, E)
        fields = torch.cat([sparse, *multi_hot, dense], dim=1)  # (B, F, E)
        square_of_sum = fields.sum(dim=1).pow(2)  # (B, E)
        sum_of_squares = fields.pow(2).sum(dim=1)  # (B, E)
        second = 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)  # (B, 1)
        deep = self.output_layer(self.deep_mlp(fields.flatten(1)))  # (B, 1)
        return first + second + deep

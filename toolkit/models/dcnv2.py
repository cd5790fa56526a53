"""DCN-v2 (Wang, Shivanna, Cheng, Jain, Lin, Hong and Chi, "DCN V2: Improved Deep & Cross
Network and Practical Lessons for Web-scale Learning to Rank Systems", WWW 2021,
arXiv:2008.13535), written to export to ONNX and TensorRT.

This file imports only torch, the standard library and :mod:`toolkit.models.layers`: the Triton
repository builder copies it and ``layers.py`` next to the PyTorch baseline's ``model.py``.

Model (the paper's Figure 1 and equations 1–2):

* ``x0 = [e_1; ...; e_F; x_dense]``, the F = S + M field embeddings (width E each) and the D
  dense features, of width d = F·E + D.
* Cross layer l (full rank): ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l`` with W_l (d, d).
  Low rank (``cross_rank = r``): ``x_{l+1} = x0 ⊙ (U_l (V_lᵀ x_l) + b_l) + x_l`` with
  U_l, V_l (d, r), the paper's equation 2 (its mixture of low-rank experts is not built).
* ``structure = "stacked"``: the deep network (ReLU MLP) runs on the cross network's
  output; ``"parallel"``: both run on x0 and their outputs are concatenated. A last
  linear layer gives the logit.

Export-friendly: multi-valued features are padded ids with a masked sum over
``nn.Embedding`` lookups (no ``nn.EmbeddingBag``, which TensorRT lacks), as in the DLRM.
With ``embedding_quantization="int8_rowwise"`` the tables are row-wise INT8, as in the DLRM
(:class:`~toolkit.models.layers.RowwiseInt8EmbeddingCollection` for the single-valued ones,
:class:`~toolkit.models.layers.RowwiseInt8Embedding` for each multi-valued one): the export
gathers int8 rows and dequantizes only those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

if __package__:  # toolkit.models.dcnv2
    from toolkit.models import layers
else:  # the copy in a Triton Python-backend version folder, next to layers.py
    import layers

__all__ = ["DCNv2Config", "DCNv2", "CrossLayer", "STRUCTURES"]

CONFIG_FORMAT_VERSION = 1
ARCHITECTURE = "dcnv2"

#: Values of :attr:`DCNv2Config.structure`.
STRUCTURES = ("stacked", "parallel")


@dataclass
class DCNv2Config(layers.FeatureFieldsConfig):
    """Hyper-parameters of a :class:`DCNv2`.

    Attributes:
        num_dense, sparse_cardinalities, multi_hot_cardinalities, multi_hot_lengths, embedding_dim:
            the feature fields (see :class:`toolkit.models.layers.FeatureFieldsConfig`).
        num_cross_layers: L_c >= 1 cross layers.
        cross_rank: ``None`` for full-rank cross layers (W_l is d×d), or r >= 1 for the
            low-rank form U_l V_lᵀ (the paper finds r ≈ d/4 keeps the accuracy of full rank).
        structure: ``"stacked"`` (deep network after the cross network) or ``"parallel"``.
        deep_mlp: hidden widths of the deep network (ReLU after each); may be empty with
            ``"stacked"`` (cross network only).
        dropout: dropout probability after each deep hidden layer (training only).
        padding_id: the id that marks padding in multi-valued features.

    ``embedding_quantization`` (``"none"`` or ``"int8_rowwise"``) is one of the feature fields
    (:class:`toolkit.models.layers.FeatureFieldsConfig`).
    """

    ARCHITECTURE: ClassVar[str] = ARCHITECTURE
    FORMAT_VERSION: ClassVar[int] = CONFIG_FORMAT_VERSION

    num_cross_layers: int = 3
    cross_rank: int | None = None
    structure: str = "stacked"
    deep_mlp: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    padding_id: int = 0

    def __post_init__(self) -> None:
        layers.check_feature_fields(self, ("sparse_cardinalities", "multi_hot_cardinalities", "multi_hot_lengths", "deep_mlp"))
        if self.num_cross_layers < 1:
            raise ValueError(f"num_cross_layers must be >= 1, got {self.num_cross_layers}")
        if self.cross_rank is not None and (not isinstance(self.cross_rank, int) or self.cross_rank < 1):
            raise ValueError(f"cross_rank must be None (full rank) or a positive integer, got {self.cross_rank!r}")
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {list(STRUCTURES)}, got {self.structure!r}")
        if self.structure == "parallel" and not self.deep_mlp:
            raise ValueError("structure 'parallel' needs a deep network: deep_mlp must not be empty")
        layers.check_dropout(self.dropout)

    @property
    def input_width(self) -> int:
        """d = (S + M)·E + D, the width of x0 and of every cross layer."""
        return (len(self.sparse_cardinalities) + len(self.multi_hot_cardinalities)) * self.embedding_dim + self.num_dense


class CrossLayer(nn.Module):
    """One DCN-v2 cross layer on (B, d) float32: ``x0 ⊙ (W x + b) + x``.

    Args:
        width: d.
        rank: ``None`` for W = a full d×d ``nn.Linear``; r for W = U Vᵀ (``down``: d→r without
            bias, then ``up``: r→d with the bias b).
    """

    def __init__(self, width: int, rank: int | None = None) -> None:
        super().__init__()
        if rank is None:
            self.down: nn.Module = nn.Identity()
            self.up = nn.Linear(width, width)
        else:
            self.down = nn.Linear(width, rank, bias=False)
            self.up = nn.Linear(rank, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, d) -> (B, d)."""
        return x0 * self.up(self.down(x)) + x


class DCNv2(nn.Module):
    """DCN-v2 returning click/like probabilities (see the module docstring for the layout).

    Inputs (B is the batch size, D the dense features, S the single-valued sparse features,
    sum L the padded multi-valued ids side by side):

    * ``dense_features``: (B, D) float32, standardized.
    * ``sparse_ids``: (B, S) int64, column s indexes table s.
    * ``multi_hot_ids``: (B, sum L_m) int64, ``padding_id`` masked out of each feature's sum;
      only when M > 0.

    Output: (B, 1) float32 probabilities in (0, 1).

    Tables: ``sparse_embeddings`` (S ``nn.Embedding``s, or with ``config.embedding_quantization ==
    "int8_rowwise"`` one :class:`~toolkit.models.layers.RowwiseInt8EmbeddingCollection`) and
    ``multi_hot_embeddings`` (M ``nn.Embedding``s or :class:`~toolkit.models.layers.RowwiseInt8Embedding`s).
    """

    def __init__(self, config: DCNv2Config) -> None:
        super().__init__()
        self.config = config
        e, d = config.embedding_dim, config.input_width
        self.sparse_embeddings = layers.sparse_tables(config.sparse_cardinalities, e, config.embedding_quantization)
        self.multi_hot_embeddings = layers.multi_hot_tables(config.multi_hot_cardinalities, e, config.embedding_quantization)
        self.cross_layers = nn.ModuleList(CrossLayer(d, config.cross_rank) for _ in range(config.num_cross_layers))
        self.deep_mlp = layers.relu_mlp([d, *config.deep_mlp], config.dropout)
        deep_out = config.deep_mlp[-1] if config.deep_mlp else d
        self.output_layer = nn.Linear(deep_out + d if config.structure == "parallel" else deep_out, 1)
        layers.init_embeddings(self)

    def forward(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """See the class docstring for shapes and dtypes."""
        return torch.sigmoid(self.logits(dense_features, sparse_ids, multi_hot_ids))

    def logits(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1) float32 logits (the pre-sigmoid scores used by the training loss)."""
        if isinstance(self.sparse_embeddings, layers.RowwiseInt8EmbeddingCollection):
            fields = [self.sparse_embeddings(sparse_ids).flatten(1)]  # (B, S·E): one fused lookup, fields side by side
        else:
            fields = layers.sparse_fields(sparse_ids, self.sparse_embeddings)  # (B, E) each
        fields += layers.multi_hot_fields(
            multi_hot_ids, self.multi_hot_embeddings, self.config.multi_hot_lengths, self.config.padding_id, model_name="DCNv2"
        )
        x0 = torch.cat([*fields, dense_features], dim=1)  # (B, d)
        x = x0
        for layer in self.cross_layers:
            x = layer(x0, x)
        if self.config.structure == "stacked":
            return self.output_layer(self.deep_mlp(x))
        return self.output_layer(torch.cat([x, self.deep_mlp(x0)], dim=1))

"""DeepFM (Guo, Tang, Ye, Li and He, "DeepFM: A Factorization-Machine based Neural Network
for CTR Prediction", IJCAI 2017, arXiv:1703.04247), written to export to ONNX and TensorRT.

This file imports only torch and the standard library: the Triton repository builder
copies it next to the PyTorch baseline's ``model.py``.

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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

__all__ = ["DeepFMConfig", "DeepFM"]

CONFIG_FORMAT_VERSION = 1
ARCHITECTURE = "deepfm"


@dataclass
class DeepFMConfig:
    """Hyper-parameters of a :class:`DeepFM`.

    Attributes:
        num_dense: D, the number of dense features (each one FM field).
        sparse_cardinalities: table sizes of the S single-valued categorical features.
        multi_hot_cardinalities: table sizes of the M multi-valued features (padded ids).
        multi_hot_lengths: padded length L_m of each multi-valued feature.
        embedding_dim: E, the width of every field embedding (the FM's latent dimension k).
        deep_mlp: hidden widths of the deep network (ReLU after each), at least one.
        dropout: dropout probability after each deep hidden layer (training only).
        padding_id: the id that marks padding in multi-valued features.
    """

    num_dense: int
    sparse_cardinalities: list[int]
    multi_hot_cardinalities: list[int] = field(default_factory=list)
    multi_hot_lengths: list[int] = field(default_factory=list)
    embedding_dim: int = 16
    deep_mlp: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    padding_id: int = 0

    def __post_init__(self) -> None:
        if self.num_dense < 1:
            raise ValueError(f"num_dense must be >= 1, got {self.num_dense}")
        if not self.sparse_cardinalities:
            raise ValueError("sparse_cardinalities must name at least one table")
        if len(self.multi_hot_cardinalities) != len(self.multi_hot_lengths):
            raise ValueError(
                f"multi_hot_cardinalities has {len(self.multi_hot_cardinalities)} tables but "
                f"multi_hot_lengths has {len(self.multi_hot_lengths)} lengths"
            )
        for name in ("sparse_cardinalities", "multi_hot_cardinalities", "multi_hot_lengths", "deep_mlp"):
            bad = [v for v in getattr(self, name) if not isinstance(v, int) or v < 1]
            if bad:
                raise ValueError(f"{name} must hold positive integers, got {bad}")
        if not self.deep_mlp:
            raise ValueError("deep_mlp must name at least one hidden width")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @property
    def num_fields(self) -> int:
        """F = S + M + D."""
        return len(self.sparse_cardinalities) + len(self.multi_hot_cardinalities) + self.num_dense

    def to_dict(self) -> dict:
        """JSON-safe form with a format version (saved as ``model_config.json``)."""
        return {"format_version": CONFIG_FORMAT_VERSION, "architecture": ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> DeepFMConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown format version or architecture, missing or invalid fields.
        """
        d = dict(d)
        version = d.pop("format_version", None)
        arch = d.pop("architecture", None)
        if version != CONFIG_FORMAT_VERSION or arch != ARCHITECTURE:
            raise ValueError(f"expected a {ARCHITECTURE} config of format_version {CONFIG_FORMAT_VERSION}, got {arch!r} v{version!r}")
        try:
            return cls(**d)
        except TypeError as exc:  # missing or unknown fields
            raise ValueError(f"invalid {ARCHITECTURE} config: {exc}") from exc


def _mlp(widths: list[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU (+ Dropout) for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


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
    ``deep_mlp`` and ``output_layer``.
    """

    def __init__(self, config: DeepFMConfig) -> None:
        super().__init__()
        self.config = config
        e = config.embedding_dim
        self.sparse_embeddings = nn.ModuleList(nn.Embedding(n, e) for n in config.sparse_cardinalities)
        self.multi_hot_embeddings = nn.ModuleList(nn.Embedding(n, e) for n in config.multi_hot_cardinalities)
        self.sparse_weights = nn.ModuleList(nn.Embedding(n, 1) for n in config.sparse_cardinalities)
        self.multi_hot_weights = nn.ModuleList(nn.Embedding(n, 1) for n in config.multi_hot_cardinalities)
        self.dense_vectors = nn.Parameter(torch.randn(config.num_dense, e) * 0.01)
        self.dense_weights = nn.Linear(config.num_dense, 1)
        self.deep_mlp = _mlp([config.num_fields * e, *config.deep_mlp], config.dropout)
        self.output_layer = nn.Linear(config.deep_mlp[-1], 1)
        for emb in self.modules():
            if isinstance(emb, nn.Embedding):
                nn.init.normal_(emb.weight, std=0.01)

    def forward(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """See the class docstring for shapes and dtypes."""
        return torch.sigmoid(self.logits(dense_features, sparse_ids, multi_hot_ids))

    def logits(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor, multi_hot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1) float32 logits ``y_FM + y_DNN`` (the pre-sigmoid scores used by the training loss)."""
        vectors = [emb(sparse_ids[:, s]) for s, emb in enumerate(self.sparse_embeddings)]  # (B, E) each
        first = self.dense_weights(dense_features)  # (B, 1): w · x_dense + b
        for s, weight in enumerate(self.sparse_weights):
            first = first + weight(sparse_ids[:, s])
        start = 0
        for length, emb, weight in zip(self.config.multi_hot_lengths, self.multi_hot_embeddings, self.multi_hot_weights, strict=True):
            if multi_hot_ids is None:
                raise ValueError("this DeepFM has multi-valued features: pass multi_hot_ids")
            ids = multi_hot_ids[:, start : start + length]
            mask = (ids != self.config.padding_id).unsqueeze(-1).to(torch.float32)  # (B, L, 1)
            vectors.append((emb(ids) * mask).sum(dim=1))
            first = first + (weight(ids) * mask).sum(dim=1)
            start += length
        fields = torch.cat([torch.stack(vectors, dim=1), dense_features.unsqueeze(-1) * self.dense_vectors], dim=1)  # (B, F, E)
        square_of_sum = fields.sum(dim=1).pow(2)  # (B, E)
        sum_of_squares = fields.pow(2).sum(dim=1)  # (B, E)
        second = 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)  # (B, 1)
        deep = self.output_layer(self.deep_mlp(fields.flatten(1)))  # (B, 1)
        return first + second + deep

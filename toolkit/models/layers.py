"""Pieces the DLRM, DCN-v2 and DeepFM share: field embedding tables and their lookups (a masked
sum for multi-valued features), the checks of the common config fields, the config's dict form.

This file imports only torch and the standard library: the Triton repository builder copies
it next to the architecture's own file (``dlrm.py``, ``dcnv2.py``, ``deepfm.py``) and the
PyTorch baseline's ``model.py``, where it is imported as the top-level module ``layers``.

Multi-valued features are padded ids with a masked sum over ``nn.Embedding`` lookups, not
``nn.EmbeddingBag`` (TensorRT has no EmbeddingBag).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

import torch
from torch import nn

__all__ = [
    "embedding_tables",
    "init_embeddings",
    "sparse_fields",
    "multi_hot_fields",
    "check_feature_fields",
    "check_dropout",
    "FeatureFieldsConfig",
    "relu_mlp",
]


def embedding_tables(cardinalities: Sequence[int], width: int) -> nn.ModuleList:
    """One ``nn.Embedding(n, width)`` per table size ``n`` (a ModuleList: state-dict keys ``<name>.<i>.weight``)."""
    return nn.ModuleList(nn.Embedding(n, width) for n in cardinalities)


def init_embeddings(model: nn.Module) -> None:
    """Draw every ``nn.Embedding`` weight in ``model`` from N(0, 0.01²), in ``model.modules()`` order."""
    for emb in model.modules():
        if isinstance(emb, nn.Embedding):
            nn.init.normal_(emb.weight, std=0.01)


def sparse_fields(sparse_ids: torch.Tensor, tables: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The single-valued features' embeddings: (B, S) int64, column s indexing ``tables[s]`` -> S tensors (B, E) float32."""
    return [emb(sparse_ids[:, s]) for s, emb in enumerate(tables)]


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
    named in ``positive_lists`` (the table sizes, lengths and hidden widths) and
    ``embedding_dim`` >= 1.

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
    """

    ARCHITECTURE: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]

    num_dense: int
    sparse_cardinalities: list[int]
    multi_hot_cardinalities: list[int] = field(default_factory=list)
    multi_hot_lengths: list[int] = field(default_factory=list)
    embedding_dim: int = 16

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

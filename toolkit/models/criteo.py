"""The Criteo-Kaggle-shaped DLRM used for speed and size work (see :mod:`toolkit.data.criteo`)."""

from __future__ import annotations

from toolkit.data.criteo import DEFAULT_CARDINALITY_CAP, criteo_dlrm_kwargs
from toolkit.models.dlrm import DLRMConfig

__all__ = ["criteo_dlrm_config"]


def criteo_dlrm_config(cap: int = DEFAULT_CARDINALITY_CAP) -> DLRMConfig:
    """DLRM for Criteo Kaggle rows: 13 dense features, 26 tables of the Kaggle cardinalities capped
    at ``cap`` rows, embedding dim 16, bottom MLP 13-512-256-64-16, top MLP 367-512-256-1
    (13.9 M parameters, 55.7 MB in FP32 at the default cap; 96.6% of it embeddings)."""
    return DLRMConfig(**criteo_dlrm_kwargs(cap))

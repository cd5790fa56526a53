"""The served signature of each architecture: input and output tensors as :class:`TensorSpec`."""

from __future__ import annotations

import torch

from toolkit.models.dlrm import DLRMConfig
from toolkit.tensors import TensorSpec

__all__ = ["DLRM_INPUTS", "DLRM_OUTPUT", "dlrm_signature", "dlrm_example_inputs"]

DLRM_INPUTS = ("dense_features", "sparse_ids", "multi_hot_ids")
DLRM_OUTPUT = "probability"


def dlrm_signature(config: DLRMConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a :class:`~toolkit.models.dlrm.DLRM` with a dynamic batch dimension B.

    Returns:
        ``[dense_features float32 (B, D), sparse_ids int64 (B, S), multi_hot_ids int64 (B, sum L)]``
        (``multi_hot_ids`` only when the config has multi-valued features) and
        ``[probability float32 (B, 1)]``.
    """
    inputs = [
        TensorSpec("dense_features", "float32", (None, config.num_dense)),
        TensorSpec("sparse_ids", "int64", (None, len(config.sparse_cardinalities))),
    ]
    if config.multi_hot_cardinalities:
        inputs.append(TensorSpec("multi_hot_ids", "int64", (None, sum(config.multi_hot_lengths))))
    return inputs, [TensorSpec(DLRM_OUTPUT, "float32", (None, 1))]


def dlrm_example_inputs(config: DLRMConfig, batch_size: int = 4, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random in-range inputs of ``batch_size`` rows, by name (for export tracing and smoke tests)."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, n, (batch_size,), generator=g) for n in config.sparse_cardinalities], dim=1)
    multi = [
        torch.randint(0, n, (batch_size, length), generator=g)
        for n, length in zip(config.multi_hot_cardinalities, config.multi_hot_lengths, strict=True)
    ]
    inputs = {"dense_features": torch.randn(batch_size, config.num_dense, generator=g), "sparse_ids": sparse}
    if multi:
        inputs["multi_hot_ids"] = torch.cat(multi, dim=1)
    return inputs

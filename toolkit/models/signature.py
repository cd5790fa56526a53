"""The served signature of the architectures fed the encoded feature tensors: inputs and outputs as :class:`TensorSpec`.

DLRM, DCN-v2 and DeepFM all take the three tensors the feature encoder (and the raw-feature
ensemble's preprocess model) produce: ``dense_features``, ``sparse_ids`` and, when the data
has multi-valued features, ``multi_hot_ids``. Any config with the four size fields of
:class:`~toolkit.models.protocol.FeatureSizes` (``num_dense``, ``sparse_cardinalities``,
``multi_hot_cardinalities``, ``multi_hot_lengths``) has this signature.
"""

from __future__ import annotations

from typing import Any

import torch

from toolkit.models.protocol import PROBABILITY_OUTPUT
from toolkit.tensors import TensorSpec

__all__ = [
    "DLRM_INPUTS",
    "DLRM_OUTPUT",
    "FEATURE_INPUTS",
    "feature_signature",
    "feature_example_inputs",
    "dlrm_signature",
    "dlrm_example_inputs",
]

#: The input names, in the order the encoder and the preprocess model produce them.
FEATURE_INPUTS = ("dense_features", "sparse_ids", "multi_hot_ids")
DLRM_INPUTS = FEATURE_INPUTS
DLRM_OUTPUT = PROBABILITY_OUTPUT


def feature_signature(config: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a model fed the encoded features, with a dynamic batch dimension B.

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
    return inputs, [TensorSpec(PROBABILITY_OUTPUT, "float32", (None, 1))]


def feature_example_inputs(config: Any, batch_size: int = 4, *, seed: int = 0) -> dict[str, torch.Tensor]:
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


#: The DLRM's signature and example inputs (the names predate the other architectures).
dlrm_signature = feature_signature
dlrm_example_inputs = feature_example_inputs

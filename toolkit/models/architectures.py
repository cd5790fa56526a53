"""The toolkit's own architectures, registered under their config's ``architecture`` key.

All three take the encoded feature tensors (:mod:`toolkit.models.signature`), so the
raw-feature ensembles' preprocess model feeds any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from toolkit.models import dcnv2, deepfm, dlrm, layers
from toolkit.models.protocol import Architecture, FeatureSizes, config_from_fields
from toolkit.models.registry import register
from toolkit.models.signature import feature_example_inputs, feature_signature

__all__ = ["DLRM_ARCHITECTURE", "DCNV2_ARCHITECTURE", "DEEPFM_ARCHITECTURE", "config_maker", "named_modules"]


def _feature_cardinalities(config: Any) -> list[int]:
    """The sparse then multi-hot table sizes (the feature encoder's vocabulary order)."""
    return [*config.sparse_cardinalities, *config.multi_hot_cardinalities]


def named_modules(model: nn.Module, *attributes: str) -> dict[str, nn.Module]:
    """{qualified name: module} of the modules held in ``model``'s ``attributes`` (a module, or a
    ModuleList whose items are named ``<attribute>.<index>``): how an entry lists its tables and blocks."""
    out: dict[str, nn.Module] = {}
    for attr in attributes:
        held = getattr(model, attr)
        if isinstance(held, nn.ModuleList):
            out.update({f"{attr}.{i}": m for i, m in enumerate(held)})
        else:
            out[attr] = held
    return out


def config_maker(config_class: type) -> Callable[[FeatureSizes, Mapping[str, Any]], Any]:
    """An :attr:`~toolkit.models.protocol.Architecture.config_for` for a config class with the four
    :class:`~toolkit.models.protocol.FeatureSizes` fields (see :func:`~toolkit.models.protocol.config_from_fields`)."""

    def make(sizes: FeatureSizes, options: Mapping[str, Any]) -> Any:
        return config_from_fields(config_class, sizes, options)

    return make


def _linear_macs(model: nn.Module) -> int:
    """``in_features * out_features`` of every ``nn.Linear`` (bias additions are not MACs)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def _dlrm_macs(model: nn.Module) -> int:
    """DLRM MACs per row: its MLPs' Linear layers; the dot interaction ``bmm`` of the (F, E) stacked
    vectors with their transpose, ``F * F * E`` with F = 1 + S + M (the full product is computed
    although only its strict lower triangle is used); each multi-valued feature's masked sum of its
    L_m looked-up vectors, ``L_m * E`` (multiply by the mask and add). Lookups, ReLU, sigmoid and
    the gather are not MACs."""
    cfg = model.config
    e = cfg.embedding_dim
    f = 1 + len(cfg.sparse_cardinalities) + len(cfg.multi_hot_cardinalities)
    return int(_linear_macs(model) + f * f * e + sum(cfg.multi_hot_lengths) * e)


def _dcnv2_macs(model: nn.Module) -> int:
    """DCN-v2 MACs per row: every Linear (full-rank cross layers d·d, low-rank 2·d·r, the deep
    network, the output layer); each cross layer's ``x0 ⊙ (...) + x``, d; the masked multi-hot sums, ``L_m * E``."""
    cfg = model.config
    return int(_linear_macs(model) + cfg.num_cross_layers * cfg.input_width + sum(cfg.multi_hot_lengths) * cfg.embedding_dim)


def _deepfm_macs(model: nn.Module) -> int:
    """DeepFM MACs per row: every Linear (first-order dense weights, the deep network, the output layer);
    the masked multi-hot sums of the E-wide and the 1-wide tables, ``L_m * (E + 1)``; the dense fields
    ``x_d · v_d``, D·E; the FM's sum and sum of squares over the F fields, 2·F·E, and the square of the sum, E."""
    cfg = model.config
    e = cfg.embedding_dim
    return int(_linear_macs(model) + sum(cfg.multi_hot_lengths) * (e + 1) + cfg.num_dense * e + 2 * cfg.num_fields * e + e)


DLRM_ARCHITECTURE = register(
    Architecture(
        name="dlrm",
        config_class=dlrm.DLRMConfig,
        model_class=dlrm.DLRM,
        signature=feature_signature,
        example_inputs=feature_example_inputs,
        embedding_tables=lambda m: named_modules(m, "sparse_embeddings", "multi_hot_embeddings"),
        prunable_blocks=lambda m: named_modules(m, "bottom_mlp", "top_mlp"),
        cardinalities=_feature_cardinalities,
        config_for=config_maker(dlrm.DLRMConfig),
        source_files=(Path(dlrm.__file__), Path(layers.__file__)),
        macs_per_sample=_dlrm_macs,
    )
)

DCNV2_ARCHITECTURE = register(
    Architecture(
        name="dcnv2",
        config_class=dcnv2.DCNv2Config,
        model_class=dcnv2.DCNv2,
        signature=feature_signature,
        example_inputs=feature_example_inputs,
        embedding_tables=lambda m: named_modules(m, "sparse_embeddings", "multi_hot_embeddings"),
        # the cross layers' width is x0's (a residual): only the deep network's hidden layers may shrink
        prunable_blocks=lambda m: named_modules(m, "deep_mlp"),
        cardinalities=_feature_cardinalities,
        config_for=config_maker(dcnv2.DCNv2Config),
        source_files=(Path(dcnv2.__file__), Path(layers.__file__)),
        macs_per_sample=_dcnv2_macs,
    )
)

DEEPFM_ARCHITECTURE = register(
    Architecture(
        name="deepfm",
        config_class=deepfm.DeepFMConfig,
        model_class=deepfm.DeepFM,
        signature=feature_signature,
        example_inputs=feature_example_inputs,
        embedding_tables=lambda m: named_modules(m, "sparse_embeddings", "multi_hot_embeddings", "sparse_weights", "multi_hot_weights"),
        prunable_blocks=lambda m: named_modules(m, "deep_mlp"),
        cardinalities=_feature_cardinalities,
        config_for=config_maker(deepfm.DeepFMConfig),
        source_files=(Path(deepfm.__file__), Path(layers.__file__)),
        macs_per_sample=_deepfm_macs,
    )
)

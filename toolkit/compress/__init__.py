"""Compression: structured pruning, distillation, INT8 embeddings, ONNX INT8/FP16, the accuracy budget.

A :class:`~toolkit.compress.recipe.Recipe` is an ordered list of step configs
(``PruneConfig``, ``DistillConfig``, ``QuantizeEmbeddingsConfig``, ``OnnxDynamicInt8Config``,
``OnnxStaticInt8Config``, ``OnnxFp16Config``); :func:`~toolkit.compress.pipeline.compress`
applies one, :func:`~toolkit.compress.pipeline.compress_and_report` measures the results
side by side with the FP32 baselines.
"""

from toolkit.compress.recipe import (
    DistillConfig,
    OnnxDynamicInt8Config,
    OnnxFp16Config,
    OnnxStaticInt8Config,
    PruneConfig,
    QuantizeEmbeddingsConfig,
    Recipe,
    load_recipe,
    save_recipe,
)

__all__ = [
    "DistillConfig",
    "OnnxDynamicInt8Config",
    "OnnxFp16Config",
    "OnnxStaticInt8Config",
    "PruneConfig",
    "QuantizeEmbeddingsConfig",
    "Recipe",
    "load_recipe",
    "save_recipe",
]

"""Compression of the PyTorch model: structured pruning, distillation, INT8 embeddings, the recipes and the accuracy budget.

A :class:`~toolkit.compress.recipe.Recipe` is an ordered list of step configs
(``PruneConfig``, ``DistillConfig``, ``QuantizeEmbeddingsConfig``, ``OnnxDynamicInt8Config``,
``OnnxStaticInt8Config``, ``OnnxFp16Config``); this package holds the configs and the PyTorch
steps (:mod:`~toolkit.compress.prune`, :mod:`~toolkit.compress.distill`,
:mod:`~toolkit.compress.quantize_embeddings`).

This stage changes the PyTorch model before export and sits below :mod:`toolkit.export` in
the layers (``.importlinter``): it imports nothing from export or optimize. The recipe runner,
which applies a whole recipe (these PyTorch steps, the export, the ONNX step) and times the
results, calls all three stages and so lives above them in :mod:`toolkit.optimize`:
:func:`toolkit.optimize.pipeline.compress`, :func:`toolkit.optimize.pipeline.compress_and_report`
(side by side with the FP32 baselines), :mod:`toolkit.optimize.select`, :mod:`toolkit.optimize.bench`
and :func:`toolkit.optimize.compress_module` (a recipe on any ``nn.Module``, a user's own model
included).
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

#: Names loaded on first use.
_LAZY = {
    "StepRefused": "toolkit.compress.errors",
}

__all__ = [
    *_LAZY,
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


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit.compress' has no attribute {name!r}")

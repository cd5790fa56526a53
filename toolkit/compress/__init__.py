"""Compression of the PyTorch model: structured pruning, distillation, INT8 embeddings, the recipes and the accuracy budget.

A :class:`~toolkit.compress.recipe.Recipe` is an ordered list of step configs
(``PruneConfig``, ``DistillConfig``, ``QuantizeEmbeddingsConfig``, ``OnnxDynamicInt8Config``,
``OnnxStaticInt8Config``, ``OnnxFp16Config``); :func:`~toolkit.compress.pipeline.compress`
applies one, :func:`~toolkit.compress.pipeline.compress_and_report` measures the results
side by side with the FP32 baselines.

This stage changes the PyTorch model before export and sits below :mod:`toolkit.export` in
the layers (``.importlinter``); the ONNX steps convert the exported file in
:mod:`toolkit.optimize`, above export. The recipe runner (``pipeline``, ``select``, ``bench``)
calls export and optimize and so belongs above them; until it moves to :mod:`toolkit.optimize`,
its imports of those two are the layers contract's named exceptions. :mod:`toolkit.compress.module`
(:func:`compress_module`: a recipe on any ``nn.Module``, a user's own model included) is part of that
runner too: it reaches export and optimize only through ``pipeline``.
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

#: Names loaded on first use (they import torch, ONNX Runtime and Torch-Pruning).
_LAZY = {
    "compress_module": "toolkit.compress.module",
    "LabelledRows": "toolkit.compress.module",
    "load_labelled_rows": "toolkit.compress.module",
    "save_module_compression": "toolkit.compress.module",
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

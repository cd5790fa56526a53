"""ONNX-level optimization of exported model files: INT8 (dynamic, static Q/DQ) and FP16.

Where it sits in the data flow, and so in the layers (``.importlinter``)::

    train ──> compress ──> export ──> optimize ──> repository
              PyTorch      .onnx      .onnx         model_repository/
              modules                 (INT8, FP16)

* :mod:`toolkit.compress` changes the PyTorch model before export (distillation, structured
  pruning, row-wise INT8 embeddings) and holds the recipe's step configs; it imports nothing
  from export or above.
* :mod:`toolkit.export` turns a PyTorch model into an ONNX file (and an ONNX file into a
  TensorRT engine), with parity checks.
* :mod:`toolkit.optimize` (this package) converts an ONNX file into another ONNX file with
  ONNX Runtime's tools (:mod:`toolkit.optimize.onnx_quant`): the recipe steps
  ``onnx_dynamic_int8``, ``onnx_static_int8``, ``onnx_fp16``, the repository builder's
  ``onnx_int8``/``onnx_fp16`` variants, and the Q/DQ model TensorRT's INT8 engines are built
  from (:func:`quantize_qdq_for_tensorrt`: the same static INT8 implementation with symmetric
  activations, checked with :func:`toolkit.export.tensorrt.qdq_findings`). It reads the
  step configs from :mod:`toolkit.compress.recipe` (below it) and never imports the repository.

The recipe runner, which applies a whole recipe (the PyTorch steps of :mod:`toolkit.compress`,
the export, the ONNX step) and times the candidates, calls all three stages and so lives here,
above compress and export, with no exception to the layers:

* :mod:`toolkit.optimize.pipeline`: :func:`~toolkit.optimize.pipeline.compress` (a checkpoint and
  its data split) and :func:`~toolkit.optimize.pipeline.compress_and_report` (side by side with
  the FP32 baselines, judged against the recipe's accuracy budget);
* :mod:`toolkit.optimize.select`: keeps an optional step only where it pays on this CPU;
* :mod:`toolkit.optimize.bench`: the side-by-side measurement of variants (latency, size, AUC);
* :mod:`toolkit.optimize.module`: :func:`compress_module`, a recipe on any ``nn.Module`` (a
  user's own model included), with :class:`LabelledRows`, :func:`load_labelled_rows` and
  :func:`save_module_compression`; these four are loaded on first use (they import torch and
  Torch-Pruning).
"""

from toolkit.optimize.onnx_quant import (
    Fp16Report,
    check_finite_outputs,
    convert_fp16,
    find_fp16_unsafe_nodes,
    quantize_dynamic_int8,
    quantize_qdq_for_tensorrt,
    quantize_static_int8,
    resolve_reduce_range,
)

#: Names loaded on first use (they import torch and Torch-Pruning).
_LAZY = {
    "compress_module": "toolkit.optimize.module",
    "LabelledRows": "toolkit.optimize.module",
    "load_labelled_rows": "toolkit.optimize.module",
    "save_module_compression": "toolkit.optimize.module",
}

__all__ = [
    *_LAZY,
    "Fp16Report",
    "check_finite_outputs",
    "convert_fp16",
    "find_fp16_unsafe_nodes",
    "quantize_dynamic_int8",
    "quantize_qdq_for_tensorrt",
    "quantize_static_int8",
    "resolve_reduce_range",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit.optimize' has no attribute {name!r}")

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

The recipe runner, which applies a whole recipe (PyTorch steps, export, the ONNX step) and
times the candidates (``toolkit.compress.pipeline``, ``select``, ``bench``), spans all three
stages and so belongs above this package; until it moves here, ``.importlinter`` names its
imports of export and optimize as the only exceptions to the layers.
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

__all__ = [
    "Fp16Report",
    "check_finite_outputs",
    "convert_fp16",
    "find_fp16_unsafe_nodes",
    "quantize_dynamic_int8",
    "quantize_qdq_for_tensorrt",
    "quantize_static_int8",
    "resolve_reduce_range",
]

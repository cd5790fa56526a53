"""Framework-neutral description of a model's input or output tensor.

Every stage speaks of tensors the same way: the PyTorch model declares its inputs
and outputs as :class:`TensorSpec`, the ONNX reader returns them, and the Triton config
builder turns them into ``ModelInput``/``ModelOutput`` (dropping the batch dimension).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor.

    Attributes:
        name: the tensor's name in the model (ONNX graph input/output name, Triton
            input/output name).
        dtype: numpy dtype name, e.g. ``"float32"``, ``"int64"``.
        shape: full shape *including* the leading batch dimension; ``None`` marks a
            dynamic (variable) dimension, e.g. ``(None, 7)`` for ``(B, 7)``.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        """The dtype as a :class:`numpy.dtype`."""
        return np.dtype(self.dtype)

    @property
    def has_dynamic_batch(self) -> bool:
        """True when the first dimension is dynamic (what Triton batching needs)."""
        return len(self.shape) > 0 and self.shape[0] is None

    def describe(self) -> str:
        """Human-readable form, e.g. ``sparse_ids int64[B, 7]``."""
        dims = ", ".join("B" if (i == 0 and d is None) else ("?" if d is None else str(d)) for i, d in enumerate(self.shape))
        return f"{self.name} {self.dtype}[{dims}]"

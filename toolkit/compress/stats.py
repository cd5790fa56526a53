"""Size and compute of PyTorch models: parameters, multiply-accumulates per row, state-dict bytes.

``macs_per_sample`` counts analytically rather than with Torch-Pruning's
``torch_pruning.utils.count_ops_and_params``: that counter hooks modules only, so it misses
the DLRM's functional work (the ``torch.bmm`` interaction and the masked multi-hot sums),
adds bias additions and ReLU elements to its "ops", and, given the DLRM's inputs by name,
cannot find the batch size (it prints a warning to stdout and counts the whole batch).
"""

from __future__ import annotations

import torch
from torch import nn

from toolkit.errors import CompressError
from toolkit.models.dlrm import RowwiseInt8Embedding
from toolkit.models.registry import architecture_of

__all__ = ["count_params", "macs_per_sample", "state_dict_bytes"]


def count_params(model: nn.Module) -> int:
    """Number of weights of ``model``, whatever their storage type.

    The elements of every ``nn.Parameter`` (each shared one counted once) plus the int8
    ``codes`` of every :class:`~toolkit.models.dlrm.RowwiseInt8Embedding` (quantized tables
    hold their weights in buffers; their per-row scales and zero points are quantization
    metadata, not weights). So quantizing a model leaves this count unchanged; compare
    storage with :func:`state_dict_bytes`.
    """
    quantized = sum(m.codes.numel() for m in model.modules() if isinstance(m, RowwiseInt8Embedding))
    return sum(p.numel() for p in model.parameters()) + quantized


def macs_per_sample(model: nn.Module) -> int:
    """Multiply-accumulate operations (MACs) ``model`` performs per input row: its architecture's
    analytic count (:attr:`toolkit.models.protocol.Architecture.macs_per_sample`; see the module
    docstring for why not Torch-Pruning's counter). For the DLRM:

    * every ``nn.Linear`` of the bottom and top MLPs: ``in_features * out_features``
      (read off the layers, so pruned widths count; bias additions excluded);
    * the dot interaction ``bmm`` of the (F, E) stacked vectors with their transpose:
      ``F * F * E``, F = 1 + S + M (the full product is computed although only its strict
      lower triangle is used);
    * each multi-valued feature's masked sum of its L_m looked-up vectors: ``L_m * E``
      (multiply by the mask and add).

    Single-valued embedding lookups, ReLU, sigmoid and the gather are not MACs.

    An architecture that declares no count (one registered by a user or a test) gets the sum of
    ``in_features * out_features`` over its ``nn.Linear`` layers: a lower bound (its interaction is
    not counted), so the recipe runner can still report and compare it.

    Raises:
        CompressError: ``model`` is not a registered architecture's model.
    """
    try:
        arch = architecture_of(model)
    except ValueError as exc:
        raise CompressError(f"macs_per_sample expects a registered architecture's model, got {type(model).__name__}: {exc}") from exc
    if arch.macs_per_sample is None:
        return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return int(arch.macs_per_sample(model))


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the tensors in ``model.state_dict()`` (``numel * element_size``, summed).

    This is what a checkpoint's ``model.pt`` holds apart from pickling overhead; buffers
    registered with ``persistent=False`` (the DLRM's interaction index) are not included.
    Non-tensor state-dict entries are ignored.
    """
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))

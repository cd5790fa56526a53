"""The ``export`` stage for a model in memory (a user's ``--model-file`` module): no checkpoint, no data split."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from torch import nn

from toolkit._io import atomic_write_json
from toolkit.export.onnx_info import copy_onnx_model
from toolkit.export.parity import ParityReport, check_parity
from toolkit.export.torch2onnx import export_onnx
from toolkit.models.registry import architecture_of

__all__ = ["PARITY_ROWS", "export_model"]

#: Rows of the architecture's example inputs (random, in range) the parity check runs on.
PARITY_ROWS = 1024


def export_model(model: nn.Module, onnx_path: Path, *, atol: float = 1e-5, rows: int = PARITY_ROWS, seed: int = 1) -> ParityReport:
    """Export a registered architecture's model (e.g. a user's, from ``--model-file``) to ONNX (dynamic
    batch), accepted only if ONNX Runtime matches PyTorch on ``rows`` example rows.

    The rows are the architecture's ``example_inputs(config, rows, seed=seed)`` (for a user's model:
    floats standard normal, ids uniform in ``[0, high)``), since a model file brings no data split.
    The file is exported into a temporary folder and copied to ``onnx_path`` (with ``<name>.data``)
    only when max |ONNX Runtime - PyTorch| <= ``atol`` (probability units); ``parity.json`` is written next to it.

    Raises:
        ValueError: ``model`` is not a registered architecture's. ExportError: the export or the
            parity check failed (``onnx_path`` is left untouched).
    """
    arch = architecture_of(model)
    onnx_path = Path(onnx_path)
    inputs = {k: v.numpy() for k, v in arch.example_inputs(model.config, rows, seed=seed).items()}
    with tempfile.TemporaryDirectory(prefix="tritonrec-export-") as tmp:
        outputs = [spec.name for spec in arch.signature(model.config)[1]]
        staged = export_onnx(model, arch.example_inputs(model.config, 8), outputs, Path(tmp) / onnx_path.name)
        report = check_parity(model, staged, inputs, atol=atol)
        copy_onnx_model(staged, onnx_path.parent, onnx_path.name)
    origin = {"model_file": model.config.source_file} if hasattr(model.config, "source_file") else {"architecture": arch.name}
    atomic_write_json(onnx_path.parent / "parity.json", {**origin, "split": f"{rows} example rows, seed {seed}", **asdict(report)})
    return report

"""The ``export`` stage: a checkpoint in, an ONNX file checked against PyTorch out."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from toolkit._io import atomic_write_json
from toolkit.data.checkpoint_split import checkpoint_splits
from toolkit.errors import CheckpointError
from toolkit.export.onnx_info import copy_onnx_model
from toolkit.export.parity import ParityReport, check_parity
from toolkit.export.torch2onnx import export_onnx
from toolkit.train.checkpoint import load_checkpoint

__all__ = ["export_checkpoint"]


def export_checkpoint(checkpoint: Path, onnx_path: Path, data_dir: Path, *, atol: float = 1e-5) -> ParityReport:
    """Export a checkpoint's model (any registered architecture) to ONNX (dynamic batch) and accept it only if it matches PyTorch.

    The model is exported into a temporary folder, run by ONNX Runtime on every row of
    the checkpoint's test split (rebuilt from ``data_dir`` with the split seed recorded in
    the checkpoint and encoded with its vocabularies) and compared with PyTorch. Only when
    the maximum absolute difference of probabilities is <= ``atol`` is it copied to
    ``onnx_path`` (with ``<name>.data``) and ``parity.json`` written next to it.

    Raises:
        CheckpointError, DataError: unreadable inputs. ExportError: the export failed or
            the parity check failed (the previous ``onnx_path`` is left untouched).
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.encoder is None:
        raise CheckpointError(
            f"checkpoint {checkpoint} has no vocabularies.json (a model fed pre-encoded ids), so its MovieLens test split "
            "cannot be rebuilt for the parity check",
            hint="export it from Python with toolkit.export.export_onnx and check_parity on its own rows",
        )
    test = checkpoint_splits(checkpoint, data_dir, encoder=ckpt.encoder, metrics=ckpt.metrics).test
    onnx_path = Path(onnx_path)
    with tempfile.TemporaryDirectory(prefix="tritonrec-export-") as tmp:
        arch = ckpt.architecture
        outputs = [spec.name for spec in arch.signature(ckpt.config)[1]]
        staged = export_onnx(ckpt.model, arch.example_inputs(ckpt.config, 8), outputs, Path(tmp) / onnx_path.name)
        report = check_parity(ckpt.model, staged, test.inputs(), atol=atol)
        copy_onnx_model(staged, onnx_path.parent, onnx_path.name)
    atomic_write_json(onnx_path.parent / "parity.json", {"checkpoint": str(Path(checkpoint)), "split": "test", **asdict(report)})
    return report

"""check_parity: PyTorch vs ONNX Runtime on many rows, in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import ExportError
from toolkit.export import ParityReport, check_parity


@pytest.mark.parametrize("batch_size", [1, 37])
def test_parity_on_500_rows(mlp, mlp_onnx: Path, rows, batch_size: int) -> None:
    report = check_parity(mlp, mlp_onnx, rows, batch_size=batch_size)
    assert isinstance(report, ParityReport)
    assert report.passed and report.n_rows == 500 and report.atol == 1e-5
    assert report.max_abs_diff <= 1e-5
    assert report.worst_output == "probability"
    assert report.to_dict()["n_rows"] == 500


def test_parity_with_fixed_batch_uses_its_batch(mlp, fixed16_onnx: Path, rows) -> None:
    sixteens = {k: v[:496] for k, v in rows.items()}
    assert check_parity(mlp, fixed16_onnx, sixteens, batch_size=100).n_rows == 496
    with pytest.raises(ExportError, match="fixed batch dimension of 16 rows, but the parity check got 500 rows"):
        check_parity(mlp, fixed16_onnx, rows)


def test_parity_failure_names_output_difference_and_tolerance(make_mlp, mlp_onnx: Path, rows) -> None:
    other = make_mlp(1)  # different weights than the exported model
    with pytest.raises(
        ExportError, match=r"ONNX output 'probability' of mlp\.onnx differs from PyTorch by up to [0-9.e+-]+ .*over 500 rows.*atol=1e-05"
    ) as err:
        check_parity(other, mlp_onnx, rows)
    assert "re-export" in err.value.hint
    report = check_parity(other, mlp_onnx, rows, raise_on_failure=False)
    assert not report.passed and report.max_abs_diff > 1e-5


def test_parity_restores_training_mode(mlp, mlp_onnx: Path, rows) -> None:
    mlp.train()
    try:
        check_parity(mlp, mlp_onnx, {k: v[:10] for k, v in rows.items()})
        assert mlp.training
    finally:
        mlp.eval()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: {"x": r["x"]}, r"missing \['ids'\]"),
        (lambda r: {**r, "extra": r["x"]}, r"unexpected \['extra'\]"),
        (lambda r: {**r, "x": r["x"].astype(np.float64)}, "parity inputs 'x' is float64, but mlp.onnx expects float32"),
        (lambda r: {**r, "ids": r["ids"][:10]}, "different row counts"),
        (lambda r: {k: v[:0] for k, v in r.items()}, "0 rows"),
    ],
)
def test_parity_input_errors(mlp, mlp_onnx: Path, rows, change, message) -> None:
    with pytest.raises(ExportError, match=message):
        check_parity(mlp, mlp_onnx, change(rows))


def test_parity_unknown_output_name(mlp, mlp_onnx: Path, rows) -> None:
    with pytest.raises(ExportError, match="output_name='logit' is not an output"):
        check_parity(mlp, mlp_onnx, rows, output_name="logit")

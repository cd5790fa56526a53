"""export_onnx: names, dynamic batch, external data, atomic replacement, clear failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export import (
    check_parity,
    copy_onnx_model,
    export_onnx,
    external_data_files,
    read_io_specs,
)
from toolkit.tensors import TensorSpec


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_export_names_dtypes_and_dynamic_batch(mlp_onnx: Path) -> None:
    inputs, outputs = read_io_specs(mlp_onnx)
    assert inputs == [TensorSpec("x", "float32", (None, 4)), TensorSpec("ids", "int64", (None, 3))]
    assert outputs == [TensorSpec("probability", "float32", (None, 1))]
    assert all(s.has_dynamic_batch for s in inputs + outputs)
    graph = onnx.load_model(str(mlp_onnx), load_external_data=False).graph
    assert {d.type.tensor_type.shape.dim[0].dim_param for d in [*graph.input, *graph.output]} == {"batch"}


def test_dynamo_export_keeps_weights_in_named_data_file(mlp_onnx: Path, tmp_path: Path) -> None:
    # The dynamo exporter writes <file>.data next to the model and records that name.
    assert external_data_files(mlp_onnx) == [mlp_onnx.parent / "mlp.onnx.data"]
    model = onnx.load_model(str(mlp_onnx), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"mlp.onnx.data"}
    assert sorted(p.name for p in mlp_onnx.parent.iterdir()) == ["mlp.onnx", "mlp.onnx.data"]  # no temp leftovers

    # Renaming the model together with its data file breaks it: the model still names mlp.onnx.data.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(mlp_onnx.read_bytes())
    (broken / "model.onnx.data").write_bytes((mlp_onnx.parent / "mlp.onnx.data").read_bytes())
    with pytest.raises(ExportError, match=r"'mlp\.onnx\.data'.*does not exist"):
        external_data_files(broken / "model.onnx")

    # Renaming only the model file (copy_onnx_model) keeps it loadable.
    copied = copy_onnx_model(mlp_onnx, tmp_path / "repo" / "1")
    assert sorted(p.name for p in copied.parent.iterdir()) == ["mlp.onnx.data", "model.onnx"]
    session = ort.InferenceSession(str(copied), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "x"


def test_batch_of_one_example_still_gives_dynamic_batch(tmp_path: Path) -> None:
    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.lin(a)
            return y, y.sum(dim=1, keepdim=True)

    model = TwoOutputs().train()
    path = export_onnx(model, {"features": torch.randn(1, 3)}, ["logits", "total"], tmp_path / "two.onnx")
    assert model.training, "export_onnx must restore the model's training mode"
    inputs, outputs = read_io_specs(path)
    assert [s.shape for s in inputs] == [(None, 3)]
    assert [(s.name, s.shape) for s in outputs] == [("logits", (None, 2)), ("total", (None, 1))]
    rng = np.random.default_rng(0)
    report = check_parity(model, path, {"features": rng.standard_normal((50, 3)).astype(np.float32)}, batch_size=7)
    assert report.passed and report.n_rows == 50
    assert check_parity(model, path, {"features": np.ones((3, 3), np.float32)}, output_name="total").passed


def test_export_replaces_existing_files(mlp_onnx: Path, make_mlp, make_inputs, rows, tmp_path: Path) -> None:
    target = copy_onnx_model(mlp_onnx, tmp_path, filename="mlp.onnx")
    before = _snapshot(tmp_path)
    other = make_mlp(1)
    export_onnx(other, make_inputs(8), ["probability"], target)
    after = _snapshot(tmp_path)
    assert sorted(after) == ["mlp.onnx", "mlp.onnx.data"]  # replaced in place, no temp folders left
    assert after["mlp.onnx.data"] != before["mlp.onnx.data"]
    assert check_parity(other, target, rows).passed


def test_failed_export_leaves_old_files_untouched(mlp_onnx: Path, make_inputs, tmp_path: Path) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("forward exploded")

    copy_onnx_model(mlp_onnx, tmp_path, filename="mlp.onnx")
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match=r"exporting Broken to ONNX file .*mlp\.onnx failed.*forward exploded") as err:
        export_onnx(Broken(), make_inputs(4), ["probability"], tmp_path / "mlp.onnx")
    assert err.value.hint and "torch.export" in err.value.hint
    assert err.value.__cause__ is not None
    assert _snapshot(tmp_path) == before


def test_output_without_batch_dimension_is_rejected(tmp_path: Path) -> None:
    class SumsOverBatch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=0)

    with pytest.raises(ExportError, match=r"output 'total' has first dimension 4, expected the dynamic batch"):
        export_onnx(SumsOverBatch(), {"x": torch.randn(5, 4)}, ["total"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({}, ["y"], "example_inputs is empty"),
        ({"x": np.zeros((2, 4), np.float32)}, ["y"], "example input 'x' is a ndarray, expected a torch.Tensor"),
        ({"x": torch.zeros(2, 4)}, ["x"], "'x' used more than once"),
        ({"x": torch.zeros(2, 4)}, "y", "must be a non-empty sequence"),
        ({"x": torch.zeros(2, 4), "ids": torch.zeros(3, 2, dtype=torch.int64)}, ["y"], r"'x' \(2 rows\), 'ids' \(3 rows\) differ"),
        (
            {"x": torch.zeros(2, 4), "ids": torch.zeros(2, 3, dtype=torch.int64), "z": torch.zeros(2)},
            ["y"],
            r"forward takes 2 positional argument\(s\) \(x, ids\), but example_inputs has 3",
        ),
        ({"x": torch.zeros(2, 4)}, ["y"], r"forward needs 2 positional argument\(s\) \(x, ids\)"),
        ({"x": torch.zeros(0, 4), "ids": torch.zeros(0, 3, dtype=torch.int64)}, ["y"], "0 rows"),
    ],
)
def test_invalid_arguments_fail_before_exporting(mlp, inputs, outputs, message, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=message) as err:
        export_onnx(mlp, inputs, outputs, tmp_path / "m.onnx")
    assert err.value.hint
    assert list(tmp_path.iterdir()) == []


def test_destination_that_is_a_directory_is_rejected(mlp, make_inputs, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(mlp, make_inputs(2), ["p"], tmp_path)


def test_install_rolls_back_when_a_move_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.export import _files

    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "m.onnx").write_text("old model")
    (dest / "m.onnx.data").write_text("old data")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "m.onnx").write_text("new model")
    (staging / "m.onnx.data").write_text("new data")

    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(src) == staging / "m.onnx.data":
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(_files.os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        _files.install_files(staging, ["m.onnx", "m.onnx.data"], dest)
    assert {p.name: p.read_text() for p in dest.iterdir()} == {"m.onnx": "old model", "m.onnx.data": "old data"}


def test_output_names_must_match_forward_outputs(tmp_path: Path) -> None:
    class TwoOutputs(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, x + 1

    with pytest.raises(ExportError, match=r"has outputs \['a', .*\], but output_names=\['a'\]"):
        export_onnx(TwoOutputs(), {"x": torch.randn(3, 4)}, ["a"], tmp_path / "t.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_drops_the_exporters_per_node_debug_metadata(tmp_path):
    import onnx
    import torch

    from toolkit.export import export_onnx

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    path = export_onnx(model, {"x": torch.randn(3, 4)}, ["y"], tmp_path / "model.onnx")
    nodes = onnx.load_model(str(path), load_external_data=False).graph.node
    assert nodes and all(len(n.metadata_props) == 0 for n in nodes)

"""read_io_specs, external_data_files, copy_onnx_model, check_batch_dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.errors import ExportError
from toolkit.export import check_batch_dimension, copy_onnx_model, external_data_files, read_io_specs
from toolkit.tensors import TensorSpec


@pytest.fixture
def external_model(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A tiny MatMul model y[N, 3] = x[N, 4] @ W, saved like a >2 GB model: weights in weights.bin."""
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(
        model,
        str(src / "big.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return src / "big.onnx", weight


def test_read_io_specs_symbolic_dims_are_none(external_model) -> None:
    path, _ = external_model
    assert read_io_specs(path) == (
        [TensorSpec("x", "float32", (None, 4))],
        [TensorSpec("y", "float32", (None, 3))],
    )


def test_read_io_specs_does_not_need_external_data(external_model) -> None:
    path, _ = external_model
    (path.parent / "weights.bin").unlink()
    assert read_io_specs(path)[0][0].name == "x"


def test_external_data_files_lists_the_weights_file(external_model) -> None:
    path, _ = external_model
    assert external_data_files(path) == [path.parent / "weights.bin"]


def test_missing_external_data_file_is_a_clear_error(external_model) -> None:
    path, _ = external_model
    (path.parent / "weights.bin").unlink()
    with pytest.raises(
        ExportError, match=r"big\.onnx keeps the weights of tensor 'W' in external data file 'weights\.bin', which does not exist"
    ) as err:
        external_data_files(path)
    assert "next to the model" in err.value.hint


def test_truncated_external_data_file_is_a_clear_error(external_model) -> None:
    path, _ = external_model
    (path.parent / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ExportError, match=r"weights\.bin of big\.onnx is 8 bytes, but its tensors .* need at least 48 bytes"):
        external_data_files(path)


def test_copy_onnx_model_renames_model_and_keeps_data_name(external_model, tmp_path: Path) -> None:
    path, weight = external_model
    dst = tmp_path / "repo" / "tiny" / "1"
    copied = copy_onnx_model(path, dst)
    assert copied == dst / "model.onnx"
    assert sorted(p.name for p in dst.iterdir()) == ["model.onnx", "weights.bin"]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    (y,) = ort.InferenceSession(str(copied), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ weight, rtol=1e-6)
    # Copying again replaces the previous copy.
    assert copy_onnx_model(path, dst) == copied
    assert sorted(p.name for p in dst.iterdir()) == ["model.onnx", "weights.bin"]


def test_copy_onnx_model_with_missing_data_changes_nothing(external_model, tmp_path: Path) -> None:
    path, _ = external_model
    (path.parent / "weights.bin").unlink()
    dst = tmp_path / "dst"
    with pytest.raises(ExportError, match="weights.bin"):
        copy_onnx_model(path, dst)
    assert not dst.exists() or list(dst.iterdir()) == []


def test_copy_onnx_model_rejects_name_of_its_data_file(external_model, tmp_path: Path) -> None:
    path, _ = external_model
    with pytest.raises(ExportError, match="external data file of that same name"):
        copy_onnx_model(path, tmp_path / "dst", filename="weights.bin")


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        read_io_specs(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ExportError, match="is not a readable ONNX model"):
        read_io_specs(garbage)


def test_fixed_batch_fails_check_batch_dimension(fixed16_onnx: Path) -> None:
    inputs, outputs = read_io_specs(fixed16_onnx)
    assert [s.shape for s in inputs] == [(16, 4), (16, 3)]
    assert [s.shape for s in outputs] == [(16, 1)]
    with pytest.raises(ExportError) as err:
        check_batch_dimension(fixed16_onnx, max_batch_size=256)
    assert str(err.value) == (
        "model.onnx input 'x' has a fixed batch dimension of 16, but max_batch_size=256 asks Triton to batch requests"
    )
    assert err.value.hint == (
        "build with --max-batch-size 0 (no batching; requests must then carry exactly 16 rows) "
        "or re-export with a dynamic batch dimension (`tritonrec export` does)"
    )
    check_batch_dimension(fixed16_onnx, max_batch_size=0)


def test_dynamic_batch_passes_check_batch_dimension(mlp_onnx: Path) -> None:
    check_batch_dimension(mlp_onnx, max_batch_size=256)
    check_batch_dimension(read_io_specs(mlp_onnx), max_batch_size=256)


def test_check_batch_dimension_on_specs() -> None:
    good = TensorSpec("x", "float32", (None, 4))
    check_batch_dimension([good], 8)
    with pytest.raises(ExportError, match=r"dlrm output 'y' has a fixed batch dimension of 1"):
        check_batch_dimension(([good], [TensorSpec("y", "float32", (1,))]), 8, model_name="dlrm")
    with pytest.raises(ExportError, match=r"model input 's' is a scalar"):
        check_batch_dimension([TensorSpec("s", "float32", ())], 8)
    with pytest.raises(ExportError, match="negative"):
        check_batch_dimension([good], -1)

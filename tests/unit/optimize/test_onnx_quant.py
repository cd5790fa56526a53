"""ONNX Runtime INT8 (dynamic, static QDQ) and FP16 conversions of exported models."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from toolkit.compress.quantize_embeddings import quantize_embeddings
from toolkit.compress.recipe import OnnxDynamicInt8Config, OnnxFp16Config, OnnxStaticInt8Config
from toolkit.errors import CompressError
from toolkit.export import export_onnx, external_data_files, read_io_specs
from toolkit.metrics import auc
from toolkit.models import dlrm_example_inputs
from toolkit.optimize import onnx_quant
from toolkit.optimize.onnx_quant import (
    _RowBatches,
    check_finite_outputs,
    convert_fp16,
    find_fp16_unsafe_nodes,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from toolkit.train import TrainConfig, train_dlrm

#: Largest |Δp| of dynamic INT8 against FP32 on the test split (see the first test for why).
INT8_DYNAMIC_TOL = 0.03


def _run(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def _bytes_on_disk(path: Path) -> int:
    return path.stat().st_size + sum(p.stat().st_size for p in external_data_files(path))


def _graph(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def _readers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    readers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            readers[name].append(node)
    return readers


def _embedding_tables(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers read as the data input of a Gather: the embedding tables (any dtype)."""
    inits = {t.name: t for t in model.graph.initializer}
    return [
        inits[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
    ]


@pytest.fixture(scope="module")
def dlrm_onnx(synthetic_splits, tmp_path_factory) -> dict[str, Path]:
    """A tiny trained DLRM exported as FP32 (``fp32``) and with row-wise INT8 tables (``int8_tables``)."""
    model = train_dlrm(
        synthetic_splits.train, synthetic_splits.val, synthetic_splits.encoder, TrainConfig(max_epochs=2, learning_rate=1e-2)
    ).model
    folder = tmp_path_factory.mktemp("dlrm_onnx")
    example = dlrm_example_inputs(model.config, 8)
    return {
        "fp32": export_onnx(model, example, ["probability"], folder / "fp32" / "model.onnx"),
        "int8_tables": export_onnx(quantize_embeddings(model), example, ["probability"], folder / "int8_tables" / "model.onnx"),
    }


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_int8_quantizes_mlp_weights_only(dlrm_onnx, synthetic_splits, tmp_path: Path, per_channel: bool) -> None:
    src = dlrm_onnx["fp32"]
    assert external_data_files(src)  # the export keeps its weights in model.onnx.data
    test = synthetic_splits.test.inputs()
    dst = quantize_dynamic_int8(src, tmp_path / "model.onnx", OnnxDynamicInt8Config(per_channel=per_channel), sample_inputs=test)

    assert dst == tmp_path / "model.onnx"
    assert external_data_files(dst) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    graph = _graph(dst)
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    assert ops["MatMulInteger"] == 5 and ops["Gemm"] == 0  # every Linear: int8 weights
    assert ops["MatMul"] == 1  # the dot interaction (activation x activation) stays FP32
    weights = [t for t in graph.graph.initializer if t.name.endswith("_quantized")]
    assert len(weights) == 5 and all(t.data_type == TensorProto.INT8 for t in weights)
    tables = _embedding_tables(graph)
    assert len(tables) == 8 and all(t.data_type == TensorProto.FLOAT for t in tables)  # Gathers untouched
    # INT8_DYNAMIC_TOL: measured max |Δp| 0.015-0.017 on a VNNI CPU and on an AVX2-only one (qemu EPYC-Rome) with the
    # settings toolkit.cpu picks for each; a saturating int16 kernel (8-bit weights on AVX2) gives 0.034-0.067.
    assert np.abs(_run(dst, test) - _run(src, test)).max() < INT8_DYNAMIC_TOL
    assert _bytes_on_disk(dst) < _bytes_on_disk(src)


def test_dynamic_int8_passes_int8_tables_through(dlrm_onnx, synthetic_splits, tmp_path: Path) -> None:
    src = dlrm_onnx["int8_tables"]
    test = synthetic_splits.test.inputs()
    dst = quantize_dynamic_int8(src, tmp_path / "model.onnx", OnnxDynamicInt8Config())
    graph = _graph(dst)
    assert collections.Counter(n.op_type for n in graph.graph.node)["MatMulInteger"] == 5
    codes = [t for t in _embedding_tables(graph) if t.dims[1] == 16]
    # the 7 single-valued tables fused into one, plus the genre table
    assert len(codes) == 2 and all(t.data_type == TensorProto.INT8 for t in codes)
    assert np.abs(_run(dst, test) - _run(src, test)).max() < INT8_DYNAMIC_TOL


@pytest.mark.parametrize("which", ["fp32", "int8_tables"])
def test_static_int8_qdq_per_channel(dlrm_onnx, synthetic_splits, tmp_path: Path, which: str) -> None:
    src = dlrm_onnx[which]
    test = synthetic_splits.test.inputs()
    config = OnnxStaticInt8Config(calibration_rows=1024)
    dst = quantize_static_int8(src, tmp_path / "model.onnx", config, synthetic_splits.train.inputs())

    graph = _graph(dst)
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Gemm"] == 5
    inits = {t.name: t for t in graph.graph.initializer}
    producers = {o: n for n in graph.graph.node for o in n.output}
    readers = _readers(graph)
    for gemm in (n for n in graph.graph.node if n.op_type == "Gemm"):
        activation, weight_dq = producers[gemm.input[0]], producers[gemm.input[1]]
        assert activation.op_type == weight_dq.op_type == "DequantizeLinear"
        weight, scale = inits[weight_dq.input[0]], inits[weight_dq.input[1]]
        assert weight.data_type == TensorProto.INT8
        assert list(scale.dims) == [weight.dims[0]]  # one scale per output channel
        assert all(r.op_type != "QuantizeLinear" for r in readers[gemm.output[0]])  # outputs stay float
    (bmm,) = [n for n in graph.graph.node if n.op_type == "MatMul"]
    assert all(producers[name].op_type != "DequantizeLinear" for name in bmm.input)  # the dot interaction stays FP32
    expected_table_type = TensorProto.FLOAT if which == "fp32" else TensorProto.INT8
    tables = [t for t in _embedding_tables(graph) if t.dims[1] == 16]
    # FP32: 7 single-valued tables + genres; INT8: the 7 fused into one + genres
    assert len(tables) == (8 if which == "fp32" else 2) and all(t.data_type == expected_table_type for t in tables)
    assert not any(producers.get(n.input[0], n).op_type == "DequantizeLinear" for n in graph.graph.node if n.op_type == "Gather")

    got, want = _run(dst, test), _run(src, test)
    diff = np.abs(got - want)
    # measured on VNNI and AVX2-only (qemu EPYC-Rome) CPUs: mean 0.0023, max 0.022-0.026 (the top MLP's input scale);
    # a saturating kernel gives mean 0.0061, max 0.065, so both bounds catch it
    assert diff.mean() < 0.005 and diff.max() < 0.05
    labels = synthetic_splits.test.labels
    assert abs(auc(labels, got.ravel()) - auc(labels, want.ravel())) < 0.005
    assert _bytes_on_disk(dst) < _bytes_on_disk(src)


def test_static_int8_can_quantize_the_dot_interaction(dlrm_onnx, synthetic_splits, tmp_path: Path) -> None:
    dst = quantize_static_int8(
        dlrm_onnx["fp32"],
        tmp_path / "model.onnx",
        OnnxStaticInt8Config(),
        synthetic_splits.train.inputs(),
        quantize_activation_matmuls=True,
    )
    graph = _graph(dst)
    producers = {o: n for n in graph.graph.node for o in n.output}
    (bmm,) = [n for n in graph.graph.node if n.op_type == "MatMul"]
    assert [producers[name].op_type for name in bmm.input] == ["DequantizeLinear", "DequantizeLinear"]


def test_calibration_reader_reads_the_first_rows_in_batches() -> None:
    arrays = {"a": np.arange(1000, dtype=np.float32)[:, None], "b": np.arange(1000)[:, None]}
    reader = _RowBatches(arrays, 600, 256)
    batches = list(reader)
    assert [len(b["a"]) for b in batches] == [256, 256, 88] and len(reader) == 3
    assert np.concatenate([b["b"] for b in batches]).ravel().tolist() == list(range(600))
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["a"][0, 0] == 0


def test_static_int8_rejects_calibration_inputs_that_do_not_fit(dlrm_onnx, synthetic_splits, tmp_path: Path) -> None:
    inputs = synthetic_splits.train.inputs()
    missing = {k: v for k, v in inputs.items() if k != "sparse_ids"}
    with pytest.raises(CompressError, match=r"calibration inputs for model.onnx do not match .* missing \['sparse_ids'\]"):
        quantize_static_int8(dlrm_onnx["fp32"], tmp_path / "model.onnx", OnnxStaticInt8Config(), missing)
    wrong = {**inputs, "dense_features": inputs["dense_features"].astype(np.float64)}
    with pytest.raises(CompressError, match=r"calibration inputs 'dense_features' is float64, but model.onnx expects float32"):
        quantize_static_int8(dlrm_onnx["fp32"], tmp_path / "model.onnx", OnnxStaticInt8Config(), wrong)
    assert not (tmp_path / "model.onnx").exists()


def test_fp16_dlrm_is_close_and_smaller(dlrm_onnx, synthetic_splits, tmp_path: Path) -> None:
    src = dlrm_onnx["fp32"]
    test = synthetic_splits.test.inputs()
    report = convert_fp16(src, tmp_path / "model.onnx", OnnxFp16Config(), sample_inputs=test)

    assert report.path == tmp_path / "model.onnx" and report.kept_fp32 == () and report.reasons == {}
    assert report.max_abs_diff["probability"] < 1e-3
    assert np.abs(_run(report.path, test) - _run(src, test)).max() < 1e-3
    assert read_io_specs(report.path) == read_io_specs(src)  # float32 in, float32 out
    graph = _graph(report.path)
    onnx.checker.check_model(graph)  # topologically sorted, valid
    gemm_weights = {n.input[1] for n in graph.graph.node if n.op_type == "Gemm"}
    assert {t.data_type for t in graph.graph.initializer if t.name in gemm_weights} == {TensorProto.FLOAT16}
    assert {t.data_type for t in _embedding_tables(graph)} == {TensorProto.FLOAT16}
    assert external_data_files(report.path) == []
    assert _bytes_on_disk(report.path) < _bytes_on_disk(src)


class _LayerNormModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8, eps=1e-12)
        self.b = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.norm(self.a(x)))


class _HugeConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * 1e5 / 1e5 + 1.0


class _HugeConcat(nn.Module):
    """Its output holds values past FP16's range, stored by a Concat (which ORT runs in true FP16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * 1e5, x], dim=1)


class _OverflowingIntermediate(nn.Module):
    """Constants are all in FP16's range, but the second Linear's output reaches ~1e5."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(300 * torch.eye(4))
            self.b.weight.copy_(300 * torch.eye(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.b(self.a(x)) / 1e5)


def _export(model: nn.Module, width: int, folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    x = torch.randn(16, width)
    with torch.no_grad():
        want = model.eval()(x).numpy()
    return export_onnx(model, {"x": x}, ["y"], folder / "src.onnx"), x.numpy(), want


def test_fp16_keeps_layer_norm_with_tiny_eps_in_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src, x, want = _export(_LayerNormModel(), 8, tmp_path)
    (norm,) = [n for n in _graph(src).graph.node if n.op_type == "LayerNormalization"]  # exported as one op
    report = convert_fp16(src, tmp_path / "fp16.onnx", sample_inputs={"x": x})

    assert report.kept_fp32 == (norm.name,)
    assert report.reasons[norm.name] == "attribute epsilon=1e-12 is below FP16's smallest subnormal 5.96e-08"
    graph = _graph(report.path)
    producers = {o: n for n in graph.graph.node for o in n.output}
    inits = {t.name: t for t in graph.graph.initializer}
    (converted,) = [n for n in graph.graph.node if n.op_type == "LayerNormalization"]
    for name in converted.input:  # every input reaches the LayerNorm as float32
        node = producers.get(name)
        assert (node is not None and node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT) or inits[
            name
        ].data_type == TensorProto.FLOAT
    assert np.abs(_run(report.path, {"x": x}) - want).max() < 2e-3
    assert {t.data_type for t in graph.graph.initializer if t.name in ("a.weight", "b.weight")} == {TensorProto.FLOAT16}


def test_fp16_keeps_nodes_reading_a_constant_past_65504_in_fp32(tmp_path: Path) -> None:
    src, x, want = _export(_HugeConstant(), 4, tmp_path)
    report = convert_fp16(src, tmp_path / "fp16.onnx", sample_inputs={"x": x})

    ops = {n.name: n.op_type for n in _graph(src).graph.node}
    assert sorted(ops[n] for n in report.kept_fp32) == ["Div", "Mul"]
    assert all("holds 100000, above FP16's largest value 65504" in report.reasons[n] for n in report.kept_fp32)
    graph = _graph(report.path)
    onnx.checker.check_model(graph)
    producers = {o: n for n in graph.graph.node for o in n.output}
    (div,) = [n for n in graph.graph.node if n.op_type == "Div"]
    assert producers[div.input[0]].op_type == "Mul"  # x * 1e5 goes to the Div in FP32, no FP16 round trip
    assert np.abs(_run(report.path, {"x": x}) - want).max() < 2e-3


def test_fp16_keeps_an_overflowing_intermediate_in_fp32(tmp_path: Path) -> None:
    src, x, want = _export(_OverflowingIntermediate(), 4, tmp_path)
    report = convert_fp16(src, tmp_path / "fp16.onnx", sample_inputs={"x": x})

    second = [n.name for n in _graph(src).graph.node if n.op_type in ("Gemm", "MatMul")][1]
    assert second in report.kept_fp32
    assert "above FP16's largest value 65504" in report.reasons[second]
    assert np.abs(_run(report.path, {"x": x}) - want).max() < 1e-3


def test_fp16_rejects_a_model_with_inf_outputs(tmp_path: Path) -> None:
    src, x, want = _export(_HugeConcat(), 4, tmp_path)
    dst = tmp_path / "out" / "fp16.onnx"
    with pytest.raises(CompressError, match=r"fp16.onnx output 'y' holds 0 NaN and \d+ Inf values .* expected finite values"):
        convert_fp16(src, dst, sample_inputs={"x": x}, keep_unsafe_nodes_fp32=False)
    assert not dst.exists()

    report = convert_fp16(src, dst, sample_inputs={"x": x})  # with its block list it converts fine
    assert len(report.kept_fp32) == 2
    np.testing.assert_allclose(_run(dst, {"x": x}), want, rtol=1e-6, atol=1e-6)


def _tiny_model(op: str, folder: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name="n0")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    path = folder / f"{op}.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_check_finite_outputs(tmp_path: Path) -> None:
    sqrt = _tiny_model("Sqrt", tmp_path)
    x = np.array([[4.0, 9.0], [1.0, 16.0], [-1.0, 0.0]], np.float32)
    outputs = check_finite_outputs(sqrt, {"x": x[:2]})
    np.testing.assert_allclose(outputs["y"], [[2, 3], [1, 4]])
    with pytest.raises(CompressError, match=r"Sqrt.onnx output 'y' holds 1 NaN and 0 Inf values \(of 6; first at row 2\)"):
        check_finite_outputs(sqrt, {"x": x})
    with pytest.raises(CompressError, match=r"missing \['x'\], unexpected \['z'\]"):
        check_finite_outputs(sqrt, {"z": x})


def test_external_data_in_and_single_files_out(dlrm_onnx, synthetic_splits, tmp_path: Path) -> None:
    src = dlrm_onnx["fp32"]
    dst = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.data").write_bytes(b"stale weights of an older version")
    quantize_dynamic_int8(src, dst, OnnxDynamicInt8Config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # self-contained, stale data removed

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copyfile(src, lonely / "model.onnx")  # without model.onnx.data
    with pytest.raises(CompressError, match=r"external data file 'model.onnx.data', which does not exist"):
        convert_fp16(lonely / "model.onnx", tmp_path / "fp16.onnx")
    with pytest.raises(CompressError, match=r"is a directory"):
        quantize_dynamic_int8(src, tmp_path, OnnxDynamicInt8Config())


def test_find_fp16_unsafe_nodes() -> None:
    weight = np.full((4, 4), 0.01, np.float32)
    weight[0, 0] = 1e-9  # one tiny entry among ordinary ones: negligible, not flagged
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),  # underflows as a whole
        numpy_helper.from_array(np.array([1.0, 1.0, 1.0, 1.0], np.float32), "gamma"),
    ]
    big = helper.make_tensor("value", TensorProto.FLOAT, [], [1e6])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "eps"], ["h2"], name="add_eps"),
        helper.make_node("Constant", [], ["c"], name="const", value=big),
        helper.make_node("Div", ["h2", "c"], ["h3"], name="div"),
        helper.make_node("LayerNormalization", ["h3", "gamma"], ["y"], name="", epsilon=1e-12),  # unnamed
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        inits,
    )
    found = find_fp16_unsafe_nodes(helper.make_model(graph))
    assert list(found) == ["add_eps", "const", "div", "LayerNormalization_4"]
    assert found["add_eps"] == "reads initializer 'eps' that holds 1e-12, below FP16's smallest subnormal 5.96e-08 (largest |value| 1e-12)"
    assert "holds 1e+06, above FP16's largest value 65504" in found["const"]
    assert found["div"].startswith("reads the output 'c' of Constant node 'const'")
    assert found["LayerNormalization_4"] == "attribute epsilon=1e-12 is below FP16's smallest subnormal 5.96e-08"


@pytest.mark.parametrize("step", ["dynamic", "static", "fp16"])
def test_models_past_the_single_file_limit_keep_external_data(dlrm_onnx, synthetic_splits, tmp_path: Path, monkeypatch, step: str) -> None:
    """With the 2 GB limit lowered to 4 kB, every path for big models runs on the tiny DLRM."""
    monkeypatch.setattr(onnx_quant, "_SINGLE_FILE_LIMIT", 4096)
    src, dst = dlrm_onnx["fp32"], tmp_path / "out.onnx"
    test = synthetic_splits.test.inputs()
    if step == "dynamic":
        quantize_dynamic_int8(src, dst, OnnxDynamicInt8Config(), sample_inputs=test)
    elif step == "static":
        quantize_static_int8(src, dst, OnnxStaticInt8Config(calibration_rows=256), synthetic_splits.train.inputs())
    else:
        convert_fp16(src, dst, sample_inputs=test)
    assert external_data_files(dst) == [tmp_path / "out.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    assert np.abs(_run(dst, test) - _run(src, test)).max() < 0.05


def test_a_failing_pre_processing_is_skipped_with_a_warning(dlrm_onnx, synthetic_splits, tmp_path: Path, monkeypatch, caplog) -> None:
    import onnxruntime.quantization.shape_inference as shape_inference

    def broken(*args, **kwargs):
        raise RuntimeError("symbolic shape inference failed")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    with caplog.at_level("WARNING", logger="toolkit.optimize.onnx_quant"):
        dst = quantize_dynamic_int8(dlrm_onnx["fp32"], tmp_path / "model.onnx", OnnxDynamicInt8Config())
    assert "quant_pre_process failed on" in caplog.text and "quantizing it without pre-processing" in caplog.text
    test = synthetic_splits.test.inputs()
    assert np.abs(_run(dst, test) - _run(dlrm_onnx["fp32"], test)).max() < INT8_DYNAMIC_TOL

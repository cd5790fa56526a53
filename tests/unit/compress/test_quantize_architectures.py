"""DCN-v2 and DeepFM as row-wise INT8-table architectures, like the DLRM: ``quantize_embeddings``
rebuilds them with ``embedding_quantization="int8_rowwise"`` in their config, so their checkpoints
load back bit for bit, and their ONNX export gathers int8 rows and answers like PyTorch."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from toolkit.compress.quantize_embeddings import (
    dequantize_rows,
    embedding_bytes,
    quantize_embeddings,
    rebuilds_from_config,
    row_error_bound,
)
from toolkit.errors import CheckpointError
from toolkit.export import check_parity, export_onnx
from toolkit.models import get_architecture
from toolkit.models.layers import RowwiseInt8Embedding, RowwiseInt8EmbeddingCollection
from toolkit.models.registry import config_from_dict
from toolkit.train import load_checkpoint, save_checkpoint

ARCHITECTURES = ["dcnv2", "deepfm"]
# table sizes unlike any layer width, so a float initializer of a table's shape would stand out
SIZES = dict(num_dense=2, sparse_cardinalities=[41, 37, 23], multi_hot_cardinalities=[31], multi_hot_lengths=[4], embedding_dim=8)
#: (single-valued, multi-valued) table attributes; DeepFM's second pair are its 1-wide first-order tables
TABLES = {
    "dcnv2": (["sparse_embeddings"], ["multi_hot_embeddings"]),
    "deepfm": (["sparse_embeddings", "sparse_weights"], ["multi_hot_embeddings", "multi_hot_weights"]),
}


def _model(name: str, **changes) -> nn.Module:
    arch = get_architecture(name)
    torch.manual_seed(0)
    model = arch.build(arch.config_class(**{**SIZES, "deep_mlp": [16], **changes})).eval()
    with torch.no_grad():  # rows of ~0.5 (not the 0.01 of a fresh model), so the int8 rounding shows in the outputs
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.5)
    return model


def _int8_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.dtype == torch.int8}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_quantized_model_is_built_by_its_own_class_with_int8_tables_in_its_config(name: str) -> None:
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_embeddings(model)

    assert type(quantized) is type(model) and not quantized.training
    assert quantized.config.embedding_quantization == "int8_rowwise" and model.config.embedding_quantization == "none"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is untouched
    sparse, multi_hot = TABLES[name]
    for attr in sparse:  # the single-valued tables fused into one collection, as in the DLRM
        fused = getattr(quantized, attr)
        assert isinstance(fused, RowwiseInt8EmbeddingCollection) and fused.tables.codes.shape[0] == sum(SIZES["sparse_cardinalities"])
        # table s sits at rows offsets[s]..: the fused rows are each float table's rows quantized
        rows = dequantize_rows(fused.tables.codes, fused.tables.scales, fused.tables.zero_points)
        for table, block in zip(getattr(model, attr), rows.split(SIZES["sparse_cardinalities"]), strict=True):
            err = (table.weight.detach().double() - block.double()).abs().max(dim=1).values
            assert bool((err <= row_error_bound(table.weight)).all())
    for attr in multi_hot:
        assert all(isinstance(t, RowwiseInt8Embedding) for t in getattr(quantized, attr))
    assert not any(isinstance(m, nn.Embedding) for m in quantized.modules())
    # every other tensor is copied as it is
    tables = {*sparse, *multi_hot}
    for k, v in model.state_dict().items():
        if k.split(".")[0] not in tables:
            assert torch.equal(quantized.state_dict()[k], v), k
    rows_per_width = sum(SIZES["sparse_cardinalities"] + SIZES["multi_hot_cardinalities"])
    widths = [8] if name == "dcnv2" else [8, 1]
    assert embedding_bytes(quantized) == sum(rows_per_width * (w + 3) for w in widths)
    assert rebuilds_from_config(quantized) is None
    assert torch.equal(quantize_embeddings(quantized).sparse_embeddings.tables.codes, quantized.sparse_embeddings.tables.codes)

    inputs = get_architecture(name).example_inputs(model.config, 64, seed=1)
    inputs["multi_hot_ids"][:, 2:] = 0  # padding, masked out of the int8 rows' sum too
    with torch.no_grad():
        moved = float((quantized(**inputs) - model(**inputs)).abs().max())
    assert 0 < moved < 0.05  # the rounding of the rows only (half a step of <= 1/254 of each row's range)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_quantized_checkpoint_round_trips_with_the_same_int8_buffers_and_outputs(name: str, tmp_path: Path) -> None:
    quantized = quantize_embeddings(_model(name))
    save_checkpoint(tmp_path / "ckpt", quantized, None, {"note": "int8 tables"})
    assert json.loads((tmp_path / "ckpt" / "model_config.json").read_text())["embedding_quantization"] == "int8_rowwise"
    loaded = load_checkpoint(tmp_path / "ckpt").model

    assert type(loaded) is type(quantized) and loaded.config == quantized.config
    int8 = _int8_buffers(quantized)
    assert set(int8) == set(_int8_buffers(loaded)) and len(int8) == 2 * (2 if name == "dcnv2" else 4)  # codes, zero points
    for k, v in quantized.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype and torch.equal(got, v), k
    inputs = get_architecture(name).example_inputs(quantized.config, 64, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**inputs), quantized(**inputs))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_quantized_onnx_gathers_int8_rows_and_matches_pytorch(name: str, tmp_path: Path) -> None:
    arch = get_architecture(name)
    quantized = quantize_embeddings(_model(name))
    path = export_onnx(quantized, arch.example_inputs(quantized.config, 8), ["probability"], tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    initializers = {t.name: t for t in graph.initializer}
    readers = collections.defaultdict(list)
    for node in graph.node:
        for x in node.input:
            readers[x].append(node)
    int8_gathers = [
        n
        for n in graph.node
        if n.op_type == "Gather" and n.input[0] in initializers and initializers[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    codes = [n for n in int8_gathers if list(initializers[n.input[0]].dims)[1:] == [8]]
    assert len(codes) == 2  # the 3 single-valued tables fused into one, and the multi-valued table: codes gathered as int8
    assert len(int8_gathers) == len(_int8_buffers(quantized))  # the codes and the zero points of every table
    for gather in codes:  # dequantized after the gather, only the rows looked up
        (cast,) = readers[gather.output[0]]
        assert cast.op_type == "Cast"
        assert [r.op_type for r in readers[cast.output[0]]] == ["Sub"]
        assert readers[readers[cast.output[0]][0].output[0]][0].op_type == "Mul"
    table_rows = {*SIZES["sparse_cardinalities"], *SIZES["multi_hot_cardinalities"], sum(SIZES["sparse_cardinalities"])}
    float_tables = [t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims and t.dims[0] in table_rows]
    assert float_tables == []  # no embedding table is float32 in the file

    rows = {k: v.numpy() for k, v in arch.example_inputs(quantized.config, 256, seed=3).items()}
    assert check_parity(quantized, path, rows, atol=1e-5).passed  # the export's own tolerance (toolkit.export)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_bad_embedding_quantization_is_refused_naming_the_field(name: str, tmp_path: Path) -> None:
    arch = get_architecture(name)
    message = r"embedding_quantization must be one of \['none', 'int8_rowwise'\], got 'int4'"
    with pytest.raises(ValueError, match=message):
        arch.config_class(**SIZES, embedding_quantization="int4")
    d = arch.config_class(**SIZES).to_dict()
    with pytest.raises(ValueError, match=message):
        config_from_dict({**d, "embedding_quantization": "int4"})
    # a checkpoint whose config holds it names the file and the field
    save_checkpoint(tmp_path / "ckpt", _model(name), None, {})
    (tmp_path / "ckpt" / "model_config.json").write_text(json.dumps({**d, "embedding_quantization": "int4"}))
    with pytest.raises(CheckpointError, match=r"model_config.json: embedding_quantization must be one of"):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_config_saved_before_the_field_existed_loads_with_float32_tables(name: str, tmp_path: Path) -> None:
    model = _model(name)
    d = model.config.to_dict()
    assert d["embedding_quantization"] == "none"
    del d["embedding_quantization"]  # model_config.json as written before the field existed
    assert config_from_dict(d) == model.config

    save_checkpoint(tmp_path / "ckpt", model, None, {})
    (tmp_path / "ckpt" / "model_config.json").write_text(json.dumps(d, indent=2))
    loaded = load_checkpoint(tmp_path / "ckpt").model
    assert loaded.config.embedding_quantization == "none"
    assert isinstance(loaded.sparse_embeddings[0], nn.Embedding)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

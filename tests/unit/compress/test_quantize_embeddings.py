"""Row-wise INT8 embedding tables: error bound, bytes, accuracy, ONNX export and checkpoints."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from toolkit.compress.quantize_embeddings import (
    dequantize_rows,
    embedding_bytes,
    quantize_embeddings,
    quantize_rows,
    row_error_bound,
)
from toolkit.compress.recipe import QuantizeEmbeddingsConfig
from toolkit.errors import CompressError
from toolkit.export import check_parity, export_onnx
from toolkit.metrics import auc
from toolkit.models import DLRM, DLRMConfig, dlrm_example_inputs
from toolkit.models.dlrm import RowwiseInt8Embedding, RowwiseInt8EmbeddingCollection
from toolkit.train import TrainConfig, load_checkpoint, predict, save_checkpoint, train_dlrm


def _tables() -> torch.Tensor:
    """Rows of very different ranges, plus edge cases."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(600, 16, generator=g) * torch.logspace(-9, 3, 600).unsqueeze(1)
    w[0] = 0.0  # all zeros
    w[1] = torch.linspace(-3e4, 1e6, 16)  # huge range (step ~4e3)
    w[2] = -torch.rand(16, generator=g) - 0.5  # all negative: 0 is added to the range
    w[3] = torch.rand(16, generator=g) + 2.0  # all positive
    w[4] = 1e-30  # far below FP16's subnormals: the scale rounds up to 2**-24
    w[5] = 7.25  # constant row
    w[6, 0] = -1e3  # one outlier in an ordinary row
    return w


def test_quantize_rows_meets_the_documented_bound() -> None:
    w = _tables()
    codes, scales, zero_points = quantize_rows(w)
    assert (codes.dtype, scales.dtype, zero_points.dtype) == (torch.int8, torch.float16, torch.int8)
    assert codes.shape == w.shape and scales.shape == zero_points.shape == (w.shape[0],)
    assert bool((scales.float() > 0).all())

    err = (dequantize_rows(codes, scales, zero_points).double() - w.double()).abs().max(dim=1).values
    # Per row: half the stored (FP16, rounded-up) step, plus float32 rounding of the product.
    per_scale = scales.double() / 2 + w.double().abs().max(dim=1).values * 2.0**-23
    assert bool((err <= per_scale).all()), float((err / per_scale).max())
    # The a-priori bound from the FP32 row alone.
    bound = row_error_bound(w)
    assert bool((err <= bound).all()), float((err / bound).max())
    assert float((err / bound).max()) > 0.9  # the bound is tight, not vacuous
    assert float(err[0]) == 0.0  # zeros stay exact
    assert float(err[1]) <= (1e6 + 3e4) / 254 / 2 * (1 + 2**-10)

    # 0.0 is representable exactly in every row (the zero point), so a zero entry stays zero.
    w2 = w.clone()
    w2[:, 7] = 0.0
    c2, s2, z2 = quantize_rows(w2)
    assert bool((dequantize_rows(c2, s2, z2)[:, 7] == 0).all())


def test_quantize_rows_rejects_what_it_cannot_represent() -> None:
    w = torch.zeros(4, 3)
    w[2, 1] = float("nan")
    with pytest.raises(CompressError, match=r"table sparse_embeddings.3 row 2 holds NaN or Inf"):
        quantize_rows(w, name="sparse_embeddings.3")
    wide = torch.zeros(3, 2)
    wide[1] = torch.tensor([-1e7, 1e7])
    with pytest.raises(CompressError, match=r"row 1 spans .* exceeds the largest FP16 scale 65504"):
        quantize_rows(wide)
    with pytest.raises(CompressError, match=r"2-D floating"):
        quantize_rows(torch.zeros(3, 2, dtype=torch.int64))


def test_rowwise_embedding_looks_up_then_dequantizes() -> None:
    w = _tables()[:50]
    emb = RowwiseInt8Embedding(50, 16)
    codes, scales, zero_points = quantize_rows(w)
    emb.codes.copy_(codes)
    emb.scales.copy_(scales)
    emb.zero_points.copy_(zero_points)
    table = dequantize_rows(codes, scales, zero_points)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    out = emb(ids)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 16)
    torch.testing.assert_close(out, table[ids], rtol=0, atol=0)
    torch.testing.assert_close(emb(torch.tensor([5])), table[5:6], rtol=0, atol=0)
    assert set(emb.state_dict()) == {"codes", "scales", "zero_points"}


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any float32 tensor an operator returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


def test_rowwise_embedding_never_dequantizes_the_whole_table() -> None:
    emb = RowwiseInt8Embedding(100_000, 16)
    ids = torch.randint(0, 100_000, (64, 5))
    with _LargestTensor() as mode:
        out = emb(ids)
    assert out.shape == (64, 5, 16)
    assert mode.largest == 64 * 5 * 16  # float work on the rows looked up only, never on the 1.6M-value table


def _config(**changes) -> DLRMConfig:
    fields = dict(
        num_dense=2,
        sparse_cardinalities=[40, 9, 3],
        multi_hot_cardinalities=[12],
        multi_hot_lengths=[4],
        embedding_dim=16,
        bottom_mlp=[8],
        top_mlp=[8],
    )
    return DLRMConfig(**{**fields, **changes})


def test_embedding_bytes_are_under_30_percent_for_e16() -> None:
    torch.manual_seed(0)
    model = DLRM(_config())
    quantized = quantize_embeddings(model, QuantizeEmbeddingsConfig())
    rows = 40 + 9 + 3 + 12
    assert embedding_bytes(model) == rows * 16 * 4
    assert embedding_bytes(quantized) == rows * (16 + 2 + 1)
    assert embedding_bytes(quantized) / embedding_bytes(model) == pytest.approx(19 / 64)
    assert embedding_bytes(quantized) <= 0.30 * embedding_bytes(model)


def test_quantized_dlrm_copies_mlps_and_keeps_the_masked_sum() -> None:
    torch.manual_seed(0)
    model = DLRM(_config())
    for emb in (*model.sparse_embeddings, *model.multi_hot_embeddings):
        nn.init.normal_(emb.weight, std=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_embeddings(model)

    assert quantized.config.embedding_quantization == "int8_rowwise"
    assert model.config.embedding_quantization == "none"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is untouched
    # the single-valued tables are fused into one collection; each multi-valued table stays alone
    assert isinstance(quantized.sparse_embeddings, RowwiseInt8EmbeddingCollection)
    assert quantized.sparse_embeddings.tables.codes.shape[0] == sum(model.config.sparse_cardinalities)
    tables = [quantized.sparse_embeddings.tables, *quantized.multi_hot_embeddings]
    assert all(isinstance(t, RowwiseInt8Embedding) for t in tables)
    for part in ("bottom_mlp", "top_mlp"):
        for k, v in getattr(model, part).state_dict().items():
            assert torch.equal(getattr(quantized, part).state_dict()[k], v)
    assert not quantized.training

    # The quantized model equals the FP32 model whose tables hold the dequantized rows, so the
    # multi-hot masked sum (padding id 0 masked out) works with the int8 tables.
    reference = DLRM(_config())
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        fused = quantized.sparse_embeddings.tables
        rows = dequantize_rows(fused.codes, fused.scales, fused.zero_points)
        for ref, block in zip(reference.sparse_embeddings, rows.split(model.config.sparse_cardinalities), strict=True):
            ref.weight.copy_(block)
        for ref, q in zip(reference.multi_hot_embeddings, quantized.multi_hot_embeddings, strict=True):
            ref.weight.copy_(dequantize_rows(q.codes, q.scales, q.zero_points))
    inputs = dlrm_example_inputs(model.config, 32, seed=1)
    inputs["multi_hot_ids"][:, 2:] = 0  # padding
    with torch.no_grad():
        torch.testing.assert_close(quantized(*inputs.values()), reference.eval()(*inputs.values()), rtol=1e-6, atol=1e-7)

    assert torch.equal(quantize_embeddings(quantized).sparse_embeddings.tables.codes, fused.codes)


def test_config_field_validates_and_old_configs_load() -> None:
    with pytest.raises(ValueError, match=r"embedding_quantization must be one of \['none', 'int8_rowwise'\], got 'int4'"):
        _config(embedding_quantization="int4")
    d = _config().to_dict()
    assert d["embedding_quantization"] == "none"
    del d["embedding_quantization"]  # a config saved before the field existed
    assert DLRMConfig.from_dict(d).embedding_quantization == "none"
    q = _config(embedding_quantization="int8_rowwise")
    assert DLRMConfig.from_dict(json.loads(json.dumps(q.to_dict()))) == q


@pytest.fixture(scope="module")
def trained(synthetic_splits) -> tuple[DLRM, DLRM]:
    """A tiny FP32 DLRM trained on the synthetic splits (E=16) and its row-wise INT8 copy."""
    result = train_dlrm(
        synthetic_splits.train, synthetic_splits.val, synthetic_splits.encoder, TrainConfig(max_epochs=2, learning_rate=1e-2)
    )
    return result.model, quantize_embeddings(result.model)


def test_quantized_auc_stays_within_0_005(trained, synthetic_splits) -> None:
    fp32, int8 = trained
    test = synthetic_splits.test
    auc_fp32 = auc(test.labels, predict(fp32, test))
    auc_int8 = auc(test.labels, predict(int8, test))
    assert auc_fp32 > 0.6  # the model learned something, so the comparison means something
    assert abs(auc_int8 - auc_fp32) <= 0.005
    assert embedding_bytes(int8) / embedding_bytes(fp32) <= 0.30


def test_quantized_dlrm_exports_int8_gathers_and_matches_onnx_runtime(trained, synthetic_splits, tmp_path: Path) -> None:
    _, int8 = trained
    path = export_onnx(int8, dlrm_example_inputs(int8.config, 8), ["probability"], tmp_path / "model.onnx")
    model = onnx.load(str(path))
    initializers = {t.name: t for t in model.graph.initializer}
    readers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            readers[name].append(node)
    int8_gathers = [
        n
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in initializers and initializers[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    codes = [n for n in int8_gathers if len(initializers[n.input[0]].dims) == 2 and initializers[n.input[0]].dims[1] == 16]
    assert len(codes) == 2  # the 7 single-valued tables fused into one, and the genre table: codes gathered as int8
    for gather in codes:
        (cast,) = readers[gather.output[0]]
        assert cast.op_type == "Cast"
        assert [r.op_type for r in readers[cast.output[0]]] == ["Sub"]
        assert readers[readers[cast.output[0]][0].output[0]][0].op_type == "Mul"
    float_tables = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and t.dims[1] == 16]
    assert all(t.dims[0] < 100 for t in float_tables)  # only MLP weights are float32, no embedding table

    report = check_parity(int8, path, synthetic_splits.test.inputs(), atol=1e-5)
    assert report.passed and report.n_rows == len(synthetic_splits.test)


def test_quantized_checkpoint_round_trips(trained, synthetic_splits, tmp_path: Path) -> None:
    _, int8 = trained
    save_checkpoint(tmp_path / "ckpt", int8, synthetic_splits.encoder, {"note": "int8 tables"})
    saved = json.loads((tmp_path / "ckpt" / "model_config.json").read_text())
    assert saved["embedding_quantization"] == "int8_rowwise"
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.config == int8.config
    assert isinstance(ckpt.model.sparse_embeddings, RowwiseInt8EmbeddingCollection)
    for k, v in int8.state_dict().items():
        loaded = ckpt.model.state_dict()[k]
        assert loaded.dtype == v.dtype and torch.equal(loaded, v), k
    np.testing.assert_array_equal(predict(ckpt.model, synthetic_splits.test), predict(int8, synthetic_splits.test))

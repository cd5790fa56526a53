"""Row-wise INT8 embeddings for any module: found by walking the module tree, not by field names.

A user's own module (an ``nn.EmbeddingBag``, a pairwise-dot interaction, forward's arguments in
another order) gets int8 tables in place; DCN-v2 and DeepFM are rebuilt with int8 tables in their
config. All export to ONNX with int8 ``Gather``s, and DCN-v2 and DeepFM keep their test AUC on
MovieLens-100K within the default budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from toolkit.compress.errors import StepRefused
from toolkit.compress.quantize_embeddings import (
    RowwiseInt8EmbeddingBag,
    dequantize_rows,
    embedding_bytes,
    quantize_embeddings,
    rebuilds_from_config,
)
from toolkit.compress.recipe import Recipe
from toolkit.export import check_parity, export_onnx
from toolkit.models import get_architecture
from toolkit.models.dlrm import RowwiseInt8Embedding
from toolkit.models.registry import architecture_of
from toolkit.models.user import load_model_file
from toolkit.optimize.pipeline import CompressedModel, save_compressed

USER_MODEL = Path(__file__).parents[2] / "fixtures" / "models" / "user_bag_model.py"
SIZES = dict(num_dense=2, sparse_cardinalities=[11, 13, 5], multi_hot_cardinalities=[9], multi_hot_lengths=[4])


def _int8_gathers(path: Path) -> int:
    """Gathers reading an int8 initializer: two per int8 table (its codes and its zero points)."""
    graph = onnx.load(str(path)).graph
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2}
    return sum(1 for n in graph.node if n.op_type == "Gather" and n.input[0] in int8)


def _int8_bytes(model: nn.Module) -> int:
    """E + 2 (FP16 scale) + 1 (int8 zero point) bytes per row of each of ``model``'s float tables."""
    return sum(m.num_embeddings * (m.embedding_dim + 3) for m in model.modules() if isinstance(m, nn.Embedding))


@pytest.mark.parametrize("name", ["dcnv2", "deepfm"])
def test_registered_architectures_get_int8_tables_and_their_compressed_folder_holds_a_checkpoint(name: str, tmp_path: Path) -> None:
    from toolkit.train import load_checkpoint

    arch = get_architecture(name)
    torch.manual_seed(0)
    model = arch.build(arch.config_class(**SIZES, embedding_dim=8)).eval()
    quantized = quantize_embeddings(model)

    # rebuilt by its own class with int8 tables in its config (see test_quantize_architectures.py), not in place
    assert type(quantized) is type(model) and quantized.config.embedding_quantization == "int8_rowwise"
    assert not any(isinstance(m, nn.Embedding) for m in quantized.modules())
    assert any(isinstance(m, nn.Embedding) for m in model.modules())  # the input is untouched
    assert embedding_bytes(quantized) == _int8_bytes(model)

    path = export_onnx(quantized, arch.example_inputs(model.config, 8), ["probability"], tmp_path / "model.onnx")
    int8_tables = sum(isinstance(m, RowwiseInt8Embedding) for m in quantized.modules())  # a fused collection is one
    assert _int8_gathers(path) == 2 * int8_tables  # every table's codes and zero points gathered as int8
    inputs = {k: v.numpy() for k, v in arch.example_inputs(model.config, 256, seed=3).items()}
    assert check_parity(quantized, path, inputs, atol=1e-5).passed  # the export's own tolerance (toolkit.export)

    # its config builds int8 tables, so the compressed folder holds a checkpoint that loads back
    assert rebuilds_from_config(quantized) is None
    out = save_compressed(CompressedModel(Recipe(), quantized, path, None), tmp_path / "out", None, {})
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".data")) == ["checkpoint", "model.onnx", "recipe.json"]
    assert not (out / "checkpoint" / "structure.json").exists()  # nothing was replaced after the build: nothing to record
    loaded = load_checkpoint(out / "checkpoint").model
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in quantized.state_dict().items())


def test_a_user_s_module_with_an_embedding_bag_gets_int8_tables_and_its_onnx_answers_the_same(tmp_path: Path) -> None:
    model = load_model_file(f"{USER_MODEL}:build")
    quantized = quantize_embeddings(model)

    assert isinstance(quantized.user, RowwiseInt8Embedding) and isinstance(quantized.item, RowwiseInt8Embedding)
    assert isinstance(quantized.genres, RowwiseInt8EmbeddingBag) and quantized.genres.mode == "sum"
    assert type(quantized) is type(model) and quantized.config is not model.config and quantized.config == model.config
    arch = architecture_of(quantized)
    path = export_onnx(quantized, arch.example_inputs(model.config, 8), ["probability"], tmp_path / "model.onnx")
    assert _int8_gathers(path) == 2 * 3  # user, item and the bag's table
    inputs = {k: v.numpy() for k, v in arch.example_inputs(model.config, 512, seed=5).items()}
    assert check_parity(quantized, path, inputs, atol=1e-5).passed
    # the int8 tables move the answers by the rounding of the rows only (half a step of <= 1/254 of each row's range)
    rows = arch.example_inputs(model.config, 512)
    with torch.no_grad():
        assert float((quantized(**rows) - model(**rows)).abs().max()) < 0.01
    # its config builds float32 tables; structure.json records the int8 ones (the bag's mode included), so it rebuilds
    assert rebuilds_from_config(quantized) is None


@pytest.mark.parametrize(
    ("mode", "padding_idx", "one_dim", "weighted"),
    [
        ("sum", None, False, False),
        ("mean", None, False, False),
        ("max", None, False, False),
        ("sum", 0, False, False),
        ("mean", 0, False, False),
        ("max", 0, False, False),
        ("sum", None, False, True),
        ("mean", 2, True, False),
        ("sum", None, True, True),
        ("max", None, True, False),
    ],
)
def test_int8_bag_reduces_like_an_embedding_bag_of_its_dequantized_rows(mode, padding_idx, one_dim, weighted) -> None:
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(30, 6, mode=mode, padding_idx=padding_idx)
    quantized = quantize_embeddings(nn.Sequential(bag))[0]
    reference = nn.EmbeddingBag(30, 6, mode=mode, padding_idx=padding_idx)
    with torch.no_grad():
        t = quantized.table
        reference.weight.copy_(dequantize_rows(t.codes, t.scales, t.zero_points))
    ids = torch.randint(0, 30, (7, 5))
    ids[0] = 0  # a bag of padding only (when padding_idx is 0)
    ids[1, :3] = 0
    if one_dim:
        args = (ids.flatten(), torch.tensor([0, 3, 3, 10, 20]))  # bags of 3, 0, 7, 10 and 15 ids
    else:
        args = (ids, None)
    weights = torch.rand(args[0].shape) if weighted else None
    # same float32 operations in another order: a few ulps of rows ~0.1
    got, expected = quantized(*args, per_sample_weights=weights), reference(*args, per_sample_weights=weights)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_module_without_embedding_tables_is_refused_naming_what_it_has() -> None:
    with pytest.raises(StepRefused, match=r"Sequential has no nn.Embedding or nn.EmbeddingBag \(it has Linear, ReLU\)") as info:
        quantize_embeddings(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    assert info.value.step == "quantize_embeddings"


def test_a_table_that_renormalizes_its_rows_is_refused_naming_its_path() -> None:
    model = nn.ModuleDict({"towers": nn.ModuleList([nn.Embedding(5, 3), nn.Embedding(4, 3, max_norm=1.0)])})
    with pytest.raises(StepRefused, match=r"towers.1 \(Embedding, max_norm=1.0\) renormalizes its rows"):
        quantize_embeddings(model)


class _ReadsWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.items = nn.Embedding(6, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.items.weight[ids].sum(dim=1, keepdim=True))


def test_a_forward_that_reads_a_table_s_weight_is_refused_with_the_reason() -> None:
    with pytest.raises(StepRefused, match=r"_ReadsWeight's forward fails once its tables \(items\) are int8 .*not read its weight"):
        quantize_embeddings(_ReadsWeight(), example_inputs={"ids": torch.tensor([[1, 2]])})


def test_a_table_shared_by_two_paths_stays_one_table() -> None:
    shared = nn.Embedding(8, 4)
    model = nn.ModuleDict({"a": shared, "b": shared})
    quantized = quantize_embeddings(model)
    assert quantized["a"] is quantized["b"] and isinstance(quantized["a"], RowwiseInt8Embedding)


@pytest.fixture(scope="module")
def movielens_models(trained_movielens, movielens_dir):
    """DCN-v2 and DeepFM trained 1 epoch on 20,000 MovieLens-100K training rows of the session checkpoint's split."""
    from toolkit.data.checkpoint_split import checkpoint_splits
    from toolkit.train import TrainConfig, load_checkpoint, train_model

    ckpt = load_checkpoint(trained_movielens.checkpoint)
    splits = checkpoint_splits(trained_movielens.checkpoint, movielens_dir, encoder=ckpt.encoder, metrics=ckpt.metrics)
    models = {}
    for name in ("dcnv2", "deepfm"):
        config = TrainConfig(architecture=name, max_epochs=1, max_train_rows=20_000)
        models[name] = train_model(splits.train, splits.val, splits.encoder, config).model
    return models, splits


@pytest.mark.parametrize("name", ["dcnv2", "deepfm"])
def test_int8_embeddings_keep_movielens_test_auc_within_the_budget(movielens_models, name: str) -> None:
    from toolkit.metrics import auc
    from toolkit.train import predict

    models, splits = movielens_models
    model = models[name]
    quantized = quantize_embeddings(model)
    test = splits.test
    fp32_auc, int8_auc = auc(test.labels, predict(model, test)), auc(test.labels, predict(quantized, test))
    assert fp32_auc > 0.7  # better than item popularity (0.70): the comparison means something
    assert int8_auc >= 0.99 * fp32_auc  # the default recipe's budget (MLPerf's 99% of the reference)
    # 19/64 of the bytes for the E=16 tables; DeepFM's 1-wide first-order tables stay 4 bytes a row
    assert embedding_bytes(quantized) == _int8_bytes(model) < 0.35 * embedding_bytes(model)
    assert np.isfinite(predict(quantized, test)).all()

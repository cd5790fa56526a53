"""Recipes applied end to end: PyTorch steps, export, ONNX step, side-by-side report, accuracy budget."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from toolkit.compress.recipe import Recipe
from toolkit.compress.report import report_markdown
from toolkit.optimize.pipeline import CompressionData, compress, compress_and_report, save_compressed
from toolkit.train import TrainConfig, load_checkpoint, predict, train_dlrm

FAST = {"rounds": 1, "b1_requests": 5, "b256_batches": 2}


@pytest.fixture(scope="module")
def trained(synthetic_splits):
    s = synthetic_splits
    config = TrainConfig(embedding_dim=8, bottom_mlp=[24], top_mlp=[20, 10], max_epochs=4, learning_rate=1e-2, seed=0)
    model = train_dlrm(s.train, s.val, s.encoder, config).model
    return model, CompressionData("synthetic", s.train, s.val, s.test, s.encoder)


def _onnx_probabilities(path, rows):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: rows.inputs()[n] for n in names})[0].reshape(-1)


def test_combined_recipe_shrinks_the_model_and_its_onnx_file_runs(tmp_path, trained):
    model, data = trained
    recipe = Recipe(
        name="combo",
        select="as_written",
        steps=[{"kind": "prune", "ratio": 0.5, "finetune_epochs": 1}, {"kind": "quantize_embeddings"}, {"kind": "onnx_dynamic_int8"}],
    )
    result = compress(model, recipe, data, tmp_path)
    assert result.model.config.embedding_quantization == "int8_rowwise"
    assert result.model.config.top_mlp == [max(1, round(w / 2)) for w in model.config.top_mlp]
    probs = _onnx_probabilities(result.onnx_path, data.test)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, predict(result.model, data.test), atol=0.05)


def test_report_measures_every_variant_against_both_baselines(tmp_path, trained):
    model, data = trained
    recipes = {"fp16": Recipe(name="fp16", select="as_written", steps=[{"kind": "onnx_fp16"}])}
    report, _ = compress_and_report(model, recipes, data, tmp_path, **FAST)
    names = [v["name"] for v in report["variants"]]
    assert names == ["fp32_pytorch", "fp32_onnx", "fp16"] and report["baseline"] == "fp32_pytorch"
    for v in report["variants"]:
        for key in ("test_auc", "size_bytes", "params", "latency_ms_b1", "throughput_rps_b256", "within_budget"):
            assert key in v
        assert v["throughput_rps_b256"] > 0 and v["latency_ms_b1"] > 0
    fp16 = report["variants"][2]
    assert fp16["size_bytes"] < 0.75 * report["variants"][1]["size_bytes"]
    assert fp16["within_budget"] is True
    assert "| fp16 |" in report_markdown(report)


def test_accuracy_budget_rejects_an_over_pruned_model(tmp_path, trained):
    model, data = trained
    recipes = {"overpruned": Recipe(name="overpruned", steps=[{"kind": "prune", "ratio": 0.95, "finetune_epochs": 0}])}
    report, _ = compress_and_report(model, recipes, data, tmp_path, **FAST)
    over = report["variants"][-1]
    assert over["within_budget"] is False and over["auc_ratio"] < 0.99


def test_saved_compressed_model_reloads_with_its_recipe(tmp_path, trained):
    model, data = trained
    recipe = Recipe(name="emb", select="as_written", steps=[{"kind": "quantize_embeddings"}])
    result = compress(model, recipe, data, tmp_path / "work")
    out = save_compressed(result, tmp_path / "out", data.encoder, {"test": {}})
    assert (out / "recipe.json").is_file() and (out / "model.onnx").is_file()
    reloaded = load_checkpoint(out / "checkpoint")
    np.testing.assert_array_equal(predict(reloaded.model, data.test), predict(result.model, data.test))

"""Recipes: every step config round-trips through JSON, and bad recipes are refused by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.compress.recipe import (
    DistillConfig,
    OnnxDynamicInt8Config,
    OnnxFp16Config,
    OnnxStaticInt8Config,
    PruneConfig,
    QuantizeEmbeddingsConfig,
    Recipe,
    load_recipe,
    save_recipe,
)
from toolkit.errors import CompressError

ROOT = Path(__file__).resolve().parents[3]
ALL_STEPS = [PruneConfig(), DistillConfig(), QuantizeEmbeddingsConfig(), OnnxDynamicInt8Config(), OnnxStaticInt8Config(), OnnxFp16Config()]


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.kind)
def test_every_step_config_round_trips_through_a_saved_recipe(tmp_path, step):
    recipe = Recipe(name="one", steps=[step])
    save_recipe(recipe, tmp_path / "recipe.json")
    assert load_recipe(tmp_path / "recipe.json") == recipe


def test_shipped_recipes_load():
    for path in sorted((ROOT / "recipes").glob("*.json")):
        assert load_recipe(path).steps, path


def test_torch_steps_keep_their_order_and_the_onnx_step_comes_last():
    recipe = Recipe(steps=[OnnxFp16Config(), PruneConfig(), QuantizeEmbeddingsConfig()])
    assert [s.kind for s in recipe.torch_steps()] == ["prune", "quantize_embeddings"]
    assert recipe.onnx_step().kind == "onnx_fp16"


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_prune_ratio_outside_zero_one_is_refused_naming_the_field(tmp_path, ratio):
    path = _write(tmp_path, {"steps": [{"kind": "prune", "ratio": ratio}]})
    with pytest.raises(CompressError, match=r"steps\.0\.prune\.ratio"):
        load_recipe(path)


def test_unknown_step_kind_and_unknown_field_are_refused(tmp_path):
    with pytest.raises(CompressError, match="steps.0"):
        load_recipe(_write(tmp_path, {"steps": [{"kind": "sparsify"}]}))
    with pytest.raises(CompressError, match="ratoi"):
        load_recipe(_write(tmp_path, {"steps": [{"kind": "prune", "ratoi": 0.5}]}))


def test_two_onnx_steps_are_refused(tmp_path):
    with pytest.raises(CompressError, match="at most one"):
        load_recipe(_write(tmp_path, {"steps": [{"kind": "onnx_fp16"}, {"kind": "onnx_dynamic_int8"}]}))


def test_missing_or_broken_recipe_file_names_the_file(tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        load_recipe(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{ not json")
    with pytest.raises(CompressError, match="bad.json"):
        load_recipe(tmp_path / "bad.json")

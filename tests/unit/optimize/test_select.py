"""Keeping a compression step only where it pays on the serving CPU (toolkit.optimize.select)."""

from __future__ import annotations

import json

import pytest

from toolkit.compress.recipe import Recipe
from toolkit.optimize.pipeline import CompressionData, compress, save_compressed
from toolkit.optimize.select import NOISE_MARGIN, decide
from toolkit.train import TrainConfig, train_dlrm


def _row(rps: float, ms: float = 1.0, ok: bool = True, ratio: float = 1.0) -> dict:
    return {"throughput_rps_b256": rps, "latency_ms_b1": ms, "within_budget": ok, "auc_ratio": ratio}


DROPS = [(), ("onnx_static_int8",), ("quantize_embeddings",), ("onnx_static_int8", "quantize_embeddings")]
OPTIONAL = ["onnx_static_int8", "quantize_embeddings"]


def test_decide_drops_an_int8_step_that_is_slower_on_this_cpu() -> None:
    # the AMD EPYC numbers: static INT8 0.97x of FP32, so the recipe without it is faster
    rows = [_row(453), _row(514), _row(440), _row(500)]
    chosen, steps = decide(rows, DROPS, OPTIONAL, "max_throughput", "avx2")
    assert DROPS[chosen] == ("onnx_static_int8",)
    assert steps["onnx_static_int8"]["kept"] is False and "1.13x better without it on this avx2 CPU" in steps["onnx_static_int8"]["reason"]
    assert steps["quantize_embeddings"]["kept"] is True and "that without it" in steps["quantize_embeddings"]["reason"]


def test_decide_keeps_int8_embeddings_for_size_and_says_what_they_cost() -> None:
    # without INT8 tables the model is 1.30x faster, but they are there to make it 3x smaller
    rows = [_row(359), _row(337), _row(467), _row(469)]
    chosen, steps = decide(rows, DROPS, OPTIONAL, "max_throughput", "vnni")
    assert DROPS[chosen] == ()
    assert steps["quantize_embeddings"] == {
        "kept": True,
        "reason": "kept for size: b256 throughput is 0.77x that without it on this vnni CPU",
    }
    assert steps["onnx_static_int8"]["kept"] is True and "(within the 5% timing noise)" not in steps["onnx_static_int8"]["reason"]


def test_decide_keeps_the_full_recipe_when_the_gain_is_within_timing_noise() -> None:
    rows = [_row(100), _row(100 * (1 + NOISE_MARGIN * 0.9)), _row(99), _row(98)]
    chosen, steps = decide(rows, DROPS, OPTIONAL, "max_throughput")
    assert chosen == 0 and all(s["kept"] for s in steps.values())
    assert "timing noise" in steps["onnx_static_int8"]["reason"]


def test_decide_never_keeps_a_faster_candidate_outside_the_accuracy_budget() -> None:
    rows = [_row(100), _row(300, ok=False, ratio=0.95), _row(90), _row(280, ok=False, ratio=0.95)]
    chosen, steps = decide(rows, DROPS, OPTIONAL, "max_throughput")
    assert chosen == 0 and "below the accuracy budget" in steps["onnx_static_int8"]["reason"]


def test_decide_drops_a_step_that_breaks_the_budget_even_when_it_is_faster() -> None:
    rows = [_row(300, ok=False, ratio=0.97), _row(100), _row(290, ok=False, ratio=0.97), _row(95)]
    chosen, steps = decide(rows, DROPS, OPTIONAL, "max_throughput")
    assert DROPS[chosen] == ("onnx_static_int8",) and "below the accuracy budget (AUC ratio 0.9700)" in steps["onnx_static_int8"]["reason"]


def test_decide_by_latency_compares_batch_one_times() -> None:
    rows = [_row(500, ms=0.10), _row(400, ms=0.05), _row(450, ms=0.11), _row(380, ms=0.06)]
    chosen, _ = decide(rows, DROPS, OPTIONAL, "min_latency")
    assert DROPS[chosen] == ("onnx_static_int8",)
    chosen, _ = decide(rows, DROPS, OPTIONAL, "max_throughput")
    assert chosen == 0


@pytest.fixture(scope="module")
def trained(synthetic_splits):
    s = synthetic_splits
    config = TrainConfig(embedding_dim=8, bottom_mlp=[24], top_mlp=[20, 10], max_epochs=3, learning_rate=1e-2, seed=0)
    return train_dlrm(s.train, s.val, s.encoder, config).model, CompressionData("synthetic", s.train, s.val, s.test, s.encoder)


def test_compress_times_the_recipe_against_itself_without_its_optional_steps(tmp_path, trained) -> None:
    model, data = trained
    recipe = Recipe(name="q", steps=[{"kind": "quantize_embeddings"}, {"kind": "onnx_dynamic_int8"}])
    result = compress(model, recipe, data, tmp_path / "work", cpu_target="avx2")
    sel = result.selection["selection"]
    assert set(sel["measured"]) == {
        "recipe",
        "without_onnx_dynamic_int8",
        "without_quantize_embeddings",
        "without_onnx_dynamic_int8+quantize_embeddings",
    }
    assert set(sel["steps"]) == {"onnx_dynamic_int8", "quantize_embeddings"}
    for step, verdict in sel["steps"].items():
        assert verdict["reason"].startswith("kept" if verdict["kept"] else "dropped:")
        assert (step in [s.kind for s in result.recipe.steps]) == verdict["kept"]
    # whatever was kept, the INT8 settings are those of the declared CPU, and the saved recipe says so
    assert result.selection["int8"] == {"cpu_target": "avx2", "reduce_range": True, "reason": result.selection["int8"]["reason"]}
    assert result.selection["cpu"]["simd_flags"]  # the CPU features seen are reported
    out = save_compressed(result, tmp_path / "out", data.encoder, {"test": {}})
    saved = json.loads((out / "recipe.json").read_text())
    assert [s["kind"] for s in saved["steps"]] == [s.kind for s in result.recipe.steps]
    for s in saved["steps"]:
        if s["kind"] == "onnx_dynamic_int8":
            assert s["reduce_range"] is True


def test_as_written_keeps_every_step_and_times_nothing(tmp_path, trained) -> None:
    model, data = trained
    recipe = Recipe(name="q", select="as_written", steps=[{"kind": "onnx_fp16"}])
    result = compress(model, recipe, data, tmp_path / "work")
    assert [s.kind for s in result.recipe.steps] == ["onnx_fp16"] and result.selection["selection"]["measured"] == {}


def test_without_labels_the_candidates_are_still_timed_and_none_is_judged(tmp_path, trained) -> None:
    model, data = trained
    recipe = Recipe(name="q", steps=[{"kind": "onnx_dynamic_int8"}])
    result = compress(model, recipe, data, tmp_path / "work", measure_accuracy=False)
    measured = result.selection["selection"]["measured"]
    assert set(measured) == {"recipe", "without_onnx_dynamic_int8"}
    assert all(r["val_auc"] is None and r["within_budget"] is True and r["throughput_rps_b256"] > 0 for r in measured.values())

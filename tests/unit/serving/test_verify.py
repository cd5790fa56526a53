"""`tritonrec verify`'s pure half: tolerances, reading a repository, deciding what to verify, the report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from rich.console import Console

from toolkit.cli._tables import verify_report_notes as report_notes
from toolkit.cli._tables import verify_report_table as report_table
from toolkit.errors import RepositoryError
from toolkit.repository.config import ModelConfig
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS
from toolkit.serving.verify import (
    ModelResult,
    Tolerance,
    VerifyReport,
    plan_verification,
    scan_repository,
    tolerance_for,
)

RANKER_INPUTS = [
    {"name": "dense_features", "data_type": "TYPE_FP32", "dims": [2]},
    {"name": "sparse_ids", "data_type": "TYPE_INT64", "dims": [7]},
    {"name": "multi_hot_ids", "data_type": "TYPE_INT64", "dims": [6]},
]
PROBABILITY = [{"name": "probability", "data_type": "TYPE_FP32", "dims": [1]}]
RAW_INPUTS = [{"name": s.name, "data_type": "TYPE_STRING", "dims": [-1 if d is None else d for d in s.shape[1:]]} for s in RAW_INPUT_SPECS]


def write_model(repo: Path, name: str, config: dict, metadata: ModelMetadata | None = None) -> Path:
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    message = json_format.ParseDict({"name": name, "max_batch_size": 256, **config}, ModelConfig())
    (folder / "config.pbtxt").write_text(text_format.MessageToString(message))
    if metadata is not None:
        write_metadata(folder, metadata)
    return folder


def ranker(repo: Path, name: str, variant: str | None, precision: str = "fp32", inputs: list | None = None) -> Path:
    meta = None if variant is None else ModelMetadata(role="ranker", variant=variant, precision=precision)  # type: ignore[arg-type]
    return write_model(repo, name, {"backend": "python", "input": inputs or RANKER_INPUTS, "output": PROBABILITY}, meta)


def ensemble(repo: Path, name: str, steps: list[str], *, outputs: list | None = None, metadata: ModelMetadata | None = None) -> Path:
    config = {
        "platform": "ensemble",
        "input": RAW_INPUTS,
        "output": outputs or PROBABILITY,
        "ensemble_scheduling": {"step": [{"model_name": s, "model_version": -1} for s in steps]},
    }
    return write_model(repo, name, config, metadata)


def plan_by_name(repo: Path):
    plan = plan_verification(scan_repository(repo))
    return plan, {p.entry.name: p for p in plan.models}


# -- tolerances ---------------------------------------------------------------------------------
def test_fp32_and_unknown_precisions_get_the_max_abs_diff_bound():
    assert tolerance_for("fp32") == Tolerance("max_abs_diff", 1e-5)
    assert tolerance_for(None) == Tolerance("max_abs_diff", 1e-5)
    assert tolerance_for("fp32", fp32_max_abs_diff=1e-4).value == 1e-4


@pytest.mark.parametrize("precision", ["fp16", "int8", "mixed"])
def test_compressed_precisions_get_the_auc_budget(precision):
    assert tolerance_for(precision) == Tolerance("auc_ratio", 0.99)
    assert tolerance_for(precision, auc_budget=0.98) == Tolerance("auc_ratio", 0.98)


def test_tolerances_hold_at_their_bound_and_never_for_nan():
    fp32, budget = Tolerance("max_abs_diff", 1e-5), Tolerance("auc_ratio", 0.99)
    assert fp32.holds(max_abs_diff=1e-5, auc=0.5, reference_auc=0.8)
    assert not fp32.holds(max_abs_diff=1.1e-5, auc=0.8, reference_auc=0.8)
    assert not fp32.holds(max_abs_diff=math.nan, auc=0.8, reference_auc=0.8)
    assert budget.holds(max_abs_diff=0.3, auc=0.792, reference_auc=0.8)  # a large |Δp| is reported, not judged
    assert not budget.holds(max_abs_diff=0.0, auc=0.7919, reference_auc=0.8)
    assert budget.describe() == "AUC ≥ 0.99×ref" and fp32.describe() == "|Δp| ≤ 1e-05"


@pytest.mark.parametrize("budget", [0.0, -0.5, 1.01])
def test_an_auc_budget_outside_0_1_is_refused(budget):
    with pytest.raises(RepositoryError, match="AUC budget"):
        tolerance_for("int8", auc_budget=budget)


# -- reading the repository ---------------------------------------------------------------------
def test_scan_reads_configs_and_metadata_and_ignores_other_folders(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "dlrm_custom", None)
    (tmp_path / ".dlrm.staging-x" / "m").mkdir(parents=True)  # an interrupted build's staging folder
    (tmp_path / "notes").mkdir()  # no config.pbtxt: not a model
    broken = ranker(tmp_path, "dlrm_broken", None)
    (broken / "tritonrec.json").write_text("{not json")
    entries = {e.name: e for e in scan_repository(tmp_path)}
    assert sorted(entries) == ["dlrm_broken", "dlrm_custom", "dlrm_pytorch"]
    assert (entries["dlrm_pytorch"].role, entries["dlrm_pytorch"].variant, entries["dlrm_pytorch"].precision) == (
        "ranker",
        "pytorch",
        "fp32",
    )
    assert not entries["dlrm_custom"].has_metadata and entries["dlrm_custom"].error == ""
    assert "tritonrec.json" in entries["dlrm_broken"].error
    by = {p.entry.name: p for p in plan_verification(list(entries.values())).models}
    assert by["dlrm_broken"].kind == "ranker" and "not a valid tritonrec.json" in by["dlrm_broken"].note


def test_scan_refuses_a_missing_repository(tmp_path):
    with pytest.raises(RepositoryError, match="not a folder"):
        scan_repository(tmp_path / "nope")


# -- planning -----------------------------------------------------------------------------------
def test_plan_assigns_variants_to_their_reference_and_tolerance_precision(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "dlrm_onnx", "onnx")
    ranker(tmp_path, "dlrm_onnx_int8", "onnx_int8", "int8")
    plan, by = plan_by_name(tmp_path)
    assert list(plan.references) == ["dlrm"] and plan.references["dlrm"].name == "dlrm_pytorch"
    assert by["dlrm_pytorch"].kind == "reference"
    assert (by["dlrm_onnx"].kind, by["dlrm_onnx"].family, by["dlrm_onnx"].precision) == ("ranker", "dlrm", "fp32")
    assert (by["dlrm_onnx_int8"].kind, by["dlrm_onnx_int8"].precision) == ("ranker", "int8")


def test_plan_groups_several_families_by_their_prefix(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "dlrm_onnx", "onnx")
    small = [{**t, "dims": [4]} if t["name"] == "multi_hot_ids" else t for t in RANKER_INPUTS]
    ranker(tmp_path, "dlrm_small_pytorch", "pytorch", inputs=small)
    ranker(tmp_path, "dlrm_small_onnx", "onnx", inputs=small)
    ranker(tmp_path, "dlrm_small_custom", None, inputs=small)  # no metadata: found by its inputs
    plan, by = plan_by_name(tmp_path)
    assert sorted(plan.references) == ["dlrm", "dlrm_small"]
    assert by["dlrm_onnx"].family == "dlrm"
    assert by["dlrm_small_onnx"].family == "dlrm_small"
    assert by["dlrm_small_custom"].family == "dlrm_small"


def test_a_model_without_metadata_with_the_references_inputs_is_a_ranker_of_unknown_precision(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "handmade", None)
    _, by = plan_by_name(tmp_path)
    p = by["handmade"]
    assert (p.kind, p.family, p.precision) == ("ranker", "dlrm", None)
    assert "no tritonrec.json" in p.note and "unknown precision" in p.note
    assert tolerance_for(p.precision).kind == "max_abs_diff"


def test_a_model_without_metadata_and_other_inputs_is_skipped_with_the_reason(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "dlrm_other", None, inputs=RANKER_INPUTS[:2])
    _, by = plan_by_name(tmp_path)
    assert by["dlrm_other"].kind == "skip"
    assert "inputs are not a reference ranker's" in by["dlrm_other"].note


def test_no_pytorch_reference_is_a_clear_error_with_the_build_hint(tmp_path):
    ranker(tmp_path, "dlrm_onnx", "onnx")
    ranker(tmp_path, "dlrm_onnx_python", None)
    with pytest.raises(RepositoryError, match="no PyTorch reference") as info:
        plan_verification(scan_repository(tmp_path))
    assert "dlrm_onnx" in str(info.value)
    assert "--variant pytorch" in info.value.hint


def test_a_family_without_its_reference_is_an_error_naming_the_model(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "deepfm_onnx", "onnx")
    with pytest.raises(RepositoryError, match="no PyTorch reference for deepfm_onnx") as info:
        plan_verification(scan_repository(tmp_path))
    assert "dlrm (dlrm_pytorch)" in str(info.value)


def test_ensembles_are_planned_with_their_rankers_family_and_precision(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    ranker(tmp_path, "dlrm_onnx_int8", "onnx_int8", "int8")
    write_model(
        tmp_path,
        "dlrm_preprocess",
        {"backend": "python", "input": RAW_INPUTS, "output": RANKER_INPUTS},
        ModelMetadata(role="preprocess", variant="preprocess"),
    )
    write_model(
        tmp_path,
        "dlrm_postprocess",
        {"backend": "python", "input": PROBABILITY, "output": [{"name": "item_ids", "data_type": "TYPE_STRING", "dims": [-1]}]},
        ModelMetadata(role="postprocess", variant="postprocess"),
    )
    ensemble(
        tmp_path,
        "dlrm_ensemble",
        ["dlrm_preprocess", "dlrm_onnx_int8"],
        metadata=ModelMetadata(role="ensemble", variant="ensemble", precision="int8", ranker="dlrm_onnx_int8"),
    )
    ensemble(tmp_path, "dlrm_handmade_ensemble", ["dlrm_preprocess", "dlrm_pytorch"])  # no metadata
    topk_outputs = [
        {"name": "top_item_ids", "data_type": "TYPE_STRING", "dims": [-1]},
        {"name": "top_scores", "data_type": "TYPE_FP32", "dims": [-1]},
    ]
    ensemble(
        tmp_path,
        "dlrm_topk",
        ["dlrm_preprocess", "dlrm_pytorch", "dlrm_postprocess"],
        outputs=topk_outputs,
        metadata=ModelMetadata(role="ensemble", variant="topk", ranker="dlrm_pytorch"),
    )
    ensemble(
        tmp_path,
        "dlrm_int8_topk",
        ["dlrm_preprocess", "dlrm_onnx_int8", "dlrm_postprocess"],
        outputs=topk_outputs,
        metadata=ModelMetadata(role="ensemble", variant="topk", precision="int8", ranker="dlrm_onnx_int8"),
    )
    ensemble(
        tmp_path,
        "dlrm_other_topk",
        ["dlrm_preprocess", "dlrm_pytorch", "dlrm_postprocess"],
        outputs=[{"name": "items", "data_type": "TYPE_STRING", "dims": [-1]}],
    )
    _, by = plan_by_name(tmp_path)
    assert (by["dlrm_ensemble"].kind, by["dlrm_ensemble"].family, by["dlrm_ensemble"].precision) == ("ensemble", "dlrm", "int8")
    assert by["dlrm_ensemble"].ranker == "dlrm_onnx_int8"
    hand = by["dlrm_handmade_ensemble"]
    assert (hand.kind, hand.family, hand.precision, hand.ranker) == ("ensemble", "dlrm", "fp32", "dlrm_pytorch")
    assert "no tritonrec.json" in hand.note
    assert (by["dlrm_topk"].kind, by["dlrm_topk"].family, by["dlrm_topk"].precision) == ("topk", "dlrm", "fp32")
    assert by["dlrm_int8_topk"].kind == "skip" and "AUC budget" in by["dlrm_int8_topk"].note
    assert by["dlrm_other_topk"].kind == "skip" and "top-K" in by["dlrm_other_topk"].note
    assert by["dlrm_preprocess"].kind == "skip" and "ensembles" in by["dlrm_preprocess"].note
    assert by["dlrm_postprocess"].kind == "skip"


def test_an_ensemble_that_does_not_take_raw_features_is_skipped(tmp_path):
    ranker(tmp_path, "dlrm_pytorch", "pytorch")
    write_model(
        tmp_path,
        "dlrm_wrapped",
        {
            "platform": "ensemble",
            "input": RANKER_INPUTS,
            "output": PROBABILITY,
            "ensemble_scheduling": {"step": [{"model_name": "dlrm_pytorch", "model_version": -1}]},
        },
    )
    _, by = plan_by_name(tmp_path)
    assert by["dlrm_wrapped"].kind == "skip" and "raw-feature request" in by["dlrm_wrapped"].note


# -- the report ---------------------------------------------------------------------------------
def sample_report() -> VerifyReport:
    report = VerifyReport(
        "repo", "127.0.0.1:8001", "grpc", "data", 42, 2000, 0.99, 1e-5, references={"dlrm": {"model": "dlrm_pytorch", "auc": 0.8}}
    )
    report.results = [
        ModelResult("dlrm_onnx", "dlrm", "ranker", "onnx", "fp32", "not loaded", reason="UNAVAILABLE: no onnxruntime backend"),
        ModelResult(
            "dlrm_onnx_python", "dlrm", "ranker", "onnx_python", "fp32", "pass", 3e-8, 0.8, 0.8, Tolerance("max_abs_diff", 1e-5), 2000
        ),
        ModelResult("dlrm_pytorch", "dlrm", "ranker", "pytorch", "fp32", "reference", 0.0, 0.8, 0.8, None, 2000),
        ModelResult("dlrm_int8", "dlrm", "ranker", "onnx_int8", "int8", "fail", 0.2, 0.7, 0.8, Tolerance("auc_ratio", 0.99), 2000, "AUC"),
    ]
    return report


def test_report_json_is_written_atomically_and_says_which_model_failed(tmp_path):
    report = sample_report()
    assert not report.passed and [r.model for r in report.failed] == ["dlrm_int8"]
    path = report.write(tmp_path / "out" / "report.json")
    d = json.loads(path.read_text())
    assert d["passed"] is False
    assert d["counts"] == {"pass": 1, "fail": 1, "reference": 1, "not loaded": 1, "skipped": 0}
    assert d["tolerances"] == {"fp32_max_abs_diff": 1e-5, "auc_budget": 0.99}
    by = {m["model"]: m for m in d["models"]}
    assert by["dlrm_int8"]["tolerance"] == {"kind": "auc_ratio", "value": 0.99, "text": "AUC ≥ 0.99×ref"}
    assert by["dlrm_int8"]["max_abs_diff"] == 0.2 and by["dlrm_int8"]["auc"] == 0.7
    assert by["dlrm_onnx"]["reason"].startswith("UNAVAILABLE")
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary file left


def test_report_table_shows_every_model_with_its_numbers_and_the_notes_say_why():
    console = Console(width=250, record=True)
    report = sample_report()
    console.print(report_table(report))
    text = console.export_text()
    for expected in (
        "dlrm_onnx_python",
        "pass",
        "3.00e-08",
        "not loaded",
        "fail",
        "0.700000",
        "AUC ≥ 0.99×ref",
        "dlrm_pytorch AUC 0.800000",
    ):
        assert expected in text
    notes = report_notes(report)
    assert notes == ["dlrm_onnx (not loaded): UNAVAILABLE: no onnxruntime backend", "dlrm_int8 (fail): AUC"]


def test_serving_verify_never_imports_torch():
    code = "import sys, toolkit.serving.verify; print([m for m in ('torch', 'toolkit.train', 'toolkit.export') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_familys_rows_come_from_the_split_its_checkpoint_recorded_unless_a_seed_is_given(tmp_path, synthetic_data_dir):
    # A checkpoint trained on split seed 7 is verified on seed 7's test rows: with seed 42 (the old
    # fixed default) most of its "test" rows would be rows it was trained on.
    from toolkit.data import load_splits
    from toolkit.serving.verify import family_test_splits

    encoder = load_splits(synthetic_data_dir, seed=7).encoder
    folder = write_model(tmp_path, "dlrm_pytorch", {"backend": "python", "input": RANKER_INPUTS, "output": PROBABILITY})
    write_metadata(folder, ModelMetadata(role="ranker", variant="pytorch", source={"checkpoint": "ckpt", "split_seed": 7}))
    (old := write_model(tmp_path, "old_pytorch", {"backend": "python", "input": RANKER_INPUTS, "output": PROBABILITY}))
    write_metadata(old, ModelMetadata(role="ranker", variant="pytorch"))  # built before builds recorded the seed
    entries = {e.name: e for e in scan_repository(tmp_path)}
    assert entries["dlrm_pytorch"].split_seed == 7 and entries["old_pytorch"].split_seed is None

    def test_ids(seed):
        return load_splits(synthetic_data_dir, seed=seed, encoder=encoder).test.inputs()["sparse_ids"]

    splits, seed = family_test_splits(entries["dlrm_pytorch"], synthetic_data_dir, encoder)
    assert seed == 7 and (splits.test.inputs()["sparse_ids"] == test_ids(7)).all()
    splits, seed = family_test_splits(entries["dlrm_pytorch"], synthetic_data_dir, encoder, seed=3)
    assert seed == 3 and (splits.test.inputs()["sparse_ids"] == test_ids(3)).all()
    splits, seed = family_test_splits(entries["old_pytorch"], synthetic_data_dir, encoder)
    assert seed == 42 and (splits.test.inputs()["sparse_ids"] == test_ids(42)).all()
    assert not np.array_equal(test_ids(7), test_ids(42))

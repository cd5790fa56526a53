"""Compression of a user's own module (``tritonrec compress --model-file``, ``compress_module``): the
fixture's module with an ``nn.EmbeddingBag``, a pairwise-dot interaction that needs equal widths and
forward's arguments in another order than its signature; a student the user names; labelled rows by
input name; what is skipped without rows and what is refused, naming the module path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.compress.recipe import Recipe
from toolkit.errors import CompressError, ModelFileError
from toolkit.export import check_parity
from toolkit.models.dlrm import RowwiseInt8Embedding
from toolkit.models.user import load_model_file, random_inputs
from toolkit.optimize.module import LabelledRows, compress_module, load_labelled_rows, save_module_compression

FIXTURES = Path(__file__).parents[2] / "fixtures" / "models"
TEACHER = f"{FIXTURES / 'user_bag_model.py'}:build"
STUDENT = f"{FIXTURES / 'user_bag_student.py'}:build_small"


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    return load_model_file(TEACHER)


def _rows(model: nn.Module, n: int = 4000) -> LabelledRows:
    """Rows of the signature labelled by the module itself (above its median probability: 1), so its own AUC is 1."""
    x = random_inputs(model.config.inputs, n, seed=9)
    with torch.no_grad():
        p = model(**x).numpy().ravel()
    return LabelledRows({k: v.numpy() for k, v in x.items()}, (p > np.median(p)).astype(np.float32))


def _recipe(*steps: dict, **fields) -> Recipe:
    return Recipe.model_validate({"steps": list(steps), **fields})


def test_without_rows_what_needs_them_is_skipped_and_the_onnx_answers_like_the_compressed_module(teacher, tmp_path) -> None:
    recipe = _recipe({"kind": "distill"}, {"kind": "prune", "ratio": 0.5}, {"kind": "quantize_embeddings"})
    result = compress_module(teacher, recipe=recipe, workdir=tmp_path / "work")
    outcomes = {o.kind: o for o in result.outcomes}

    assert [o.kind for o in result.outcomes] == ["distill", "prune", "quantize_embeddings", "onnx_export", "auc_check"]
    assert outcomes["distill"].status == "refused" and "name a student (--student-file" in outcomes["distill"].reason
    assert outcomes["prune"].status == "applied" and "not fine-tuned: no labelled rows" in outcomes["prune"].reason
    # the interaction's equal widths (dense_tower.2 = E) and the output layer (head.2) keep their width, found from the graph
    assert "dense_tower.0 16 -> 8, head.0 16 -> 8" in outcomes["prune"].reason
    assert (result.model.dense_tower[2].out_features, result.model.head[2].out_features) == (8, 1)
    assert isinstance(result.model.user, RowwiseInt8Embedding)
    assert outcomes["auc_check"].status == "skipped" and "no labelled rows" in outcomes["auc_check"].reason
    assert [s.kind for s in result.recipe.steps] == ["prune", "quantize_embeddings"]

    # no ONNX step: the served file is the export, which answers what the compressed module answers
    rows = {k: v.numpy() for k, v in random_inputs(teacher.config.inputs, 512, seed=21).items()}
    assert check_parity(result.model, result.onnx_path, rows, atol=1e-5).passed  # FP32 kernels differ by ulps
    out = save_module_compression(result, tmp_path / "out")
    report = json.loads((out / "report.json").read_text())
    assert report["embedding_bytes"]["after"] < 0.4 * report["embedding_bytes"]["before"]  # (8 + 3) / 32 per row

    # a checkpoint, not skipped.json: its config records the pruned widths, structure.json the int8 tables and bag
    from toolkit.train import load_checkpoint

    assert not (out / "skipped.json").exists()
    structure = json.loads((out / "checkpoint" / "structure.json").read_text())
    assert {e["path"]: e["type"] for e in structure["replaced_modules"]} == {
        "user": "RowwiseInt8Embedding",
        "item": "RowwiseInt8Embedding",
        "genres": "RowwiseInt8EmbeddingBag",
    }
    loaded = load_checkpoint(out / "checkpoint").model
    assert type(loaded.genres).__name__ == "RowwiseInt8EmbeddingBag" and loaded.genres.mode == "sum"
    assert loaded.head[0].out_features == 8
    # the same modules, the same int8 buffers, the same kernels: the answers are equal, not close
    tensors = {k: torch.from_numpy(v) for k, v in rows.items()}
    with torch.no_grad():
        assert torch.equal(loaded(**tensors), result.model(**tensors))


def test_a_checkpoint_whose_bag_entry_does_not_fit_is_refused_naming_the_file_and_the_module(teacher, tmp_path) -> None:
    from toolkit.errors import CheckpointError
    from toolkit.train import load_checkpoint

    result = compress_module(teacher, recipe=_recipe({"kind": "quantize_embeddings"}), workdir=tmp_path / "work")
    path = save_module_compression(result, tmp_path / "out") / "checkpoint"
    structure = json.loads((path / "structure.json").read_text())
    bag = next(e for e in structure["replaced_modules"] if e["path"] == "genres")
    bag["mode"] = "mean"  # the config builds a sum bag
    (path / "structure.json").write_text(json.dumps(structure))
    with pytest.raises(
        CheckpointError, match=r"module genres: recorded with \{'mode': 'mean'.*builds an nn.EmbeddingBag with \{'mode': 'sum'"
    ) as info:
        load_checkpoint(path)
    assert str(path / "structure.json") in str(info.value)


def test_a_pruned_module_is_saved_as_a_checkpoint_that_rebuilds_its_widths(teacher, tmp_path) -> None:
    from toolkit.train import load_checkpoint

    result = compress_module(teacher, recipe=_recipe({"kind": "prune", "ratio": 0.5}), workdir=tmp_path / "work")
    out = save_module_compression(result, tmp_path / "out")
    loaded = load_checkpoint(out / "checkpoint").model
    assert loaded.head[0].out_features == 8 and type(loaded).__name__ == "UserBagModel"
    rows = random_inputs(teacher.config.inputs, 64, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(**rows), result.model(**rows))


class _FactorizationMachine(nn.Module):
    """Embeddings and a second-order term only: no nn.Linear to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.fields = nn.Embedding(30, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = self.fields(ids)  # (B, F, E)
        return torch.sigmoid(0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1, keepdim=True))


def test_a_module_without_linear_layers_is_refused_by_prune_and_the_other_steps_still_run(tmp_path) -> None:
    recipe = _recipe({"kind": "prune"}, {"kind": "quantize_embeddings"})
    signature = {"ids": {"dtype": "int64", "shape": (None, 3), "high": 30}}
    result = compress_module(_FactorizationMachine(), signature, recipe, workdir=tmp_path)
    outcomes = {o.kind: o for o in result.outcomes}

    assert outcomes["prune"].status == "refused"
    assert "_FactorizationMachine has no nn.Linear layers (it has Embedding)" in outcomes["prune"].reason
    assert outcomes["quantize_embeddings"].status == "applied" and outcomes["onnx_export"].status == "applied"
    assert isinstance(result.model.fields, RowwiseInt8Embedding)


def test_the_cli_compresses_a_model_file_into_its_student_with_labelled_rows(teacher, tmp_path) -> None:
    rows = _rows(teacher)
    np.savez(tmp_path / "rows.npz", **rows.features, label=rows.labels)
    recipe = tmp_path / "recipe.json"
    # the labels are the teacher's own (its AUC is 1): the budget here only has to be reported, not met by a tiny student
    recipe.write_text(
        json.dumps(
            {
                "min_auc_ratio": 0.5,
                "steps": [
                    {"kind": "distill", "max_epochs": 6, "learning_rate": 0.05},
                    {"kind": "prune", "ratio": 0.5, "finetune_epochs": 1},
                    {"kind": "quantize_embeddings"},
                    {"kind": "onnx_dynamic_int8"},
                ],
            }
        )
    )
    out = tmp_path / "out"
    args = ["compress", "--model-file", TEACHER, "--student-file", STUDENT, "--rows", str(tmp_path / "rows.npz")]
    done = CliRunner().invoke(app, [*args, "--recipe", str(recipe), "--out", str(out), "--rounds", "1"])
    assert done.exit_code == 0, (done.output, done.exception)

    report = json.loads((out / "report.json").read_text())
    status = {s["kind"]: s["status"] for s in report["steps"]}
    steps = ["distill", "prune", "quantize_embeddings", "onnx_export", "onnx_dynamic_int8", "auc_check", "timing"]
    assert status == dict.fromkeys(steps, "applied")
    timing = report["timing"]  # one round here: the numbers are recorded, this test does not judge them
    assert set(timing) == {"pytorch", "onnx", "compressed", "rounds"} and timing["compressed"]["throughput_rps_b256"] > 0
    assert "distilled into the student SmallBagModel" in report["steps"][0]["reason"]
    assert report["params"]["after"] < report["params"]["before"] / 2
    assert report["within_budget"] is True and report["test"]["rows"] == 400
    # chance is 0.5: the student (a concatenation) learned part of the teacher's pairwise-dot ranking in 6 epochs
    assert report["test"]["compressed"]["auc"] > 0.6
    assert json.loads((out / "recipe.json").read_text())["steps"][-1]["kind"] == "onnx_dynamic_int8"
    assert "UserBagModel: what each step did" in done.output
    assert f"tritonrec build --model-file {STUDENT} --onnx {out / 'model.onnx'}" in " ".join(done.output.split())  # the student serves


def test_rows_that_do_not_fit_the_signature_are_refused_naming_the_array(teacher, tmp_path) -> None:
    rows = _rows(teacher, 50)
    cases = {
        "missing": ({k: v for k, v in rows.features.items() if k != "dense"}, rows.labels, r"lacks \['dense'\]"),
        "shape": (
            {**rows.features, "dense": rows.features["dense"][:, :2]},
            rows.labels,
            r"'dense' has shape \(50, 2\), expected \(50, 3\)",
        ),
        "ids": (
            {**rows.features, "user_item": rows.features["user_item"] + 40},
            rows.labels,
            r"'user_item' holds ids in \[\d+, \d+\], expected \[0, 40\)",
        ),
        "floats": (
            {**rows.features, "genre_ids": rows.features["genre_ids"].astype(float)},
            rows.labels,
            "'genre_ids' is float64, expected integer ids",
        ),
        "labels": (rows.features, rows.labels * 2, "'label' must be"),
    }
    for name, (features, labels, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **features, label=labels)
        with pytest.raises(CompressError, match=message):
            load_labelled_rows(path, teacher.config.inputs)
    with pytest.raises(CompressError, match="rows file .*nope.npz does not exist"):
        load_labelled_rows(tmp_path / "nope.npz", teacher.config.inputs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["some/checkpoint", "--model-file", TEACHER], "not both"),
        (["--student-file", STUDENT], "--student-file .* goes with --model-file"),
    ],
)
def test_the_cli_refuses_options_that_do_not_go_together(tmp_path, args, message) -> None:
    done = CliRunner().invoke(app, ["compress", *args, "--out", str(tmp_path / "out")])
    assert isinstance(done.exception, ModelFileError), done.output
    assert __import__("re").search(message, str(done.exception))
    assert not (tmp_path / "out").exists()


def test_the_checkpoint_pipeline_leaves_out_a_step_that_cannot_apply_and_runs_the_rest() -> None:
    from toolkit.compress.errors import StepRefused
    from toolkit.compress.recipe import QuantizeEmbeddingsConfig
    from toolkit.optimize.pipeline import apply_torch_steps

    model = nn.Sequential(nn.Linear(3, 1), nn.Sigmoid())
    refused: dict[str, str] = {}
    out = apply_torch_steps(model, [QuantizeEmbeddingsConfig()], None, refused=refused)
    assert isinstance(out[0], nn.Linear)
    assert list(refused) == ["quantize_embeddings"]
    assert "Sequential has no nn.Embedding or nn.EmbeddingBag (it has Linear, Sigmoid)" in refused["quantize_embeddings"]
    with pytest.raises(StepRefused):  # without a record to fill, the refusal is raised
        apply_torch_steps(model, [QuantizeEmbeddingsConfig()], None)


def test_a_registered_architecture_without_its_feature_rows_gets_int8_tables_and_skips_what_needs_rows(tmp_path) -> None:
    from toolkit.models import get_architecture

    arch = get_architecture("dcnv2")
    model = arch.build(arch.config_class(num_dense=2, sparse_cardinalities=[11, 13], embedding_dim=8)).eval()
    recipe = _recipe({"kind": "distill"}, {"kind": "prune"}, {"kind": "quantize_embeddings"})
    result = compress_module(model, recipe=recipe, workdir=tmp_path)
    status = {o.kind: o.status for o in result.outcomes}

    assert status == {
        "distill": "skipped",
        "prune": "skipped",
        "quantize_embeddings": "applied",
        "onnx_export": "applied",
        "auc_check": "skipped",
    }
    assert "pruned by its architecture's MLP blocks" in result.outcomes[1].reason  # not Torch-Pruning's whole-graph search
    rows = {k: v.numpy() for k, v in arch.example_inputs(model.config, 256, seed=4).items()}
    assert check_parity(result.model, result.onnx_path, rows, atol=1e-5).passed

"""The `tritonrec` command as a user runs it: real subprocesses, exit codes and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.repository import read_config


def tritonrec(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=None
    )


def assert_clean_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, an `error:` line naming each fragment, and no traceback."""
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "error:" in out and "Traceback" not in out, out
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out}"


@pytest.mark.parametrize("command", ["train", "export", "build", "validate", "verify", "serve", "infer", "demo", "data"])
def test_every_command_explains_itself_with_help(command):
    # in-process (the same Typer app the console script runs): a subprocess per command would
    # spend ~5 s importing torch just to print help
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    done = CliRunner().invoke(app, [command, "--help"])
    assert done.exit_code == 0, done.output
    assert "Usage:" in done.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, synthetic_data_dir):
    """train → export → build through the CLI on the small synthetic data set."""
    root = tmp_path_factory.mktemp("cli")
    ckpt, onnx, repo = root / "checkpoint", root / "onnx" / "model.onnx", root / "model_repository"
    done = tritonrec("train", "--data-dir", synthetic_data_dir, "--out", ckpt, "--max-epochs", "4", "--learning-rate", "0.01")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "logistic regression" in done.stdout and "test AUC" in done.stdout
    done = tritonrec("export", ckpt, "--out", onnx, "--data-dir", synthetic_data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    done = tritonrec("build", "--checkpoint", ckpt, "--onnx", onnx, "--repository", repo)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"root": root, "checkpoint": ckpt, "onnx": onnx, "repository": repo, "data": synthetic_data_dir}


def test_pipeline_writes_checkpoint_onnx_with_parity_report_and_repository(pipeline):
    assert (pipeline["checkpoint"] / "model.pt").is_file()
    assert (pipeline["onnx"].parent / "parity.json").is_file()
    assert (pipeline["onnx"].parent / "model.onnx.data").is_file()
    for name in ("dlrm_pytorch", "dlrm_onnx", "dlrm_onnx_python"):
        assert read_config(pipeline["repository"] / name / "config.pbtxt").max_batch_size == 256


def test_build_samples_real_training_rows_and_says_why_when_it_cannot(tmp_path, pipeline):
    # what `tritonrec build` and `tritonrec demo` give the builder: the checkpoint's first training rows,
    # or None with one note line when the data folder cannot be read (the builder then uses random rows)
    from toolkit.repository.rows import SAMPLE_ROWS, checkpoint_sample_rows

    notes: list[str] = []
    rows = checkpoint_sample_rows(pipeline["checkpoint"], pipeline["data"], on_note=notes.append)
    assert rows is not None and notes == []
    assert {len(v) for v in rows.values()} == {SAMPLE_ROWS}
    (tmp_path / "empty").mkdir()
    assert checkpoint_sample_rows(pipeline["checkpoint"], tmp_path / "empty", on_note=notes.append) is None
    assert len(notes) == 1 and notes[0].startswith(f"no real sample rows from {tmp_path / 'empty'}"), notes
    assert checkpoint_sample_rows(pipeline["checkpoint"], tmp_path / "missing", on_note=notes.append) is None and len(notes) == 1


def test_missing_dataset_folder_is_one_clear_line(tmp_path):
    assert_clean_error(tritonrec("data", "info", "--data-dir", tmp_path / "nowhere"), "nowhere", "does not exist", "hint:")


def test_truncated_dataset_file_names_file_and_line(tmp_path, synthetic_data_dir):
    data = tmp_path / "ml-100k"
    shutil.copytree(synthetic_data_dir, data)
    inter = data / "ml-100k.inter"
    inter.write_bytes(inter.read_bytes()[:5000].rsplit(b"\t", 1)[0])  # cut in the middle of a row
    assert_clean_error(tritonrec("train", "--data-dir", data, "--out", tmp_path / "ckpt"), "ml-100k.inter:", "truncated")
    assert not (tmp_path / "ckpt").exists()


def test_corrupt_checkpoint_is_refused_and_previous_onnx_kept(tmp_path, pipeline):
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(pipeline["checkpoint"], ckpt)
    (ckpt / "model.pt").write_bytes((ckpt / "model.pt").read_bytes()[:300])
    onnx = tmp_path / "model.onnx"
    shutil.copyfile(pipeline["onnx"], onnx)
    shutil.copyfile(pipeline["onnx"].with_name("model.onnx.data"), tmp_path / "model.onnx.data")
    before = onnx.read_bytes()
    assert_clean_error(tritonrec("export", ckpt, "--out", onnx, "--data-dir", pipeline["data"]), "model.pt", "corrupt")
    assert onnx.read_bytes() == before


def test_fixed_batch_onnx_under_batching_offers_both_fixes_and_keeps_repository(tmp_path, pipeline):
    from toolkit.export import export_onnx
    from toolkit.models import dlrm_example_inputs
    from toolkit.train import load_checkpoint

    ckpt = load_checkpoint(pipeline["checkpoint"])
    fixed = export_onnx(
        ckpt.model, dlrm_example_inputs(ckpt.config, 16), ["probability"], tmp_path / "fixed" / "model.onnx", dynamic_batch=False
    )
    repo = tmp_path / "repo"
    shutil.copytree(pipeline["repository"], repo)
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    done = tritonrec("build", "--checkpoint", pipeline["checkpoint"], "--onnx", fixed, "--repository", repo)
    assert_clean_error(done, "fixed batch dimension of 16", "--max-batch-size 0", "re-export")
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_dynamic_batching_with_max_batch_size_zero_is_refused_before_writing(tmp_path, pipeline):
    args = ("build", "--checkpoint", pipeline["checkpoint"], "--onnx", pipeline["onnx"], "--repository", tmp_path / "r")
    done = tritonrec(*args, "--max-batch-size", "0", "--dynamic-batching")
    # max_batch_size 0 with dynamic batching asked for is contradictory: say so, write nothing
    assert_clean_error(done, "dynamic_batching needs max_batch_size >= 1")
    assert not (tmp_path / "r").exists()


def test_max_batch_size_zero_alone_turns_batching_off(tmp_path, pipeline):
    args = ("build", "--checkpoint", pipeline["checkpoint"], "--onnx", pipeline["onnx"], "--repository", tmp_path / "r")
    done = tritonrec(*args, "--max-batch-size", "0", "--variant", "onnx_python", "--no-ensembles")
    assert done.returncode == 0, done.stdout + done.stderr
    config = read_config(tmp_path / "r" / "dlrm_onnx_python" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [len(t.dims) for t in config.input] == [2, 2, 2]  # the batch dimension is part of dims


def test_compress_writes_model_recipe_and_report_and_fails_outside_the_budget(tmp_path, pipeline):
    import json

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"name": "fp16", "steps": [{"kind": "onnx_fp16"}]}))
    out = tmp_path / "compressed"
    done = tritonrec("compress", pipeline["checkpoint"], "--recipe", recipe, "--out", out, "--data-dir", pipeline["data"], "--rounds", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("model.onnx", "recipe.json", "report.json", "report.md", "checkpoint/model.pt"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["fp32_pytorch", "fp32_onnx", "fp16"]
    assert "tritonrec compress" in report["command"] and report["machine"]["cores"] >= 1

    strict = tmp_path / "strict.json"
    strict.write_text(
        json.dumps({"name": "overpruned", "min_auc_ratio": 0.999, "steps": [{"kind": "prune", "ratio": 0.95, "finetune_epochs": 0}]})
    )
    done = tritonrec(
        "compress", pipeline["checkpoint"], "--recipe", strict, "--out", tmp_path / "o2", "--data-dir", pipeline["data"], "--rounds", "1"
    )
    assert done.returncode == 1
    assert "below the budget" in done.stdout


def test_compress_refuses_a_bad_recipe_naming_the_field(tmp_path, pipeline):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"steps": [{"kind": "prune", "ratio": 1.5}]}')
    done = tritonrec("compress", pipeline["checkpoint"], "--recipe", recipe, "--out", tmp_path / "o", "--data-dir", pipeline["data"])
    assert_clean_error(done, "recipe.json", "ratio")
    assert not (tmp_path / "o").exists()


def test_a_bad_option_value_is_a_usage_error_not_a_traceback():
    done = tritonrec("infer", "--model", "m", "--protocol", "carrier-pigeon")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "carrier-pigeon" in out and "Traceback" not in out


def test_validate_passes_a_built_repository_and_names_model_field_and_fix_of_a_broken_one(tmp_path, pipeline):
    done = tritonrec("validate", pipeline["repository"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout

    repo = tmp_path / "repo"
    shutil.copytree(pipeline["repository"], repo)
    config = repo / "dlrm_onnx_python" / "config.pbtxt"
    config.write_text(config.read_text().replace("dynamic_batching {", "dynamic_batching {\n  preferred_batch_size: 512", 1))
    done = tritonrec("validate", repo, "--out", tmp_path / "findings.json")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "dlrm_onnx_python" in out and "preferred_batch_size" in out and "512" in out
    config.write_text(
        config.read_text().replace(
            'name: "probability"\n  data_type: TYPE_FP32\n  dims: 1', 'name: "probability"\n  data_type: TYPE_FP32\n  dims: -1\n  dims: 1'
        )
    )
    out = tritonrec("validate", repo).stdout
    assert "output[probability].dims" in out  # field names in brackets survive rich's markup
    assert "dlrm_onnx_python" in (tmp_path / "findings.json").read_text()


def test_validate_of_a_missing_folder_is_one_clear_line(tmp_path):
    assert_clean_error(tritonrec("validate", tmp_path / "nope"), "nope", "is not a folder")


def test_build_file_sets_the_configs_and_per_variant_overrides(tmp_path, pipeline):
    build_file = tmp_path / "build.json"
    build_file.write_text(
        '{"variants": ["pytorch", "onnx_python"], "ensembles": false,'
        ' "model": {"max_batch_size": 128, "preferred_batch_sizes": [32], "max_queue_size": 64},'
        ' "overrides": {"pytorch": {"max_batch_size": 64}}}'
    )
    repo = tmp_path / "repo"
    args = ("build", "--checkpoint", pipeline["checkpoint"], "--onnx", pipeline["onnx"], "--repository", repo)
    done = tritonrec(*args, "--build-file", build_file, "--max-queue-delay-us", "500")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["dlrm_onnx_python", "dlrm_pytorch"]
    python, torch_model = read_config(repo / "dlrm_onnx_python" / "config.pbtxt"), read_config(repo / "dlrm_pytorch" / "config.pbtxt")
    assert (python.max_batch_size, torch_model.max_batch_size) == (128, 64)
    assert list(python.dynamic_batching.preferred_batch_size) == [32]
    assert python.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert python.dynamic_batching.max_queue_delay_microseconds == 500  # the command line wins over the file
    assert [w.batch_size for w in python.model_warmup] == [1]


def test_a_bad_build_file_names_the_file_and_field_and_writes_nothing(tmp_path, pipeline):
    build_file = tmp_path / "build.json"
    build_file.write_text('{"model": {"max_batch_size": "32"}}')
    repo = tmp_path / "repo"
    done = tritonrec(
        "build", "--checkpoint", pipeline["checkpoint"], "--onnx", pipeline["onnx"], "--repository", repo, "--build-file", build_file
    )
    assert_clean_error(done, "build.json", "model.max_batch_size")
    assert not repo.exists()


def test_target_gpu_without_a_gpu_skips_tensorrt_with_the_reason(tmp_path, pipeline):
    repo = tmp_path / "repo"
    args = ("build", "--checkpoint", pipeline["checkpoint"], "--onnx", pipeline["onnx"], "--repository", repo, "--target", "gpu")
    done = tritonrec(*args, "--variant", "onnx", "--variant", "tensorrt", "--no-ensembles")
    out = done.stdout + done.stderr
    from toolkit.export.tensorrt import tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT can be built here")
    assert done.returncode == 0, out
    assert "skipped tensorrt" in out and "TensorRT needs" in out
    assert sorted(p.name for p in repo.iterdir()) == ["dlrm_onnx"]
    assert read_config(repo / "dlrm_onnx" / "config.pbtxt").instance_group[0].kind == 1  # KIND_GPU

"""`tritonrec train --model NAME` trains the registered architecture NAME; an unknown one is one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def tritonrec(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_train_export_build_with_model_deepfm_make_deepfm_models(tmp_path: Path, synthetic_data_dir: Path) -> None:
    ckpt, onnx, repo = tmp_path / "ckpt", tmp_path / "onnx" / "model.onnx", tmp_path / "repo"
    done = tritonrec("train", "--model", "deepfm", "--data-dir", synthetic_data_dir, "--out", ckpt, "--max-epochs", "1", "--no-baselines")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "DeepFM" in done.stdout
    assert json.loads((ckpt / "model_config.json").read_text())["architecture"] == "deepfm"
    assert json.loads((ckpt / "metrics.json").read_text())["architecture"] == "deepfm"
    done = tritonrec("export", ckpt, "--out", onnx, "--data-dir", synthetic_data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((onnx.parent / "parity.json").read_text())["max_abs_diff"] <= 1e-5
    done = tritonrec("build", "--checkpoint", ckpt, "--onnx", onnx, "--repository", repo, "--variant", "pytorch", "--no-ensembles")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["deepfm_pytorch"]  # named after the checkpoint's architecture
    assert json.loads((repo / "deepfm_pytorch" / "1" / "architecture.json").read_text())["model_class"] == "DeepFM"


def test_train_with_an_unknown_model_lists_the_registered_ones(tmp_path: Path, synthetic_data_dir: Path) -> None:
    done = tritonrec("train", "--model", "xdeepfm", "--data-dir", synthetic_data_dir, "--out", tmp_path / "ckpt")
    out = done.stdout + done.stderr

    assert done.returncode == 1 and "Traceback" not in out, out
    assert "unknown architecture 'xdeepfm'; registered: dcnv2, deepfm, dlrm" in out
    assert not (tmp_path / "ckpt").exists()


def test_export_of_a_file_that_is_not_a_checkpoint_says_what_is_accepted(tmp_path: Path, synthetic_data_dir: Path) -> None:
    (tmp_path / "my_model.pt").write_bytes(b"a whole pickled module")
    done = tritonrec("export", tmp_path / "my_model.pt", "--out", tmp_path / "model.onnx", "--data-dir", synthetic_data_dir)
    out = done.stdout + done.stderr

    assert done.returncode == 1 and "Traceback" not in out, out
    assert "is a file, not a checkpoint" in out and "does not exist" not in out
    assert "--model-file my_model.py:build" in out  # the way in for a model of their own

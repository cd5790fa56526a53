"""`pip install <repo>` into a fresh virtualenv, as a user would, gives a working `tritonrec`.

Run by default (`make test` runs plain pytest); skipped only when the package index cannot be
reached. pip may use its cache and the machine's local wheels (torch), as for any user; the
sources are copied first, so that pip's in-tree build leaves nothing in the checkout. About
1-3 minutes on 2 cores, most of it installing torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
name: "ranker"
platform: "onnxruntime_onnx"
max_batch_size: 32
input { name: "dense_features" data_type: TYPE_FP32 dims: [2] }
output { name: "probability" data_type: TYPE_FP32 dims: [2] }
instance_group { count: 1 kind: KIND_CPU }
"""


def _index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True)
        url = done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "https://pypi.org/simple"
    return url.rstrip("/") + "/"


def _skip_unless_index_reachable() -> None:
    url = _index_url()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "pip/", method="HEAD"), timeout=15):
            pass
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
            return  # the index answered
        pytest.skip(f"the package index {url} cannot be reached ({exc}): `pip install` needs it")


def _ranker(path: Path, batch: int | str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["dense_features"], ["probability"])],
        "ranker",
        [helper.make_tensor_value_info("dense_features", TensorProto.FLOAT, [batch, 2])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [batch, 2])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(helper.make_model(graph), str(path))


def test_pip_install_gives_a_working_tritonrec(tmp_path: Path) -> None:
    _skip_unless_index_reachable()
    source = tmp_path / "tritonrec"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "toolkit", source / "toolkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    venv = tmp_path / "venv"
    try:
        _install_and_run(tmp_path, source, venv, env)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # 1.4 GB (torch); pytest keeps the last three tmp folders


def _install_and_run(tmp_path: Path, source: Path, venv: Path, env: dict[str, str]) -> None:

    def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)

    done = run(sys.executable, "-m", "venv", venv)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", source, timeout=900)
    assert done.returncode == 0, f"pip install {source} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    done = run(venv / "bin" / "python", "-c", "import toolkit; print(toolkit.__file__)")
    assert str(venv) in done.stdout, done.stdout + done.stderr  # the installed copy, not the checkout

    tritonrec = venv / "bin" / "tritonrec"
    done = run(tritonrec, "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    for command in ("build", "compress", "validate", "serve", "perf"):
        assert command in done.stdout, done.stdout

    # one real command: validate a small repository, then the same one with an ONNX file that
    # fixes the batch at 16 while the config batches up to 32
    repository = tmp_path / "model_repository"
    (repository / "ranker").mkdir(parents=True)
    (repository / "ranker" / "config.pbtxt").write_text(CONFIG)
    _ranker(repository / "ranker" / "1" / "model.onnx", "batch")
    done = run(tritonrec, "validate", repository, "--out", tmp_path / "findings.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checked 1 model(s)" in done.stdout and "valid" in done.stdout, done.stdout
    assert (tmp_path / "findings.json").read_text().strip() == "[]"
    _ranker(repository / "ranker" / "1" / "model.onnx", 16)
    done = run(tritonrec, "validate", repository, "--out", tmp_path / "findings.json")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    findings = json.loads((tmp_path / "findings.json").read_text())
    assert findings and {(f["model"], f["severity"]) for f in findings} == {("ranker", "error")}, findings
    assert any("fixed batch dimension of 16" in f["message"] for f in findings), findings

    # the core install has no [perf] extra: perf says how to get it instead of a traceback
    if run(venv / "bin" / "python", "-c", "import matplotlib").returncode != 0:
        done = run(tritonrec, "perf")
        out = done.stdout + done.stderr
        assert done.returncode == 1 and "Traceback" not in out, out
        assert "hint: pip install 'tritonrec[perf]'" in out, out

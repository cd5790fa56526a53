"""Triton's own reason for every model that did not load, in `model_states`, `tritonrec serve` and `tritonrec verify`.

Models refused while their config is read (a config.pbtxt that does not parse, a folder name
that differs from the config's) and ensembles refused when their steps are checked are listed
by Triton's repository index with no state and no reason: the reason is only in its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from toolkit.repository import build_repository
from toolkit.serving import TritonServer, free_ports
from toolkit.serving.verify import verify_repository

pytestmark = pytest.mark.integration

ECHO = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
"""
GOOD = """
name: "NAME"
backend: "python"
max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [3] }
output { name: "y" data_type: TYPE_FP32 dims: [3] }
"""
BAD_ENSEMBLE = """
name: "bad_ensemble"
platform: "ensemble"
max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [3] }
output { name: "y" data_type: TYPE_FP32 dims: [3] }
ensemble_scheduling {
  step { model_name: "echo" model_version: -1 input_map { key: "not_x" value: "x" } output_map { key: "y" value: "y" } }
}
"""
# model -> (config.pbtxt, what Triton's reason must say)
BROKEN = {
    "does_not_parse": (
        GOOD.replace("max_batch_size: 8", "max_batch_size: eight"),
        ("failed to read text proto", "Expected integer, got: eight"),
    ),
    "named_otherwise": (GOOD.replace('"NAME"', '"another_name"'), ("directory name must equal model name",)),
    "bad_ensemble": (BAD_ENSEMBLE, ("mapping to non-existing input not_x in model echo",)),
    "onnx_platform": (GOOD.replace('backend: "python"', 'platform: "onnxruntime_onnx"'), ("backend library for backend 'onnxruntime'",)),
}


def _repository(root: Path) -> Path:
    repo = root / "model_repository"
    for name, text in {"echo": GOOD, **{n: t for n, (t, _) in BROKEN.items()}}.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(text.replace("NAME", name))
        if "python" in text:
            (repo / name / "1" / "model.py").write_text(textwrap.dedent(ECHO))
    (repo / "onnx_platform" / "1" / "model.onnx").write_bytes(b"not read: the backend is missing")
    return repo


def _ports() -> dict[str, int]:
    return dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))


def test_every_model_that_did_not_load_has_triton_s_reason_even_when_its_config_was_refused(tmp_path: Path) -> None:
    with TritonServer(_repository(tmp_path), **_ports()) as server:
        states = {s.name: s for s in server.model_states()}

    assert states["echo"].state == "READY" and states["echo"].reason == ""
    for name, (_, fragments) in BROKEN.items():
        assert states[name].state != "READY"
        for fragment in fragments:
            assert fragment in states[name].reason, states[name]
    assert states["does_not_parse"].state == ""  # Triton lists it without a state: the config was never read
    assert "config.pbtxt: 4:17: Expected integer" in states["does_not_parse"].reason  # protobuf's line:column


def test_tritonrec_serve_lists_each_refused_model_with_its_reason(tmp_path: Path) -> None:
    ports = _ports()
    args = [str(_repository(tmp_path))] + [f"--{k.replace('_', '-')}={v}" for k, v in ports.items()]
    env = {**os.environ, "COLUMNS": "400"}  # one table row per line
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            if "Serving; press Ctrl-C" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:  # serve stops its server within 30 s (SIGINT, then SIGKILL) and exits
            rest, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            import psutil  # never leave it (or the server it started) running for the next test

            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            rest, _ = proc.communicate()
            pytest.fail("tritonrec serve did not exit within 90 s of Ctrl-C:\n" + "".join(lines) + rest)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 5}
    assert "READY" in rows["echo"]
    for name, (_, fragments) in BROKEN.items():
        assert all(fragment in rows[name] for fragment in fragments), rows[name]
    assert "NOT LOADED" in rows["does_not_parse"] and "UNAVAILABLE" in rows["onnx_platform"]
    assert "loads in the stock container" in rows["onnx_platform"]  # explain_load_failure's words first


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory, synthetic_splits, synthetic_data_dir) -> SimpleNamespace:
    """A PyTorch reference built from a random small DLRM, and a copy of it whose config does not parse,
    verified by a server verify starts and by one it is pointed at (--url: no log to read)."""
    import torch

    from toolkit.models import DLRM
    from toolkit.train import TrainConfig, dlrm_config_for, save_checkpoint

    root = tmp_path_factory.mktemp("verify_reasons")
    torch.manual_seed(0)
    model = DLRM(dlrm_config_for(synthetic_splits.encoder, TrainConfig(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])))
    checkpoint = save_checkpoint(root / "checkpoint", model, synthetic_splits.encoder, {"test_auc": 0.5})
    repo = root / "model_repository"
    build_repository(repo, checkpoint=checkpoint, variants=["pytorch"])
    shutil.copytree(repo / "dlrm_pytorch", repo / "dlrm_broken")
    (repo / "dlrm_broken" / "config.pbtxt").write_text('name: "dlrm_broken"\nmax_batch_size: eight\n')
    (repo / "dlrm_broken" / "tritonrec.json").unlink()  # a hand-made copy, not a second reference
    own = verify_repository(repo, data_dir=synthetic_data_dir, n_rows=64)
    with TritonServer(repo, **_ports()) as server:
        remote = verify_repository(repo, data_dir=synthetic_data_dir, url=server.grpc_url, n_rows=64)
    return SimpleNamespace(own=own, remote=remote)


def test_verify_reports_a_model_whose_config_triton_refused_with_triton_s_reason(verified) -> None:
    results = {r.model: r for r in verified.own.results}
    assert results["dlrm_pytorch"].status == "reference"
    assert results["dlrm_broken"].status == "not loaded"
    assert "failed to read text proto" in results["dlrm_broken"].reason
    assert "Expected integer, got: eight" in results["dlrm_broken"].reason


def test_verify_against_a_running_server_says_triton_gave_no_reason_and_what_validate_finds(verified) -> None:
    broken = next(r for r in verified.remote.results if r.model == "dlrm_broken")
    assert broken.status == "not loaded"
    assert "Triton gives no reason in its repository index" in broken.reason
    assert "tritonrec validate: config.pbtxt: not a valid Triton ModelConfig" in broken.reason
    assert "eight" in broken.reason

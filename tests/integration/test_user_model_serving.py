"""A user's own model (``tests/fixtures/models/user_bag_model.py:build``: an EmbeddingBag, a pairwise-dot
interaction, forward's arguments in another order than its signature) through ``tritonrec export
--model-file`` and ``tritonrec build --model-file``, served on the bundled Triton server.

The ``pytorch`` variant runs the user's own class in the torch runner, rebuilt from the file text
its ``model_config.json`` carries; ``onnx_python`` runs the export. Both must answer what the
module's own ``forward`` answers on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.models import architecture_of
from toolkit.models.user import load_model_file
from toolkit.serving import InferenceClient, TritonServer, free_ports

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "fixtures" / "models" / "user_bag_model.py"
# 1e-5 in probability: FP32 kernels of ONNX Runtime and PyTorch (and the batch sizes Triton forms) differ by ulps.
ATOL = 1e-5


def _cli(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, (done.output, done.exception)
    return done.output


def test_a_users_module_from_a_file_is_exported_built_and_served_like_its_own_forward(tmp_path):
    spec = f"{FIXTURE}:build"
    onnx = tmp_path / "onnx" / "model.onnx"
    repository = tmp_path / "model_repository"
    _cli("export", "--model-file", spec, "--out", str(onnx))
    parity = json.loads((onnx.parent / "parity.json").read_text())
    assert parity["passed"] and parity["n_rows"] == 1024 and parity["model_file"] == str(FIXTURE.resolve())
    _cli(
        "build",
        "--model-file",
        spec,
        "--onnx",
        str(onnx),
        "--repository",
        str(repository),
        "--variant",
        "pytorch",
        "--variant",
        "onnx_python",
    )
    assert sorted(p.name for p in repository.iterdir() if p.is_dir()) == ["user_bag_model_onnx_python", "user_bag_model_pytorch"]
    served_config = json.loads((repository / "user_bag_model_pytorch" / "1" / "model_config.json").read_text())
    assert served_config["architecture"] == "user" and served_config["source"] == FIXTURE.read_text()

    model = load_model_file(spec)
    rows = {k: v.numpy() for k, v in architecture_of(model).example_inputs(model.config, 300, seed=11).items()}
    with torch.no_grad():
        # by position, in forward's order (genre_ids, dense, user_item): the module's own call
        want = model(*(torch.from_numpy(rows[n]) for n in ("genre_ids", "dense", "user_item")))
    want = want.numpy().reshape(-1)
    assert want.std() > 1e-3  # the rows get different scores, so a swapped input would show

    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repository, **ports) as server:
        states = {m.name: m.state for m in server.model_states()}
        for variant in ("pytorch", "onnx_python"):
            name = f"user_bag_model_{variant}"
            assert states[name] == "READY", (name, states)
            with InferenceClient(server.grpc_url, protocol="grpc", model_name=name) as client:
                got = client.infer_batched(rows, 64)["probability"].reshape(-1)
            np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=name)

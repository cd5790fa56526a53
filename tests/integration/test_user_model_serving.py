"""A user's own model (``tests/fixtures/models/user_bag_model.py:build``: an EmbeddingBag, a pairwise-dot
interaction, forward's arguments in another order than its signature) through ``tritonrec export
--model-file`` and ``tritonrec build --model-file``, served on the bundled Triton server.

The ``pytorch`` variant runs the user's own class in the torch runner, rebuilt from the file text
its ``model_config.json`` carries; ``onnx_python`` runs the export. Both must answer what the
module's own ``forward`` answers on the same rows. The same module pruned by half (``tritonrec compress
--model-file`` with a prune-only recipe: its checkpoint and its checked model.onnx) is built and served
next to it: the torch runner rebuilds the pruned widths from its config. So is the module with int8
tables (``compress_module`` with ``quantize_embeddings``, saved by ``save_module_compression``): its
checkpoint's ``structure.json`` records the ``nn.Embedding`` and ``nn.EmbeddingBag`` tables made int8,
and the ``pytorch`` variant built from that folder re-applies them and answers like the compressed module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.compress.recipe import Recipe
from toolkit.models import architecture_of
from toolkit.models.user import load_model_file
from toolkit.optimize.module import compress_module, save_module_compression
from toolkit.repository import build_repository
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.train.checkpoint import Checkpoint, load_checkpoint

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "fixtures" / "models" / "user_bag_model.py"
# 1e-5 in probability: FP32 kernels of ONNX Runtime and PyTorch (and the batch sizes Triton forms) differ by ulps.
# The int8 module's pytorch variant runs the same int8 buffers and dequantization in the same kernels as the
# compressed module: only the batch sizes Triton forms differ, which move its FP32 GEMMs by ulps too.
ATOL = 1e-5


def _cli(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, (done.output, done.exception)
    return done.output


def test_a_users_module_and_its_pruned_and_int8_copies_are_exported_built_and_served_like_their_own_forward(tmp_path):
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
    arch = architecture_of(model)
    recipe = tmp_path / "prune.json"
    recipe.write_text(json.dumps({"steps": [{"kind": "prune", "ratio": 0.5}]}))
    _cli("compress", "--model-file", spec, "--recipe", str(recipe), "--out", str(tmp_path / "pruned"))
    pruned = load_checkpoint(tmp_path / "pruned" / "checkpoint").model  # its config records the pruned widths
    assert pruned.head[0].out_features == 8
    pruned_onnx = tmp_path / "pruned" / "model.onnx"
    build_repository(
        repository,
        checkpoint=Checkpoint(pruned, pruned.config, None, {}, None),
        onnx_model=pruned_onnx,
        model_name="user_bag_pruned",
        variants=["pytorch", "onnx_python"],
    )
    # int8 tables in place (the EmbeddingBag included): the folder holds a checkpoint, built from its path
    int8 = compress_module(model, recipe=Recipe.model_validate({"steps": [{"kind": "quantize_embeddings"}]}), workdir=tmp_path / "w8")
    int8_out = save_module_compression(int8, tmp_path / "int8")
    assert not (int8_out / "skipped.json").exists()
    build_repository(repository, checkpoint=int8_out / "checkpoint", model_name="user_bag_int8", variants=["pytorch"])
    structure = json.loads((repository / "user_bag_int8_pytorch" / "1" / "structure.json").read_text())
    assert {e["path"]: e["type"] for e in structure["replaced_modules"]}["genres"] == "RowwiseInt8EmbeddingBag"
    assert (repository / "user_bag_int8_pytorch" / "1" / "tritonrec_layers.py").is_file()

    rows = {k: v.numpy() for k, v in arch.example_inputs(model.config, 300, seed=11).items()}
    wants = {}
    served = {"user_bag_model": ("pytorch", "onnx_python"), "user_bag_pruned": ("pytorch", "onnx_python"), "user_bag_int8": ("pytorch",)}
    for family, module in (("user_bag_model", model), ("user_bag_pruned", pruned), ("user_bag_int8", int8.model)):
        with torch.no_grad():
            # by position, in forward's order (genre_ids, dense, user_item): the module's own call
            wants[family] = module(*(torch.from_numpy(rows[n]) for n in ("genre_ids", "dense", "user_item"))).numpy().reshape(-1)
        assert wants[family].std() > 1e-3  # the rows get different scores, so a swapped input would show
    assert np.abs(wants["user_bag_pruned"] - wants["user_bag_model"]).max() > 1e-4  # the pruned one is another model
    # the int8 rows move the answers (by ~2.6e-3 here) far beyond ATOL: float32 tables served instead would show
    assert np.abs(wants["user_bag_int8"] - wants["user_bag_model"]).max() > 100 * ATOL

    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repository, **ports) as server:
        states = {m.name: m.state for m in server.model_states()}
        for family, want in wants.items():
            for variant in served[family]:
                name = f"{family}_{variant}"
                assert states[name] == "READY", (name, states)
                with InferenceClient(server.grpc_url, protocol="grpc", model_name=name) as client:
                    got = client.infer_batched(rows, 64)["probability"].reshape(-1)
                np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=name)

"""DCN-v2, DeepFM and a forward with its arguments in another order, built and served on the
bundled Triton server.

Each architecture gets a checkpoint trained 1 epoch on the synthetic data set, its ONNX
export (checked against PyTorch to 1e-5 by ``export_checkpoint``'s rule: ``check_parity``), and
a repository with the ``pytorch`` (torch runner, the architecture's own source file) and
``onnx_python`` variants; DCN-v2 also gets its raw-feature ensemble. One server start serves
them all; every served answer must equal the model's own ``forward`` on the same rows, and
``tritonrec verify``'s check (:func:`verify_repository`) passes on the running server.

The toy also goes through ``compress`` (row-wise INT8 tables made in place, which its config does
not describe: its checkpoint's ``structure.json`` records them, and dynamic INT8 ONNX), and its
repository is built from the compressed folder alone (``checkpoint/`` and ``model.onnx``).
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from toolkit.compress.recipe import Recipe
from toolkit.export import check_parity, export_onnx
from toolkit.models import get_architecture
from toolkit.optimize.pipeline import CompressionData, compress, save_compressed
from toolkit.repository import build_repository
from toolkit.repository.raw_inputs import raw_request
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.serving.verify import verify_repository
from toolkit.train import TrainConfig, fit_model, load_checkpoint, model_config_for, save_checkpoint

pytestmark = pytest.mark.integration

# 1e-5 in probability: FP32 kernels of ONNX Runtime and PyTorch (and the batch sizes Triton forms) differ by ulps.
ATOL = 1e-5


def _checkpoint(root, architecture, splits, model):
    fit_model(model, splits.train, splits.val, TrainConfig(max_epochs=1, learning_rate=1e-2))
    checkpoint = save_checkpoint(root / architecture / "checkpoint", model, splits.encoder, {"split": {"seed": 42}})
    ckpt = load_checkpoint(checkpoint)
    onnx = export_onnx(ckpt.model, ckpt.architecture.example_inputs(ckpt.config, 8), ["probability"], root / architecture / "model.onnx")
    check_parity(ckpt.model, onnx, splits.test.inputs(), atol=ATOL)
    return ckpt, onnx


def test_dcnv2_deepfm_and_a_reordered_forward_are_served_like_their_own_forward_and_verified(
    tmp_path, synthetic_data_dir, synthetic_splits, reordered_toy
):
    s = synthetic_splits
    repository = tmp_path / "model_repository"
    models = {}
    for architecture in ("dcnv2", "deepfm", "reordered_toy"):
        config = TrainConfig(architecture=architecture, embedding_dim=8)
        torch.manual_seed(0)
        model = get_architecture(architecture).build(model_config_for(s.encoder, config))  # the toy is registered by its fixture
        ckpt, onnx = _checkpoint(tmp_path, architecture, s, model)
        ensembles = architecture == "dcnv2"
        build_repository(
            repository,
            checkpoint=ckpt.path,
            onnx_model=onnx,
            model_name=architecture,
            variants=["pytorch", "onnx_python"],
            ensembles=ensembles,
            ensemble_ranker="pytorch" if ensembles else None,
            top_k=None,
        )
        models[architecture] = ckpt.model
    rows = s.test.inputs()

    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repository, **ports) as server:
        states = {m.name: m.state for m in server.model_states()}
        for architecture, model in models.items():
            with torch.no_grad():
                want = model(**{k: torch.from_numpy(v) for k, v in rows.items()}).numpy().reshape(-1)
            assert want.std() > 1e-3, architecture  # trained: the rows get different scores
            for variant in ("pytorch", "onnx_python"):
                name = f"{architecture}_{variant}"
                assert states[name] == "READY", (name, states)
                with InferenceClient(server.grpc_url, protocol="grpc", model_name=name) as client:
                    got = client.infer_batched(rows, 64)["probability"].reshape(-1)
                np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=name)
        with InferenceClient(server.grpc_url, protocol="grpc", model_name="dcnv2_ensemble") as client:
            got = client.infer_batched(raw_request(s.raw_test), 64)["probability"].reshape(-1)
        with torch.no_grad():
            want = models["dcnv2"](**{k: torch.from_numpy(v) for k, v in rows.items()}).numpy().reshape(-1)
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg="dcnv2_ensemble")
        # `tritonrec verify`'s check: every served variant and ensemble against its family's served PyTorch model
        report = verify_repository(repository, data_dir=synthetic_data_dir, url=server.grpc_url, protocol="grpc", n_rows=500)
    assert report.passed, report.to_dict()
    assert set(report.references) == {"dcnv2", "deepfm", "reordered_toy"}


def test_the_compressed_toy_is_built_from_its_compressed_folder_served_like_its_files_and_verified(
    tmp_path, synthetic_data_dir, synthetic_splits, reordered_toy
):
    """train -> compress -> build -> serve -> verify for an architecture defined only in the tests."""
    s = synthetic_splits
    torch.manual_seed(0)
    model = get_architecture("reordered_toy").build(model_config_for(s.encoder, TrainConfig(architecture="reordered_toy", embedding_dim=8)))
    fit_model(model, s.train, s.val, TrainConfig(max_epochs=1, learning_rate=1e-2))
    recipe = Recipe.model_validate(
        {"name": "toy", "select": "as_written", "steps": [{"kind": "quantize_embeddings"}, {"kind": "onnx_dynamic_int8"}]}
    )
    data = CompressionData("synthetic", s.train, s.val, s.test, s.encoder)
    # the INT8 settings of an AVX2-only CPU on every machine (as the unit test of the toy's compression)
    result = compress(model, recipe, data, tmp_path / "work", measure_accuracy=False, cpu_target="avx2")
    out = save_compressed(result, tmp_path / "compressed", s.encoder, {"split": {"seed": 42}})
    assert json.loads((out / "checkpoint" / "structure.json").read_text())["replaced_modules"]  # its int8 tables, recorded

    repository = tmp_path / "model_repository"
    build_repository(
        repository,
        checkpoint=out / "checkpoint",
        onnx_model=out / "model.onnx",
        model_name="toy_int8",
        variants=["pytorch", "onnx_int8_python"],
        ensembles=False,
        top_k=None,
    )
    assert (repository / "toy_int8_pytorch" / "1" / "structure.json").is_file()
    rows = s.test.inputs()
    with torch.no_grad():
        want_torch = result.model(**{k: torch.from_numpy(v) for k, v in rows.items()}).numpy().reshape(-1)
    assert want_torch.std() > 1e-3  # trained: the rows get different scores
    # dynamic INT8 quantizes activations with each batch's own range: offline in the same 128-row batches as served
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    want_onnx = np.concatenate(
        [session.run(None, {k: v[i : i + 128] for k, v in rows.items()})[0].reshape(-1) for i in range(0, len(s.test), 128)]
    )

    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repository, **ports) as server:
        states = {m.name: m.state for m in server.model_states()}
        for variant, want in (("pytorch", want_torch), ("onnx_int8_python", want_onnx)):
            name = f"toy_int8_{variant}"
            assert states[name] == "READY", (name, states)
            with InferenceClient(server.grpc_url, protocol="grpc", model_name=name) as client:
                got = client.infer_batched(rows, 128)["probability"].reshape(-1)
            np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=name)
        report = verify_repository(repository, data_dir=synthetic_data_dir, url=server.grpc_url, protocol="grpc", n_rows=500)
    assert report.passed, report.to_dict()
    assert set(report.references) == {"toy_int8"}
    # the served INT8 file is judged against the served PyTorch model with its int8 tables (the reference);
    # "mixed": dynamic INT8 ops and the tables' FP16 scales
    assert {(r.model, r.status, r.precision) for r in report.results} == {
        ("toy_int8_pytorch", "reference", "fp32"),
        ("toy_int8_onnx_int8_python", "pass", "mixed"),
    }

"""DCN-v2, DeepFM and a forward with its arguments in another order, built and served on the
bundled Triton server.

Each architecture gets a checkpoint trained 1 epoch on the synthetic data set, its ONNX
export (checked against PyTorch to 1e-5 by ``export_checkpoint``'s rule: ``check_parity``), and
a repository with the ``pytorch`` (torch runner, the architecture's own source file) and
``onnx_python`` variants; DCN-v2 also gets its raw-feature ensemble. One server start serves
them all; every served answer must equal the model's own ``forward`` on the same rows, and
``tritonrec verify``'s check (:func:`verify_repository`) passes on the running server.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.export import check_parity, export_onnx
from toolkit.models import get_architecture
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

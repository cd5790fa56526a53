"""Compressed models (INT8 embeddings, ONNX INT8 and FP16) served by the bundled Triton server
through the Python-backend ONNX Runtime runner, answering like the files offline."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from toolkit.compress.recipe import Recipe
from toolkit.metrics import auc
from toolkit.optimize.pipeline import CompressionData, compress, save_compressed
from toolkit.repository import build_repository
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.train import TrainConfig, predict, train_dlrm

pytestmark = pytest.mark.integration

RECIPES = {
    "int8emb_dynint8": [{"kind": "quantize_embeddings"}, {"kind": "onnx_dynamic_int8"}],
    "static_int8": [{"kind": "onnx_static_int8", "calibration_rows": 256}],
    "fp16": [{"kind": "onnx_fp16"}],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, synthetic_splits):
    s = synthetic_splits
    root = tmp_path_factory.mktemp("compressed")
    model = train_dlrm(s.train, s.val, s.encoder, TrainConfig(max_epochs=3, learning_rate=1e-2)).model
    data = CompressionData("synthetic", s.train, s.val, s.test, s.encoder)
    repository = root / "model_repository"
    files = {}
    for name, steps in RECIPES.items():
        result = compress(model, Recipe(name=name, select="as_written", steps=steps), data, root / "work" / name)
        out = save_compressed(result, root / name, s.encoder, {"test": {}})
        build_repository(
            repository, checkpoint=out / "checkpoint", onnx_model=out / "model.onnx", model_name=name, variants=["onnx_python"]
        )
        files[name] = out / "model.onnx"
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repository, **ports) as server:
        yield {"server": server, "files": files, "rows": s.test, "fp32_auc": auc(s.test.labels, predict(model, s.test))}


@pytest.mark.parametrize("name", list(RECIPES))
def test_compressed_model_is_served_like_the_file_and_within_budget(served, name):
    rows = served["rows"]
    session = ort.InferenceSession(str(served["files"][name]), providers=["CPUExecutionProvider"])
    # Same 128-row batches offline: dynamic INT8 quantizes activations with each batch's own range.
    offline = np.concatenate(
        [
            session.run(None, {i.name: rows.inputs()[i.name][start : start + 128] for i in session.get_inputs()})[0].reshape(-1)
            for start in range(0, len(rows), 128)
        ]
    )
    with InferenceClient(served["server"].grpc_url, protocol="grpc", model_name=f"{name}_onnx_python") as client:
        online = client.infer_batched(rows.inputs(), 128)["probability"].reshape(-1)
    np.testing.assert_allclose(online, offline, atol=1e-5)
    assert auc(rows.labels, online) >= 0.99 * served["fp32_auc"]

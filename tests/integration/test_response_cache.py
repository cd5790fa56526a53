"""response_cache on the bundled Triton: a model built with it gets a server cache, and repeats hit it."""

from __future__ import annotations

import json

import pytest
import tritonclient.grpc as grpcclient

from toolkit.data import FeatureEncoder, load_splits
from toolkit.repository import BatchingOptions, build_repository, read_config
from toolkit.serving import InferenceClient, TritonServer, free_ports

pytestmark = pytest.mark.integration


def _cache_hits(url: str, model: str) -> int:
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]["inference_stats"]
        return int(stats.get("cache_hit", {}).get("count", 0))
    finally:
        client.close()


@pytest.mark.parametrize("cache_bytes", [None, 0])
def test_a_model_with_response_cache_gets_a_server_cache_unless_turned_off(tmp_path, trained_movielens, movielens_dir, cache_bytes):
    repo = tmp_path / "repo"
    build_repository(
        repo,
        checkpoint=trained_movielens.checkpoint,
        onnx_model=trained_movielens.onnx,
        variants=["onnx_python"],
        options=BatchingOptions(response_cache=True),
    )
    assert read_config(repo / "dlrm_onnx_python" / "config.pbtxt").response_cache.enable
    encoder = FeatureEncoder.from_dict(json.loads((trained_movielens.checkpoint / "vocabularies.json").read_text()))
    row = load_splits(movielens_dir, seed=42, encoder=encoder).test.take(slice(0, 1)).inputs()
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repo, response_cache_bytes=cache_bytes, **ports) as server:
        with InferenceClient(server.grpc_url, protocol="grpc", model_name="dlrm_onnx_python") as client:
            first = client.infer(row)["probability"]
            for _ in range(3):
                assert (client.infer(row)["probability"] == first).all()
        hits = _cache_hits(server.grpc_url, "dlrm_onnx_python")
    assert hits == (3 if cache_bytes is None else 0)

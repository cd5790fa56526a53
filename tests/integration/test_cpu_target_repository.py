"""The whole CPU-target repository on the bundled Triton: built, validated, loaded, verified,
and rebuilt as version 2 while a server is serving version 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.data import FeatureEncoder, load_splits
from toolkit.repository import TARGET_VARIANTS, BatchingOptions, build_repository, model_versions, validate_repository
from toolkit.repository.validate import ServingTarget
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.serving.verify import verify_repository

pytestmark = pytest.mark.integration

PLATFORM_ONLY = {"dlrm_onnx", "dlrm_onnx_int8"}  # platform onnxruntime_onnx: the bundled server has no such backend


def _ports() -> dict[str, int]:
    return dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))


@pytest.fixture(scope="module")
def rows(trained_movielens, movielens_dir):
    encoder = FeatureEncoder.from_dict(json.loads((trained_movielens.checkpoint / "vocabularies.json").read_text()))
    return load_splits(movielens_dir, seed=42, encoder=encoder)


@pytest.fixture(scope="module")
def repository(tmp_path_factory, trained_movielens, rows) -> Path:
    repo = tmp_path_factory.mktemp("cpu_target") / "model_repository"
    build_repository(
        repo,
        checkpoint=trained_movielens.checkpoint,
        onnx_model=trained_movielens.onnx,
        target="cpu",
        ensembles=True,
        sample_inputs=rows.train.take(slice(0, 64)).inputs(),
        # a queue policy Triton must accept; the 5 s timeout is loose on purpose: verify sends 1000 rows through the
        # Python-backend models of a loaded 2-core CI machine, where 100 ms once expired a request ("Request timeout expired")
        options=BatchingOptions(warmup_batch_sizes=[1, 8], preferred_batch_sizes=[64, 256], max_queue_size=512, queue_timeout_us=5_000_000),
    )
    return repo


def _only_the_platform_models_need_the_stock_container(repository: Path) -> None:
    """Clean for the stock container; for the server here (no onnxruntime backend) one warning per onnxruntime_onnx model."""
    assert validate_repository(repository, target=ServingTarget.stock_container()) == []
    findings = validate_repository(repository)
    assert [(f.model, f.field, f.severity) for f in findings] == [(n, "platform", "warning") for n in sorted(PLATFORM_ONLY)]


def test_the_built_repository_validates_clean(repository: Path) -> None:
    _only_the_platform_models_need_the_stock_container(repository)
    names = sorted(p.name for p in repository.iterdir())
    expected = [f"dlrm_{v}" for v in TARGET_VARIANTS["cpu"]] + [f"dlrm_{r}" for r in ("preprocess", "ensemble", "postprocess", "topk")]
    assert names == sorted(expected)


def test_bundled_triton_loads_everything_but_the_onnxruntime_platform_models_and_all_pass_verify(repository, movielens_dir):
    with TritonServer(repository, **_ports()) as server:
        states = {s.name: s for s in server.model_states()}
        assert {n for n, s in states.items() if s.state != "READY"} == PLATFORM_ONLY
        assert all("onnxruntime" in states[n].reason for n in PLATFORM_ONLY)
        # READY includes model_warmup: a warmup that fails leaves the model UNAVAILABLE (tests/unit/repository/test_warmup.py)
        report = verify_repository(repository, data_dir=movielens_dir, url=server.grpc_url, n_rows=1000)
    statuses = {r.model: r.status for r in report.results}
    assert report.passed, [(r.model, r.status, r.reason) for r in report.failed]
    assert statuses["dlrm_ensemble"] == statuses["dlrm_onnx_int8_python"] == statuses["dlrm_onnx_python"] == "pass"
    assert {m for m, s in statuses.items() if s == "not loaded"} == PLATFORM_ONLY


def test_a_rebuild_while_serving_adds_version_2_and_leaves_version_1_serving(repository, trained_movielens, rows):
    batch = rows.test.take(slice(0, 32)).inputs()
    version_1 = {p.relative_to(repository): p.read_bytes() for p in (repository / "dlrm_onnx_python" / "1").rglob("*") if p.is_file()}
    with TritonServer(repository, **_ports()) as server:
        with InferenceClient(server.grpc_url, protocol="grpc", model_name="dlrm_onnx_python") as client:
            before = client.infer(batch)["probability"]
            build_repository(
                repository,
                checkpoint=trained_movielens.checkpoint,
                onnx_model=trained_movielens.onnx,
                variants=["pytorch", "onnx_python"],
                # a new config that still fits the ensembles, which may call onnx_python (the ranker is timed per machine)
                options=BatchingOptions(max_queue_delay_us=200),
            )
            after = client.infer(batch)["probability"]  # the running server keeps serving what it loaded
        np.testing.assert_array_equal(before, after)
    assert model_versions(repository / "dlrm_onnx_python") == [1, 2]
    still = {p.relative_to(repository): p.read_bytes() for p in (repository / "dlrm_onnx_python" / "1").rglob("*") if p.is_file()}
    model_files = lambda files: {k: v for k, v in files.items() if "__pycache__" not in str(k)}  # noqa: E731 (not what the server wrote)
    assert model_files(still) == model_files(version_1)
    _only_the_platform_models_need_the_stock_container(repository)
    with TritonServer(repository, **_ports()) as server:
        with InferenceClient(server.grpc_url, protocol="grpc", model_name="dlrm_onnx_python") as client:
            np.testing.assert_allclose(client.infer(batch)["probability"], before, atol=1e-6)  # version 2: same weights
        ready = [s.version for s in server.model_states() if s.name == "dlrm_onnx_python" and s.state == "READY"]
        assert ready == ["2"]  # version_policy latest 1 serves the new version

"""The main job end to end on real MovieLens-100K rows and a real Triton server.

Trains a small DLRM, exports it, builds the repository, starts the bundled Triton on
free loopback ports and checks that the served answers equal PyTorch's over HTTP and gRPC.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_splits
from toolkit.errors import InferenceError
from toolkit.metrics import auc
from toolkit.repository import build_repository
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.serving.quality import served_quality
from toolkit.train import load_checkpoint, predict

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[2] / ".cache" / "ml-100k"
N_ROWS = 2000


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, trained_movielens):
    """Build the repository of the shared small DLRM; yields paths and the PyTorch reference."""
    root = tmp_path_factory.mktemp("main_job")
    checkpoint, repository = trained_movielens.checkpoint, root / "model_repository"
    build_repository(repository, checkpoint=checkpoint, onnx_model=trained_movielens.onnx)
    ckpt = load_checkpoint(checkpoint)
    rows = load_splits(DATA_DIR, encoder=ckpt.encoder).test.take(slice(0, N_ROWS))
    return {"root": root, "checkpoint": checkpoint, "repository": repository, "rows": rows, "reference": predict(ckpt.model, rows)}


@pytest.fixture(scope="module")
def server(pipeline):
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(pipeline["repository"], http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port) as srv:
        yield srv


def test_bundled_server_loads_python_backend_variants_and_explains_onnxruntime(server):
    states = {s.name: s for s in server.model_states()}
    assert states["dlrm_pytorch"].state == "READY"
    assert states["dlrm_onnx_python"].state == "READY"
    # The wheel's server has no onnxruntime backend; the model must be reported, with the reason.
    assert states["dlrm_onnx"].state == "UNAVAILABLE"
    assert "onnxruntime" in states["dlrm_onnx"].reason


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["dlrm_pytorch", "dlrm_onnx_python"])
def test_served_probabilities_and_auc_equal_pytorch(server, pipeline, model, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    rows, reference = pipeline["rows"], pipeline["reference"]
    with InferenceClient(url, protocol=protocol, model_name=model) as client:
        quality = served_quality(client, rows.inputs(), rows.labels, reference=reference, batch_size=97)
    assert quality.n_rows == N_ROWS
    assert quality.max_abs_diff <= 1e-5
    assert abs(quality.auc - auc(rows.labels, reference)) <= 1e-4
    assert quality.auc > 0.6  # a trained model, not noise


def test_int32_ids_are_converted_losslessly_by_the_client(server, pipeline):
    rows, reference = pipeline["rows"].take(slice(0, 64)), pipeline["reference"][:64]
    inputs = rows.inputs() | {"sparse_ids": rows.sparse_ids.astype(np.int32), "multi_hot_ids": rows.multi_hot_ids.astype(np.int32)}
    with InferenceClient(server.grpc_url, protocol="grpc", model_name="dlrm_onnx_python") as client:
        out = client.infer(inputs)["probability"].reshape(-1)
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_wrong_shape_request_is_refused_naming_the_tensor(server, pipeline):
    rows = pipeline["rows"].take(slice(0, 4))
    bad = rows.inputs() | {"sparse_ids": rows.sparse_ids[:, :5]}
    with InferenceClient(server.http_url, protocol="http", model_name="dlrm_pytorch") as client:
        with pytest.raises(InferenceError, match="sparse_ids"):
            client.infer(bad)


def test_cli_infer_reports_served_auc_equal_to_offline(server, pipeline):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "toolkit",
            "infer",
            "--model",
            "dlrm_onnx_python",
            "--url",
            server.grpc_url,
            "--protocol",
            "grpc",
            "--checkpoint",
            str(pipeline["checkpoint"]),
            "--data-dir",
            str(DATA_DIR),
            "--rows",
            "500",
            "--latency-requests",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "served AUC" in done.stdout


def test_cli_serve_refuses_a_port_in_use(pipeline, server):
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "serve", str(pipeline["repository"]), "--http-port", str(server.http_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert str(server.http_port) in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_cli_perf_sweeps_a_served_dlrm_with_real_rows_and_writes_the_report(server, pipeline, tmp_path):
    import json

    out = tmp_path / "perf" / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "perf", "--url", server.grpc_url, "--http-url", server.http_url,
         "--metrics-url", server.metrics_url, "--model", "dlrm_pytorch", "--model", "dlrm_onnx_python",
         "--baseline", "dlrm_pytorch", "--optimized", "dlrm_onnx_python", "--batch-size", "1", "--concurrency", "1,2",
         "--checkpoint", str(pipeline["checkpoint"]), "--data-dir", str(DATA_DIR), "--rows", "256",
         "--measurement-interval-ms", "500", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert [s["model"] for s in report["sweeps"]] == ["dlrm_pytorch", "dlrm_onnx_python"]
    for sweep in report["sweeps"]:
        assert [p["concurrency"] for p in sweep["points"]] == [1, 2]
        assert all(p["throughput_infer_per_s"] > 0 and p["p99_latency_ms"] >= p["p50_latency_ms"] for p in sweep["points"])
        assert all(p["avg_server_batch"] >= 1 for p in sweep["points"])
    assert report["headline"]["p99_ratio"] > 0
    assert out.with_suffix(".html").is_file() and out.with_name("report_throughput_p99.png").is_file()


def test_cli_perf_request_rate_sweep_with_poisson_arrivals_keeps_perf_analyzers_files(server, pipeline, tmp_path):
    import json

    out = tmp_path / "rate" / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "perf", "--url", server.grpc_url, "--metrics-url", server.metrics_url,
         "--model", "dlrm_onnx_python", "--batch-size", "1", "--request-rate", "50,100", "--request-distribution", "poisson",
         "--checkpoint", str(pipeline["checkpoint"]), "--data-dir", str(DATA_DIR), "--rows", "256",
         "--measurement-interval-ms", "1000", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (sweep,) = json.loads(out.read_text())["sweeps"]
    assert [p["request_rate"] for p in sweep["points"]] == [50.0, 100.0]
    assert all(p["profile_export_requests"] > 0 for p in sweep["points"])
    files = out.parent / "perf_analyzer" / "dlrm_onnx_python_grpc_b1"
    assert (files / "r50" / "perf_analyzer.csv").is_file() and (files / "r100" / "profile_export.json").is_file()

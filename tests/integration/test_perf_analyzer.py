"""A real perf_analyzer sweep against a real Triton server (the bundled one, or `tritonserver` on PATH).

The model checks its ids against an "embedding table" of 1,000 rows and fails requests outside it,
as a real recommender would: the sweep passes only because it sends the real rows it was given.

The raw-feature ensemble (`dlrm_ensemble`: BYTES features -> `dlrm_preprocess` -> `dlrm_onnx_python`)
of the real MovieLens DLRM is swept with the raw request of real test rows, through `sweep_model`
and through `tritonrec perf`; Triton's own counters show both steps ran.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import PerfError
from toolkit.perf import PerfAnalyzer, find_perf_analyzer, parse_profile_export, read_input_data, run_perf_analyzer, write_input_data
from toolkit.perf.sweep import ensemble_steps, rows_for_model, scrape_counters, sweep_model
from toolkit.repository import build_repository
from toolkit.repository.rows import checkpoint_test_rows
from toolkit.serving import InferenceClient, TritonServer, free_ports

pytestmark = pytest.mark.integration

TABLE_ROWS = 1000
BATCH = 2

LOOKUP_MODEL = f"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "ids").as_numpy()
            if ids.min() < 0 or ids.max() >= {TABLE_ROWS}:
                error = pb_utils.TritonError(f"ids outside the embedding table: [{{ids.min()}}, {{ids.max()}}]")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            score = (ids.sum(axis=1, keepdims=True) / (3.0 * {TABLE_ROWS})).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("score", score)]))
        return responses
"""


@pytest.fixture(scope="module")
def analyzer() -> PerfAnalyzer:
    try:
        return find_perf_analyzer()
    except PerfError as e:
        pytest.fail(f"{e} ({e.hint})")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("perf_repository")
    config = mc.ModelConfig(
        name="lookup",
        backend="python",
        max_batch_size=8,
        input=[mc.ModelInput(name="ids", data_type=mc.TYPE_INT64, dims=[3])],
        output=[mc.ModelOutput(name="score", data_type=mc.TYPE_FP32, dims=[1])],
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    (repo / "lookup" / "1").mkdir(parents=True)
    (repo / "lookup" / "config.pbtxt").write_text(text_format.MessageToString(config))
    (repo / "lookup" / "1" / "model.py").write_text(textwrap.dedent(LOOKUP_MODEL))
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=log_path, startup_timeout_s=60
    ) as server:
        yield server


def _model_stats(server: TritonServer) -> dict:
    with contextlib.closing(httpclient.InferenceServerClient(server.http_url)) as client:
        (stats,) = client.get_inference_statistics("lookup")["model_stats"]
    return stats


def test_grpc_concurrency_sweep_with_real_rows(server: TritonServer, analyzer: PerfAnalyzer, tmp_path: Path) -> None:
    rows = np.random.default_rng(0).integers(0, TABLE_ROWS, size=(64, 3), dtype=np.int64)
    data = write_input_data(tmp_path / "input_data.json", {"ids": rows}, batch_size=BATCH)
    np.testing.assert_array_equal(read_input_data(data)["ids"], rows)
    with InferenceClient(server.grpc_url, protocol="grpc", model_name="lookup") as client:
        specs = client.input_specs
    before = _model_stats(server)

    points = run_perf_analyzer(
        "lookup",
        server.grpc_url,
        protocol="grpc",
        input_data=data,
        input_specs=specs,
        batch_size=BATCH,
        concurrency=[1, 2],
        measurement_interval_ms=800,
        stability_percentage=60,
        max_trials=6,
        out_dir=tmp_path / "report",
        timeout_s=120,
        analyzer=analyzer,
    )

    assert [p.concurrency for p in points] == [1, 2]
    for p in points:
        assert p.batch_size == BATCH
        assert p.throughput_infer_per_s > 0
        assert 0 < p.p50_latency_ms <= p.p99_latency_ms
        assert p.avg_latency_ms is not None and p.avg_latency_ms > 0
        assert p.server_compute_infer_ms > 0
    after = _model_stats(server)
    executions = int(after["execution_count"]) - int(before["execution_count"])
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    assert executions > 0
    assert inferences == BATCH * executions  # -b 2 over one-row entries: every request carried 2 rows
    assert int(after["inference_stats"]["fail"]["count"]) == 0  # only real ids were sent
    report = tmp_path / "report"
    assert (report / "perf_analyzer.csv").is_file() and (report / "perf_analyzer.log").is_file()
    experiments = parse_profile_export(report / "profile_export.json")
    assert [e.value for e in experiments] == [1.0, 2.0] and all(e.request_count > 0 for e in experiments)


def test_unreachable_server_raises_perf_error_naming_the_url(analyzer: PerfAnalyzer, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    data = write_input_data(tmp_path / "input_data.json", {"ids": np.zeros((2, 3), np.int64)}, batch_size=1)
    with pytest.raises(PerfError, match=rf"cannot reach the Triton server at 127\.0\.0\.1:{port} over grpc"):
        run_perf_analyzer(
            "lookup",
            f"127.0.0.1:{port}",
            protocol="grpc",
            input_data=data,
            input_specs=[],
            out_dir=tmp_path / "report",
            timeout_s=60,
            analyzer=analyzer,
        )


# -- the raw-feature ensemble -------------------------------------------------------------------

ENSEMBLE, PREPROCESS, RANKER = "dlrm_ensemble", "dlrm_preprocess", "dlrm_onnx_python"


@pytest.fixture(scope="module")
def ensemble_server(trained_movielens: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The MovieLens DLRM as `dlrm_onnx_python` plus `dlrm_preprocess` and `dlrm_ensemble` (FP32 ranker, no top-K)."""
    repo = tmp_path_factory.mktemp("perf_ensemble") / "model_repository"
    build_repository(
        repo,
        checkpoint=trained_movielens.checkpoint,
        onnx_model=trained_movielens.onnx,
        variants=["onnx_python"],
        ensembles=True,
        ensemble_ranker="onnx_python",
        top_k=None,
    )
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = tmp_path_factory.mktemp("ensemble_logs") / "tritonserver.log"
    with TritonServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=log_path, startup_timeout_s=120
    ) as server:
        yield server


def test_sweep_of_the_raw_feature_ensemble_runs_preprocess_and_ranker(
    ensemble_server: TritonServer, trained_movielens: SimpleNamespace, movielens_dir: Path, tmp_path: Path
) -> None:
    encoded, raw = checkpoint_test_rows(trained_movielens.checkpoint, movielens_dir, 256)
    with InferenceClient(ensemble_server.grpc_url, protocol="grpc", model_name=ENSEMBLE) as client:
        specs, max_batch = client.input_specs, client.max_batch_size
        rows = rows_for_model(ENSEMBLE, specs, max_batch_size=max_batch, output_names=["probability"], encoded=encoded, raw=raw)
    assert all(a.dtype == object for a in rows.values())  # the raw request, not the encoded tensors
    steps = ensemble_steps(ensemble_server.grpc_url, ENSEMBLE)
    assert steps == [PREPROCESS, RANKER]
    failures = ("nv_inference_request_failure",)
    failed_before = scrape_counters(ensemble_server.metrics_url, failures)

    sweep = sweep_model(
        ENSEMBLE,
        url=ensemble_server.grpc_url,
        protocol="grpc",
        metrics_url=ensemble_server.metrics_url,
        input_specs=specs,
        rows=rows,
        batch_size=BATCH,
        concurrency=[1, 2],
        out_dir=tmp_path / "sweep",
        measurement_interval_ms=800,
        stability_percentage=60,
        composing_models=steps,
    )

    assert [p.point.concurrency for p in sweep.points] == [1, 2] and not sweep.unstable_levels
    for p in sweep.points:
        assert p.point.throughput_infer_per_s > 0 and p.profile_requests and p.profile_requests > 0
        assert 0 < p.point.p50_latency_ms <= p.point.p90_latency_ms <= p.point.p99_latency_ms
        pre, ranker = p.composing[PREPROCESS], p.composing[RANKER]
        # Triton counted rows on both steps: the real ensemble path ran, not just the ensemble's front door.
        assert pre["inferences"] > 0 and ranker["inferences"] > 0 and ranker["executions"] > 0
        assert pre["inferences"] == pytest.approx(ranker["inferences"], abs=2 * BATCH)  # every preprocessed row was ranked
    failed_after = scrape_counters(ensemble_server.metrics_url, failures)
    assert sum(failed_after.values()) == sum(failed_before.values())  # every raw request was accepted
    data = read_input_data(tmp_path / "sweep" / "input_data.json")
    assert data["user_id"].tolist() == raw["user_id"].tolist()  # perf_analyzer was fed these very rows


def test_cli_perf_gives_the_ensemble_raw_rows_and_the_ranker_encoded_rows(
    ensemble_server: TritonServer, trained_movielens: SimpleNamespace, movielens_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "perf" / "report.json"
    args = ["perf", "--url", ensemble_server.grpc_url, "--http-url", ensemble_server.http_url]
    args += ["--metrics-url", ensemble_server.metrics_url, "--model", RANKER, "--model", ENSEMBLE]
    args += ["--baseline", RANKER, "--optimized", ENSEMBLE, "--batch-size", "4", "--concurrency", "1"]
    args += ["--checkpoint", str(trained_movielens.checkpoint), "--data-dir", str(movielens_dir), "--rows", "128"]
    args += ["--measurement-interval-ms", "800", "--out", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["inputs"] == {RANKER: "encoded test rows", ENSEMBLE: "raw-feature request (BYTES) of the same test rows"}
    sweeps = {s["model"]: s for s in report["sweeps"]}
    (point,) = sweeps[ENSEMBLE]["points"]
    assert point["throughput_infer_per_s"] > 0 and point["composing_models"][RANKER]["inferences"] > 0
    assert sweeps[RANKER]["points"][0]["composing_models"] == {}
    files = out.parent / "perf_analyzer"
    ensemble_data = json.loads((files / f"{ENSEMBLE}_grpc_b4" / "input_data.json").read_text())["data"]
    ranker_data = json.loads((files / f"{RANKER}_grpc_b4" / "input_data.json").read_text())["data"]
    assert len(ensemble_data) == len(ranker_data) == 128
    assert isinstance(ensemble_data[0]["item_id"]["content"][0], str) and "sparse_ids" in ranker_data[0]

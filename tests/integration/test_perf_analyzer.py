"""A real perf_analyzer sweep against a real Triton server (the bundled one, or `tritonserver` on PATH).

The model checks its ids against an "embedding table" of 1,000 rows and fails requests outside it,
as a real recommender would: the sweep passes only because it sends the real rows it was given.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.errors import PerfError
from toolkit.perf import PerfAnalyzer, find_perf_analyzer, parse_profile_export, read_input_data, run_perf_analyzer, write_input_data
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

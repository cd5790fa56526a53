"""`tritonrec tune` on the bundled Triton server: candidates loaded through model control, a new version written.

A small DLRM (1 epoch on 20,000 MovieLens rows) is built as the ``onnx_python`` variant; the
server runs with ``--model-control-mode=explicit`` and every candidate is loaded with
``load_model(config=...)`` -- no restart -- then measured by perf_analyzer with real rows.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from toolkit.data import load_splits
from toolkit.perf.tune import Candidate, MeasureSettings, Objective, SearchSpace, apply_candidate, tune
from toolkit.repository import BatchingOptions, build_repository, read_config
from toolkit.serving import TritonServer, free_ports
from toolkit.train import load_checkpoint

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[2] / ".cache" / "ml-100k"
MODEL = "dlrm_onnx_python"
FAST = MeasureSettings(concurrency=(1, 2), batch_size=8, measurement_interval_ms=300, stability_percentage=50, max_trials=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory, trained_movielens):
    root = tmp_path_factory.mktemp("tune")
    checkpoint, onnx_path, repository = trained_movielens.checkpoint, trained_movielens.onnx, root / "model_repository"
    options = BatchingOptions(max_batch_size=256, max_queue_delay_us=100, preferred_batch_sizes=[64, 256])
    build_repository(repository, checkpoint=checkpoint, onnx_model=onnx_path, variants=["onnx_python"], options=options)
    rows = load_splits(DATA_DIR, encoder=load_checkpoint(checkpoint).encoder).test.take(slice(0, 256)).inputs()
    return {"root": root, "checkpoint": checkpoint, "repository": repository, "rows": rows}


def _files(folder: Path) -> dict:
    """The model's files (the Python backend compiles model.py into __pycache__ next to them when loading)."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_tune_loads_candidates_through_model_control_and_serves_the_chosen_one_as_version_2(built, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(built["repository"], repository)
    version_1 = _files(repository / MODEL / "1")
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    explicit = ["--model-control-mode=explicit", f"--load-model={MODEL}"]
    with TritonServer(repository, extra_args=explicit, log_path=tmp_path / "server.log", startup_timeout_s=60, **ports) as server:
        with contextlib.closing(httpclient.InferenceServerClient(server.http_url)) as http:
            # one candidate by hand: the server applies it without a restart
            apply_candidate(repository, MODEL, Candidate(2, 500, 64, (32,), 2, 1), url=server.grpc_url)
            loaded = http.get_model_config(MODEL)
            assert loaded["instance_group"][0]["count"] == 2
            assert int(loaded["dynamic_batching"]["max_queue_delay_microseconds"]) == 500
            assert loaded["max_batch_size"] == 64 and loaded["parameters"]["intra_op_threads"]["string_value"] == "2"

            space = SearchSpace(instance_counts=(1, 2), max_queue_delays_us=(0, 100), batchings=((256, (64, 256)),), intra_op_threads=(1,))
            result = tune(
                MODEL,
                repository=repository,
                url=server.grpc_url,
                rows=built["rows"],
                out_dir=tmp_path / "tune",
                space=space,
                objective=Objective(p99_budget_ms=1000.0),
                settings=FAST,
            )
            assert 2 <= len(result.measurements) <= len(space)
            assert all(m.error is None and [p.concurrency for p in m.points] == [1, 2] for m in result.measurements)
            assert result.chosen is not None and result.pareto
            assert result.version_dir == repository / MODEL / "2"

            served = {(s.version, s.state) for s in server.model_states() if s.name == MODEL}
            assert ("2", "READY") in served
            now = http.get_model_config(MODEL)
            assert now["instance_group"][0]["count"] == result.chosen.candidate.instance_count
            assert int(now["dynamic_batching"]["max_queue_delay_microseconds"]) == result.chosen.candidate.max_queue_delay_us
    assert _files(repository / MODEL / "1") == version_1
    assert _files(repository / MODEL / "2") == version_1
    assert read_config(repository / MODEL / "config.pbtxt").instance_group[0].count == result.chosen.candidate.instance_count


def test_cli_tune_brute_force_writes_the_report_and_a_new_version(built, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(built["repository"], repository)
    out = tmp_path / "tune.json"
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "tune", str(repository), "--model", MODEL,
         "--checkpoint", str(built["checkpoint"]), "--data-dir", str(DATA_DIR), "--rows", "256",
         "--p99-budget-ms", "1000", "--brute-force", "--instance-counts", "1", "--queue-delays-us", "0,100",
         "--batching", "256:64+256", "--intra-op-threads", "1", "--batch-size", "8", "--concurrency", "1,2",
         "--measurement-interval-ms", "300", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Pareto front" in done.stdout and "chosen:" in done.stdout
    report = json.loads(out.read_text())
    assert report["strategy"] == "grid" and report["n_measurements"] == 2
    assert {m["key"] for m in report["measurements"]} == {"i1_d0_b256p64-256_t1x1", "i1_d100_b256p64-256_t1x1"}
    assert report["pareto_front"] and report["chosen"]["key"] in {m["key"] for m in report["measurements"]}
    assert (repository / MODEL / "2" / "model.onnx").is_file()
    delay = read_config(repository / MODEL / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds
    assert delay == report["chosen"]["candidate"]["max_queue_delay_us"]

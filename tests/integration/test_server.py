"""A real Triton server (the stock one on PATH, else the nvidia-pytriton wheel's) on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from toolkit.errors import InferenceError, PortInUseError, ServingError
from toolkit.serving import InferenceClient, TritonServer, free_ports, measure_latency

pytestmark = pytest.mark.integration

MAX_BATCH = 8
BROKEN_MESSAGE = "broken on purpose: embedding table missing"

SUM_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if (x < 0).any():
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative ids are not allowed")))
                continue
            y = x.sum(axis=1, keepdims=True).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return responses
"""

BROKEN_MODEL = f'''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("{BROKEN_MESSAGE}")

    def execute(self, requests):
        return []
'''


def _write_model(repo: Path, name: str, source: str) -> None:
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=MAX_BATCH,
        input=[mc.ModelInput(name="x", data_type=mc.TYPE_INT64, dims=[3])],
        output=[mc.ModelOutput(name="y", data_type=mc.TYPE_FP32, dims=[1])],
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("model_repository")
    _write_model(repo, "sum3", SUM_MODEL)
    _write_model(repo, "broken", BROKEN_MODEL)
    return repo


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(
        repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=log_path, startup_timeout_s=60
    ) as server:
        yield server


def _url(server: TritonServer, protocol: str) -> str:
    return server.http_url if protocol == "http" else server.grpc_url


def test_good_model_ready_and_broken_one_unavailable_with_reason(server: TritonServer) -> None:
    states = {s.name: s for s in server.model_states()}
    assert states["sum3"].state == "READY" and states["sum3"].version == "1"
    assert states["broken"].state == "UNAVAILABLE"
    assert BROKEN_MESSAGE in states["broken"].reason


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_matches_numpy(server: TritonServer, protocol: str) -> None:
    x = np.random.default_rng(0).integers(0, 1000, size=(5, 3), dtype=np.int64)
    with InferenceClient(_url(server, protocol), protocol=protocol, model_name="sum3") as client:
        assert [s.describe() for s in client.input_specs] == ["x int64[B, 3]"]
        assert [s.describe() for s in client.output_specs] == ["y float32[B, 1]"]
        assert client.max_batch_size == MAX_BATCH
        y = client.infer({"x": x})["y"]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.sum(axis=1, keepdims=True).astype(np.float32))


def test_int32_ids_are_converted(server: TritonServer) -> None:
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    with InferenceClient(server.grpc_url, protocol="grpc", model_name="sum3") as client:
        y = client.infer({"x": x})["y"]
    np.testing.assert_array_equal(y.ravel(), [3, 12, 21, 30])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_wrong_shape_raises_inference_error(server: TritonServer, protocol: str) -> None:
    with InferenceClient(_url(server, protocol), protocol=protocol, model_name="sum3") as client:
        with pytest.raises(InferenceError, match=r"input 'x': expected shape \[B, 3\] \(B <= 8\), got \(2, 4\)"):
            client.infer({"x": np.zeros((2, 4), np.int64)})


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_side_error_is_wrapped(server: TritonServer, protocol: str) -> None:
    with InferenceClient(_url(server, protocol), protocol=protocol, model_name="sum3") as client:
        with pytest.raises(InferenceError, match="negative ids are not allowed") as info:
            client.infer({"x": np.array([[1, -2, 3]], np.int64)})
    assert isinstance(info.value.__cause__, InferenceServerException)


def test_infer_batched_splits_and_concatenates(server: TritonServer) -> None:
    x = np.arange(60, dtype=np.int64).reshape(20, 3)
    done: list[int] = []
    with InferenceClient(server.http_url, protocol="http", model_name="sum3") as client:
        y = client.infer_batched({"x": x}, batch_size=100, progress=done.append)["y"]
    assert done == [8, 8, 4]  # capped at max_batch_size
    np.testing.assert_array_equal(y, x.sum(axis=1, keepdims=True))


def test_measure_latency(server: TritonServer) -> None:
    x = np.arange(30, dtype=np.int64).reshape(10, 3)
    with InferenceClient(server.grpc_url, protocol="grpc", model_name="sum3") as client:
        stats = measure_latency(client, {"x": x}, n_requests=50)
    assert stats.n_requests == 50
    assert 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms


@pytest.mark.parametrize("model", ["no_such_model", "broken"])
def test_unknown_or_unavailable_model_raises_serving_error(server: TritonServer, model: str) -> None:
    with pytest.raises(ServingError, match=rf"'{model}'.*{server.http_url}"):
        InferenceClient(server.http_url, protocol="http", model_name=model)


def test_unreachable_server_raises_serving_error() -> None:
    (port,) = free_ports(1)
    with pytest.raises(ServingError, match=rf"'sum3'.*127.0.0.1:{port}"):
        InferenceClient(f"127.0.0.1:{port}", protocol="grpc", model_name="sum3")


def test_port_taken_raises_port_in_use(repo: Path, triton_ports: dict[str, int]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", triton_ports["grpc_port"]))
        taken.listen()
        with pytest.raises(PortInUseError, match=rf"port {triton_ports['grpc_port']} .*--grpc-port"):
            TritonServer(repo, **triton_ports).start()


def test_port_of_running_server_raises_port_in_use(repo: Path, server: TritonServer, triton_ports: dict[str, int]) -> None:
    with pytest.raises(PortInUseError, match=rf"port {server.http_port} .*--http-port"):
        TritonServer(repo, **{**triton_ports, "http_port": server.http_port}).start()


def test_bad_flag_reports_the_server_log(tmp_path: Path, triton_ports: dict[str, int]) -> None:
    server = TritonServer(tmp_path, **triton_ports, log_path=tmp_path / "log.txt", extra_args=["--no-such-flag"])
    with pytest.raises(ServingError, match=r"exited with code \d+ during start-up(.|\n)*no-such-flag"):
        server.start()
    assert server.process is not None and server.process.poll() is not None


def _process_group_gone(pgid: int) -> bool:
    """No process of the group is left, zombies aside (a container's PID 1 may never reap them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return False
    return True


def test_stop_leaves_no_process(tmp_path: Path, triton_ports: dict[str, int]) -> None:
    repo = tmp_path / "repo"
    _write_model(repo, "sum3", SUM_MODEL)  # its Python-backend stub is a child process that must go too
    with TritonServer(repo, **triton_ports, log_path=tmp_path / "log.txt") as server:
        proc = server.process
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None
    assert _process_group_gone(proc.pid)
    server.stop()  # idempotent


_ORPHAN_SCRIPT = """
import os, signal, sys
from pathlib import Path
from toolkit.serving import TritonServer, free_ports
http_port, grpc_port, metrics_port = free_ports(3)
repo = Path(sys.argv[1])
server = TritonServer(repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=repo.parent / "log.txt")
server.start()
print(server.process.pid, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
raise RuntimeError("the user's script crashed")
"""


@pytest.mark.parametrize("how", ["exception", "kill"])
def test_no_orphan_server_when_python_dies(tmp_path: Path, how: str) -> None:
    repo = tmp_path / "empty_repo"
    repo.mkdir()
    result = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT, str(repo), how], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    pid = int(result.stdout.split()[0])
    deadline = time.monotonic() + 30
    while not _process_group_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = _process_group_gone(pid)
    if not gone:
        os.killpg(pid, signal.SIGKILL)
    assert gone, f"tritonserver (pid {pid}) outlived the Python process that started it ({how})"

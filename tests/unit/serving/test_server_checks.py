"""TritonServer's checks that run before any process is launched, and the port helpers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from toolkit.errors import PortInUseError, ServingError
from toolkit.serving import TritonInstallation, TritonServer, free_ports

# Never launched: each test fails before the binary would be used.
NO_SERVER = TritonInstallation(executable=Path("/nonexistent/tritonserver"), backend_directory=None, cache_directory=None)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--metrics-port"])
def test_taken_port_names_port_and_flag(tmp_path: Path, flag: str) -> None:
    http_port, grpc_port, metrics_port = free_ports(3)
    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[flag]))
        taken.listen()
        server = TritonServer(tmp_path, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, installation=NO_SERVER)
        with pytest.raises(PortInUseError) as info:
            server.start()
    assert str(ports[flag]) in str(info.value) and flag in str(info.value)
    assert info.value.hint is not None and flag in info.value.hint
    assert server.process is None


def test_missing_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="missing_repo"):
        TritonServer(tmp_path / "missing_repo", installation=NO_SERVER).start()


def test_equal_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="must differ"):
        TritonServer(tmp_path, http_port=9000, grpc_port=9000, installation=NO_SERVER).start()


def test_stop_before_start_is_a_no_op(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, installation=NO_SERVER)
    server.stop()
    server.stop()


def test_urls() -> None:
    server = TritonServer(Path("."), host="0.0.0.0", http_port=1, grpc_port=2, metrics_port=3, installation=NO_SERVER)
    assert (server.http_url, server.grpc_url, server.metrics_url) == ("127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3/metrics")


def test_a_missing_onnxruntime_backend_is_explained_before_tritons_own_words():
    from toolkit.serving import explain_load_failure

    triton = (
        "Invalid argument: unable to find backend library for backend 'onnxruntime', try specifying runtime on the model configuration."
    )
    explained = explain_load_failure(triton)
    assert explained.startswith("needs Triton's onnxruntime backend")
    assert "stock container" in explained and "_python twin" in explained and triton in explained
    assert explain_load_failure("Failed to load: bad weights\n\nAt:\n  model.py(12)") == "Failed to load: bad weights"

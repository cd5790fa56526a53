"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def triton_ports() -> dict[str, int]:
    """Three distinct free loopback ports, as ``TritonServer`` keyword arguments."""
    from toolkit.serving import free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    return {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}

"""Start and stop a real Triton Inference Server, and call its models over HTTP or gRPC.

::

    from toolkit.serving import TritonServer, InferenceClient, free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port) as server:
        with InferenceClient(server.grpc_url, protocol="grpc", model_name="dlrm") as client:
            scores = client.infer_batched({"dense": dense, "sparse_ids": ids}, batch_size=256)

Several replicas of one model, each request to the one with the fewest in flight::

    router = Router(["10.0.0.5:8001", "10.0.0.6:8001"], protocol="grpc", model_name="dlrm")
    with RoutedInferenceClient(router, model_name="dlrm") as client:
        scores = client.infer_batched({"dense": dense, "sparse_ids": ids}, batch_size=256)
"""

from toolkit.serving.client import InferenceClient, LatencyStats, measure_latency, prepare_inputs
from toolkit.serving.endpoints import DnsEndpoints, EndpointSliceEndpoints, StaticEndpoints
from toolkit.serving.router import POLICIES, RoutedInferenceClient, Router
from toolkit.serving.server import (
    ModelState,
    TritonInstallation,
    TritonServer,
    explain_load_failure,
    find_tritonserver,
    free_port,
    free_ports,
)

__all__ = [
    "TritonServer",
    "TritonInstallation",
    "ModelState",
    "explain_load_failure",
    "find_tritonserver",
    "free_port",
    "free_ports",
    "InferenceClient",
    "LatencyStats",
    "prepare_inputs",
    "measure_latency",
    "Router",
    "RoutedInferenceClient",
    "StaticEndpoints",
    "DnsEndpoints",
    "EndpointSliceEndpoints",
    "POLICIES",
]

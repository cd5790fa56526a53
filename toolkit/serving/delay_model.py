"""A stand-in model with a known service time, for routing and autoscaling experiments on real servers.

Each request sleeps ``delay_ms`` inside a Python-backend model instance and returns the row
sums of its input, so a replica's capacity is ``instances * 1000 / delay_ms`` requests per
second whatever else the machine is doing (a sleep does not compete for the CPU the way a
real ranker does, which keeps measurements on a shared 2-core machine repeatable). A
"slower replica" is the same model with a longer delay or fewer instances, as a pod on a
busier node or an older CPU would be.

The config is built with Triton's own protobuf schema (``model_config_pb2``) and written
with ``text_format``, as :mod:`toolkit.repository.config` does.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.errors import ServingError

__all__ = ["DELAY_MODEL_INPUT", "DELAY_MODEL_OUTPUT", "DELAY_MODEL_WIDTH", "write_delay_model"]

DELAY_MODEL_INPUT = "x"
"""Input tensor: FP32, shape (B, :data:`DELAY_MODEL_WIDTH`) where B is the batch size."""
DELAY_MODEL_OUTPUT = "y"
"""Output tensor: FP32, shape (B, 1), the row sums of the input."""
DELAY_MODEL_WIDTH = 4

_SOURCE = """
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(parameters["delay_ms"]["string_value"]) / 1000.0

    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(self.delay_s)
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = x.sum(axis=1, keepdims=True).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return responses
"""


def write_delay_model(repository: Path, name: str = "delay", *, delay_ms: float, instances: int = 1, max_batch_size: int = 8) -> Path:
    """Write a Python-backend model that sleeps ``delay_ms`` per request into ``repository/name``.

    No dynamic batching: each request is executed on its own by one of ``instances`` model
    instances, so the replica serves at most ``instances`` requests at a time and queues the rest
    (Triton's scheduler queue, visible in ``nv_inference_queue_duration_us``).

    Args:
        repository: the model repository folder (created if missing).
        name: the model's name and folder.
        delay_ms: service time of one request, in milliseconds (> 0).
        instances: ``instance_group`` count (KIND_CPU), >= 1.
        max_batch_size: the model's ``max_batch_size`` (>= 1; rows per request).

    Returns:
        The model's folder.

    Raises:
        ServingError: ``delay_ms <= 0``, ``instances < 1`` or ``max_batch_size < 1`` (names the value).
    """
    if not delay_ms > 0:
        raise ServingError(f"delay model '{name}': delay_ms must be > 0, got {delay_ms!r}")
    if instances < 1 or max_batch_size < 1:
        raise ServingError(f"delay model '{name}': instances and max_batch_size must be >= 1, got {instances} and {max_batch_size}")
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=max_batch_size,
        input=[mc.ModelInput(name=DELAY_MODEL_INPUT, data_type=mc.TYPE_FP32, dims=[DELAY_MODEL_WIDTH])],
        output=[mc.ModelOutput(name=DELAY_MODEL_OUTPUT, data_type=mc.TYPE_FP32, dims=[1])],
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)],
    )
    config.parameters["delay_ms"].string_value = f"{delay_ms:g}"
    folder = Path(repository) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    (folder / "1" / "model.py").write_text(textwrap.dedent(_SOURCE).lstrip(), encoding="utf-8")
    return folder

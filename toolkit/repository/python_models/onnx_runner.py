"""Triton Python-backend model: an ONNX file run by ONNX Runtime (CPU or CUDA execution provider).

For Triton servers without the onnxruntime backend (such as the one in the
``nvidia-pytriton`` wheel). Copied by ``tritonrec build`` as ``<model>/1/model.py``
next to ``model.onnx`` (and its external data, if any). Requests that Triton's dynamic
batcher hands over together are concatenated and run as one batch.

Model parameters (``config.pbtxt`` ``parameters``): ``intra_op_threads`` and
``inter_op_threads`` (ONNX Runtime session options, default 1 each), and
``execution_provider``: ``cpu`` (default, ``CPUExecutionProvider``) or ``cuda``
(``CUDAExecutionProvider`` on the instance's GPU, ``model_instance_device_id``; needs
``onnxruntime-gpu`` in the server's Python environment, else the model fails to load
with the providers that are available).
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _providers(params, args):
    """ONNX Runtime providers for the ``execution_provider`` parameter; refuses one ONNX Runtime lacks."""
    choice = params.get("execution_provider", "cpu").lower()
    if choice not in _PROVIDERS:
        raise RuntimeError(f"parameter execution_provider={choice!r} must be one of {sorted(_PROVIDERS)}")
    provider = _PROVIDERS[choice]
    available = ort.get_available_providers()
    if provider not in available:
        raise RuntimeError(
            f"execution_provider={choice} needs ONNX Runtime's {provider}, but this onnxruntime has only {available} "
            "(install onnxruntime-gpu in the server's Python environment, or use execution_provider cpu)"
        )
    if choice == "cuda":
        return [(provider, {"device_id": int(args.get("model_instance_device_id", 0) or 0)})]
    return [provider]


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = int(params.get("inter_op_threads", "1"))
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"), options, providers=_providers(params, args))
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests]
        sizes = [a[0].shape[0] for a in arrays]
        feed = {n: np.concatenate([a[i] for a in arrays]) for i, n in enumerate(self.input_names)}
        outputs = self.session.run(self.output_names, feed)
        splits = np.cumsum(sizes)[:-1]
        per_request = [np.split(o, splits) for o in outputs]
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor(n, np.ascontiguousarray(per_request[j][i])) for j, n in enumerate(self.output_names)]
            )
            for i in range(len(requests))
        ]

"""Triton Python-backend model: a registered architecture's state dict run by PyTorch in FP32 eager mode.

Copied by ``tritonrec build`` as ``<model>/1/model.py`` next to the architecture's source
files (e.g. ``dlrm.py``), ``architecture.json`` (which module and classes to import: written
by ``toolkit.models.protocol.Architecture.runner_manifest``), ``model.pt`` (state dict) and
``model_config.json``. Needs only torch and numpy in the Python-backend environment.
Requests that Triton's dynamic batcher hands over together are concatenated and run as one
batch. Inputs are passed to ``forward`` by name (the config's input names are forward's
parameter names), so the order of forward's parameters does not matter.

A version folder written before ``architecture.json`` existed holds ``dlrm.py``: it is read as a DLRM.

A model whose tables were made int8 after it was built from its config (``tritonrec compress`` on
an architecture whose config says nothing of its tables' storage) comes with ``structure.json``
(which ``nn.Embedding`` paths became ``RowwiseInt8Embedding``, which ``nn.EmbeddingBag`` ones
``RowwiseInt8EmbeddingBag``) and ``tritonrec_layers.py`` (a copy of
``toolkit.models.layers``): its ``apply_structure`` re-applies them before the state dict is loaded,
as ``toolkit.train.load_checkpoint`` does.

Model parameters (``config.pbtxt`` ``parameters``): ``intra_op_threads`` (torch threads, default 1).
An instance placed on a GPU (``instance_group { kind: KIND_GPU }``) runs on that CUDA device.
"""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        sys.path.insert(0, str(version_dir))
        manifest_file = version_dir / "architecture.json"
        if manifest_file.is_file():
            manifest = json.loads(manifest_file.read_text())
        else:
            manifest = {"module": "dlrm", "config_class": "DLRMConfig", "model_class": "DLRM"}
        module = importlib.import_module(manifest["module"])  # the copy next to this file
        config_class = getattr(module, manifest["config_class"])
        model_class = getattr(module, manifest["model_class"])

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        torch.set_num_threads(int(params.get("intra_op_threads", "1")))
        model_config = config_class.from_dict(json.loads((version_dir / "model_config.json").read_text()))
        self.model = model_class(model_config)
        structure_file = version_dir / "structure.json"
        if structure_file.is_file():
            layers = importlib.import_module("tritonrec_layers")  # the copy next to this file
            try:
                layers.apply_structure(self.model, json.loads(structure_file.read_text()))
            except ValueError as exc:
                raise ValueError(f"{structure_file}: {exc}") from exc
        state = torch.load(version_dir / "model.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        on_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if on_gpu else "cpu")
        self.model.to(self.device)
        self.input_names = [t["name"] for t in config["input"]]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests]
        sizes = [a[0].shape[0] for a in arrays]
        batch = {name: torch.from_numpy(np.concatenate([a[i] for a in arrays])).to(self.device) for i, name in enumerate(self.input_names)}
        with torch.inference_mode():
            out = self.model(**batch).cpu().numpy()
        responses = []
        for chunk in np.split(out, np.cumsum(sizes)[:-1]):
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, np.ascontiguousarray(chunk))]))
        return responses

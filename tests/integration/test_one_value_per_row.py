"""A model with one value per row (ONNX shape ``[N]``) in and out, built by `build_model_config`,
loads in the bundled Triton server and answers: the ONNX Runtime runner in a Python backend (the
``*_python`` variants' ``model.py``) serving a hand-made ONNX graph.

Triton refuses a tensor without ``dims``; the config says ``dims: [1]`` with ``reshape { shape: [] }``,
so clients send and get ``(N, 1)`` while the model takes and returns ``(N,)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from toolkit.export import read_io_specs
from toolkit.repository import BatchingOptions, build_model_config, check_config_against, config_to_text, read_config
from toolkit.repository.ensemble import python_model_source
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.repository.validate import ServingTarget, validate_repository
from toolkit.serving import TritonServer, free_ports

pytestmark = pytest.mark.integration


def _per_row_model(path: Path) -> Path:
    """score[N] = float(item_id[N]) + sum(dense[N, 2], axis 1)."""
    item_id = helper.make_tensor_value_info("item_id", TensorProto.INT64, ["N"])
    dense = helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["N", 2])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Cast", ["item_id"], ["item_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["dense", "axes"], ["dense_sum"], keepdims=0),
        helper.make_node("Add", ["item_float", "dense_sum"], ["score"]),
    ]
    graph = helper.make_graph(nodes, "per_row", [item_id, dense], [score], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def test_a_model_with_one_value_per_row_in_and_out_loads_and_answers_on_the_bundled_server(tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    folder = repo / "per_row_onnx_python"
    onnx_path = _per_row_model(folder / "1" / "model.onnx")
    (folder / "1" / "model.py").write_bytes(python_model_source("onnx_runner.py"))
    inputs, outputs = read_io_specs(onnx_path)
    assert [s.shape for s in (*inputs, *outputs)] == [(None,), (None, 2), (None,)]
    options = BatchingOptions()
    config = build_model_config(
        folder.name, inputs, outputs, options, backend="python", parameters=options.thread_parameters(backend="python")
    )
    (folder / "config.pbtxt").write_text(config_to_text(config))
    write_metadata(folder, ModelMetadata(role="ranker", variant="onnx_python"))

    written = read_config(folder / "config.pbtxt")
    item_id, score = written.input[0], written.output[0]
    assert list(item_id.dims) == [1] and item_id.HasField("reshape") and list(item_id.reshape.shape) == []
    assert list(score.dims) == [1] and score.HasField("reshape") and list(score.reshape.shape) == []
    check_config_against(written, inputs, outputs)
    assert validate_repository(repo, target=ServingTarget.default(strict=True)) == []  # also checked against the ONNX file

    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port) as server:
        (state,) = server.model_states()
        assert state.state == "READY", state
        client = httpclient.InferenceServerClient(server.http_url)
        metadata = client.get_model_metadata(folder.name)
        assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == [("item_id", [-1, 1]), ("dense", [-1, 2])]
        ids = np.array([[3], [7], [11]], dtype=np.int64)
        dense = np.array([[0.5, 0.25], [1.0, -1.0], [2.0, 0.0]], dtype=np.float32)
        request = [httpclient.InferInput("item_id", [3, 1], "INT64"), httpclient.InferInput("dense", [3, 2], "FP32")]
        request[0].set_data_from_numpy(ids)
        request[1].set_data_from_numpy(dense)
        answer = client.infer(folder.name, request).as_numpy("score")
        client.close()

    assert answer.shape == (3, 1)
    np.testing.assert_allclose(answer, [[3.75], [7.0], [13.0]])

"""Repository validation: one small broken repository per rule, each finding naming model, field and fix."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from toolkit.errors import RepositoryError
from toolkit.repository import config_to_text, parse_config, read_config
from toolkit.repository.config import ModelConfig
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.repository.validate import Finding, ServingTarget, check_repository, validate_repository

# The rules here are Triton's, whatever the server: validate for the stock container, which has every
# backend these models use (the bundled server lacks onnxruntime and tensorrt: tests/unit/repository/test_validate_backends.py).
STOCK = ServingTarget.stock_container()

RANKER = """
name: "ranker"
platform: "onnxruntime_onnx"
max_batch_size: 32
input { name: "dense_features" data_type: TYPE_FP32 dims: [2] }
input { name: "sparse_ids" data_type: TYPE_INT64 dims: [7] }
output { name: "probability" data_type: TYPE_FP32 dims: [1] }
instance_group { count: 1 kind: KIND_CPU }
dynamic_batching { max_queue_delay_microseconds: 100 }
"""

PREPROCESS = """
name: "pre"
backend: "python"
max_batch_size: 64
input { name: "user_id" data_type: TYPE_STRING dims: [1] }
input { name: "age" data_type: TYPE_STRING dims: [1] }
output { name: "dense_features" data_type: TYPE_FP32 dims: [2] }
output { name: "sparse_ids" data_type: TYPE_INT64 dims: [7] }
instance_group { count: 1 kind: KIND_CPU }
"""

ENSEMBLE = """
name: "ens"
platform: "ensemble"
max_batch_size: 32
input { name: "user_id" data_type: TYPE_STRING dims: [1] }
input { name: "age" data_type: TYPE_STRING dims: [1] }
output { name: "probability" data_type: TYPE_FP32 dims: [1] }
ensemble_scheduling {
  step {
    model_name: "pre" model_version: -1
    input_map { key: "user_id" value: "user_id" }
    input_map { key: "age" value: "age" }
    output_map { key: "dense_features" value: "dense" }
    output_map { key: "sparse_ids" value: "ids" }
  }
  step {
    model_name: "ranker" model_version: -1
    input_map { key: "dense_features" value: "dense" }
    input_map { key: "sparse_ids" value: "ids" }
    output_map { key: "probability" value: "probability" }
  }
}
"""


def _onnx_model(path: Path, inputs: list[tuple[str, int, list]], outputs: list[tuple[str, int, list]]) -> Path:
    """A graph with the given inputs and outputs (each output an Identity of the first input: only the
    declared tensors matter here, the file is never run)."""
    nodes = [helper.make_node("Identity", [inputs[0][0]], [name]) for name, _, _ in outputs]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(helper.make_model(graph), str(path))
    return path


RANKER_IO = (
    [("dense_features", TensorProto.FLOAT, ["batch", 2]), ("sparse_ids", TensorProto.INT64, ["batch", 7])],
    [("probability", TensorProto.FLOAT, ["batch", 1])],
)


def _write_model(repo: Path, name: str, config_text: str, files: dict[str, bytes] | None = None) -> Path:
    model = repo / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(config_text)
    for rel, content in (files or {}).items():
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(content)
    return model


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A valid repository: an ONNX ranker, a Python-backend preprocess, and the ensemble of both."""
    repo = tmp_path / "model_repository"
    _write_model(repo, "ranker", RANKER)
    _onnx_model(repo / "ranker" / "1" / "model.onnx", *RANKER_IO)
    _write_model(repo, "pre", PREPROCESS, {"1/model.py": b"# preprocess\n"})
    _write_model(repo, "ens", ENSEMBLE)
    return repo


def _edit(repo: Path, model: str, change: Callable[[ModelConfig], None]) -> None:
    config = read_config(repo / model / "config.pbtxt")
    change(config)
    (repo / model / "config.pbtxt").write_text(config_to_text(config))


def _errors(repo: Path) -> list[Finding]:
    return [f for f in validate_repository(repo, target=STOCK) if f.severity == "error"]


def _has(repo: Path, model: str, field: str, message: str, severity: str = "error") -> Finding:
    """Some finding is at ``model``/``field`` and says ``message`` (others may follow from it, e.g. in an ensemble)."""
    findings = validate_repository(repo, target=STOCK)
    matching = [f for f in findings if (f.model, f.field, f.severity) == (model, field, severity) and message in f.message]
    assert matching, "\n".join(map(str, findings))
    assert matching[0].fix
    return matching[0]


def _only(repo: Path, model: str, field: str, message: str, severity: str = "error") -> Finding:
    """The repository has exactly one finding; check where it is and what it says."""
    findings = validate_repository(repo, target=STOCK)
    assert len(findings) == 1, "\n".join(map(str, findings))
    (f,) = findings
    assert (f.model, f.field, f.severity) == (model, field, severity), str(f)
    assert message in f.message, str(f)
    assert f.fix
    return f


def test_a_valid_repository_has_no_findings(repo: Path) -> None:
    assert validate_repository(repo, target=STOCK) == []
    assert check_repository(repo, target=STOCK) == []


def test_a_missing_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="is not a folder"):
        validate_repository(tmp_path / "nowhere")


def test_an_empty_repository_is_reported(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".staging").mkdir(parents=True)  # hidden folders are not models
    (f,) = validate_repository(tmp_path / "repo", target=STOCK)
    assert "holds no model folder" in f.message


# -- config, versions, model file ----------------------------------------------------------------


def test_a_config_that_does_not_parse(repo: Path) -> None:
    (repo / "ranker" / "config.pbtxt").write_text('name: "ranker"\nmax_batch_sise: 4\n')
    f = _only(repo, "ranker", "config.pbtxt", "not a valid Triton ModelConfig")
    assert "max_batch_sise" in f.message


def test_a_model_folder_without_config_is_a_warning_where_triton_completes_it_from_the_model_file(repo: Path) -> None:
    (repo / "ranker" / "config.pbtxt").unlink()
    _only(repo, "ranker", "config.pbtxt", "no config.pbtxt: Triton completes one from 1/model.onnx (backend onnxruntime)", "warning")


def test_a_python_model_without_config_loads_with_no_inputs_so_it_is_an_error(repo: Path) -> None:
    (repo / "pre" / "config.pbtxt").unlink()
    _only(repo, "pre", "config.pbtxt", "with a config it cannot complete (no inputs or outputs), so every request is refused")
    completes = "class TritonPythonModel:\n    def auto_complete_config(auto_complete_model_config): ...\n"
    (repo / "pre" / "1" / "model.py").write_text(completes)
    _only(repo, "pre", "config.pbtxt", "Triton completes one from 1/model.py (backend python)", "warning")


def test_a_model_folder_without_config_or_model_file_is_an_error(repo: Path) -> None:
    (repo / "ranker" / "config.pbtxt").unlink()
    (repo / "ranker" / "1" / "model.onnx").rename(repo / "ranker" / "1" / "ranker.onnx")
    _only(repo, "ranker", "config.pbtxt", "has no config.pbtxt, and no model file Triton could build one from")


def test_a_config_named_after_another_folder(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: setattr(c, "name", "dlrm"))
    f = _only(repo, "ranker", "name", "the config is named 'dlrm', but its folder is 'ranker'")
    assert 'name: "ranker"' in f.fix


def test_a_model_without_a_version_folder(repo: Path) -> None:
    (repo / "ranker" / "1" / "model.onnx").unlink()
    (repo / "ranker" / "1").rmdir()
    _only(repo, "ranker", "versions", "no numeric version folder")


def test_a_version_without_its_model_file(repo: Path) -> None:
    (repo / "pre" / "1" / "model.py").unlink()
    f = _only(repo, "pre", "1/model.py", "version 1 has no model.py, which backend python loads")
    assert "put model.py into 1/" == f.fix


def test_only_served_versions_need_the_model_file(repo: Path) -> None:
    (repo / "pre" / "2").mkdir()  # latest 1 serves version 2 only
    _only(repo, "pre", "2/model.py", "version 2 has no model.py")
    (repo / "pre" / "2" / "model.py").write_text("# v2\n")
    (repo / "pre" / "1" / "model.py").unlink()
    assert validate_repository(repo, target=STOCK) == []


def test_a_specific_version_policy_naming_a_missing_version_is_a_warning_while_another_exists(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.version_policy.specific.versions.extend([1, 3]))
    f = _only(repo, "ranker", "version_policy.specific.versions", "versions [3] are listed but have no folder", "warning")
    assert "Triton serves the others" in f.message


def test_a_specific_version_policy_naming_only_missing_versions(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.version_policy.specific.versions.extend([3]))
    f = _only(repo, "ranker", "version_policy.specific.versions", "versions [3] are listed but have no folder")
    assert "Triton needs at least one version" in f.message


def test_a_tensor_without_dims(repo: Path) -> None:
    _edit(repo, "pre", lambda c: c.output[0].ClearField("dims"))
    _has(repo, "pre", "output[dense_features].dims", "no dims")


def test_a_kind_cpu_group_naming_gpus(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.instance_group[0].gpus.append(0))
    _only(repo, "ranker", "instance_group[0].gpus", "a KIND_CPU group lists gpus [0]")


# -- the model file ------------------------------------------------------------------------------


def test_an_onnx_file_with_a_fixed_batch_of_16(repo: Path) -> None:
    inputs = [("dense_features", TensorProto.FLOAT, [16, 2]), ("sparse_ids", TensorProto.INT64, ["batch", 7])]
    _onnx_model(repo / "ranker" / "1" / "model.onnx", inputs, RANKER_IO[1])
    f = _only(repo, "ranker", "input[dense_features]", "has a fixed batch dimension of 16")
    assert "max_batch_size=32" in f.message and "max_batch_size: 0 and dims [16, 2]" in f.fix


def test_an_output_whose_dims_repeat_the_batch_dimension(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.output[0].dims.insert(0, -1))  # dims [-1, 1] for ONNX [batch, 1]
    f = _has(repo, "ranker", "output[probability].dims", "dims [-1, 1] repeat the batch dimension")
    assert f.fix == "drop the leading -1: dims [1]"
    # and the ensemble that returns it sees a rank-3 tensor where it declares rank 2
    _has(repo, "ens", "output[probability]", "shape [-1, -1, 1] from step 1 (ranker) output 'probability'")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda c: setattr(c.input[1], "name", "item_ids"), "input[item_ids]", "has no input 'item_ids'"),
        (
            lambda c: setattr(c.input[1], "data_type", 8),
            "input[sparse_ids].data_type",
            "config says TYPE_INT32, 1/model.onnx has TYPE_INT64",
        ),
        (lambda c: c.input[1].dims.append(1), "input[sparse_ids].dims", "config shape [-1, 7, 1] (rank 3)"),
        (lambda c: c.input[1].dims.__setitem__(0, 6), "input[sparse_ids].dims", "differ from 1/model.onnx's ['B', 7] at dim 0: 6 vs 7"),
    ],
    ids=["name", "dtype", "rank", "width"],
)
def test_config_tensors_that_do_not_match_the_onnx_file(repo: Path, change, field: str, message: str) -> None:
    _edit(repo, "ranker", change)
    findings = _errors(repo)
    assert any(f.model == "ranker" and f.field == field and message in f.message for f in findings), "\n".join(map(str, findings))


def test_an_input_of_the_onnx_file_missing_from_the_config(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.input.pop())
    _has(repo, "ranker", "input", "1/model.onnx takes input 'sparse_ids', which the config does not declare")


def test_a_variable_config_dim_where_the_onnx_file_is_fixed_is_a_warning(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.input[1].dims.__setitem__(0, -1))
    _only(repo, "ranker", "input[sparse_ids].dims", "variable where 1/model.onnx is fixed", "warning")


def test_python_backend_tensors_are_not_checked_against_a_file(repo: Path) -> None:
    _edit(repo, "pre", lambda c: c.output[0].dims.insert(0, -1))  # would be wrong for an ONNX model
    _onnx_model(repo / "pre" / "1" / "model.onnx", *RANKER_IO)  # a file the Python code may or may not use
    findings = [f for f in validate_repository(repo, target=STOCK) if f.model == "pre"]
    assert findings == []


def test_the_toolkits_onnx_python_rankers_are_checked_against_their_onnx_file(repo: Path) -> None:
    text = RANKER.replace('platform: "onnxruntime_onnx"', 'backend: "python"').replace('"ranker"', '"ranker_py"')
    model = _write_model(repo, "ranker_py", text.replace("dims: [7]", "dims: [5]"), {"1/model.py": b"# runner\n"})
    _onnx_model(model / "1" / "model.onnx", *RANKER_IO)
    assert [f for f in validate_repository(repo, target=STOCK) if f.model == "ranker_py"] == []  # no tritonrec.json: not ours
    write_metadata(model, ModelMetadata(role="ranker", variant="onnx_python"))
    _only(repo, "ranker_py", "input[sparse_ids].dims", "dims [5] differ from 1/model.onnx's ['B', 7]")


def test_tensorrt_plans_go_through_the_tensorrt_hook(repo: Path) -> None:
    text = RANKER.replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"').replace('"ranker"', '"ranker_trt"')
    _write_model(repo, "ranker_trt", text, {"1/model.plan": b"engine"})
    _only(repo, "ranker_trt", "model.plan", "TensorRT engine not inspected here", "warning")


# -- batching ------------------------------------------------------------------------------------


def test_preferred_batch_size_64_with_max_batch_size_32(repo: Path) -> None:
    text = RANKER.replace("max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: 100 preferred_batch_size: [64]")
    (repo / "ranker" / "config.pbtxt").write_text(text)
    f = _only(repo, "ranker", "dynamic_batching.preferred_batch_size", "preferred_batch_size [64] outside [1, max_batch_size=32]")
    assert "between 1 and 32" in f.fix


# -- ensembles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("dynamic_batching", "dynamic_batching { max_queue_delay_microseconds: 100 }", "an ensemble has no dynamic_batching of its own"),
        ("sequence_batching", "sequence_batching { }", "an ensemble has no sequence_batching of its own"),
        ("instance_group", "instance_group { count: 1 kind: KIND_CPU }", "an ensemble has no instance_group"),
        ("optimization", 'optimization { execution_accelerators { gpu_execution_accelerator { name: "tensorrt" } } }', "no optimization"),
    ],
)
def test_an_ensemble_with_scheduling_of_its_own(repo: Path, field: str, text: str, message: str) -> None:
    (repo / "ens" / "config.pbtxt").write_text(ENSEMBLE + text + "\n")
    f = _only(repo, "ens", field, message)
    assert field in f.fix


def test_an_ensemble_step_mapping_a_tensor_its_model_does_not_have(repo: Path) -> None:
    (repo / "ens" / "config.pbtxt").write_text(
        ENSEMBLE.replace('key: "sparse_ids" value: "ids" }\n    output_map', 'key: "item_ids" value: "ids" }\n    output_map')
    )
    findings = _errors(repo)
    assert [(f.model, f.field) for f in findings] == [
        ("ens", "ensemble_scheduling.step[1].input_map[item_ids]"),
        ("ens", "ensemble_scheduling.step[1].input_map"),
    ]
    assert "model 'ranker' has no input 'item_ids' (its inputs: ['dense_features', 'sparse_ids'])" in findings[0].message
    assert "input 'sparse_ids' of model 'ranker' is not mapped" in findings[1].message


def test_an_ensemble_step_mapping_an_output_its_model_does_not_have(repo: Path) -> None:
    (repo / "ens" / "config.pbtxt").write_text(ENSEMBLE.replace('key: "probability" value', 'key: "score" value'))
    _only(repo, "ens", "ensemble_scheduling.step[1].output_map[score]", "model 'ranker' has no output 'score'")


def test_an_ensemble_output_no_step_produces(repo: Path) -> None:
    extra = ENSEMBLE.replace(
        "ensemble_scheduling {", 'output { name: "top_items" data_type: TYPE_INT64 dims: [10] }\nensemble_scheduling {'
    )
    (repo / "ens" / "config.pbtxt").write_text(extra)
    f = _only(repo, "ens", "output[top_items]", "no step produces ensemble output 'top_items'")
    assert "output_map" in f.fix


def test_an_ensemble_step_naming_a_missing_model(repo: Path) -> None:
    (repo / "ens" / "config.pbtxt").write_text(ENSEMBLE.replace('model_name: "ranker"', 'model_name: "dlrm_onnx"'))
    f = _only(repo, "ens", "ensemble_scheduling.step[1].model_name", "model 'dlrm_onnx' is not in the repository")
    assert "ranker" in f.fix


def test_an_ensemble_tensor_from_nowhere(repo: Path) -> None:
    (repo / "ens" / "config.pbtxt").write_text(
        ENSEMBLE.replace(
            'key: "dense_features" value: "dense" }\n    input_map', 'key: "dense_features" value: "dense_ft" }\n    input_map'
        )
    )
    _has(repo, "ens", "ensemble_scheduling.step[1].input_map[dense_features]", "tensor 'dense_ft' is neither an ensemble input")
    findings = _errors(repo)
    assert any("tensor 'dense' is written but neither used" in f.message for f in findings)  # Triton refuses unused tensors too


def test_an_unused_ensemble_input(repo: Path) -> None:
    extra = ENSEMBLE.replace("output {", 'input { name: "zip_code" data_type: TYPE_STRING dims: [1] }\noutput {', 1)
    (repo / "ens" / "config.pbtxt").write_text(extra)
    _only(repo, "ens", "input[zip_code]", "ensemble input 'zip_code' is not used by any step")


def test_ensemble_steps_that_form_a_cycle(repo: Path) -> None:
    cyclic = ENSEMBLE.replace('key: "age" value: "age"', 'key: "age" value: "probability"').replace(
        'input { name: "age" data_type: TYPE_STRING dims: [1] }\n', ""
    )
    (repo / "ens" / "config.pbtxt").write_text(cyclic)
    findings = _errors(repo)
    cycle = [f for f in findings if f.field == "ensemble_scheduling.step"]
    assert len(cycle) == 1 and "the steps form a cycle: step 0 (pre) <- step 1 (ranker) <- step 0 (pre)" in cycle[0].message


def test_ensemble_dtypes_that_disagree_between_steps(repo: Path) -> None:
    _edit(repo, "pre", lambda c: setattr(c.output[1], "data_type", 8))  # sparse_ids INT32 into a ranker taking INT64
    f = _only(
        repo, "ens", "ensemble_scheduling.step[1].input_map[sparse_ids]", "tensor 'ids': TYPE_INT32 from step 0 (pre) output 'sparse_ids'"
    )
    assert "takes TYPE_INT64" in f.message


def test_ensemble_shapes_that_disagree_between_steps_and_with_the_ensemble(repo: Path) -> None:
    _edit(repo, "pre", lambda c: c.output[0].dims.__setitem__(0, 3))
    f = _only(repo, "ens", "ensemble_scheduling.step[1].input_map[dense_features]", "shape [-1, 3] from step 0 (pre)")
    assert "takes [-1, 2]" in f.message
    _edit(repo, "pre", lambda c: c.output[0].dims.__setitem__(0, 2))
    (repo / "ens" / "config.pbtxt").write_text(
        ENSEMBLE.replace(
            'output { name: "probability" data_type: TYPE_FP32 dims: [1] }', 'output { name: "probability" data_type: TYPE_FP32 dims: [2] }'
        )
    )
    _only(
        repo, "ens", "output[probability]", "shape [-1, 1] from step 1 (ranker) output 'probability', but the ensemble output takes [-1, 2]"
    )


def test_a_non_batching_model_in_a_batching_ensemble_compares_full_shapes(repo: Path) -> None:
    # Triton's rule: [-1, 2] of a max_batch_size 0 model equals [2] of a batching one.
    def unbatch(c: ModelConfig) -> None:
        c.max_batch_size = 0
        c.ClearField("dynamic_batching")
        for t in (*c.input, *c.output):
            t.dims.insert(0, -1)

    _edit(repo, "pre", unbatch)
    assert validate_repository(repo, target=STOCK) == []


def test_a_composing_model_with_a_smaller_max_batch_size(repo: Path) -> None:
    _edit(repo, "ens", lambda c: setattr(c, "max_batch_size", 128))
    findings = _errors(repo)
    assert [f.field for f in findings] == ["ensemble_scheduling.step[0].model_name", "ensemble_scheduling.step[1].model_name"]
    assert "the ensemble allows max_batch_size 128, but model 'pre' only 64" in findings[0].message


# -- model_warmup --------------------------------------------------------------------------------


def _add_warmup(repo: Path, *, file_bytes: bytes | None = struct.pack("<7q", *range(7)), **overrides) -> None:
    entry = {"name": "w", "batch_size": 8, "input": "sparse_ids", "data_type": 9, "dims": [7]} | overrides
    (repo / "ranker" / "warmup").mkdir(exist_ok=True)
    (repo / "ranker" / "warmup" / "dense.bin").write_bytes(struct.pack("<2f", 1.0, 2.0))
    if file_bytes is not None:
        (repo / "ranker" / "warmup" / "ids.bin").write_bytes(file_bytes)

    def change(c: ModelConfig) -> None:
        w = c.model_warmup.add(name=entry["name"], batch_size=entry["batch_size"])
        w.inputs["dense_features"].data_type = 11  # TYPE_FP32
        w.inputs["dense_features"].dims.append(2)
        w.inputs["dense_features"].input_data_file = "dense.bin"
        wi = w.inputs[entry["input"]]
        wi.data_type = entry["data_type"]
        wi.dims.extend(entry["dims"])
        if entry.get("random"):
            wi.random_data = True
        else:
            wi.input_data_file = "ids.bin"

    _edit(repo, "ranker", change)


def test_a_valid_warmup_has_no_findings(repo: Path) -> None:
    _add_warmup(repo)
    assert validate_repository(repo, target=STOCK) == []


def test_a_warmup_file_that_does_not_exist(repo: Path) -> None:
    _add_warmup(repo, file_bytes=None)
    _only(repo, "ranker", "model_warmup[w].inputs[sparse_ids].input_data_file", "warmup/ids.bin does not exist")


def test_a_warmup_file_shorter_than_its_dims_and_dtype(repo: Path) -> None:
    _add_warmup(repo, file_bytes=struct.pack("<6q", *range(6)))
    _only(
        repo,
        "ranker",
        "model_warmup[w].inputs[sparse_ids].input_data_file",
        "warmup/ids.bin has 48 bytes, but dims [7] of TYPE_INT64 need 56",
    )


def test_a_warmup_file_longer_than_one_sample_is_a_warning(repo: Path) -> None:
    _add_warmup(repo, file_bytes=struct.pack("<14q", *range(14)))
    _only(repo, "ranker", "model_warmup[w].inputs[sparse_ids].input_data_file", "more than the 56", "warning")


@pytest.mark.parametrize(
    ("overrides", "field", "message", "severity"),
    [
        ({"batch_size": 64}, "model_warmup[w].batch_size", "batch_size 64 exceeds max_batch_size 32", "error"),
        (
            {"data_type": 8, "file_bytes": struct.pack("<7i", *range(7))},
            "model_warmup[w].inputs[sparse_ids].data_type",
            "TYPE_INT32, but the input is TYPE_INT64",
            "error",
        ),
        ({"dims": [-1]}, "model_warmup[w].inputs[sparse_ids].dims", "Triton needs every warmup dimension fixed", "error"),
        ({"random": True}, "model_warmup[w].inputs[sparse_ids].random_data", "out of range for an id input", "warning"),
    ],
    ids=["batch-size", "dtype", "variable-dims", "random-ids"],
)
def test_warmup_entries_that_do_not_fit_the_model(repo: Path, overrides: dict, field: str, message: str, severity: str) -> None:
    _add_warmup(repo, **overrides)
    _only(repo, "ranker", field, message, severity)


def test_a_warmup_for_an_input_the_model_does_not_have(repo: Path) -> None:
    _add_warmup(repo, input="item_ids")
    findings = validate_repository(repo, target=STOCK)
    assert {(f.field, f.message.split(";")[0]) for f in findings} == {
        ("model_warmup[w].inputs", "no data for input 'sparse_ids'"),
        ("model_warmup[w].inputs[item_ids]", "'item_ids' is not an input of the model (it has ['dense_features', 'sparse_ids'])"),
    }


def test_a_bytes_warmup_file_must_hold_length_prefixed_elements(repo: Path) -> None:
    def change(c: ModelConfig) -> None:
        w = c.model_warmup.add(name="raw", batch_size=1)
        for name in ("user_id", "age"):
            w.inputs[name].data_type = 13  # TYPE_STRING
            w.inputs[name].dims.append(1)
            w.inputs[name].input_data_file = f"{name}.bin"

    _edit(repo, "pre", change)
    (repo / "pre" / "warmup").mkdir()
    (repo / "pre" / "warmup" / "user_id.bin").write_bytes(b"\x03\x00\x00\x00196")
    (repo / "pre" / "warmup" / "age.bin").write_bytes(b"24")  # no length prefix
    _only(repo, "pre", "model_warmup[raw].inputs[age].input_data_file", "warmup/age.bin is not 1 BYTES elements")


# -- check_repository ----------------------------------------------------------------------------


def test_check_repository_raises_listing_every_error_and_returns_the_warnings(repo: Path) -> None:
    _edit(repo, "ranker", lambda c: c.output[0].dims.insert(0, -1))
    (repo / "ens" / "config.pbtxt").write_text(ENSEMBLE + "dynamic_batching { }\n")
    with pytest.raises(RepositoryError) as info:
        check_repository(repo, target=STOCK)
    message = str(info.value)
    assert "2 problem(s) Triton would reject" in message
    assert "ranker: output[probability].dims: dims [-1, 1] repeat the batch dimension" in message
    assert "ens: dynamic_batching: an ensemble has no dynamic_batching" in message
    assert "(fix: remove dynamic_batching from the ensemble's config)" in message

    _edit(repo, "ranker", lambda c: c.output[0].dims.pop(0))
    (repo / "ens" / "config.pbtxt").write_text(ENSEMBLE)
    _edit(repo, "ranker", lambda c: c.input[1].dims.__setitem__(0, -1))
    (warning,) = check_repository(repo, target=STOCK)
    assert warning.severity == "warning"


def test_configs_written_by_build_model_config_parse_back_for_the_validator(repo: Path) -> None:
    # The validator reads exactly what config_to_text writes (sanity check of the fixture's configs).
    for name in ("ranker", "pre", "ens"):
        config = read_config(repo / name / "config.pbtxt")
        assert parse_config(config_to_text(config)) == config


def test_an_ensemble_with_dynamic_batching_instead_of_steps(repo: Path) -> None:
    text = ENSEMBLE[: ENSEMBLE.index("ensemble_scheduling {")] + "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
    (repo / "ens" / "config.pbtxt").write_text(text)
    findings = _errors(repo)
    assert {(f.field, f.message.split(" (")[0]) for f in findings} == {
        ("dynamic_batching", "an ensemble has no dynamic_batching of its own"),
        ("ensemble_scheduling.step", "an ensemble needs at least one step"),
    }


def test_an_ensemble_step_asking_for_a_missing_version(repo: Path) -> None:
    (repo / "ens" / "config.pbtxt").write_text(
        ENSEMBLE.replace('model_name: "ranker" model_version: -1', 'model_name: "ranker" model_version: 3')
    )
    _only(repo, "ens", "ensemble_scheduling.step[1].model_version", "model 'ranker' has no version 3 (it has [1])")

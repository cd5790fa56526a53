"""Validation for the server that will serve the repository: its backends, and what Triton picks or completes itself.

The verdicts were checked against the real Triton 2.51 server (the bundled one), which
tests/integration/test_validate_agrees_with_triton.py does for a whole mutant repository; here
each rule is pinned on a small hand-written repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from toolkit.errors import RepositoryError
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.repository.validate import STOCK_CONTAINER, Finding, ServingTarget, validate_repository

PYTHON_MODEL = """
name: "NAME"
backend: "python"
max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [3] }
output { name: "y" data_type: TYPE_FP32 dims: [1] }
"""
BUNDLED = ServingTarget.default()  # no tritonserver on PATH here: the server in the nvidia-pytriton wheel


def _model(repo: Path, name: str, text: str = PYTHON_MODEL, files: tuple[str, ...] = ("1/model.py",)) -> Path:
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    if text is not None:
        (folder / "config.pbtxt").write_text(text.replace("NAME", name))
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"# model file\n")
    return folder


def _findings(repo: Path, target: ServingTarget = BUNDLED) -> list[Finding]:
    return validate_repository(repo, target=target)


def _one(repo: Path, target: ServingTarget = BUNDLED) -> Finding:
    findings = _findings(repo, target)
    assert len(findings) == 1, "\n".join(map(str, findings))
    return findings[0]


def test_the_default_target_is_the_bundled_server_with_only_the_python_backend() -> None:
    assert BUNDLED.name.startswith("the bundled Triton server (nvidia-pytriton ")
    assert BUNDLED.backends == {"python"} and not BUNDLED.strict


def test_a_backend_name_no_server_has_is_an_error_with_the_closest_name(tmp_path: Path) -> None:
    _model(tmp_path, "m", PYTHON_MODEL.replace('backend: "python"', 'backend: "pytroch"'))
    f = _one(tmp_path)
    assert (f.field, f.severity) == ("backend", "error")
    assert "no Triton backend is named 'pytroch'" in f.message and "did you mean 'pytorch'?" in f.message
    assert f.fix == 'set backend: "pytorch"'
    assert _one(tmp_path, ServingTarget.stock_container()).severity == "error"  # unknown everywhere


def test_an_unknown_platform_is_an_error_with_the_closest_platform(tmp_path: Path) -> None:
    _model(tmp_path, "m", PYTHON_MODEL.replace('backend: "python"', 'platform: "tensorrt_plna"'), ("1/model.plan",))
    f = _one(tmp_path, ServingTarget.stock_container())
    assert (f.field, f.severity) == ("platform", "error")
    assert "Triton knows no platform 'tensorrt_plna'" in f.message and "did you mean 'tensorrt_plan'?" in f.message


@pytest.mark.parametrize(
    ("platform", "model_file", "backend"), [("onnxruntime_onnx", "model.onnx", "onnxruntime"), ("tensorrt_plan", "model.plan", "tensorrt")]
)
def test_a_platform_only_the_stock_container_has_is_a_warning_for_the_default_target_and_an_error_for_a_strict_one(
    tmp_path: Path, platform: str, model_file: str, backend: str
) -> None:
    text = PYTHON_MODEL.replace('backend: "python"', f'platform: "{platform}"')
    _model(tmp_path, "m", text, (f"1/{model_file}",))
    stock = ServingTarget.stock_container()
    tolerant = next(f for f in _findings(tmp_path) if f.field == "platform")
    assert tolerant.severity == "warning"
    assert f"{BUNDLED.name} has no {backend} backend, which platform '{platform}' runs on" in tolerant.message
    assert f"it loads in {STOCK_CONTAINER}" in tolerant.message
    strict = next(f for f in _findings(tmp_path, ServingTarget.default(strict=True)) if f.field == "platform")
    assert strict.severity == "error" and strict.message == tolerant.message
    assert [f for f in _findings(tmp_path, stock) if f.field == "platform"] == []


def test_a_backend_library_in_the_model_folder_is_found_there(tmp_path: Path) -> None:
    _model(tmp_path, "m", PYTHON_MODEL.replace('backend: "python"', 'backend: "mybackend"'), ("libtriton_mybackend.so",))
    assert _findings(tmp_path, ServingTarget.default(strict=True)) == []


def test_a_backend_directory_lists_its_backends_and_python_based_ones(tmp_path: Path) -> None:
    backends = tmp_path / "backends"
    for name, file in (("python", "libtriton_python.so"), ("fancy", "model.py"), ("empty", None)):
        (backends / name).mkdir(parents=True)
        if file:
            (backends / name / file).write_bytes(b"")
    target = ServingTarget.from_backend_directory(backends)
    assert target.backends == {"python", "fancy"} and target.strict
    with pytest.raises(RepositoryError, match="is not a folder"):
        ServingTarget.from_backend_directory(tmp_path / "nowhere")


def test_a_config_without_backend_gets_the_one_triton_picks_from_the_model_file(tmp_path: Path) -> None:
    _model(tmp_path, "py", PYTHON_MODEL.replace('backend: "python"\n', ""))
    f = _one(tmp_path)
    assert (f.model, f.field, f.severity) == ("py", "backend", "warning")
    assert "Triton picks backend 'python' from 1/model.py" in f.message
    # model.onnx wins over model.py (Triton 2.51): onnxruntime, which the bundled server lacks
    _model(tmp_path, "both", PYTHON_MODEL.replace('backend: "python"\n', ""), ("1/model.py", "1/model.onnx"))
    both = [f for f in _findings(tmp_path, ServingTarget.default(strict=True)) if f.model == "both"]
    assert [(f.field, f.severity) for f in both] == [("backend", "error"), ("backend", "warning")]
    assert "has no onnxruntime backend, which Triton picks for 1/model.onnx" in both[0].message


def test_a_config_without_backend_or_model_file_is_an_error(tmp_path: Path) -> None:
    _model(tmp_path, "m", PYTHON_MODEL.replace('backend: "python"\n', ""), ("1/weights.bin",))
    f = _one(tmp_path)
    assert (f.field, f.severity) == ("platform", "error")
    assert "no model file tells Triton which" in f.message


def test_a_folder_without_config_needs_the_backend_triton_completes_it_for(tmp_path: Path) -> None:
    _model(tmp_path, "m", None, ("1/model.onnx",))
    findings = _findings(tmp_path, ServingTarget.default(strict=True))
    assert [(f.field, f.severity) for f in findings] == [("backend", "error"), ("config.pbtxt", "warning")]
    assert "Triton completes one from 1/model.onnx" in findings[1].message
    assert [f.severity for f in _findings(tmp_path, ServingTarget.stock_container())] == ["warning"]


def test_an_input_declared_twice_is_an_error_because_triton_then_refuses_every_request(tmp_path: Path) -> None:
    _model(tmp_path, "m", PYTHON_MODEL.replace("output {", 'input { name: "x" data_type: TYPE_FP32 dims: [3] }\noutput {'))
    f = _one(tmp_path)
    assert (f.field, f.severity) == ("input[x]", "error")
    assert "refuses every request" in f.message


# -- the toolkit's ONNX-in-Python rankers ------------------------------------------------------------


def _onnx_ranker(repo: Path, config_text: str, *, external: bool = False) -> Path:
    folder = _model(repo, "ranker", config_text)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 1], np.array([1, 2, 3], np.float32).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save_model(model, str(folder / "1" / "model.onnx"), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    else:
        onnx.save_model(model, str(folder / "1" / "model.onnx"))
    write_metadata(folder, ModelMetadata(role="ranker", variant="onnx_python"))
    return folder


def test_an_onnx_python_ranker_output_that_differs_from_its_file_is_a_warning_because_the_python_backend_passes_it(
    tmp_path: Path,
) -> None:
    _onnx_ranker(
        tmp_path,
        PYTHON_MODEL.replace('output { name: "y" data_type: TYPE_FP32 dims: [1] }', 'output { name: "y" data_type: TYPE_FP64 dims: [2] }'),
    )
    findings = _findings(tmp_path)
    assert [(f.field, f.severity) for f in findings] == [("output[y].data_type", "warning"), ("output[y].dims", "warning")]
    assert all("the Python backend returns the file's" in f.message for f in findings)
    # inputs are checked by Triton against every request: still errors
    (tmp_path / "ranker" / "config.pbtxt").write_text(PYTHON_MODEL.replace("NAME", "ranker").replace("dims: [3]", "dims: [4]"))
    assert [(f.field, f.severity) for f in _findings(tmp_path)] == [("input[x].dims", "error")]


def test_an_onnx_python_ranker_without_its_onnx_file_or_external_data_is_an_error(tmp_path: Path) -> None:
    folder = _onnx_ranker(tmp_path, PYTHON_MODEL, external=True)
    assert _findings(tmp_path) == []
    (folder / "1" / "model.onnx.data").unlink()
    f = _one(tmp_path)
    assert (f.field, f.severity) == ("1/model.onnx.data", "error")
    assert "1/model.onnx keeps its weights in model.onnx.data, which is missing" in f.message
    (folder / "1" / "model.onnx").unlink()
    f = _one(tmp_path)
    assert (f.field, f.severity) == ("1/model.onnx", "error")
    assert "version 1 has no model.onnx, which its model.py (the onnx_python runner) loads" in f.message


# -- TensorRT plans on a machine that cannot read them ----------------------------------------------


def test_a_fake_tensorrt_plan_on_this_cpu_machine_is_a_finding_not_an_exception(tmp_path: Path) -> None:
    text = PYTHON_MODEL.replace('backend: "python"', 'platform: "tensorrt_plan"')
    _model(tmp_path, "trt", text, ())
    (tmp_path / "trt" / "1" / "model.plan").write_bytes(b"this is not a TensorRT engine")
    findings = _findings(tmp_path, ServingTarget.stock_container())
    assert [(f.model, f.field, f.severity) for f in findings] == [("trt", "model.plan", "warning")]
    assert "TensorRT engine not inspected here" in findings[0].message
    assert "NVIDIA GPU" in findings[0].message or "tensorrt is not installed" in findings[0].message

    done = subprocess.run([sys.executable, "-m", "toolkit", "validate", str(tmp_path), "--server", "stock"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "TensorRT engine not inspected here" in done.stdout
    assert "for the stock container" in done.stdout


def test_validate_command_names_the_server_and_fails_only_for_a_strict_target(tmp_path: Path) -> None:
    ranker = _onnx_ranker(tmp_path, PYTHON_MODEL)
    platform_model = _model(tmp_path, "m", PYTHON_MODEL.replace('backend: "python"', 'platform: "onnxruntime_onnx"'), ())
    (platform_model / "1" / "model.onnx").write_bytes((ranker / "1" / "model.onnx").read_bytes())

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "toolkit", "validate", str(tmp_path), *args], capture_output=True, text=True)

    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 warning(s)" in done.stdout and "onnxruntime" in done.stdout and "for the bundled Triton server" in done.stdout
    assert run("--server", "here").returncode == 1
    assert run("--server", "stock").returncode == 0
    bad = run("--server", "nowhere")
    assert bad.returncode == 2 and "--server must be one of default, here, stock" in bad.stdout + bad.stderr

"""ONNX export of PyTorch models, reading ONNX signatures, and numerical parity checks.

::

    export_onnx(model, {"x": x, "ids": ids}, ["probability"], Path("out/model.onnx"))
    inputs, outputs = read_io_specs(Path("out/model.onnx"))        # TensorSpec lists
    check_batch_dimension(Path("out/model.onnx"), max_batch_size=256)
    check_parity(model, Path("out/model.onnx"), {"x": x_np, "ids": ids_np})
    copy_onnx_model(Path("out/model.onnx"), repo / "dlrm_onnx" / "1")  # + model.onnx.data
    build_engine(Path("out/model.onnx"), repo / "dlrm_tensorrt" / "1" / "model.plan", max_batch_size=256)  # GPU only

The TensorRT names (:mod:`toolkit.export.tensorrt`) are imported on first use (PEP 562); the
module itself imports ``tensorrt`` and ``polygraphy`` only when an engine is built or read.
"""

from toolkit.export.onnx_info import check_batch_dimension, copy_onnx_model, external_data_files, read_io_specs
from toolkit.export.parity import ParityReport, check_parity
from toolkit.export.torch2onnx import BATCH_DIM_NAME, export_onnx, find_embedding_bags

_TENSORRT_NAMES = (
    "ENGINE_TOLERANCES",
    "EngineBuild",
    "ShapeRange",
    "build_engine",
    "plan_findings",
    "profile_findings",
    "read_plan_io",
    "read_plan_profiles",
    "tensorrt_unavailable",
)

__all__ = [
    "BATCH_DIM_NAME",
    *_TENSORRT_NAMES,
    "ParityReport",
    "check_batch_dimension",
    "check_parity",
    "copy_onnx_model",
    "export_onnx",
    "external_data_files",
    "find_embedding_bags",
    "read_io_specs",
]


def __getattr__(name: str):
    if name in _TENSORRT_NAMES:
        from toolkit.export import tensorrt

        return getattr(tensorrt, name)
    raise AttributeError(f"module 'toolkit.export' has no attribute {name!r}")

"""ONNX export of PyTorch models, reading ONNX signatures, and numerical parity checks.

::

    export_onnx(model, {"x": x, "ids": ids}, ["probability"], Path("out/model.onnx"))
    inputs, outputs = read_io_specs(Path("out/model.onnx"))        # TensorSpec lists
    check_batch_dimension(Path("out/model.onnx"), max_batch_size=256)
    check_parity(model, Path("out/model.onnx"), {"x": x_np, "ids": ids_np})
    copy_onnx_model(Path("out/model.onnx"), repo / "dlrm_onnx" / "1")  # + model.onnx.data
"""

from toolkit.export.onnx_info import check_batch_dimension, copy_onnx_model, external_data_files, read_io_specs
from toolkit.export.parity import ParityReport, check_parity
from toolkit.export.torch2onnx import BATCH_DIM_NAME, export_onnx, find_embedding_bags

__all__ = [
    "BATCH_DIM_NAME",
    "ParityReport",
    "check_batch_dimension",
    "check_parity",
    "copy_onnx_model",
    "export_onnx",
    "external_data_files",
    "find_embedding_bags",
    "read_io_specs",
]

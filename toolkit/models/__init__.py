"""Models: recommender architectures written to export to ONNX and TensorRT, and their signatures."""

from toolkit.models.dlrm import DLRM, DLRMConfig
from toolkit.models.signature import dlrm_example_inputs, dlrm_signature

__all__ = ["DLRM", "DLRMConfig", "dlrm_example_inputs", "dlrm_signature"]

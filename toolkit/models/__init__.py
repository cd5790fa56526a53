"""Models: recommender architectures written to export to ONNX and TensorRT, their signatures,
the protocol every architecture implements and the registry keyed by ``architecture``."""

from toolkit.models import architectures as _architectures  # noqa: F401  (registers dlrm, dcnv2, deepfm)
from toolkit.models import user as _user  # noqa: F401  (registers "user": a model file's own module)
from toolkit.models.dcnv2 import DCNv2, DCNv2Config
from toolkit.models.deepfm import DeepFM, DeepFMConfig
from toolkit.models.dlrm import DLRM, DLRMConfig
from toolkit.models.protocol import Architecture, FeatureSizes, call_by_name
from toolkit.models.registry import architecture_names, architecture_of, build_model, config_from_dict, get_architecture, register
from toolkit.models.signature import dlrm_example_inputs, dlrm_signature

__all__ = [
    "Architecture",
    "DCNv2",
    "DCNv2Config",
    "DLRM",
    "DLRMConfig",
    "DeepFM",
    "DeepFMConfig",
    "FeatureSizes",
    "architecture_names",
    "architecture_of",
    "build_model",
    "call_by_name",
    "config_from_dict",
    "dlrm_example_inputs",
    "dlrm_signature",
    "get_architecture",
    "register",
]

"""Repository: Triton model configs (protobuf), serving variants, atomic repository builds."""

from toolkit.repository.builder import VARIANTS, BuiltModel, build_repository
from toolkit.repository.config import (
    BatchingOptions,
    ModelConfig,
    build_model_config,
    check_config_against,
    config_tensor_specs,
    config_to_text,
    parse_config,
    read_config,
)

__all__ = [
    "VARIANTS",
    "BatchingOptions",
    "BuiltModel",
    "ModelConfig",
    "build_model_config",
    "build_repository",
    "check_config_against",
    "config_tensor_specs",
    "config_to_text",
    "parse_config",
    "read_config",
]

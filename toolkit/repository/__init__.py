"""Repository: Triton model configs (protobuf), serving variants, ensembles, validation, versioned builds.

Torch-free modules are imported eagerly (serving and perf read configs, validate repositories
and build raw requests); the builder, which loads checkpoints with torch, is imported on
first use (PEP 562).
"""

from toolkit.repository.buildfile import BuildFile, load_build_file
from toolkit.repository.config import (
    BatchingOptions,
    InstanceGroup,
    ModelConfig,
    VersionPolicy,
    build_model_config,
    check_config_against,
    config_tensor_specs,
    config_to_text,
    parse_config,
    read_config,
)
from toolkit.repository.metadata import ModelMetadata, read_metadata, write_metadata
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS, raw_request
from toolkit.repository.validate import Finding, check_repository, validate_repository
from toolkit.repository.versions import install_model, model_versions, next_version, write_version

_BUILDER_NAMES = ("VARIANTS", "TARGETS", "TARGET_VARIANTS", "BuiltModel", "SkippedVariant", "BuildResult", "build_repository")

__all__ = [
    "VARIANTS",
    "TARGETS",
    "TARGET_VARIANTS",
    "RAW_INPUT_SPECS",
    "BatchingOptions",
    "BuildFile",
    "BuildResult",
    "BuiltModel",
    "Finding",
    "InstanceGroup",
    "ModelConfig",
    "ModelMetadata",
    "SkippedVariant",
    "VersionPolicy",
    "build_model_config",
    "build_repository",
    "check_config_against",
    "check_repository",
    "config_tensor_specs",
    "config_to_text",
    "install_model",
    "load_build_file",
    "model_versions",
    "next_version",
    "parse_config",
    "raw_request",
    "read_config",
    "read_metadata",
    "validate_repository",
    "write_metadata",
    "write_version",
]


def __getattr__(name: str):
    if name in _BUILDER_NAMES:
        from toolkit.repository import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'toolkit.repository' has no attribute {name!r}")

"""Repository: Triton model configs (protobuf), serving variants, atomic repository builds.

The config module is torch-free and imported eagerly (serving and perf read configs);
the builder, which loads checkpoints with torch, is imported on first use (PEP 562).
"""

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

_BUILDER_NAMES = ("VARIANTS", "BuiltModel", "build_repository")

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


def __getattr__(name: str):
    if name in _BUILDER_NAMES:
        from toolkit.repository import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'toolkit.repository' has no attribute {name!r}")

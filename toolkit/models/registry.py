"""The architectures every stage can take, keyed by the ``architecture`` field of their config.

The toolkit's own (``dlrm``, ``dcnv2``, ``deepfm``) register when :mod:`toolkit.models` is
imported; a user's architecture registers with :func:`register` (no change to the toolkit).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from toolkit.models.protocol import Architecture

__all__ = [
    "register",
    "unregister",
    "get_architecture",
    "architecture_names",
    "architecture_of",
    "config_from_dict",
    "build_model",
]

_REGISTRY: dict[str, Architecture] = {}


def register(architecture: Architecture, *, replace: bool = False) -> Architecture:
    """Add ``architecture`` under its ``name``; returns it.

    Raises:
        ValueError: the name is taken by another entry (unless ``replace``), or the entry's
            config class does not produce configs with its name.
    """
    if not architecture.name or not architecture.name.replace("_", "").isalnum():
        raise ValueError(f"architecture name {architecture.name!r} must be letters, digits or '_'")
    taken = _REGISTRY.get(architecture.name)
    if taken is not None and taken != architecture and not replace:
        raise ValueError(f"architecture {architecture.name!r} is already registered (by {taken.model_class.__qualname__})")
    if not architecture.source_files:
        raise ValueError(f"architecture {architecture.name!r} names no source files for the Python backend")
    _REGISTRY[architecture.name] = architecture
    return architecture


def unregister(name: str) -> None:
    """Remove the architecture ``name`` (tests that register a toy one); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def architecture_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """The entry registered as ``name``.

    Raises:
        ValueError: no such architecture (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(architecture_names())}") from None


def architecture_of(model_or_config: nn.Module | Any) -> Architecture:
    """The entry of a model (by its ``config``) or of a config object.

    Raises:
        ValueError: its config names no registered architecture, or it is not that architecture's class.
    """
    is_model = isinstance(model_or_config, nn.Module)
    config = getattr(model_or_config, "config", None) if is_model else model_or_config
    for arch in _REGISTRY.values():
        if isinstance(config, arch.config_class):
            # a model_class that is a function (the ``user`` architecture's) builds modules of the user's own classes
            if is_model and isinstance(arch.model_class, type) and not isinstance(model_or_config, arch.model_class):
                raise ValueError(f"{type(model_or_config).__name__} has a {arch.name} config but is not a {arch.model_class.__name__}")
            return arch
    what = f"{type(model_or_config).__name__} (a module)" if is_model else type(config).__name__
    raise ValueError(f"{what} is not a registered architecture's model or config (registered: {', '.join(architecture_names())})")


def config_from_dict(d: dict) -> Any:
    """The config a ``model_config.json`` dict describes, by its ``architecture`` key.

    Configs written before the key existed have no other reading than the DLRM's (its
    ``to_dict`` wrote ``"architecture": "dlrm"`` from the start, so a missing key is an error).

    Raises:
        ValueError: not a dict, no or an unknown ``architecture`` (listing the registered ones),
            or the architecture's own ``from_dict`` refuses the fields.
    """
    if not isinstance(d, dict):
        raise ValueError(f"a model config must be a JSON object, got {type(d).__name__}")
    if "architecture" not in d:
        raise ValueError(f"the model config has no 'architecture' key; registered: {', '.join(architecture_names())}")
    return get_architecture(d["architecture"]).config_class.from_dict(d)


def build_model(config: Any) -> nn.Module:
    """A fresh model (random weights) of ``config``'s architecture.

    Raises:
        ValueError: ``config`` is not the config of a registered architecture.
    """
    return architecture_of(config).build(config)

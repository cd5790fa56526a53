"""A user's own model as a registered architecture: the config that carries its code, and the builder.

A user's model is any ``nn.Module`` made by a factory in a Python file of theirs
(``my_model.py:build``, loaded by :func:`toolkit.models.user.load_model_file`). Its config,
:class:`UserModelConfig`, holds the file's *source text*, the factory's name and the named
input signature, so ``model_config.json`` alone rebuilds the module anywhere: here, in a
checkpoint, and in the Triton Python backend, where this file is copied next to the torch
runner (it imports only torch and the standard library, as every architecture's source file must).

:func:`UserModel` runs that source as a module and calls the factory; the module it returns
(the user's own class, not a wrapper, so its state dict keys and ``forward`` are the user's)
gets the config as its ``config`` attribute. Weights then come from the state dict that was
saved with it.
"""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import asdict, dataclass, field

from torch import nn

ARCHITECTURE = "user"
FORMAT_VERSION = 1

__all__ = ["ARCHITECTURE", "UserModelConfig", "UserModel", "run_source"]


@dataclass
class UserModelConfig:
    """A user's model: the code that builds it and the inputs it takes.

    Attributes:
        source_file: the path the file was loaded from (for messages and tracebacks; the code
            itself is ``source``).
        source: the file's text, run as a module to rebuild the model.
        factory: the name of the function in it that returns ``(module, signature)``.
        inputs: one dict per input, in the signature's order: ``name`` (a parameter of the
            module's ``forward``), ``dtype`` (numpy name, ``"float32"``, ``"int64"``), ``shape``
            (``None`` first for the batch dimension B, then fixed sizes) and, for integer
            inputs, ``high``: ids are drawn from ``[0, high)`` for example inputs.
        linear_widths: ``{qualified name: [in_features, out_features]}`` of the ``nn.Linear`` layers
            whose widths differ from what the factory builds (after structured pruning); each is
            replaced by an ``nn.Linear`` of these widths before the state dict is loaded.
    """

    source_file: str
    source: str
    factory: str
    inputs: list[dict] = field(default_factory=list)
    linear_widths: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe dict with ``architecture`` ``"user"`` and ``format_version``."""
        return {"format_version": FORMAT_VERSION, "architecture": ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> UserModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: another architecture or format version, or missing/unknown fields (named).
        """
        d = dict(d)
        arch, version = d.pop("architecture", None), d.pop("format_version", None)
        if arch != ARCHITECTURE or version != FORMAT_VERSION:
            raise ValueError(f"expected a {ARCHITECTURE!r} config of format_version {FORMAT_VERSION}, got {arch!r} version {version!r}")
        names = {"source_file", "source", "factory", "inputs"}
        if not names <= set(d) <= names | {"linear_widths"}:
            raise ValueError(f"a {ARCHITECTURE!r} config has the fields {sorted(names)} (and linear_widths), got {sorted(d)}")
        return cls(**d)


def run_source(source: str, filename: str) -> types.ModuleType:
    """Run ``source`` as a new module (compiled with ``filename``, so tracebacks name the user's
    file and lines) and return it. The module is entered in ``sys.modules`` under a name made
    from the source's SHA-256 (dataclasses and pickling look classes up there); the same source
    run twice gives the same module object.

    Raises:
        Whatever the source raises (SyntaxError, ImportError, ...).
    """
    name = "tritonrec_user_model_" + hashlib.sha256(source.encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102  (the user's own model file)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def UserModel(config: UserModelConfig) -> nn.Module:  # noqa: N802  (the runner calls model_class(config))
    """The user's module, built by its factory from ``config.source``, with ``config`` attached.

    Raises:
        Whatever the file or its factory raises; ``TypeError`` when the factory is missing or
        does not return ``(nn.Module, signature)``.
    """
    module = run_source(config.source, config.source_file)
    factory = getattr(module, config.factory, None)
    if not callable(factory):
        raise TypeError(f"{config.source_file} defines no function {config.factory!r}")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise TypeError(
            f"{config.source_file}:{config.factory}() must return (module, signature) with an nn.Module first, got {type(result).__name__}"
        )
    model = result[0]
    for name, (in_features, out_features) in config.linear_widths.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attr)
        if not isinstance(old, nn.Linear):
            raise TypeError(f"{config.source_file}:{config.factory}(): {name} is a {type(old).__name__}, expected an nn.Linear to resize")
        setattr(parent, attr, nn.Linear(in_features, out_features, bias=old.bias is not None))
    model.config = config
    return model

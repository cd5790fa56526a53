"""The model seam: what every recommender architecture tells the other stages about itself.

Training, export, the repository builder and the Python backend never special-case an
architecture (RecBole's one base class and its name-keyed model zoo, torchrec's embedding
collections kept apart from the dense part): they ask its :class:`Architecture` entry,
found in :mod:`toolkit.models.registry` by the ``architecture`` key of its config.

An architecture provides:

* a config class, a dataclass whose ``to_dict()`` is JSON-safe and carries
  ``"architecture"`` and ``"format_version"`` keys, and whose ``from_dict()`` inverts it
  (raising ``ValueError`` for anything else);
* a model class, an ``nn.Module`` built as ``model_class(config)``, with
  ``forward(**inputs) -> (B, 1) float32`` probabilities and ``logits(**inputs) -> (B, 1)``
  float32 pre-sigmoid scores (what the training loss uses), keeping ``config`` as an attribute;
* its served signature: the named inputs with dtypes and shapes. **The input names are
  the names of forward's parameters**, and every stage passes inputs by name
  (``model(**inputs)``, see :func:`call_by_name`), so the order of forward's parameters is free;
* example inputs (random, in range) for tracing and smoke tests;
* where its embedding tables are and which of its MLP blocks may be pruned;
* the source files the Triton Python backend needs to rebuild it from its state dict
  (files that import only torch and the standard library).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from toolkit.tensors import TensorSpec

__all__ = [
    "Architecture",
    "FeatureSizes",
    "ModelConfig",
    "RecommenderModel",
    "Signature",
    "call_by_name",
    "check_input_names",
    "config_from_fields",
    "forward_parameters",
    "PROBABILITY_OUTPUT",
]

#: Name of the (B, 1) float32 output every registered architecture returns.
PROBABILITY_OUTPUT = "probability"

#: Inputs then outputs, each a list of :class:`~toolkit.tensors.TensorSpec` with a dynamic batch dimension.
Signature = tuple[list[TensorSpec], list[TensorSpec]]


@runtime_checkable
class ModelConfig(Protocol):
    """What every architecture's config does: a JSON-safe dict with ``architecture`` and back."""

    def to_dict(self) -> dict: ...


@runtime_checkable
class RecommenderModel(Protocol):
    """What every registered model does (an ``nn.Module``; ``forward``/``logits`` take inputs by name)."""

    config: Any

    def logits(self, **inputs: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FeatureSizes:
    """The sizes of a data set's encoded features, from which an architecture sizes its tables.

    Attributes:
        num_dense: D, dense features (``dense_features`` float32 (B, D)).
        sparse_cardinalities: table sizes of the S single-valued categorical features
            (``sparse_ids`` int64 (B, S)).
        multi_hot_cardinalities: table sizes of the M multi-valued features.
        multi_hot_lengths: padded length L_m of each (``multi_hot_ids`` int64 (B, sum L_m)).
    """

    num_dense: int
    sparse_cardinalities: list[int]
    multi_hot_cardinalities: list[int] = field(default_factory=list)
    multi_hot_lengths: list[int] = field(default_factory=list)

    def as_fields(self) -> dict[str, Any]:
        """The four sizes as keyword arguments of a config class that has fields of these names."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Architecture:
    """One registered architecture: how every stage builds, feeds, inspects and ships it.

    Attributes:
        name: the ``architecture`` key of its config (``"dlrm"``), unique in the registry.
        config_class: its config dataclass (``to_dict``/``from_dict``, see the module docstring).
        model_class: its ``nn.Module``, built as ``model_class(config)``; or a function of the config
            returning a module of some other class (the ``user`` architecture: the user's own module).
        signature: config -> (inputs, outputs); input names are forward's parameter names,
            the one output is ``probability`` float32 (B, 1).
        example_inputs: (config, batch_size, seed) -> {input name: tensor} of random in-range
            rows in the signature's dtypes and shapes.
        embedding_tables: model -> {qualified module name: module} of its embedding tables
            (``nn.Embedding`` or quantized replacements), in input order.
        prunable_blocks: model -> {qualified module name: ``nn.Sequential``} of the MLPs whose
            hidden ``nn.Linear`` layers may lose neurons; their input and output widths are fixed
            by the rest of the model and must stay. Each block is named after the config field
            that lists its hidden widths (``bottom_mlp``, ``deep_mlp``): its first
            ``len(config.<name>)`` Linear layers are the hidden ones, and structured pruning
            (:func:`toolkit.compress.prune.prune`) rebuilds the model with that field changed.
        cardinalities: config -> the table sizes in the order of the feature encoder's
            vocabularies (sparse then multi-hot), used to check a checkpoint's parts agree.
        config_for: (sizes, options) -> config for a data set of these :class:`FeatureSizes`;
            ``options`` are config fields (``embedding_dim``, widths, ...). Raises ``ValueError``
            naming an unknown option and listing the known ones.
        source_files: files the Triton Python backend needs next to its ``model.py``; each
            imports only torch, the standard library and the other source files (as top-level
            modules named after their file, e.g. ``layers`` for ``layers.py``).
            ``source_files[0]`` defines ``config_class`` and ``model_class`` under their own names.
        macs_per_sample: model -> multiply-accumulates per input row, counted analytically from
            the layers as they are (pruned widths count); ``None`` when the architecture does not
            say (the compression report then refuses it, naming the architecture).
    """

    name: str
    config_class: type
    model_class: type[nn.Module] | Callable[[Any], nn.Module]
    signature: Callable[[Any], Signature]
    example_inputs: Callable[..., dict[str, torch.Tensor]]
    embedding_tables: Callable[[nn.Module], dict[str, nn.Module]]
    prunable_blocks: Callable[[nn.Module], dict[str, nn.Sequential]]
    cardinalities: Callable[[Any], list[int]]
    config_for: Callable[[FeatureSizes, Mapping[str, Any]], Any]
    source_files: tuple[Path, ...]
    macs_per_sample: Callable[[nn.Module], int] | None = None

    @property
    def module_name(self) -> str:
        """The import name of ``source_files[0]`` in the Python backend (``"dlrm"`` for ``dlrm.py``)."""
        return self.source_files[0].stem

    def build(self, config: Any) -> nn.Module:
        """A fresh model of this architecture for ``config`` (random weights)."""
        return self.model_class(config)

    def runner_manifest(self) -> dict[str, str]:
        """What the Python backend's torch runner imports to rebuild the model
        (written as ``architecture.json`` next to the source files)."""
        return {
            "architecture": self.name,
            "module": self.module_name,
            "config_class": self.config_class.__name__,
            "model_class": self.model_class.__name__,
        }


def config_from_fields(config_class: type, sizes: FeatureSizes, options: Mapping[str, Any]) -> Any:
    """``config_class(**sizes, **options)``; an option that is not a field of ``config_class`` raises
    ``ValueError`` naming it and the fields it accepts (the sizes come from the data, not options)."""
    known = {f.name for f in fields(config_class)} - set(sizes.as_fields())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{config_class.__name__} has no option(s) {unknown}; it takes {sorted(known)}")
    return config_class(**sizes.as_fields(), **dict(options))


def forward_parameters(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """The names of the tensor parameters ``fn`` takes (``self`` excluded) and whether it takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_input_names(fn: Callable[..., Any], names: Iterable[str]) -> None:
    """Check that ``fn`` (a module, whose ``forward`` is read, or a function) can be called with
    keyword arguments of exactly ``names``: a parameter for each, and every required one among them.

    Raises:
        TypeError: an input that ``fn`` has no parameter for, or a required parameter that no
            input fills (naming both lists).
    """
    target = fn.forward if isinstance(fn, nn.Module) else fn
    given = list(names)
    params, var_kw = forward_parameters(target)
    required = [n for n in params if inspect.signature(target).parameters[n].default is inspect.Parameter.empty]
    extra = [] if var_kw else [n for n in given if n not in params]
    missing = [n for n in required if n not in given]
    if extra or missing:
        owner = getattr(target, "__qualname__", type(fn).__name__)
        raise TypeError(
            f"{owner} takes parameters {params}, but the inputs are named {given}"
            + (f" (no parameter for {extra})" if extra else "")
            + (f" (nothing for {missing})" if missing else "")
            + "; the signature's input names must be forward's parameter names"
        )


def call_by_name(fn: Callable[..., Any], inputs: Mapping[str, Any]) -> Any:
    """``fn(**inputs)``, after :func:`check_input_names`.

    This is how the stages call a model (``call_by_name(model, inputs)``,
    ``call_by_name(model.logits, inputs)``): by name, so a forward that lists its arguments in
    another order than the signature gets each tensor where it belongs.

    Raises:
        TypeError: see :func:`check_input_names`.
    """
    check_input_names(fn, inputs)
    return fn(**inputs)

"""Checkpoints: a folder with the state dict, the model config, the vocabularies and metrics.

::

    checkpoint/
      model.pt            state dict (torch.save), loaded with weights_only=True
      model_config.json   the model's config.to_dict(), with its "architecture" key
      vocabularies.json   FeatureEncoder.to_dict(): what turns raw features into ids
      metrics.json        offline test metrics, baselines, training history
      structure.json      only where tables were made int8 after the model was built from its config

A model trained on ids that arrive already encoded (Criteo's hashed categorical values) has
no vocabularies: it is saved with ``encoder=None``, which writes no ``vocabularies.json``
and records ``"pre_encoded_ids": true`` in ``metrics.json``.

A model whose config builds float32 ``nn.Embedding``/``nn.EmbeddingBag`` tables but that holds
row-wise INT8 tables (:class:`~toolkit.models.layers.RowwiseInt8Embedding`,
:class:`~toolkit.models.layers.RowwiseInt8EmbeddingBag`, quantized in place by ``tritonrec compress``:
a user's or a test's architecture, whose config says nothing of its tables' storage) gets a
``structure.json`` (:func:`~toolkit.models.layers.replaced_tables`: each such table's module path,
shape and, for a bag, its options); :func:`load_checkpoint` re-applies it to the model its config builds before loading the
state dict. A DLRM, DCN-v2 or DeepFM records its int8 tables in its config
(``embedding_quantization``) and gets no ``structure.json``; a checkpoint without one loads as before.

Written atomically (:func:`toolkit._io.atomic_directory`): a failed save keeps the old folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit._io import atomic_directory
from toolkit.data.features import FeatureEncoder
from toolkit.errors import CheckpointError, DataError
from toolkit.models.layers import apply_structure, replaced_tables
from toolkit.models.protocol import Architecture
from toolkit.models.registry import architecture_of, config_from_dict

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "model_structure", "CHECKPOINT_FILES", "STRUCTURE_FILE"]

CHECKPOINT_FILES = ("model.pt", "model_config.json", "vocabularies.json", "metrics.json")
#: Written next to them only where tables were made int8 after the build (see the module docstring).
STRUCTURE_FILE = "structure.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode, its config, its encoder and its metrics.

    ``model`` is a registered architecture's module (:mod:`toolkit.models.registry`);
    ``architecture`` gives its entry (signature, example inputs, source files, ...).
    """

    model: nn.Module
    config: Any
    encoder: FeatureEncoder | None
    metrics: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def architecture(self) -> Architecture:
        """The registry entry of :attr:`config`'s architecture."""
        return architecture_of(self.config)


def model_structure(model: nn.Module) -> dict:
    """What ``structure.json`` records for ``model``: :func:`~toolkit.models.layers.replaced_tables`
    of ``model`` against the model its config builds (built on the meta device, so no table is
    allocated; on the CPU, with the global RNG untouched, for a factory the meta device cannot run).
    ``"replaced_modules"`` is empty for a model that its config rebuilds as it is.

    Raises:
        CheckpointError: ``model`` is not a registered architecture's model, or its config does not build.
    """
    try:
        arch = architecture_of(model)
    except ValueError as exc:
        raise CheckpointError(f"cannot save {type(model).__name__} as a checkpoint: {exc}", hint="register its architecture first") from exc
    try:
        with torch.device("meta"):
            built = arch.build(model.config)
    except Exception:  # a user's factory may read a tensor's value (meta tensors have none): build it for real
        with torch.random.fork_rng(devices=[]):
            try:
                built = arch.build(model.config)
            except Exception as exc:
                raise CheckpointError(f"{arch.name}: its config does not build ({type(exc).__name__}: {exc})") from exc
    return replaced_tables(model, built)


def save_checkpoint(path: Path, model: nn.Module, encoder: FeatureEncoder | None, metrics: dict) -> Path:
    """Write ``model``, its config, ``encoder`` and ``metrics`` to the folder ``path`` atomically.

    ``encoder=None`` is for models fed pre-encoded ids (see the module docstring). Tables made int8
    after the build are recorded in ``structure.json`` (:func:`model_structure`).

    Raises:
        CheckpointError: ``model`` is not a registered architecture's model (it would not load back).
    """
    try:
        architecture_of(model)
    except ValueError as exc:
        raise CheckpointError(f"cannot save {type(model).__name__} as a checkpoint: {exc}", hint="register its architecture first") from exc
    if encoder is None:
        metrics = {**metrics, "pre_encoded_ids": True}
    structure = model_structure(model)
    path = Path(path)
    with atomic_directory(path) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        if structure["replaced_modules"]:
            (tmp / STRUCTURE_FILE).write_text(json.dumps(structure, indent=2) + "\n")
        (tmp / "model_config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        if encoder is not None:
            (tmp / "vocabularies.json").write_text(json.dumps(encoder.to_dict()) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint folder written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: ``path`` is a file (what a checkpoint is, named), the folder or one of its files is missing, a file is corrupt or
            truncated, ``structure.json`` does not fit the config's model (names the file and the module path), or the
            state dict does not fit the config (names the file and the problem).
    """
    path = Path(path)
    hint = "re-run `tritonrec train` to write a fresh checkpoint"
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise CheckpointError(
            f"{path} is a file, not a checkpoint: a checkpoint is a folder holding {', '.join(CHECKPOINT_FILES)} "
            "(written by `tritonrec train` or toolkit.train.save_checkpoint, for a registered architecture)",
            hint="pass the checkpoint folder; for a model of your own, give its Python file and factory instead: "
            "--model-file my_model.py:build (compress, export, build)",
        )
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist", hint=hint)
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    pre_encoded = metrics.get("pre_encoded_ids") is True
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file() and not (pre_encoded and name == "vocabularies.json")]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}", hint=hint)
    try:
        config = config_from_dict(_read_json(path / "model_config.json"))
    except (TypeError, ValueError) as exc:  # an unknown architecture lists the registered ones
        raise CheckpointError(f"{path / 'model_config.json'}: {exc}", hint=hint) from exc
    encoder = None
    if not pre_encoded:
        try:
            encoder = FeatureEncoder.from_dict(_read_json(path / "vocabularies.json"))
        except DataError as exc:
            raise CheckpointError(f"{path / 'vocabularies.json'}: {exc}", hint=hint) from exc
        if encoder.cardinalities != architecture_of(config).cardinalities(config):
            raise CheckpointError(
                f"{path}: vocabularies.json table sizes {encoder.cardinalities} disagree with model_config.json", hint=hint
            )
    try:
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt pickle fails in many ways: UnpicklingError, EOFError, IndexError, struct.error, ...
        raise CheckpointError(f"{path / 'model.pt'}: corrupt or truncated state dict ({exc})", hint=hint) from exc
    model = architecture_of(config).build(config)
    if (path / STRUCTURE_FILE).is_file():
        try:
            apply_structure(model, _read_json(path / STRUCTURE_FILE))
        except ValueError as exc:
            raise CheckpointError(f"{path / STRUCTURE_FILE}: {exc}", hint=hint) from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path / 'model.pt'}: does not fit model_config.json ({exc})", hint=hint) from exc
    model.eval()
    return Checkpoint(model, config, encoder, metrics, path)

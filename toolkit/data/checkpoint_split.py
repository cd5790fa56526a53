"""Checkpoint → the data split it was trained on: the one loader every stage that needs rows uses.

A checkpoint written by ``tritonrec train`` records its split seed in ``metrics.json``
(``split.seed``; 42 when absent, the default of every release) and its vocabularies in
``vocabularies.json``. Applying both to the MovieLens folder rebuilds exactly its train,
validation and test rows, encoded as the model saw them. Reads JSON only (no torch), so
serving-side stages can use it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.data.dataset import Splits, load_splits
from toolkit.data.features import FeatureEncoder
from toolkit.errors import CheckpointError, DataError

__all__ = ["DEFAULT_SPLIT_SEED", "checkpoint_splits", "split_seed"]

#: The split seed of a checkpoint whose metrics do not record one.
DEFAULT_SPLIT_SEED = 42

_HINT = "pass --checkpoint (a folder written by `tritonrec train`)"


def split_seed(metrics: Mapping[str, Any]) -> int:
    """The split seed a checkpoint's ``metrics.json`` records (``DEFAULT_SPLIT_SEED`` when it records none).

    Raises:
        CheckpointError: ``split.seed`` is not an integer.
    """
    seed = (metrics.get("split") or {}).get("seed", DEFAULT_SPLIT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CheckpointError(f"metrics.json: split.seed is {seed!r}, expected an integer", hint=_HINT)
    return seed


def _read(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}", hint=_HINT) from exc


def checkpoint_splits(
    checkpoint: Path, data_dir: Path, *, encoder: FeatureEncoder | None = None, metrics: Mapping[str, Any] | None = None
) -> Splits:
    """The train/validation/test splits ``checkpoint`` was trained on, rebuilt from ``data_dir``.

    Args:
        checkpoint: the checkpoint folder (its ``vocabularies.json`` and ``metrics.json`` are read
            unless given).
        data_dir: the MovieLens-100K folder.
        encoder, metrics: the checkpoint's, when already loaded (``Checkpoint.encoder``/``.metrics``).

    Raises:
        CheckpointError: the JSON files are missing or unreadable (naming the file), the
            split seed is not an integer, or the checkpoint has no vocabularies (a model fed
            pre-encoded ids, whose rows do not come from a MovieLens folder).
        DataError: from reading ``data_dir``.
    """
    checkpoint = Path(checkpoint)
    if metrics is None:
        metrics = _read(checkpoint / "metrics.json")
    if encoder is None:
        if metrics.get("pre_encoded_ids") is True:
            raise CheckpointError(
                f"checkpoint {checkpoint} has no vocabularies.json (a model fed pre-encoded ids), so its MovieLens "
                "splits cannot be rebuilt",
                hint="give that model's own rows (toolkit.export.check_parity, toolkit.optimize.pipeline.CompressionData)",
            )
        try:
            encoder = FeatureEncoder.from_dict(_read(checkpoint / "vocabularies.json"))
        except DataError as exc:
            raise CheckpointError(f"{checkpoint / 'vocabularies.json'}: {exc}", hint=_HINT) from exc
    return load_splits(data_dir, seed=split_seed(metrics), encoder=encoder)

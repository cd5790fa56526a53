"""The one checkpoint -> data split loader: the recorded seed and vocabularies rebuild the rows the model saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_splits
from toolkit.data.checkpoint_split import checkpoint_splits, split_seed
from toolkit.errors import CheckpointError


def _write(folder: Path, encoder, metrics: dict | None) -> Path:
    folder.mkdir(parents=True)
    if encoder is not None:
        (folder / "vocabularies.json").write_text(json.dumps(encoder.to_dict()))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_the_recorded_seed_and_vocabularies_rebuild_the_same_rows(tmp_path: Path, synthetic_data_dir: Path) -> None:
    trained_on = load_splits(synthetic_data_dir, seed=7)
    ckpt = _write(tmp_path / "ckpt", trained_on.encoder, {"split": {"seed": 7}})
    rebuilt = checkpoint_splits(ckpt, synthetic_data_dir)

    assert rebuilt.seed == 7
    for name in ("train", "val", "test"):
        want, got = getattr(trained_on, name), getattr(rebuilt, name)
        for key, array in want.inputs().items():
            np.testing.assert_array_equal(got.inputs()[key], array)
        np.testing.assert_array_equal(got.labels, want.labels)
    other = load_splits(synthetic_data_dir, seed=8)
    assert not np.array_equal(other.test.labels, rebuilt.test.labels)  # the seed matters


def test_a_checkpoint_without_a_recorded_seed_was_split_with_42() -> None:
    assert split_seed({}) == split_seed({"split": {}}) == 42


@pytest.mark.parametrize(
    ("metrics", "vocabularies", "message"),
    [
        (None, True, r"cannot read .*metrics.json"),
        ({"split": {"seed": "7"}}, True, r"split.seed is '7', expected an integer"),
        ({"pre_encoded_ids": True}, False, "no vocabularies.json .*pre-encoded ids"),
        ({"split": {"seed": 1}}, False, r"cannot read .*vocabularies.json"),
    ],
)
def test_unusable_checkpoints_are_refused_naming_the_file_or_field(
    tmp_path: Path, synthetic_data_dir: Path, synthetic_splits, metrics, vocabularies: bool, message: str
) -> None:
    ckpt = _write(tmp_path / "ckpt", synthetic_splits.encoder if vocabularies else None, metrics)
    with pytest.raises(CheckpointError, match=message):
        checkpoint_splits(ckpt, synthetic_data_dir)

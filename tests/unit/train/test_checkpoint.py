"""Checkpoint folders: round trip, and every way a checkpoint can be broken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import Splits
from toolkit.errors import CheckpointError
from toolkit.models import DLRM
from toolkit.train import TrainConfig, dlrm_config_for, load_checkpoint, predict, save_checkpoint
from toolkit.train.checkpoint import CHECKPOINT_FILES

METRICS = {"test_auc": 0.71, "history": [{"epoch": 1, "val_auc": 0.7}], "split": {"seed": 42}}


@pytest.fixture
def model(synthetic_splits: Splits) -> DLRM:
    torch.manual_seed(1)
    return DLRM(dlrm_config_for(synthetic_splits.encoder, TrainConfig(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])))


@pytest.fixture
def checkpoint(tmp_path: Path, model: DLRM, synthetic_splits: Splits) -> Path:
    return save_checkpoint(tmp_path / "checkpoint", model, synthetic_splits.encoder, METRICS)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_save_then_load_gives_identical_predictions(checkpoint: Path, model: DLRM, synthetic_splits: Splits) -> None:
    loaded = load_checkpoint(checkpoint)

    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(CHECKPOINT_FILES)
    assert not loaded.model.training
    assert loaded.config == model.config
    assert loaded.metrics == METRICS
    assert loaded.path == checkpoint
    assert loaded.encoder.cardinalities == synthetic_splits.encoder.cardinalities
    rows = synthetic_splits.test
    np.testing.assert_array_equal(predict(loaded.model, rows), predict(model, rows))
    re_encoded = loaded.encoder.transform(synthetic_splits.raw_test)
    np.testing.assert_array_equal(re_encoded.sparse_ids, rows.sparse_ids)
    np.testing.assert_array_equal(re_encoded.dense_features, rows.dense_features)


def test_saving_again_replaces_the_checkpoint_and_leaves_no_temporary_folders(
    checkpoint: Path, model: DLRM, synthetic_splits: Splits
) -> None:
    save_checkpoint(checkpoint, model, synthetic_splits.encoder, {"test_auc": 0.8})
    assert load_checkpoint(checkpoint).metrics == {"test_auc": 0.8}
    assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint"]


@pytest.mark.parametrize(
    "garbage",
    [
        np.random.default_rng(0).bytes(4096),
        b"\x81#",  # the unpickler pops from an empty stack (IndexError)
        b"r\xe6",  # a 4-byte field cut short (struct.error)
        b'X\xee\xe8u."\x03\x02\xd4\xf7',  # a string that is not UTF-8 (UnicodeDecodeError)
        b"h\xfb",  # a memo key that was never stored (KeyError)
        b"\x80\x02\xc2\xe3k\nB\xf7\x82|",  # an opcode the weights-only unpickler refuses
    ],
    ids=["random", "stack", "short-field", "not-utf8", "memo", "opcode"],
)
def test_random_bytes_in_model_pt_are_a_checkpoint_error_naming_it(checkpoint: Path, garbage: bytes) -> None:
    (checkpoint / "model.pt").write_bytes(garbage)
    with pytest.raises(CheckpointError, match=r"model\.pt: corrupt or truncated state dict") as info:
        load_checkpoint(checkpoint)
    assert info.value.hint is not None and "tritonrec train" in info.value.hint


def test_truncated_model_pt_is_a_checkpoint_error_naming_it(checkpoint: Path) -> None:
    data = (checkpoint / "model.pt").read_bytes()
    (checkpoint / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.pt: corrupt or truncated state dict"):
        load_checkpoint(checkpoint)


def test_empty_model_pt_is_a_checkpoint_error_naming_it(checkpoint: Path) -> None:
    (checkpoint / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.pt"):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_missing_file_is_a_checkpoint_error_naming_it(checkpoint: Path, name: str) -> None:
    (checkpoint / name).unlink()
    with pytest.raises(CheckpointError, match=rf"lacks {name.replace('.', '[.]')}$"):
        load_checkpoint(checkpoint)


def test_a_missing_folder_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "never-trained")


def test_a_file_given_as_the_checkpoint_says_what_a_checkpoint_is(tmp_path: Path) -> None:
    (tmp_path / "my_model.pt").write_bytes(b"a whole pickled module")
    with pytest.raises(
        CheckpointError, match=r"my_model.pt is a file, not a checkpoint: a checkpoint is a folder holding model.pt, model_config.json"
    ):
        load_checkpoint(tmp_path / "my_model.pt")


def test_model_config_with_the_wrong_table_sizes_is_a_checkpoint_error(checkpoint: Path) -> None:
    path = checkpoint / "model_config.json"
    config = json.loads(path.read_text())
    config["sparse_cardinalities"][0] += 5
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="table sizes .* disagree with model_config.json"):
        load_checkpoint(checkpoint)


def test_a_state_dict_that_does_not_fit_the_config_is_a_checkpoint_error(checkpoint: Path) -> None:
    path = checkpoint / "model_config.json"
    config = json.loads(path.read_text())
    config["embedding_dim"] = 4  # the same tables, but narrower than the saved weights
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.pt: does not fit model_config\.json"):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model_config.json", "{not json", r"model_config\.json: not valid JSON"),
        ("model_config.json", '{"format_version": 1, "architecture": "dlrm"}', r"model_config\.json: invalid dlrm config"),
        ("vocabularies.json", '{"format_version": 1}', r"vocabularies\.json: vocabularies: malformed field"),
        ("metrics.json", "", r"metrics\.json: not valid JSON"),
    ],
)
def test_corrupt_json_files_are_checkpoint_errors_naming_the_file(checkpoint: Path, name: str, content: str, message: str) -> None:
    (checkpoint / name).write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(checkpoint)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(checkpoint: Path, model: DLRM, synthetic_splits: Splits) -> None:
    before = _snapshot(checkpoint)
    torch.nn.init.constant_(model.top_mlp[0].bias, 3.0)  # a different model that must not land on disk

    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(checkpoint, model, synthetic_splits.encoder, {"when": object()})

    assert _snapshot(checkpoint) == before
    assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint"]
    assert load_checkpoint(checkpoint).metrics == METRICS


def test_a_model_fed_pre_encoded_ids_saves_and_loads_without_vocabularies(tmp_path):
    from toolkit.models import DLRM, DLRMConfig
    from toolkit.train import load_checkpoint, save_checkpoint

    model = DLRM(DLRMConfig(num_dense=13, sparse_cardinalities=[50, 7, 3]))
    save_checkpoint(tmp_path / "ckpt", model, None, {"note": "criteo-shaped"})
    assert not (tmp_path / "ckpt" / "vocabularies.json").exists()
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.encoder is None and loaded.metrics["pre_encoded_ids"] is True
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())

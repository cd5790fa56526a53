"""Knowledge distillation of a trained DLRM into a smaller student DLRM."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from toolkit.compress.distill import distill, student_config
from toolkit.compress.recipe import DistillConfig
from toolkit.compress.stats import count_params
from toolkit.data import EncodedRows, Splits
from toolkit.errors import CompressError
from toolkit.models import DLRM
from toolkit.train import TrainConfig, auc, predict, train_dlrm

TEACHER = TrainConfig(embedding_dim=16, bottom_mlp=[64], top_mlp=[64, 32], max_epochs=4, learning_rate=1e-2, seed=0)
STUDENT = DistillConfig(embedding_dim=4, bottom_mlp=[8], top_mlp=[8, 4], learning_rate=1e-2, max_epochs=8, patience=2)


@pytest.fixture(scope="module")
def teacher(synthetic_splits: Splits) -> DLRM:
    """A DLRM trained on the synthetic data (read-only: tests must not modify it)."""
    s = synthetic_splits
    return train_dlrm(s.train, s.val, s.encoder, TEACHER).model


def _auc(model: DLRM, rows: EncodedRows) -> float:
    return auc(rows.labels, predict(model, rows))


def test_the_student_is_smaller_and_nearly_as_accurate_as_the_teacher(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    logs: list[str] = []
    student = distill(teacher, STUDENT, s.train, s.val, on_log=logs.append)

    assert not student.training
    assert student.config == dataclasses.replace(teacher.config, embedding_dim=4, bottom_mlp=[8], top_mlp=[8, 4])
    assert student.config.sparse_cardinalities == teacher.config.sparse_cardinalities
    assert student.config.multi_hot_lengths == teacher.config.multi_hot_lengths
    assert count_params(student) < count_params(teacher) / 3
    assert _auc(student, s.test) >= 0.97 * _auc(teacher, s.test)
    assert any("best epoch" in line for line in logs)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # teacher untouched


def test_distillation_is_reproducible_with_a_seed_and_leaves_torch_s_generator_alone(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    config = STUDENT.model_copy(update={"max_epochs": 1})
    torch.manual_seed(123)
    a = distill(teacher, config, s.train, s.val, seed=3)
    after_a = torch.rand(1)
    torch.manual_seed(123)
    b = distill(teacher, config, s.train, s.val, seed=3)

    assert torch.equal(torch.rand(1), after_a)
    np.testing.assert_array_equal(predict(a, s.test), predict(b, s.test))


def test_early_stopping_stops_after_patience_epochs_without_a_better_validation_auc(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    # Shuffled validation labels: validation AUC wanders around 0.5 instead of improving.
    shuffled = EncodedRows(s.val.dense_features, s.val.sparse_ids, s.val.multi_hot_ids, np.random.default_rng(0).permutation(s.val.labels))
    logs: list[str] = []
    distill(teacher, STUDENT.model_copy(update={"max_epochs": 20, "patience": 1}), s.train, shuffled, on_log=logs.append)

    epochs = [line for line in logs if line.startswith("distill epoch")]
    assert len(epochs) < 20


def test_pure_soft_targets_at_a_high_temperature_still_teach_the_student(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    config = STUDENT.model_copy(update={"alpha": 1.0, "temperature": 2.0})
    student = distill(teacher, config, s.train, s.val)

    assert _auc(student, s.test) > 0.8


def test_student_config_keeps_the_teacher_s_inputs_with_float32_tables(teacher: DLRM) -> None:
    int8_teacher = DLRM(dataclasses.replace(teacher.config, embedding_quantization="int8_rowwise"))
    cfg = student_config(int8_teacher, DistillConfig())
    assert (cfg.embedding_dim, cfg.bottom_mlp, cfg.top_mlp, cfg.embedding_quantization) == (8, [32], [32, 16], "none")
    assert (cfg.num_dense, cfg.sparse_cardinalities, cfg.multi_hot_cardinalities) == (
        teacher.config.num_dense,
        teacher.config.sparse_cardinalities,
        teacher.config.multi_hot_cardinalities,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("embedding_dim", 0), ("bottom_mlp", [8, 0]), ("alpha", 1.5), ("temperature", 0.0), ("patience", 0), ("max_epochs", 0)],
)
def test_distill_config_refuses_out_of_range_fields(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        DistillConfig(**{field: value})


def test_distill_refuses_unusable_inputs(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    one_class = EncodedRows(s.val.dense_features, s.val.sparse_ids, s.val.multi_hot_ids, np.ones_like(s.val.labels))
    with pytest.raises(CompressError, match="val split has only one label value"):
        distill(teacher, STUDENT, s.train, one_class)
    no_genres = EncodedRows(s.train.dense_features, s.train.sparse_ids, s.train.multi_hot_ids[:, :0], s.train.labels)
    with pytest.raises(CompressError, match="train split: multi_hot_ids has 0 columns, but the model expects"):
        distill(teacher, STUDENT, no_genres, s.val)
    with pytest.raises(CompressError, match="batch_size=0, expected an integer >= 1"):
        distill(teacher, STUDENT, s.train, s.val, batch_size=0)

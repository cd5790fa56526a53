"""train_dlrm on small slices: it learns, stops early, restores the best epoch; baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import EncodedRows, Splits, load_splits
from toolkit.errors import TrainError
from toolkit.train import TrainConfig, auc, dlrm_config_for, item_popularity, logistic_regression, predict, train_dlrm

SMALL = dict(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])


def test_short_training_on_a_small_slice_beats_chance(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    epochs = []
    result = train_dlrm(
        s.train, s.val, s.encoder, TrainConfig(max_epochs=2, max_train_rows=4000, learning_rate=1e-2), on_epoch=epochs.append
    )

    assert [e.epoch for e in result.history] == [1, 2] and epochs == result.history
    best = max(h.val_auc for h in result.history)
    assert best > 0.7
    assert auc(s.val.labels, predict(result.model, s.val)) == pytest.approx(best)
    assert all(h.train_loss > 0 and h.seconds >= 0 for h in result.history)


def test_short_training_on_real_movielens_beats_chance(movielens_dir: Path) -> None:
    s = load_splits(movielens_dir)
    result = train_dlrm(s.train, s.val, s.encoder, TrainConfig(max_epochs=2, max_train_rows=5000))
    assert max(h.val_auc for h in result.history) > 0.55


def test_max_train_rows_limits_the_rows_of_each_epoch(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    steps: list[tuple[int, int]] = []
    train_dlrm(
        s.train,
        s.val,
        s.encoder,
        TrainConfig(max_epochs=1, max_train_rows=700, batch_size=256, **SMALL),
        on_step=lambda done, total: steps.append((done, total)),
    )

    assert steps == [(256, 700), (512, 700), (700, 700)]


def test_training_with_the_same_seed_gives_the_same_model(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    config = TrainConfig(max_epochs=1, max_train_rows=1000, seed=5, **SMALL)
    a, b = (train_dlrm(s.train, s.val, s.encoder, config) for _ in range(2))
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best_epoch(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    # Validation labels shuffled: validation AUC wanders around 0.5 instead of improving.
    shuffled = EncodedRows(s.val.dense_features, s.val.sparse_ids, s.val.multi_hot_ids, np.random.default_rng(0).permutation(s.val.labels))
    config = TrainConfig(max_epochs=8, patience=1, max_train_rows=2000, **SMALL)
    result = train_dlrm(s.train, shuffled, s.encoder, config)

    aucs = [h.val_auc for h in result.history]
    assert len(result.history) < config.max_epochs  # it stopped early ...
    assert len(result.history) - result.best_epoch == config.patience  # ... patience epochs after the best
    assert result.best_epoch == int(np.argmax(aucs)) + 1
    assert aucs[-1] <= aucs[result.best_epoch - 1]
    # the returned weights are the best epoch's, not the last epoch's
    assert auc(shuffled.labels, predict(result.model, shuffled)) == pytest.approx(aucs[result.best_epoch - 1], abs=1e-12)
    assert not result.model.training
    assert [d["epoch"] for d in result.history_dicts()] == list(range(1, len(aucs) + 1))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_epochs", 0, "max_epochs must be >= 1, got 0"),
        ("patience", 0, "patience must be >= 1"),
        ("batch_size", -8, "batch_size must be >= 1, got -8"),
        ("embedding_dim", 0, "embedding_dim must be >= 1"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("learning_rate", float("nan"), "learning_rate must be > 0"),
    ],
)
def test_invalid_train_config_is_a_train_error_naming_the_field(field: str, value, message: str) -> None:
    with pytest.raises(TrainError, match=message):
        TrainConfig(**{field: value})


def test_training_refuses_empty_splits(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    with pytest.raises(TrainError, match="non-empty training and validation splits, got 0 and 600"):
        train_dlrm(s.train, s.val, s.encoder, TrainConfig(max_train_rows=0))
    with pytest.raises(TrainError, match="got 4800 and 0"):
        train_dlrm(s.train, s.val.take(slice(0, 0)), s.encoder, TrainConfig(max_epochs=1))


def test_model_config_takes_table_sizes_from_the_encoder(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    config = dlrm_config_for(encoder, TrainConfig(embedding_dim=12, top_mlp=[7], dropout=0.1))

    assert config.sparse_cardinalities + config.multi_hot_cardinalities == encoder.cardinalities
    assert config.multi_hot_lengths == [encoder.max_genres]
    assert config.num_dense == 2
    assert (config.embedding_dim, config.top_mlp, config.dropout) == (12, [7], 0.1)


def test_predict_returns_one_probability_per_row_in_batches(synthetic_splits: Splits) -> None:
    from toolkit.models import DLRM

    torch.manual_seed(0)
    model = DLRM(dlrm_config_for(synthetic_splits.encoder, TrainConfig(**SMALL)))
    rows = synthetic_splits.test
    whole = predict(model, rows)
    assert whole.shape == (len(rows),) and whole.dtype == np.float32
    np.testing.assert_allclose(predict(model, rows, batch_size=7), whole, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ baselines


def test_item_popularity_ranks_better_than_chance(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    result = item_popularity(s.train, s.test)
    assert result.name == "item popularity"
    assert 0.5 < result.test_auc < 1.0
    assert 0.0 < result.test_log_loss < np.log(2) + 0.05


def test_item_popularity_scores_unseen_items_at_the_global_rate(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    # a test split holding only out-of-vocabulary items: every score is the prior, AUC exactly 0.5
    oov = s.test.take(slice(None))
    oov.sparse_ids = oov.sparse_ids.copy()
    oov.sparse_ids[:, 1] = 1
    assert item_popularity(s.train, oov).test_auc == pytest.approx(0.5)


def test_logistic_regression_ranks_better_than_chance(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    result = logistic_regression(s.train, s.val, s.test, s.encoder.cardinalities, cs=(0.3, 1.0))
    assert result.name == "logistic regression"
    assert 0.5 < result.test_auc < 1.0
    assert "C=" in result.detail

"""The one training loop (train_epochs) that training, pruning's fine-tuning and distillation share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.data import Splits
from toolkit.errors import TrainError
from toolkit.models import DLRM
from toolkit.train import TrainConfig, dlrm_config_for, predict
from toolkit.train.loop import _tensors, train_epochs

SMALL = dict(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])


def _model(s: Splits) -> DLRM:
    torch.manual_seed(0)
    return DLRM(dlrm_config_for(s.encoder, TrainConfig(**SMALL)))


def _run(model, s: Splits, **kwargs):
    settings = dict(max_epochs=2, patience=None, learning_rate=1e-2, batch_size=256) | kwargs
    return train_epochs(model, _tensors(s.train), torch.from_numpy(s.train.labels), s.val, **settings)


def test_score_before_lets_the_untouched_weights_win_when_training_only_hurts(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    model = _model(s)
    before = predict(model, s.val)
    # a loss that rewards being wrong: every epoch moves validation AUC down
    flipped = torch.from_numpy(1.0 - s.train.labels)
    bce = torch.nn.BCEWithLogitsLoss()
    history, best = _run(model, s, score_before=True, loss_of=lambda logits, idx: bce(logits, flipped[idx]))

    assert [h.epoch for h in history] == [0, 1, 2] and np.isnan(history[0].train_loss)
    assert best == 0 and history[0].val_auc > max(h.val_auc for h in history[1:])
    np.testing.assert_array_equal(predict(model, s.val), before)


def test_max_epochs_0_with_score_before_only_scores(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    model = _model(s)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    history, best = _run(model, s, max_epochs=0, score_before=True)

    assert (len(history), best) == (1, 0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_patience_none_runs_every_epoch_and_patience_stops_early(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    flipped = torch.from_numpy(1.0 - s.train.labels)
    bce = torch.nn.BCEWithLogitsLoss()
    worse = lambda logits, idx: bce(logits, flipped[idx])  # noqa: E731 (every epoch is worse than the first)

    assert len(_run(_model(s), s, max_epochs=4, patience=None, loss_of=worse)[0]) == 4
    history, best = _run(_model(s), s, max_epochs=4, patience=1, loss_of=worse)
    assert (len(history), best) == (2, 1)


def test_a_non_finite_loss_names_the_epoch(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    with pytest.raises(TrainError, match="training loss became nan in epoch 1"):
        _run(_model(s), s, loss_of=lambda logits, idx: logits.sum() * float("nan"))


def test_inputs_the_model_cannot_take_are_refused_before_training(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    inputs = {"dense": torch.zeros(4, 2), **{k: v for k, v in _tensors(s.train).items() if k != "dense_features"}}
    with pytest.raises(TrainError, match=r"cannot train DLRM: .*no parameter for \['dense'\]"):
        train_epochs(_model(s), inputs, torch.zeros(4), s.val, max_epochs=1, patience=None, learning_rate=1e-3, batch_size=2)
    with pytest.raises(TrainError, match="batch_size=0"):
        _run(_model(s), s, batch_size=0)

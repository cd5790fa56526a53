"""AUC and log loss against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.errors import TrainError
from toolkit.train import auc, evaluate, log_loss


def test_auc_is_the_fraction_of_positive_negative_pairs_ranked_correctly() -> None:
    # pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, 0.1) ok, (0.8, 0.4) ok -> 3/4
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_auc_counts_ties_as_half() -> None:
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx((0.5 + 1) / 2)


def test_auc_is_one_for_a_perfect_ranking_and_zero_for_a_reversed_one() -> None:
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.7, 0.2, 0.9, 0.8])
    assert auc(labels, scores) == 1.0
    assert auc(labels, -scores) == 0.0


def test_auc_depends_only_on_the_order_of_scores() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    scores = np.array([0.3, 0.6, 0.2, 0.4, 0.9, 0.1])
    assert auc(labels, scores) == pytest.approx(auc(labels, np.exp(5 * scores) + 100))


def test_log_loss_is_the_mean_binary_cross_entropy_in_nats() -> None:
    expected = -(math.log(0.8) + math.log(1 - 0.3) + math.log(0.6)) / 3
    assert log_loss(np.array([1, 0, 1]), np.array([0.8, 0.3, 0.6])) == pytest.approx(expected)


def test_log_loss_clips_certain_wrong_answers_to_a_finite_value() -> None:
    value = log_loss([1, 0], [0.0, 0.0])  # the first is certain and wrong
    assert value == pytest.approx(-(math.log(1e-7) + math.log(1 - 1e-7)) / 2)


def test_evaluate_reports_auc_and_log_loss_for_column_vectors() -> None:
    labels = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=np.float32)
    probs = np.array([[0.9], [0.2], [0.4], [0.6]], dtype=np.float32)
    metrics = evaluate(labels, probs)

    assert set(metrics) == {"auc", "log_loss"}
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.4])), rel=1e-6)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "both positive and negative labels"),
        ([0, 1, 1], [0.2, 0.5], "3 labels but 2 scores"),
        ([0, 1], [0.2, float("nan")], "1 scores are NaN or infinite"),
        ([0, 1], [float("inf"), 0.3], "1 scores are NaN or infinite"),
    ],
)
@pytest.mark.parametrize("metric", [auc, log_loss])
def test_metrics_reject_unusable_inputs_with_a_train_error(metric, labels, scores, message: str) -> None:
    with pytest.raises(TrainError, match=message):
        metric(np.array(labels), np.array(scores))

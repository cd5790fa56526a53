"""Structured pruning of the DLRM's hidden MLP layers with Torch-Pruning, then fine-tuning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from toolkit.compress.prune import hidden_widths, kept_width, prune
from toolkit.compress.recipe import PruneConfig
from toolkit.compress.stats import count_params, macs_per_sample
from toolkit.data import EncodedRows, Splits
from toolkit.errors import CompressError
from toolkit.export import check_parity, export_onnx
from toolkit.models import DLRM, dlrm_example_inputs
from toolkit.train import TrainConfig, auc, dlrm_config_for, load_checkpoint, predict, save_checkpoint, train_dlrm

TEACHER = TrainConfig(embedding_dim=8, bottom_mlp=[24], top_mlp=[20, 10], max_epochs=4, learning_rate=1e-2, seed=0)
NO_FINETUNE = dict(finetune_epochs=0)


@pytest.fixture(scope="module")
def teacher(synthetic_splits: Splits) -> DLRM:
    """A DLRM trained on the synthetic data (read-only: tests must not modify it)."""
    s = synthetic_splits
    return train_dlrm(s.train, s.val, s.encoder, TEACHER).model


@pytest.fixture(scope="module")
def teacher_state(teacher: DLRM) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in teacher.state_dict().items()}


def _test_auc(model: DLRM, rows: EncodedRows) -> float:
    return auc(rows.labels, predict(model, rows))


def _kept_neurons(original: DLRM, pruned: DLRM) -> list[list[int]]:
    """Per hidden layer, which neurons of ``original`` survive in ``pruned`` (not fine-tuned),
    found by their biases (a neuron keeps its bias; trained biases are distinct floats)."""
    kept = []
    for mlp in ("bottom_mlp", "top_mlp"):
        linears = [(a, b) for a, b in zip(getattr(original, mlp), getattr(pruned, mlp), strict=True) if isinstance(a, torch.nn.Linear)]
        for before, after in linears[:-1]:
            kept.append([int(np.flatnonzero(before.bias.detach().numpy() == v)[0]) for v in after.bias.detach().numpy()])
    return kept


def test_per_layer_pruning_keeps_the_rounded_share_of_every_hidden_layer(
    teacher: DLRM, teacher_state: dict, synthetic_splits: Splits
) -> None:
    s = synthetic_splits
    logs: list[str] = []
    pruned = prune(teacher, PruneConfig(ratio=0.3, **NO_FINETUNE), s.train, s.val, on_log=logs.append)

    # 24 * 0.7 = 16.8 -> 17, 20 * 0.7 = 14, 10 * 0.7 = 7
    assert pruned.config.bottom_mlp == [17] == [kept_width(24, 0.3)]
    assert pruned.config.top_mlp == [14, 7]
    assert hidden_widths(pruned) == ([17], [14, 7])
    assert not pruned.training and logs
    # what must not change: E, the top MLP's input width, its single output, the embeddings
    assert pruned.bottom_mlp[-2].out_features == teacher.config.embedding_dim
    assert pruned.top_mlp[0].in_features == teacher.top_mlp[0].in_features
    assert pruned.top_mlp[-1].out_features == 1
    assert dataclasses.replace(pruned.config, bottom_mlp=[24], top_mlp=[20, 10]) == teacher.config
    for name, value in pruned.state_dict().items():
        if "embeddings" in name:
            assert torch.equal(value, teacher_state[name]), name
    # params and MACs are those of a DLRM built with the pruned widths, and smaller
    reference = DLRM(pruned.config)
    assert count_params(pruned) == count_params(reference) < count_params(teacher)
    assert macs_per_sample(pruned) == macs_per_sample(reference) < macs_per_sample(teacher)
    d, e, top_in = teacher.config.num_dense, teacher.config.embedding_dim, teacher.top_mlp[0].in_features

    def mlp_macs(b1: int, t1: int, t2: int) -> int:
        return d * b1 + b1 * e + top_in * t1 + t1 * t2 + t2 * 1

    assert macs_per_sample(teacher) - macs_per_sample(pruned) == mlp_macs(24, 20, 10) - mlp_macs(17, 14, 7)
    # the input model is untouched
    assert hidden_widths(teacher) == ([24], [20, 10])
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


def test_global_pruning_removes_the_ratio_of_all_hidden_neurons(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    pruned = prune(teacher, PruneConfig(ratio=0.6, scope="global", **NO_FINETUNE), s.train, s.val)

    widths = [*pruned.config.bottom_mlp, *pruned.config.top_mlp]
    assert sum(widths) == kept_width(24 + 20 + 10, 0.6) == 22
    assert all(w >= 1 for w in widths) and len(widths) == 3
    assert pruned.bottom_mlp[-2].out_features == teacher.config.embedding_dim and pruned.top_mlp[-1].out_features == 1
    assert count_params(pruned) < count_params(teacher)


def test_a_pruned_model_exports_to_onnx_and_onnx_runtime_matches_it(teacher: DLRM, synthetic_splits: Splits, tmp_path: Path) -> None:
    s = synthetic_splits
    pruned = prune(teacher, PruneConfig(ratio=0.5, **NO_FINETUNE), s.train, s.val)

    path = export_onnx(pruned, dlrm_example_inputs(pruned.config, 8), ["probability"], tmp_path / "pruned.onnx")
    report = check_parity(pruned, path, s.test.inputs(), atol=1e-5)

    assert report.passed and report.n_rows == len(s.test)


def test_pruning_an_already_pruned_model_prunes_it_further(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    once = prune(teacher, PruneConfig(ratio=0.5, **NO_FINETUNE), s.train, s.val)
    twice = prune(once, PruneConfig(ratio=0.5, importance="taylor", **NO_FINETUNE), s.train, s.val)

    assert hidden_widths(once) == ([12], [10, 5])
    assert hidden_widths(twice) == ([6], [5, 3])  # 5 * 0.5 = 2.5 rounds half up
    assert count_params(twice) < count_params(once) < count_params(teacher)
    assert np.all(np.isfinite(predict(twice, s.test)))


def test_taylor_and_magnitude_importance_keep_different_neurons(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    by_magnitude = prune(teacher, PruneConfig(ratio=0.5, importance="magnitude", **NO_FINETUNE), s.train, s.val)
    by_taylor = prune(teacher, PruneConfig(ratio=0.5, importance="taylor", **NO_FINETUNE), s.train, s.val)

    assert hidden_widths(by_magnitude) == hidden_widths(by_taylor)
    magnitude, taylor = _kept_neurons(teacher, by_magnitude), _kept_neurons(teacher, by_taylor)
    assert [len(k) for k in magnitude] == [len(k) for k in taylor] == [12, 10, 5]
    assert all(k == sorted(set(k)) for k in magnitude + taylor)  # neurons keep their order
    assert magnitude != taylor


def test_iterative_pruning_with_fine_tuning_keeps_validation_auc(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    logs: list[str] = []
    config = PruneConfig(ratio=0.5, importance="taylor", iterations=2, finetune_epochs=1, learning_rate=1e-3)
    pruned = prune(teacher, config, s.train, s.val, on_log=logs.append)

    assert hidden_widths(pruned) == ([12], [10, 5])
    assert sum(line.startswith("prune step") for line in logs) == 2
    assert _test_auc(pruned, s.val) >= _test_auc(teacher, s.val) - 0.02
    assert _test_auc(pruned, s.test) >= _test_auc(teacher, s.test) - 0.02


def test_a_pruned_checkpoint_loads_back_with_identical_predictions(teacher: DLRM, synthetic_splits: Splits, tmp_path: Path) -> None:
    s = synthetic_splits
    pruned = prune(teacher, PruneConfig(ratio=0.5, scope="global", finetune_epochs=1), s.train, s.val)

    loaded = load_checkpoint(save_checkpoint(tmp_path / "pruned", pruned, s.encoder, {"test_auc": 0.0}))

    assert loaded.config == pruned.config
    np.testing.assert_array_equal(predict(loaded.model, s.test), predict(pruned, s.test))


def test_over_pruning_without_fine_tuning_clearly_loses_accuracy(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    pruned = prune(teacher, PruneConfig(ratio=0.95, **NO_FINETUNE), s.train, s.val)

    assert hidden_widths(pruned) == ([1], [1, 1])
    assert _test_auc(pruned, s.test) < 0.97 * _test_auc(teacher, s.test)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_prune_config_refuses_a_ratio_outside_0_1(ratio: float) -> None:
    with pytest.raises(ValidationError, match="ratio"):
        PruneConfig(ratio=ratio)


@pytest.fixture
def tiny(synthetic_splits: Splits) -> DLRM:
    torch.manual_seed(0)
    s = synthetic_splits
    cfg = TrainConfig(embedding_dim=4, bottom_mlp=[8], top_mlp=[6, 2])
    return DLRM(dlrm_config_for(s.encoder, cfg))


def test_a_layer_that_would_keep_no_neuron_is_refused(tiny: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    # 2 * (1 - 0.8) = 0.4 rounds to 0 neurons
    with pytest.raises(CompressError, match=r"ratio=0.8 would leave 0 of the 2 neurons of the top_mlp hidden layer 2.*<= 0.750"):
        prune(tiny, PruneConfig(ratio=0.8, **NO_FINETUNE), s.train, s.val)
    # 16 hidden neurons * 0.05 = 0.8 -> 1 neuron left for 3 layers
    with pytest.raises(CompressError, match=r"scope='global' keeps 1 of 16 hidden neurons, fewer than the 3 hidden layers"):
        prune(tiny, PruneConfig(ratio=0.95, scope="global", **NO_FINETUNE), s.train, s.val)


def test_prune_refuses_rows_of_the_wrong_width_and_other_models(tiny: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    narrow = EncodedRows(s.train.dense_features[:, :1], s.train.sparse_ids, s.train.multi_hot_ids, s.train.labels)
    with pytest.raises(CompressError, match="train split: dense_features has 1 columns, but the model expects 2"):
        prune(tiny, PruneConfig(), narrow, s.val)
    with pytest.raises(CompressError, match="the val split is empty"):
        prune(tiny, PruneConfig(), s.train, s.val.take(slice(0, 0)))
    with pytest.raises(CompressError, match="prune: expected a registered architecture's model, got Linear"):
        prune(torch.nn.Linear(2, 2), PruneConfig(), s.train, s.val)  # type: ignore[arg-type]


def test_a_model_with_int8_embedding_tables_is_pruned_with_its_tables_untouched(teacher: DLRM, synthetic_splits: Splits) -> None:
    s = synthetic_splits
    torch.manual_seed(0)
    quantized = DLRM(dataclasses.replace(teacher.config, embedding_quantization="int8_rowwise"))
    quantized.sparse_embeddings.tables.codes.random_(-128, 127)
    tables = {k: v.clone() for k, v in quantized.state_dict().items() if "embeddings" in k}

    pruned = prune(quantized, PruneConfig(ratio=0.5, finetune_epochs=1), s.train, s.val)

    assert pruned.config.embedding_quantization == "int8_rowwise"
    assert hidden_widths(pruned) == ([12], [10, 5])
    assert all(torch.equal(pruned.state_dict()[k], v) for k, v in tables.items())

"""Structured pruning of DCN-v2's and DeepFM's deep networks, found through the architecture's
prunable blocks: the hidden layers shrink, the cross layers and output widths stay, the result
is rebuilt from its config, exports with parity and keeps most of its validation AUC."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from toolkit.compress.prune import hidden_widths, prune
from toolkit.compress.recipe import PruneConfig
from toolkit.data import Splits
from toolkit.errors import CompressError
from toolkit.metrics import auc
from toolkit.models import architecture_of
from toolkit.train import TrainConfig, predict, train_model

# (architecture, options, hidden widths after pruning half): parallel DCN-v2's last deep layer feeds the
# concatenation with the cross output, which Torch-Pruning cannot map (it would cut the cross layers and
# embeddings too), so it is kept intact without being named anywhere
CASES = {
    "dcnv2_stacked": ("dcnv2", {"deep_mlp": [24, 12]}, [12, 6]),
    "dcnv2_parallel": ("dcnv2", {"structure": "parallel", "deep_mlp": [24, 12]}, [12, 12]),
    "deepfm": ("deepfm", {"deep_mlp": [24, 12]}, [12, 6]),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="module")
def trained(case, synthetic_splits: Splits):
    name, options, _ = case
    s = synthetic_splits
    config = TrainConfig(architecture=name, embedding_dim=8, max_epochs=3, learning_rate=1e-2, model_options=options)
    return train_model(s.train, s.val, s.encoder, config).model


def test_the_deep_network_loses_half_its_neurons_and_the_rest_keeps_its_widths(
    case, trained, synthetic_splits: Splits, tmp_path: Path
) -> None:
    from toolkit.export import check_parity, export_onnx

    s = synthetic_splits
    config = PruneConfig(ratio=0.5, importance="magnitude", scope="per_layer", iterations=1, finetune_epochs=1)
    logs: list[str] = []
    pruned = prune(trained, config, s.train, s.val, on_log=logs.append)
    want = case[2]

    assert hidden_widths(trained) == ([24, 12],) and hidden_widths(pruned) == (want,)
    assert pruned.config.deep_mlp == want and type(pruned) is type(trained)
    assert pruned.output_layer.in_features == trained.output_layer.in_features - (12 - want[-1])  # the last deep layer feeds it
    assert any("kept intact" in line and "deep_mlp hidden layer 2" in line for line in logs) == (want[-1] == 12)
    if architecture_of(trained).name == "dcnv2":  # the cross layers keep x0's width
        assert all(layer.up.out_features == trained.config.input_width for layer in pruned.cross_layers)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in trained.parameters())
    assert auc(s.val.labels, predict(pruned, s.val)) >= 0.97 * auc(s.val.labels, predict(trained, s.val))
    arch = architecture_of(pruned)
    path = export_onnx(pruned, arch.example_inputs(pruned.config, 8), ["probability"], tmp_path / "model.onnx")
    assert check_parity(pruned, path, s.test.inputs(), atol=1e-5).passed  # 1e-5: FP32 kernels differ by ulps


def test_a_deep_network_left_empty_is_refused_naming_the_layer(trained, synthetic_splits: Splits) -> None:
    # checked on every hidden layer before pruning, also the ones that will turn out to be coupled
    with pytest.raises(CompressError, match=r"would leave 0 of the 12 neurons of the deep_mlp hidden layer 2"):
        prune(trained, PruneConfig(ratio=0.97, scope="per_layer", iterations=1), synthetic_splits.train, synthetic_splits.val)


def test_a_stacked_dcnv2_without_a_deep_network_has_nothing_to_prune(synthetic_splits: Splits) -> None:
    s = synthetic_splits
    torch.manual_seed(0)
    config = TrainConfig(architecture="dcnv2", embedding_dim=4, max_epochs=1, model_options={"deep_mlp": []})
    model = train_model(s.train, s.val, s.encoder, config).model
    with pytest.raises(CompressError, match=r"no hidden MLP layer \(deep_mlp=\[\]\); nothing to prune"):
        prune(model, PruneConfig(), s.train, s.val)

"""Prunable nn.Linear layers of a user's module found from Torch-Pruning's dependency graph (not by
name), and a module with no nn.Linear refused by ``prune``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit.compress.prunable import find_prunable_linears
from toolkit.compress.prune import prune
from toolkit.compress.recipe import PruneConfig
from toolkit.errors import CompressError
from toolkit.models import architecture_of
from toolkit.models.user import load_model_file

FIXTURE = Path(__file__).parents[2] / "fixtures" / "models" / "user_bag_model.py"


def test_the_interactions_equal_width_layer_and_the_output_layer_are_kept_without_being_named():
    model = load_model_file(f"{FIXTURE}:build")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = find_prunable_linears(model, architecture_of(model).example_inputs(model.config, 4))
    # the hidden layers of the dense tower and of the head may shrink
    assert found.prunable == ["dense_tower.0", "head.0"]
    # dense_tower.2 is stacked with the user/item/genre vectors for the pairwise dot products: its width is the tables'
    assert set(found.kept) == {"dense_tower.2", "head.2"}
    assert "shared with genres, item, user" in found.kept["dense_tower.2"]
    assert "output layer" in found.kept["head.2"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model itself is not changed


class EmbeddingsOnly(nn.Module):
    """A factorization machine's second-order term: tables and sums, no nn.Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(10, 4) for _ in range(2))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = torch.stack([t(ids[:, i]) for i, t in enumerate(self.tables)], dim=1)
        return torch.sigmoid(0.5 * (v.sum(1) ** 2 - (v**2).sum(1)).sum(1, keepdim=True))


def test_prune_refuses_a_module_with_no_linear_layers_saying_so(synthetic_splits):
    s = synthetic_splits
    with pytest.raises(CompressError, match=r"EmbeddingsOnly has no nn.Linear layers \(it has Embedding\)"):
        prune(EmbeddingsOnly(), PruneConfig(ratio=0.5), s.train, s.val)
    with pytest.raises(CompressError, match="has no nn.Linear layers"):
        find_prunable_linears(EmbeddingsOnly(), {"ids": torch.zeros(4, 2, dtype=torch.int64)})


def test_a_users_module_pruned_by_half_is_rebuilt_from_its_config_and_exports_with_parity(tmp_path):
    import json

    from toolkit.compress.prunable import prune_linears
    from toolkit.export.model import export_model
    from toolkit.models import config_from_dict

    model = load_model_file(f"{FIXTURE}:build")
    arch = architecture_of(model)
    pruned = prune_linears(model, arch.example_inputs(model.config, 8), 0.5)
    assert pruned.config.linear_widths == {
        "dense_tower.0": [3, 8],
        "dense_tower.2": [8, 8],
        "head.0": [14, 8],
        "head.2": [8, 1],
    }
    assert model.dense_tower[0].out_features == 16  # the original is untouched
    # what the Python backend does: the config (JSON) and the state dict alone rebuild the pruned module
    config = config_from_dict(json.loads(json.dumps(pruned.config.to_dict())))
    served = arch.build(config)
    served.load_state_dict(pruned.state_dict())
    served.eval()
    rows = arch.example_inputs(model.config, 64, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(served(**rows), pruned(**rows), rtol=0, atol=0)
    report = export_model(pruned, tmp_path / "model.onnx")
    assert report.passed and report.max_abs_diff <= 1e-5

"""Model size and compute: parameter counts, MACs per row, state-dict bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit.compress.stats import count_params, macs_per_sample, state_dict_bytes
from toolkit.errors import CompressError
from toolkit.models import DLRM, dlrm_example_inputs


def _linear_macs_by_hooks(model: DLRM) -> int:
    """MACs of every nn.Linear, measured by running one row through forward hooks."""
    total = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: total.append(inp[0].shape[-1] * out.shape[-1]))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(*dlrm_example_inputs(model.config, 1).values())
    for h in hooks:
        h.remove()
    return sum(total)


def test_count_params_counts_embeddings_and_both_mlps(small_dlrm_config) -> None:
    model = DLRM(small_dlrm_config())
    embeddings = (11 + 13 + 5 + 9) * 8
    bottom = (2 * 16 + 16) + (16 * 8 + 8)
    top_in = 8 + 5 * 4 // 2  # E + F(F-1)/2 with F = 5
    top = (top_in * 16 + 16) + (16 * 8 + 8) + (8 * 1 + 1)
    assert count_params(model) == embeddings + bottom + top


def test_count_params_counts_int8_table_codes_as_weights(small_dlrm_config) -> None:
    float32 = DLRM(small_dlrm_config())
    int8 = DLRM(small_dlrm_config(embedding_quantization="int8_rowwise"))
    assert count_params(int8) == count_params(float32)
    # int8 codes + fp16 scale + int8 zero point per row, float32 MLPs
    rows = 11 + 13 + 5 + 9
    mlp_params = count_params(float32) - rows * 8
    assert state_dict_bytes(int8) == rows * (8 + 2 + 1) + 4 * mlp_params


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"multi_hot_cardinalities": [], "multi_hot_lengths": []},
        {"bottom_mlp": [], "top_mlp": [3]},
        {"multi_hot_cardinalities": [9, 4], "multi_hot_lengths": [4, 2]},
    ],
)
def test_macs_per_sample_is_linear_layers_plus_interaction_plus_multi_hot_sums(overrides: dict, small_dlrm_config) -> None:
    model = DLRM(small_dlrm_config(**overrides))
    cfg = model.config
    f = 1 + len(cfg.sparse_cardinalities) + len(cfg.multi_hot_cardinalities)
    expected = _linear_macs_by_hooks(model) + f * f * cfg.embedding_dim + sum(cfg.multi_hot_lengths) * cfg.embedding_dim
    assert macs_per_sample(model) == expected


def test_macs_per_sample_refuses_other_models() -> None:
    with pytest.raises(CompressError, match="macs_per_sample expects a registered architecture's model, got Sequential"):
        macs_per_sample(nn.Sequential(nn.Linear(2, 2)))  # type: ignore[arg-type]


def test_state_dict_bytes_is_4_bytes_per_float32_parameter_and_follows_the_dtype(tmp_path: Path, small_dlrm_config) -> None:
    model = DLRM(small_dlrm_config())
    assert state_dict_bytes(model) == 4 * count_params(model)  # the interaction index is not persistent
    torch.save(model.state_dict(), tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_size >= state_dict_bytes(model)
    assert state_dict_bytes(model.half()) == 2 * count_params(model)

"""DCN-v2 and DeepFM: the cross layer and the FM term compute the papers' formulas, multi-hot
padding is masked out, the structures and ranks have the widths they promise, bad configs are refused."""

from __future__ import annotations

import itertools

import pytest
import torch

from toolkit.models import DCNv2, DCNv2Config, DeepFM, DeepFMConfig
from toolkit.models.dcnv2 import CrossLayer
from toolkit.models.signature import feature_example_inputs

SIZES = dict(num_dense=2, sparse_cardinalities=[11, 13, 5], multi_hot_cardinalities=[9], multi_hot_lengths=[4])


def _dcn(**changes) -> DCNv2:
    torch.manual_seed(0)
    return DCNv2(DCNv2Config(**SIZES, embedding_dim=8, **changes)).eval()


def _deepfm(**changes) -> DeepFM:
    torch.manual_seed(0)
    return DeepFM(DeepFMConfig(**SIZES, embedding_dim=8, **changes)).eval()


@pytest.mark.parametrize("rank", [None, 3])
def test_a_cross_layer_is_x0_times_w_x_plus_b_plus_x(rank: int | None) -> None:
    torch.manual_seed(0)
    layer = CrossLayer(6, rank)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    w = layer.up.weight if rank is None else layer.up.weight @ layer.down.weight  # (d, d), U Vᵀ for low rank

    torch.testing.assert_close(layer(x0, x), x0 * (x @ w.T + layer.up.bias) + x)


def test_low_rank_cross_layers_hold_2_d_r_plus_d_parameters_instead_of_d_d_plus_d() -> None:
    d = DCNv2Config(**SIZES, embedding_dim=8).input_width
    assert d == 4 * 8 + 2
    full, low = _dcn(), _dcn(cross_rank=5)

    assert sum(p.numel() for p in full.cross_layers[0].parameters()) == d * d + d
    assert sum(p.numel() for p in low.cross_layers[0].parameters()) == 2 * d * 5 + d


def test_stacked_runs_the_deep_network_on_the_cross_output_and_parallel_concatenates_both() -> None:
    stacked, parallel = _dcn(), _dcn(structure="parallel")
    d = stacked.config.input_width

    assert stacked.deep_mlp[0].in_features == d and stacked.output_layer.in_features == 64
    assert parallel.output_layer.in_features == d + 64
    cross_only = _dcn(deep_mlp=[])
    assert cross_only.output_layer.in_features == d
    for model in (stacked, parallel, cross_only):
        assert model(**feature_example_inputs(model.config, 3)).shape == (3, 1)


def test_deepfm_second_order_term_is_the_sum_of_pairwise_field_dot_products() -> None:
    model = _deepfm()
    inputs = feature_example_inputs(model.config, 5, seed=2)
    with torch.no_grad():
        # switch off everything but the FM's pairwise term
        for table in model.sparse_weights:
            table.weight.zero_()
        model.multi_hot_weights[0].weight.zero_()
        model.dense_weights.weight.zero_()
        model.dense_weights.bias.zero_()
        model.output_layer.weight.zero_()
        model.output_layer.bias.zero_()
        got = model.logits(**inputs).reshape(-1)

        ids, mask = inputs["multi_hot_ids"], (inputs["multi_hot_ids"] != 0).unsqueeze(-1).float()
        fields = [emb(inputs["sparse_ids"][:, s]) for s, emb in enumerate(model.sparse_embeddings)]
        fields.append((model.multi_hot_embeddings[0](ids) * mask).sum(1))
        fields += [inputs["dense_features"][:, d : d + 1] * model.dense_vectors[d] for d in range(2)]
        want = sum((a * b).sum(1) for a, b in itertools.combinations(fields, 2))

    assert len(fields) == model.config.num_fields == 6  # 3 sparse + 1 multi-hot + 2 dense
    torch.testing.assert_close(got, want)


def test_deepfm_first_order_term_adds_one_weight_per_id() -> None:
    model = _deepfm()
    inputs = feature_example_inputs(model.config, 4, seed=3)
    with torch.no_grad():
        before = model.logits(**inputs)
        model.sparse_weights[1].weight[inputs["sparse_ids"][0, 1]] += 1.0

        torch.testing.assert_close(model.logits(**inputs)[0] - before[0], torch.tensor([1.0]))


@pytest.mark.parametrize("make", [_dcn, _deepfm], ids=["dcnv2", "deepfm"])
def test_padding_ids_are_masked_out_of_the_multi_hot_sum(make) -> None:
    model = make()
    inputs = feature_example_inputs(model.config, 6)
    inputs["multi_hot_ids"][:, 2:] = 0
    inputs["multi_hot_ids"][:, :2] = inputs["multi_hot_ids"][:, :2].clamp(min=1)
    with torch.no_grad():
        before = model(**inputs)
        model.multi_hot_embeddings[0].weight[0].normal_(std=10.0)
        if isinstance(model, DeepFM):
            model.multi_hot_weights[0].weight[0] += 10.0
        after = model(**inputs)

    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cls", "changes", "message"),
    [
        (DCNv2Config, {"num_cross_layers": 0}, "num_cross_layers must be >= 1"),
        (DCNv2Config, {"cross_rank": 0}, "cross_rank must be None"),
        (DCNv2Config, {"structure": "mixture"}, r"structure must be one of \['stacked', 'parallel'\]"),
        (DCNv2Config, {"structure": "parallel", "deep_mlp": []}, "'parallel' needs a deep network"),
        (DCNv2Config, {"sparse_cardinalities": []}, "at least one table"),
        (DCNv2Config, {"multi_hot_lengths": []}, "1 tables but multi_hot_lengths has 0"),
        (DeepFMConfig, {"deep_mlp": []}, "deep_mlp must name at least one hidden width"),
        (DeepFMConfig, {"embedding_dim": 0}, "embedding_dim must be >= 1"),
        (DeepFMConfig, {"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ],
)
def test_invalid_configs_are_refused_naming_the_field(cls, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**{**SIZES, **changes})


@pytest.mark.parametrize("cls", [DCNv2Config, DeepFMConfig])
def test_from_dict_refuses_another_architecture_or_unknown_fields(cls) -> None:
    d = cls(**SIZES).to_dict()
    with pytest.raises(ValueError, match="expected a .* config"):
        cls.from_dict({**d, "architecture": "dlrm"})
    with pytest.raises(ValueError, match="invalid .* config: .*width"):
        cls.from_dict({**d, "width": 3})

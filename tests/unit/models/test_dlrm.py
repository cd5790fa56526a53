"""The DLRM: shapes, masked multi-hot sums, the interaction layer, its config and signature."""

from __future__ import annotations

import json

import pytest
import torch

from toolkit.models import DLRM, DLRMConfig, dlrm_example_inputs, dlrm_signature
from toolkit.tensors import TensorSpec


@pytest.fixture
def model(small_dlrm_config) -> DLRM:
    torch.manual_seed(0)
    return DLRM(small_dlrm_config()).eval()


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_forward_returns_b_by_1_float32_probabilities_strictly_between_0_and_1(model: DLRM, batch: int) -> None:
    out = model(*dlrm_example_inputs(model.config, batch).values())

    assert out.shape == (batch, 1)
    assert out.dtype == torch.float32
    assert bool(((out > 0) & (out < 1)).all())


def test_probabilities_are_the_sigmoid_of_the_logits(model: DLRM) -> None:
    inputs = dlrm_example_inputs(model.config, 6).values()
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), torch.sigmoid(model.logits(*inputs)))


def test_masked_sum_ignores_the_embedding_row_of_padding_ids(model: DLRM) -> None:
    inputs = dlrm_example_inputs(model.config, 8)
    ids = inputs["multi_hot_ids"]
    ids[:, 2:] = model.config.padding_id  # two real ids, two padded positions per row
    ids[:, :2] = ids[:, :2].clamp(min=1)
    with torch.no_grad():
        before = model(*inputs.values())
        model.multi_hot_embeddings[0].weight[model.config.padding_id].normal_(std=10.0)
        after = model(*inputs.values())
        model.multi_hot_embeddings[0].weight[int(ids[0, 0])] += 10.0  # a real id's row does count
        changed = model(*inputs.values())

    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert not torch.allclose(changed[0], before[0])


def test_multi_hot_sum_does_not_depend_on_the_order_of_ids(model: DLRM) -> None:
    inputs = dlrm_example_inputs(model.config, 4)
    flipped = dict(inputs, multi_hot_ids=inputs["multi_hot_ids"].flip(1))
    with torch.no_grad():
        torch.testing.assert_close(model(*flipped.values()), model(*inputs.values()))


@pytest.mark.parametrize(("n_sparse", "n_multi"), [(1, 0), (3, 1), (7, 1), (4, 2)])
def test_interaction_layer_has_f_times_f_minus_1_over_2_pairs(n_sparse: int, n_multi: int, small_dlrm_config) -> None:
    config = small_dlrm_config(sparse_cardinalities=[5] * n_sparse, multi_hot_cardinalities=[6] * n_multi, multi_hot_lengths=[3] * n_multi)
    model = DLRM(config)
    f = 1 + n_sparse + n_multi  # bottom-MLP vector + one per embedding table

    assert model.interaction_index.numel() == f * (f - 1) // 2
    rows, cols = model.interaction_index // f, model.interaction_index % f
    assert bool((rows > cols).all())  # strictly lower triangle: no self-dots, no duplicates
    assert model.top_mlp[0].in_features == config.embedding_dim + f * (f - 1) // 2
    assert model(*dlrm_example_inputs(config, 3).values()).shape == (3, 1)


def test_interaction_index_is_not_saved_in_the_state_dict(model: DLRM) -> None:
    assert "interaction_index" not in model.state_dict()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_dense": 0}, "num_dense must be >= 1"),
        ({"sparse_cardinalities": []}, "sparse_cardinalities must name at least one table"),
        ({"multi_hot_lengths": [4, 4]}, "multi_hot_cardinalities has 1 tables but multi_hot_lengths has 2"),
        ({"sparse_cardinalities": [11, 0]}, r"sparse_cardinalities must hold positive integers, got \[0\]"),
        ({"multi_hot_lengths": [2.5]}, "multi_hot_lengths must hold positive integers"),
        ({"top_mlp": [16, -1]}, "top_mlp must hold positive integers"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must lie in \[0, 1\)"),
    ],
)
def test_config_rejects_invalid_hyper_parameters_naming_the_field(overrides: dict, message: str, small_dlrm_config) -> None:
    with pytest.raises(ValueError, match=message):
        small_dlrm_config(**overrides)


def test_config_round_trips_through_json(small_dlrm_config) -> None:
    config = small_dlrm_config(dropout=0.25, padding_id=0)
    d = json.loads(json.dumps(config.to_dict()))

    assert d["format_version"] == 1 and d["architecture"] == "dlrm"
    assert DLRMConfig.from_dict(d) == config


MISSING = object()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format_version 1"),
        ({"architecture": "dcn"}, "expected a dlrm config"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
        ({"num_dense": MISSING}, "invalid dlrm config: .*num_dense"),
        ({"num_dense": "2"}, "invalid dlrm config"),
        ({"hidden": 3}, "invalid dlrm config: .*hidden"),
    ],
)
def test_config_from_an_invalid_dict_is_a_value_error(change: dict, message: str, small_dlrm_config) -> None:
    d = {**small_dlrm_config().to_dict(), **change}
    d = {k: v for k, v in d.items() if v is not MISSING}
    with pytest.raises(ValueError, match=message):
        DLRMConfig.from_dict(d)


def test_signature_has_a_dynamic_batch_and_the_configured_widths(small_dlrm_config) -> None:
    inputs, outputs = dlrm_signature(small_dlrm_config(multi_hot_cardinalities=[9, 7], multi_hot_lengths=[4, 2]))

    assert inputs == [
        TensorSpec("dense_features", "float32", (None, 2)),
        TensorSpec("sparse_ids", "int64", (None, 3)),
        TensorSpec("multi_hot_ids", "int64", (None, 6)),
    ]
    assert outputs == [TensorSpec("probability", "float32", (None, 1))]


def test_example_inputs_are_in_range_for_every_table_and_deterministic(small_dlrm_config) -> None:
    config = small_dlrm_config()
    inputs = dlrm_example_inputs(config, 32, seed=3)

    assert list(inputs) == ["dense_features", "sparse_ids", "multi_hot_ids"]
    assert inputs["dense_features"].dtype == torch.float32 and inputs["dense_features"].shape == (32, 2)
    assert inputs["sparse_ids"].dtype == torch.int64
    for s, n in enumerate(config.sparse_cardinalities):
        assert 0 <= int(inputs["sparse_ids"][:, s].min()) and int(inputs["sparse_ids"][:, s].max()) < n
    assert int(inputs["multi_hot_ids"].max()) < config.multi_hot_cardinalities[0]
    again = dlrm_example_inputs(config, 32, seed=3)
    assert all(torch.equal(inputs[k], again[k]) for k in inputs)


def test_dlrm_without_multi_valued_features_takes_two_inputs_and_exports(tmp_path):
    from toolkit.export import export_onnx, read_io_specs
    from toolkit.models import DLRM, DLRMConfig, dlrm_example_inputs, dlrm_signature

    config = DLRMConfig(num_dense=13, sparse_cardinalities=[50, 7, 3])
    model = DLRM(config).eval()
    example = dlrm_example_inputs(config, 5)
    assert list(example) == ["dense_features", "sparse_ids"]
    assert model(*example.values()).shape == (5, 1)
    onnx_path = export_onnx(model, example, ["probability"], tmp_path / "model.onnx")
    inputs, _ = read_io_specs(onnx_path)
    assert [s.name for s in inputs] == [s.name for s in dlrm_signature(config)[0]] == ["dense_features", "sparse_ids"]

"""Compression of DCN-v2 and DeepFM through the model protocol: their MACs count, and a recipe of
pruning and ONNX INT8 applied, exported and measured side by side like the DLRM's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.compress.recipe import Recipe
from toolkit.compress.stats import macs_per_sample
from toolkit.models import get_architecture
from toolkit.models.signature import feature_example_inputs
from toolkit.optimize.pipeline import CompressionData, compress_and_report
from toolkit.train import TrainConfig, train_model

SIZES = dict(num_dense=2, sparse_cardinalities=[11, 13, 5], multi_hot_cardinalities=[9], multi_hot_lengths=[4])


def _linear_macs_by_hooks(model: nn.Module) -> int:
    """MACs of the Linear layers actually run on one row (forward hooks)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(**feature_example_inputs(model.config, 1))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize(
    ("name", "options", "extra"),
    [
        # 3 cross layers' x0 ⊙ (...) over d = 4·8 + 2 = 34, plus the multi-hot masked sum 4·8
        ("dcnv2", {}, 3 * 34 + 4 * 8),
        ("dcnv2", {"cross_rank": 5, "structure": "parallel"}, 3 * 34 + 4 * 8),
        # multi-hot sums of the 8- and 1-wide tables 4·9, dense fields 2·8, FM 2·6·8 + 8
        ("deepfm", {}, 4 * 9 + 2 * 8 + 2 * 6 * 8 + 8),
    ],
)
def test_macs_are_the_linear_layers_run_plus_the_architecture_s_own_work(name: str, options: dict, extra: int) -> None:
    arch = get_architecture(name)
    model = arch.build(arch.config_class(**SIZES, embedding_dim=8, **options)).eval()

    assert macs_per_sample(model) == _linear_macs_by_hooks(model) + extra


def test_low_rank_cross_layers_cost_2_d_r_instead_of_d_d() -> None:
    arch = get_architecture("dcnv2")
    full = arch.build(arch.config_class(**SIZES, embedding_dim=8))
    low = arch.build(arch.config_class(**SIZES, embedding_dim=8, cross_rank=5))

    assert macs_per_sample(full) - macs_per_sample(low) == 3 * (34 * 34 - 2 * 34 * 5)


@pytest.fixture(scope="module")
def dcnv2(synthetic_splits):
    s = synthetic_splits
    config = TrainConfig(architecture="dcnv2", embedding_dim=8, max_epochs=3, learning_rate=1e-2, model_options={"deep_mlp": [24, 12]})
    return train_model(s.train, s.val, s.encoder, config).model, CompressionData("synthetic", s.train, s.val, s.test, s.encoder)


def test_a_dcnv2_is_pruned_quantized_and_reported_side_by_side(tmp_path, dcnv2) -> None:
    model, data = dcnv2
    recipes = {
        "pruned": Recipe(name="pruned", select="as_written", steps=[{"kind": "prune", "ratio": 0.5, "finetune_epochs": 1}]),
        "int8": Recipe(name="int8", select="as_written", steps=[{"kind": "onnx_dynamic_int8"}]),
    }
    report, results = compress_and_report(model, recipes, data, tmp_path, rounds=1, b1_requests=5, b256_batches=2)
    rows = {v["name"]: v for v in report["variants"]}

    assert list(rows) == ["fp32_pytorch", "fp32_onnx", "pruned", "int8"]
    assert rows["pruned"]["macs_per_sample"] < rows["fp32_pytorch"]["macs_per_sample"] == macs_per_sample(model)
    assert results["pruned"].model.config.deep_mlp == [12, 6]
    for name in ("pruned", "int8"):
        assert rows[name]["within_budget"] is True, rows[name]  # test AUC >= 99% of FP32's


def test_a_dcnv2_is_distilled_into_a_narrower_dcnv2(dcnv2) -> None:
    from toolkit.compress.distill import distill
    from toolkit.compress.recipe import DistillConfig
    from toolkit.metrics import auc
    from toolkit.train import predict

    model, data = dcnv2
    config = DistillConfig(embedding_dim=4, student={"deep_mlp": [8], "cross_rank": 4}, learning_rate=1e-2, max_epochs=4)
    student = distill(model, config, data.train, data.val)

    assert type(student) is type(model)
    assert (student.config.embedding_dim, student.config.deep_mlp, student.config.cross_rank) == (4, [8], 4)
    assert student.config.sparse_cardinalities == model.config.sparse_cardinalities  # the teacher's inputs
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in model.parameters()) / 2
    # a student a third the size on 4,800 rows: within 5% of the teacher's validation AUC
    assert auc(data.val.labels, predict(student, data.val)) >= 0.95 * auc(data.val.labels, predict(model, data.val))


@pytest.mark.parametrize(
    ("student", "message"),
    [
        ({"num_dense": 3}, r"\['num_dense'\] are not free fields of a dcnv2 config"),
        ({"top_mlp": [8]}, r"\['top_mlp'\] are not free fields of a dcnv2 config; it takes .*'deep_mlp'"),
        ({"structure": "mixed"}, "invalid student architecture: structure must be one of"),
    ],
)
def test_a_student_option_that_is_no_free_field_of_the_architecture_is_refused(dcnv2, student: dict, message: str) -> None:
    from toolkit.compress.distill import student_config
    from toolkit.compress.recipe import DistillConfig
    from toolkit.errors import CompressError

    with pytest.raises(CompressError, match=message):
        student_config(dcnv2[0], DistillConfig(student=student))

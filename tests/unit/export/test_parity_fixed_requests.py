"""check_parity on a fixed-shape export whose inputs differ in their first dimension.

An ``nn.EmbeddingBag`` fed flat ids int64[T] and offsets int64[B] exports only with fixed
shapes (``dynamic_batch=False``: the two inputs cannot share one batch dimension). Such a
graph has no rows to batch: each parity request is one whole feed of the graph's shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export import check_parity, export_onnx, read_io_specs
from toolkit.tensors import TensorSpec

VOCAB, DIM = 100, 8
T, B = 12, 4  # flat ids per request, bags per request
# FP32 sums of at most T rows of E=8 values through a Linear: ONNX Runtime's Loop adds the same
# numbers in another order, a few ulps (measured 4.8e-7 over 200 requests); 1e-5 is the project's export tolerance.
ATOL = 1e-5


class FlatBagModel(nn.Module):
    """ids int64 [T] and offsets int64 [B] -> score float32 [B, 1] through a sum EmbeddingBag."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.bag = nn.EmbeddingBag(VOCAB, DIM, mode="sum")
        self.head = nn.Linear(DIM, 1)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(ids, offsets))


def _requests(k: int, seed: int = 1) -> dict[str, np.ndarray]:
    """K requests: ids int64 [K, T] and offsets int64 [K, B] (sorted, from 0, with empty bags)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (k, T), dtype=np.int64)
    cuts = np.sort(rng.integers(0, T + 1, (k, B - 1)), axis=1)  # equal cuts make empty bags
    offsets = np.concatenate([np.zeros((k, 1), dtype=np.int64), cuts], axis=1).astype(np.int64)
    return {"ids": ids, "offsets": offsets}


@pytest.fixture(scope="module")
def flat_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlatBagModel, Path]:
    model = FlatBagModel().eval()
    example = {"ids": torch.randint(0, VOCAB, (T,)), "offsets": torch.tensor([0, 3, 5, 9])}
    path = export_onnx(model, example, ["score"], tmp_path_factory.mktemp("flat_bag") / "bag.onnx", dynamic_batch=False)
    return model, path


def test_the_export_has_fixed_inputs_of_different_first_dimensions(flat_bag) -> None:
    _, path = flat_bag
    assert read_io_specs(path) == (
        [TensorSpec("ids", "int64", (T,)), TensorSpec("offsets", "int64", (B,))],
        [TensorSpec("score", "float32", (B, 1))],
    )


def test_parity_checks_k_stacked_requests_one_run_each(flat_bag) -> None:
    model, path = flat_bag
    requests = _requests(200)
    assert (np.diff(requests["offsets"], axis=1) == 0).any()  # empty bags are among them
    report = check_parity(model, path, requests, atol=ATOL)
    assert report.passed and report.n_rows == 200 and report.worst_output == "score"
    assert report.max_abs_diff <= ATOL


def test_parity_checks_one_request_given_in_the_graphs_own_shapes(flat_bag) -> None:
    model, path = flat_bag
    one = {name: a[0] for name, a in _requests(1).items()}
    report = check_parity(model, path, one, atol=ATOL)
    assert report.passed and report.n_rows == 1


def test_parity_fails_for_a_model_the_file_was_not_exported_from(flat_bag) -> None:
    _, path = flat_bag
    with pytest.raises(ExportError, match=r"ONNX output 'score' of bag.onnx differs from PyTorch by up to .* over 50 requests"):
        check_parity(FlatBagModel(seed=1).eval(), path, _requests(50))
    report = check_parity(FlatBagModel(seed=1).eval(), path, _requests(50), raise_on_failure=False)
    assert not report.passed and report.max_abs_diff > 1e-2


def test_requests_of_other_shapes_are_refused_naming_the_input_and_the_graphs_shapes(flat_bag) -> None:
    model, path = flat_bag
    requests = _requests(3)
    with pytest.raises(ExportError, match=r"'offsets' has shape \[3, 5\].*'ids' \[12\] and 'offsets' \[4\]") as err:
        check_parity(model, path, {"ids": requests["ids"], "offsets": np.zeros((3, 5), dtype=np.int64)})
    assert "(one request)" in err.value.hint


def test_inputs_stacking_different_numbers_of_requests_are_refused(flat_bag) -> None:
    model, path = flat_bag
    with pytest.raises(ExportError, match=r"stack different numbers of requests: \{'ids': 3, 'offsets': 1\}"):
        check_parity(model, path, {"ids": _requests(3)["ids"], "offsets": _requests(1)["offsets"][0]})


def test_missing_inputs_and_wrong_dtypes_are_named_as_for_row_inputs(flat_bag) -> None:
    model, path = flat_bag
    requests = _requests(2)
    with pytest.raises(ExportError, match=r"missing \['offsets'\]"):
        check_parity(model, path, {"ids": requests["ids"]})
    with pytest.raises(ExportError, match="'offsets' is int32, but bag.onnx expects int64"):
        check_parity(model, path, {"ids": requests["ids"], "offsets": requests["offsets"].astype(np.int32)})

"""prepare_inputs: the client-side checks of a request against a model's inputs (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import InferenceError
from toolkit.serving import prepare_inputs
from toolkit.tensors import TensorSpec

SPECS = [TensorSpec("dense", "float32", (None, 13)), TensorSpec("sparse_ids", "int64", (None, 7))]
MAX_BATCH = 256


def _request(rows: int = 3, **overrides: np.ndarray) -> dict[str, np.ndarray]:
    request = {"dense": np.zeros((rows, 13), np.float32), "sparse_ids": np.arange(rows * 7, dtype=np.int64).reshape(rows, 7)}
    return {**request, **overrides}


def test_matching_request_passes_through_unchanged() -> None:
    request = _request()
    prepared = prepare_inputs(request, SPECS, MAX_BATCH)
    assert list(prepared) == ["dense", "sparse_ids"]
    assert prepared["dense"] is request["dense"]


def test_int32_ids_are_widened_to_int64_with_equal_values() -> None:
    ids = np.arange(21, dtype=np.int32).reshape(3, 7)
    prepared = prepare_inputs(_request(sparse_ids=ids), SPECS, MAX_BATCH)
    assert prepared["sparse_ids"].dtype == np.int64
    np.testing.assert_array_equal(prepared["sparse_ids"], ids)


def test_int64_to_int32_converted_when_every_value_fits() -> None:
    specs = [TensorSpec("ids", "int32", (None, 2))]
    prepared = prepare_inputs({"ids": np.array([[1, -5]], np.int64)}, specs, 8)
    assert prepared["ids"].dtype == np.int32
    np.testing.assert_array_equal(prepared["ids"], [[1, -5]])


def test_int64_out_of_int32_range_names_tensor_dtypes_and_range() -> None:
    specs = [TensorSpec("ids", "int32", (None, 2))]
    with pytest.raises(InferenceError) as info:
        prepare_inputs({"ids": np.array([[1, 2**40]], np.int64)}, specs, 8)
    message = str(info.value)
    assert "'ids'" in message and "int64" in message and "int32" in message
    assert str(2**40) in message


def test_float64_to_float32_is_refused_naming_both_types() -> None:
    with pytest.raises(InferenceError, match=r"'dense'.*float32.*float64"):
        prepare_inputs(_request(dense=np.zeros((3, 13), np.float64)), SPECS, MAX_BATCH)


def test_int64_to_float32_is_refused() -> None:
    with pytest.raises(InferenceError, match=r"'dense'.*float32.*int64"):
        prepare_inputs(_request(dense=np.zeros((3, 13), np.int64)), SPECS, MAX_BATCH)


def test_float32_to_float64_is_widened() -> None:
    specs = [TensorSpec("x", "float64", (None, 1))]
    assert prepare_inputs({"x": np.ones((2, 1), np.float32)}, specs, 4)["x"].dtype == np.float64


@pytest.mark.parametrize("ids", [np.zeros((3, 5), np.int64), np.zeros((3, 7, 1), np.int64), np.zeros(7, np.int64)])
def test_wrong_rank_or_dims_names_tensor_and_expected_shape(ids: np.ndarray) -> None:
    with pytest.raises(InferenceError) as info:
        prepare_inputs(_request(sparse_ids=ids), SPECS, MAX_BATCH)
    assert str(info.value) == f"input 'sparse_ids': expected shape [B, 7] (B <= 256), got {ids.shape}"


def test_missing_input_lists_expected_names() -> None:
    request = _request()
    del request["dense"]
    with pytest.raises(InferenceError, match=r"missing \['dense'\].*dense float32\[B, 13\].*sparse_ids int64\[B, 7\]"):
        prepare_inputs(request, SPECS, MAX_BATCH)


def test_unknown_input_is_refused() -> None:
    with pytest.raises(InferenceError, match=r"unknown \['user_id'\]"):
        prepare_inputs(_request(user_id=np.zeros((3, 1), np.int64)), SPECS, MAX_BATCH)


def test_batch_above_max_batch_size_is_refused() -> None:
    with pytest.raises(InferenceError, match=r"'dense': expected shape \[B, 13\] \(B <= 256\), got \(257, 13\)"):
        prepare_inputs(_request(rows=257), SPECS, MAX_BATCH)


def test_inputs_with_different_batch_sizes_are_refused() -> None:
    with pytest.raises(InferenceError, match="different batch sizes"):
        prepare_inputs(_request(dense=np.zeros((2, 13), np.float32)), SPECS, MAX_BATCH)


def test_model_without_batching_checks_every_dim() -> None:
    specs = [TensorSpec("x", "float32", (4, 2))]
    prepare_inputs({"x": np.zeros((4, 2), np.float32)}, specs, 0)
    with pytest.raises(InferenceError, match=r"expected shape \[4, 2\], got \(3, 2\)"):
        prepare_inputs({"x": np.zeros((3, 2), np.float32)}, specs, 0)

"""`build_model_config` writes, for every tensor rank a model may have, the form Triton accepts.

Triton needs ``dims`` on every tensor ("must specify 'dims'"); a tensor of one value per row
(ONNX shape ``[N]``) has none left once the batch dimension is dropped, and Triton's form for it
is ``dims: [1]`` with ``reshape { shape: [] }``. The real server loads and answers such a model
in tests/integration/test_one_value_per_row.py.
"""

from __future__ import annotations

import pytest

from toolkit.errors import RepositoryError
from toolkit.repository import BatchingOptions, build_model_config, check_config_against, config_to_text, parse_config
from toolkit.repository.config import config_tensor_specs
from toolkit.tensors import TensorSpec

NO_BATCHING = BatchingOptions(max_batch_size=0, dynamic_batching=False)


@pytest.mark.parametrize(
    ("shape", "dims", "reshape"),
    [((None,), [1], []), ((None, 7), [7], None), ((None, 3, 4), [3, 4], None), ((None, None), [-1], None)],
)
def test_a_batching_model_gets_the_per_row_dims_and_a_reshape_only_for_one_value_per_row(shape, dims, reshape) -> None:
    spec = TensorSpec("x", "float32", shape)
    config = parse_config(config_to_text(build_model_config("m", [spec], [spec], BatchingOptions(), backend="python")))

    for tensor in (config.input[0], config.output[0]):
        assert list(tensor.dims) == dims
        assert tensor.HasField("reshape") == (reshape is not None)
        if reshape is not None:
            assert list(tensor.reshape.shape) == reshape
    check_config_against(config, [spec], [spec])  # the model's own shape is what reshape says


def test_clients_see_the_dims_and_the_model_sees_the_reshape() -> None:
    spec = TensorSpec("score", "float32", (None,))
    config = build_model_config("m", [spec], [spec], BatchingOptions(), backend="python")

    assert config_tensor_specs(config)[1] == [TensorSpec("score", "float32", (None, 1))]
    assert config_tensor_specs(config, as_model_sees=True)[1] == [TensorSpec("score", "float32", (None,))]


def test_without_batching_every_dimension_is_written_and_a_vector_needs_no_reshape() -> None:
    spec = TensorSpec("x", "int64", (4,))
    config = build_model_config("m", [spec], [spec], NO_BATCHING, backend="python")
    assert list(config.input[0].dims) == [4] and not config.input[0].HasField("reshape")


def test_a_scalar_without_batching_is_refused_naming_the_model_and_tensor() -> None:
    # Triton 2.51: "cannot have empty reshape for non-batching model as scalar tensors are not supported"
    with pytest.raises(RepositoryError, match=r"model 'm': tensor x float32\[\] is a scalar") as info:
        build_model_config("m", [TensorSpec("x", "float32", ())], [], NO_BATCHING, backend="python")
    assert "batch dimension" in info.value.hint

"""Triton ``config.pbtxt`` files built and parsed with Triton's own protobuf schema.

Configs are assembled as dicts, converted with ``json_format.ParseDict`` into
``tritonclient.grpc.model_config_pb2.ModelConfig`` (which rejects unknown fields and
wrong types) and written with ``text_format`` — the same format Triton reads
(Triton docs, "Model Configuration"). No string templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from toolkit.errors import RepositoryError
from toolkit.tensors import TensorSpec

__all__ = [
    "BatchingOptions",
    "ModelConfig",
    "build_model_config",
    "config_to_text",
    "parse_config",
    "read_config",
    "config_tensor_specs",
    "check_config_against",
]

ModelConfig = model_config_pb2.ModelConfig


@dataclass
class BatchingOptions:
    """Batching and placement of one served model.

    Attributes:
        max_batch_size: largest batch Triton may form (``max_batch_size``); 0 turns
            batching off and makes every dim, batch included, explicit.
        dynamic_batching: whether Triton's dynamic batcher combines requests.
        max_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``: how long a
            request may wait for others to join its batch. 100 µs keeps single-row latency
            nearly unchanged on CPU while letting concurrent requests merge.
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size``; each in [1, max_batch_size].
        instance_count: ``instance_group[0].count`` model instances.
        instance_kind: ``KIND_CPU`` or ``KIND_GPU``.
    """

    max_batch_size: int = 256
    dynamic_batching: bool = True
    max_queue_delay_us: int = 100
    preferred_batch_sizes: list[int] = field(default_factory=list)
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise RepositoryError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise RepositoryError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_us}")
        if self.instance_count < 1:
            raise RepositoryError(f"instance_group count must be >= 1, got {self.instance_count}")
        if self.instance_kind not in ("KIND_CPU", "KIND_GPU"):
            raise RepositoryError(f"instance_group kind must be KIND_CPU or KIND_GPU, got {self.instance_kind!r}")
        if self.dynamic_batching and self.max_batch_size == 0:
            raise RepositoryError(
                "dynamic_batching needs max_batch_size >= 1",
                hint="set --max-batch-size to 1 or more, or turn dynamic batching off",
            )
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise RepositoryError(
                f"preferred_batch_size {bad} must lie in [1, max_batch_size={self.max_batch_size}]",
                hint="lower the preferred batch sizes or raise --max-batch-size",
            )


def _dims(spec: TensorSpec, max_batch_size: int) -> list[int]:
    shape = spec.shape[1:] if max_batch_size > 0 else spec.shape
    return [-1 if d is None else int(d) for d in shape]


def _tensor_entry(spec: TensorSpec, max_batch_size: int) -> dict:
    return {"name": spec.name, "data_type": "TYPE_" + np_to_triton_dtype(spec.numpy_dtype), "dims": _dims(spec, max_batch_size)}


def build_model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    options: BatchingOptions,
    *,
    platform: str | None = None,
    backend: str | None = None,
    parameters: dict[str, str] | None = None,
) -> ModelConfig:
    """A ``ModelConfig`` for a model with the given tensors and batching.

    Args:
        name: the model's name (its folder in the repository).
        inputs, outputs: tensors with the batch dimension first (dropped from ``dims``
            when ``options.max_batch_size > 0``).
        platform: e.g. ``"onnxruntime_onnx"``; backend: e.g. ``"python"`` (one of the two).
        parameters: backend ``parameters`` as string key/values.

    Raises:
        RepositoryError: neither or both of platform/backend; batching asked for a tensor
            without a dynamic batch dimension.
    """
    if (platform is None) == (backend is None):
        raise RepositoryError(f"model {name!r}: give exactly one of platform or backend")
    if options.max_batch_size > 0:
        fixed = [s.describe() for s in (*inputs, *outputs) if not s.has_dynamic_batch]
        if fixed:
            raise RepositoryError(
                f"model {name!r}: max_batch_size={options.max_batch_size} needs a dynamic first dimension, "
                f"but {', '.join(fixed)} has a fixed one",
                hint="build with --max-batch-size 0 or re-export the model with a dynamic batch dimension",
            )
    d: dict = {
        "name": name,
        "max_batch_size": options.max_batch_size,
        "input": [_tensor_entry(s, options.max_batch_size) for s in inputs],
        "output": [_tensor_entry(s, options.max_batch_size) for s in outputs],
        "instance_group": [{"count": options.instance_count, "kind": options.instance_kind}],
    }
    if platform is not None:
        d["platform"] = platform
    if backend is not None:
        d["backend"] = backend
    if options.dynamic_batching:
        batching: dict = {"max_queue_delay_microseconds": options.max_queue_delay_us}
        if options.preferred_batch_sizes:
            batching["preferred_batch_size"] = list(options.preferred_batch_sizes)
        d["dynamic_batching"] = batching
    if parameters:
        d["parameters"] = {k: {"string_value": str(v)} for k, v in parameters.items()}
    return json_format.ParseDict(d, ModelConfig())


def config_to_text(config: ModelConfig) -> str:
    """``config.pbtxt`` text of ``config``.

    ``max_batch_size: 0`` is proto3's default, so ``text_format`` omits it; Triton reads
    a missing field as 0, so the text still means the same (pytriton notes the same).
    """
    return text_format.MessageToString(config)


def parse_config(text: str, *, source: str = "config.pbtxt") -> ModelConfig:
    """Parse ``config.pbtxt`` text. Raises RepositoryError naming ``source`` and the parse error."""
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source}: not a valid Triton ModelConfig ({exc})") from exc


def read_config(path: Path) -> ModelConfig:
    """Read and parse a ``config.pbtxt`` file (see :func:`parse_config`)."""
    path = Path(path)
    if not path.is_file():
        raise RepositoryError(f"{path} does not exist")
    return parse_config(path.read_text(), source=str(path))


def config_tensor_specs(config: ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of ``config`` as :class:`TensorSpec` with the batch dimension put back."""

    def spec(t) -> TensorSpec:
        dtype = np.dtype(triton_to_np_dtype(model_config_pb2.DataType.Name(t.data_type).removeprefix("TYPE_")))
        dims = tuple(None if d == -1 else int(d) for d in t.dims)
        return TensorSpec(t.name, dtype.name, ((None,) + dims) if config.max_batch_size > 0 else dims)

    return [spec(t) for t in config.input], [spec(t) for t in config.output]


def check_config_against(config: ModelConfig, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Check that ``config`` declares exactly the model's tensors: names, dtypes, ranks and fixed dims.

    Raises:
        RepositoryError: one line per mismatch, each naming the model, the tensor and the fix.
    """
    got_in, got_out = config_tensor_specs(config)
    problems: list[str] = []
    for kind, declared, actual in (("input", got_in, inputs), ("output", got_out, outputs)):
        want = {s.name: s for s in actual}
        have = {s.name: s for s in declared}
        for missing in want.keys() - have.keys():
            problems.append(f"{kind} {missing!r} of the model is not declared in the config")
        for extra in have.keys() - want.keys():
            problems.append(f"config declares {kind} {extra!r}, which the model does not have")
        for n in want.keys() & have.keys():
            a, c = want[n], have[n]
            if a.numpy_dtype != c.numpy_dtype:
                problems.append(f"{kind} {n!r}: config says {c.dtype}, the model takes {a.dtype}")
            if len(a.shape) != len(c.shape):
                problems.append(f"{kind} {n!r}: config rank {len(c.shape)} ({c.describe()}), model rank {len(a.shape)} ({a.describe()})")
            elif any(x is not None and y is not None and x != y for x, y in zip(a.shape, c.shape, strict=True)):
                problems.append(f"{kind} {n!r}: config shape {c.describe()}, model shape {a.describe()}")
    if problems:
        raise RepositoryError(f"model {config.name!r}: " + "; ".join(sorted(problems)))

"""``model_warmup`` from real rows: Triton runs them through each model instance before it serves.

Triton's ``random_data`` warmup fills integer inputs with random bytes, which sends
out-of-range ids into an embedding lookup (a crash or undefined behaviour at load time).
So the toolkit warms up with real sample rows instead: each row's tensors are written as
raw files under ``<model>/warmup/`` and named by ``input_data_file`` (Triton docs, "Model
Configuration", "Model Warmup"; ``model_config.proto``, ``ModelWarmup.Input``).

The file format is what Triton's core reads (``backend_model_instance.cc``,
``GenerateWarmupData``):

* one *sample* (the request of batch 1) per file, in row-major order, without the batch
  dimension when the model batches; Triton sends ``batch_size`` copies of that one-row request
  together (so a warmup of batch 16 runs one batch of 16 identical rows), ``count`` times;
* fixed-size types are raw little-endian element bytes (the server reads them as-is on x86
  and Arm): the file must hold at least ``prod(dims) * element size`` bytes;
* BYTES (``TYPE_STRING``) elements are each a 4-byte little-endian unsigned length
  followed by that many bytes; the whole file is the tensor.

Written files are staged in a temporary folder and renamed into place (``warmup/`` is
replaced as a whole), so a failure leaves the previous warmup data as it was.
"""

from __future__ import annotations

import numbers
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from toolkit._io import atomic_directory
from toolkit.errors import RepositoryError
from toolkit.repository.config import _triton_type

__all__ = ["WARMUP_FOLDER", "write_warmup", "tensor_bytes", "warmup_byte_size"]

WARMUP_FOLDER = "warmup"


def tensor_bytes(array: np.ndarray) -> bytes:
    """The raw bytes of ``array`` as Triton reads an ``input_data_file``.

    Fixed-size dtypes: the elements in row-major order, little-endian. Object/bytes/str
    arrays (Triton BYTES): per element a ``uint32`` little-endian length, then the bytes
    (``str`` is encoded as UTF-8).

    Raises:
        RepositoryError: an object array holds something other than ``bytes``/``str``.
    """
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        out = bytearray()
        for element in array.reshape(-1, order="C"):
            if isinstance(element, str):
                element = element.encode("utf-8")
            elif isinstance(element, np.bytes_ | bytes):
                element = bytes(element)
            else:
                raise RepositoryError(f"a BYTES warmup tensor holds {type(element).__name__} {element!r}; expected bytes or str")
            out += struct.pack("<I", len(element)) + element
        return bytes(out)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes(order="C")


def warmup_byte_size(data_type: str, dims: Sequence[int]) -> int | None:
    """Bytes Triton needs in an ``input_data_file`` of ``data_type`` (``"TYPE_FP32"``...) and ``dims``.

    Returns ``None`` for ``TYPE_STRING`` (variable-length: the whole file is the tensor) and for
    dims with a variable (``-1``) dimension (Triton refuses those in a warmup).
    """
    if data_type == "TYPE_STRING" or any(d < 0 for d in dims):
        return None
    from tritonclient.utils import triton_to_np_dtype

    itemsize = np.dtype(triton_to_np_dtype(data_type.removeprefix("TYPE_"))).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "input"


def write_warmup(
    model_dir: Path,
    samples: Mapping[str, np.ndarray],
    batch_sizes: Sequence[int],
    *,
    batched: bool = True,
    count: int = 1,
) -> list[dict]:
    """Write warmup tensors from real rows into ``model_dir/warmup/`` and return the ``model_warmup`` entries.

    For the i-th batch size, row ``i % N`` of the samples is written (one file per input) and a
    warmup named ``batch_<b>_row_<r>`` of ``batch_size=b`` is described. Pass the result to
    :func:`toolkit.repository.config.build_model_config` as ``warmup=``.

    Args:
        model_dir: the model folder (``<repository>/<model>``; usually the builder's staged copy).
        samples: input name -> real rows. With ``batched`` (the model's ``max_batch_size > 0``):
            arrays of shape ``[N, ...]``, N >= 1, the same N for every input, e.g.
            ``{"dense_features": float32[N, 2], "sparse_ids": int64[N, 7], ...}``; the rows must be
            in range for the model (ids from its vocabularies). Without ``batched``: each array is
            one whole request tensor (dims include its batch dimension) and ``batch_sizes`` must be ``[1]``.
            Object/bytes/str arrays are written as Triton BYTES (``TYPE_STRING``).
        batch_sizes: warmup batch sizes, each >= 1 (the caller keeps them <= ``max_batch_size``).
        batched: whether the model batches (``max_batch_size > 0``).
        count: ``ModelWarmup.count``: how many times each warmup runs (>= 1).

    Returns:
        ``ModelWarmup`` dicts (``name``, ``batch_size``, ``count``, ``inputs`` with ``data_type``,
        ``dims`` and ``input_data_file``), one per batch size, in order. ``[]`` (and no folder
        written) when ``batch_sizes`` is empty.

    Raises:
        RepositoryError: no samples, an empty or scalar array, different row counts, a batch
            size < 1 (or not ``[1]`` without batching), ``count < 1``, a BYTES element that is
            not bytes/str; an OSError while writing (chained).
    """
    model_dir = Path(model_dir)
    batch_sizes = [int(b) if _is_int(b) else b for b in batch_sizes]
    if not batch_sizes:
        return []
    if not samples:
        raise RepositoryError(f"{model_dir.name}: warmup needs sample rows for every input, got none")
    if not _is_int(count) or count < 1:
        raise RepositoryError(f"{model_dir.name}: warmup count must be >= 1, got {count!r}")
    bad = [b for b in batch_sizes if not _is_int(b) or b < 1]
    if bad:
        raise RepositoryError(f"{model_dir.name}: warmup batch sizes must be >= 1, got {bad}")
    arrays = {name: np.asarray(a) for name, a in samples.items()}
    if batched:
        for name, a in arrays.items():
            if a.ndim == 0 or a.shape[0] == 0:
                raise RepositoryError(
                    f"{model_dir.name}: warmup samples for input {name!r} have shape {a.shape}; expected [N, ...] with N >= 1"
                )
        rows = {name: int(a.shape[0]) for name, a in arrays.items()}
        if len(set(rows.values())) > 1:
            raise RepositoryError(f"{model_dir.name}: warmup samples have different row counts {rows}; pass the same rows for every input")
        n_rows = next(iter(rows.values()))
    else:
        if batch_sizes != [1]:
            raise RepositoryError(
                f"{model_dir.name}: without batching (max_batch_size 0) a warmup request is one whole tensor; "
                f"batch sizes must be [1], got {batch_sizes}"
            )
        n_rows = 1
    stems: dict[str, str] = {}
    for name in arrays:
        stem = _file_stem(name)
        while stem in stems.values():
            stem += "_"
        stems[name] = stem

    entries: list[dict] = []
    try:
        with atomic_directory(model_dir / WARMUP_FOLDER) as staging:
            written: set[int] = set()
            for i, batch_size in enumerate(batch_sizes):
                row = i % n_rows
                inputs: dict[str, dict] = {}
                for name, a in arrays.items():
                    tensor = a[row] if batched else a
                    file_name = f"row_{row}_{stems[name]}.bin"
                    if row not in written:
                        (staging / file_name).write_bytes(tensor_bytes(tensor))
                    dtype = np.dtype(object) if tensor.dtype.kind in "SU" else tensor.dtype
                    inputs[name] = {"data_type": _triton_type(dtype), "dims": [int(d) for d in tensor.shape], "input_data_file": file_name}
                written.add(row)
                name = f"batch_{batch_size}_row_{row}"
                if any(e["name"] == name for e in entries):
                    name += f"_{i}"
                entries.append({"name": name, "batch_size": batch_size, "count": int(count), "inputs": inputs})
    except OSError as exc:
        raise RepositoryError(f"writing warmup data into {model_dir / WARMUP_FOLDER} failed: {exc}") from exc
    return entries

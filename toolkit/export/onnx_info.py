"""Read what an ONNX file promises (its inputs, outputs and weight files) without loading its weights.

These functions work on any ONNX file, ours or the user's own. Large models (over the 2 GB
protobuf limit) keep their weights in *external data* files next to the model; the model
records each file's name (its ``location``), so the model file may be renamed but its data
files may not. Nothing here loads external data into memory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper

from toolkit.errors import ExportError
from toolkit.export._files import install_files, staging_dir
from toolkit.tensors import TensorSpec

__all__ = [
    "read_io_specs",
    "external_data_files",
    "copy_onnx_model",
    "check_batch_dimension",
    "check_onnx_inputs",
]

_KEEP_DATA_HINT = (
    "an ONNX model's external data files must stay next to the model file under the names "
    "recorded in the model; copy them along with it (`copy_onnx_model` does) and never rename them"
)


def _load_graph_only(onnx_path: Path) -> onnx.ModelProto:
    """Load ``onnx_path`` without its external data, as an ExportError when that fails."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ExportError(
            f"ONNX model file {onnx_path} does not exist (or is not a file)",
            hint="pass the path of an .onnx file, e.g. the one `tritonrec export` wrote",
        )
    try:
        return onnx.load_model(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(
            f"{onnx_path} is not a readable ONNX model: {type(exc).__name__}: {exc}",
            hint="the file is truncated or not ONNX; re-export it",
        ) from exc


def _dims(value_info: onnx.ValueInfoProto, role: str, onnx_path: Path) -> tuple[int | None, ...]:
    type_proto = value_info.type
    if type_proto.WhichOneof("value") != "tensor_type":
        raise ExportError(
            f"{onnx_path.name} {role} '{value_info.name}' is a {type_proto.WhichOneof('value')}, but only tensors can be served by Triton",
            hint="make the model take and return plain tensors",
        )
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        raise ExportError(
            f"{onnx_path.name} {role} '{value_info.name}' has no shape (unknown rank); a Triton config needs every tensor's rank",
            hint="re-export the model with shape information (the dynamo exporter records it)",
        )
    dims: list[int | None] = []
    for dim in tensor_type.shape.dim:
        # dim_param (symbolic, e.g. "batch") or neither field set (unknown) -> dynamic.
        dims.append(int(dim.dim_value) if dim.WhichOneof("value") == "dim_value" and dim.dim_value > 0 else None)
    return tuple(dims)


def _dtype(value_info: onnx.ValueInfoProto, role: str, onnx_path: Path) -> str:
    elem_type = value_info.type.tensor_type.elem_type
    try:
        if elem_type == onnx.TensorProto.UNDEFINED:
            raise ValueError("element type is UNDEFINED")
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception as exc:
        raise ExportError(
            f"{onnx_path.name} {role} '{value_info.name}' has ONNX element type {elem_type} "
            f"({onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else '?'}), "
            "which has no numpy dtype",
            hint="cast the tensor to a standard dtype (float32, float16, int64, int32, bool) in the model",
        ) from exc


def read_io_specs(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Return the graph's inputs and outputs as :class:`TensorSpec`, in graph order.

    Only the graph is read (``load_external_data=False``): a 20 GB model costs no more
    than a 20 kB one. Graph inputs that are initializers (old exporters list weights as
    inputs) are skipped.

    Args:
        onnx_path: path of the ``.onnx`` file.

    Returns:
        ``(inputs, outputs)``. Each spec's ``dtype`` is the numpy name of the ONNX element
        type (``"float32"``, ``"int64"``, ...; strings give ``"object"``) and its ``shape`` the
        full shape including the batch dimension, with ``None`` for every symbolic
        (``dim_param``, e.g. ``"batch"``) or unknown dimension: ``(None, 4)`` for ``[batch, 4]``.

    Raises:
        ExportError: the file is missing or not ONNX; a tensor is not a plain tensor, has no
            shape, or has an element type without a numpy dtype.
    """
    onnx_path = Path(onnx_path)
    model = _load_graph_only(onnx_path)
    initializer_names = {t.name for t in model.graph.initializer}
    inputs = [
        TensorSpec(vi.name, _dtype(vi, "input", onnx_path), _dims(vi, "input", onnx_path))
        for vi in model.graph.input
        if vi.name not in initializer_names
    ]
    outputs = [TensorSpec(vi.name, _dtype(vi, "output", onnx_path), _dims(vi, "output", onnx_path)) for vi in model.graph.output]
    return inputs, outputs


def _iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto that can hold external data: initializers, sparse initializers,
    tensor attributes of nodes, recursively through subgraphs (Loop/If/Scan bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_tensors(attr.g)
            for subgraph in attr.graphs:
                yield from _iter_tensors(subgraph)


def _external_locations(model: onnx.ModelProto, onnx_path: Path) -> list[tuple[str, str, int]]:
    """``(location, first tensor name, bytes needed)`` for each distinct external data file."""
    needed: dict[str, list] = {}
    for tensor in _iter_tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        try:
            info = external_data_helper.ExternalDataInfo(tensor)
        except ValueError as exc:  # negative offset/length
            raise ExportError(
                f"{onnx_path.name} tensor '{tensor.name}' has invalid external data fields: {exc}",
                hint="the model file is corrupt; re-export it",
            ) from exc
        location = info.location
        norm = os.path.normpath(location) if location else ""
        if not location or os.path.isabs(location) or norm == ".." or norm.startswith(".." + os.sep):
            raise ExportError(
                f"{onnx_path.name} tensor '{tensor.name}' records external data location {location!r}, "
                "which is not a file name relative to the model's folder",
                hint="re-save the model with onnx.save_model(..., save_as_external_data=True, location='<file name>')",
            )
        end = 0
        if info.length is not None and info.length > 0:
            end = (info.offset or 0) + info.length
        if norm not in needed:
            needed[norm] = [tensor.name, end]
        else:
            needed[norm][1] = max(needed[norm][1], end)
    return [(loc, name, end) for loc, (name, end) in needed.items()]


def external_data_files(onnx_path: Path) -> list[Path]:
    """List the external data files the model's tensors reference, checking each exists.

    Args:
        onnx_path: path of the ``.onnx`` file; locations recorded in it are relative to its folder.

    Returns:
        Absolute-or-as-given paths ``onnx_path.parent / location``, one per distinct file, in
        the order the tensors first reference them; ``[]`` when all weights are inside the
        model file.

    Raises:
        ExportError: the model cannot be read; a location is absolute or leaves the model's
            folder; a referenced file is missing, or shorter than the offsets recorded for
            its tensors (truncated copy).
    """
    onnx_path = Path(onnx_path)
    model = _load_graph_only(onnx_path)
    files: list[Path] = []
    for location, tensor_name, end in _external_locations(model, onnx_path):
        path = onnx_path.parent / location
        if not path.is_file():
            raise ExportError(
                f"{onnx_path.name} keeps the weights of tensor '{tensor_name}' in external data file "
                f"'{location}', which does not exist next to it ({path})",
                hint=_KEEP_DATA_HINT,
            )
        size_bytes = path.stat().st_size
        if size_bytes < end:
            raise ExportError(
                f"external data file {path} of {onnx_path.name} is {size_bytes} bytes, but its tensors "
                f"(e.g. '{tensor_name}') need at least {end} bytes; the file is truncated or belongs to another model",
                hint=_KEEP_DATA_HINT,
            )
        files.append(path)
    return files


def copy_onnx_model(src: Path, dst_dir: Path, filename: str = "model.onnx") -> Path:
    """Copy an ONNX model to ``dst_dir/filename`` together with its external data files.

    The model file may take a new name (Triton's onnxruntime backend wants ``model.onnx``);
    each external data file keeps the name recorded in the model, next to the copy. The
    files are copied into a temporary folder inside ``dst_dir`` and then moved into place
    together, replacing older versions; if anything fails, ``dst_dir`` is left as it was.

    Args:
        src: the ``.onnx`` file to copy.
        dst_dir: destination folder (created if missing), e.g. ``<repo>/<model>/1``.
        filename: name of the model file in ``dst_dir``.

    Returns:
        The path of the copied model file.

    Raises:
        ExportError: ``src`` is unreadable or an external data file is missing (see
            :func:`external_data_files`); ``filename`` is not a plain file name or collides
            with an external data file's name; copying fails (the OS error is chained).
    """
    src, dst_dir = Path(src), Path(dst_dir)
    if not filename or Path(filename).name != filename or filename in (".", ".."):
        raise ExportError(
            f"model file name {filename!r} for copying {src.name} is not a plain file name",
            hint="pass a name such as 'model.onnx'",
        )
    data_files = external_data_files(src)
    rel_data = [os.path.relpath(p, src.parent) for p in data_files]
    if filename in rel_data:
        raise ExportError(
            f"cannot copy {src.name} to '{filename}': the model keeps its weights in an external data file of that same name",
            hint="choose another model file name",
        )
    try:
        with staging_dir(dst_dir, filename) as staging:
            shutil.copyfile(src, staging / filename)
            for path, rel in zip(data_files, rel_data, strict=True):
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / rel)
            install_files(staging, [filename, *rel_data], dst_dir)
    except OSError as exc:
        raise ExportError(
            f"copying ONNX model {src} (with {len(rel_data)} external data file(s)) to {dst_dir / filename} failed: {exc}",
            hint="check free disk space and permissions of the destination folder",
        ) from exc
    return dst_dir / filename


def _label_and_specs(
    model: Path | str | tuple[Sequence[TensorSpec], Sequence[TensorSpec]] | Sequence[TensorSpec],
    model_name: str | None,
) -> tuple[str, list[tuple[str, TensorSpec]]]:
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        inputs, outputs = read_io_specs(path)
        label = model_name or path.name
    else:
        items = list(model)
        if all(isinstance(s, TensorSpec) for s in items):
            inputs, outputs = items, []
        elif len(items) == 2 and all(isinstance(s, TensorSpec) for part in items for s in part):
            inputs, outputs = list(items[0]), list(items[1])
        else:
            raise TypeError(
                "check_batch_dimension expects an ONNX path, a sequence of TensorSpec, or an (inputs, outputs) pair of TensorSpec sequences"
            )
        label = model_name or "model"
    return label, [("input", s) for s in inputs] + [("output", s) for s in outputs]


def check_batch_dimension(
    model: Path | str | tuple[Sequence[TensorSpec], Sequence[TensorSpec]] | Sequence[TensorSpec],
    max_batch_size: int,
    *,
    model_name: str | None = None,
) -> None:
    """Check that the tensors can be batched by Triton with ``max_batch_size``.

    With ``max_batch_size > 0`` Triton concatenates requests along the first dimension, so
    every input and output needs a dynamic first dimension. With ``max_batch_size == 0``
    (no batching) any shapes are fine.

    Args:
        model: an ONNX file, a sequence of input specs, or an ``(inputs, outputs)`` pair
            as returned by :func:`read_io_specs`.
        max_batch_size: the value the Triton config will carry (rows per batch; ``0`` = no batching).
        model_name: name used in messages (default: the file name, or ``"model"`` for specs).

    Raises:
        ExportError: ``max_batch_size`` is negative; a tensor is a scalar or has a fixed
            first dimension while ``max_batch_size > 0``, e.g. ``model.onnx input 'x' has a
            fixed batch dimension of 16, but max_batch_size=256 asks Triton to batch requests``.
    """
    if max_batch_size < 0:
        raise ExportError(
            f"max_batch_size={max_batch_size} is negative",
            hint="use 0 (no batching) or a positive number of rows",
        )
    label, specs = _label_and_specs(model, model_name)
    if max_batch_size == 0:
        return
    for role, spec in specs:
        if len(spec.shape) == 0:
            raise ExportError(
                f"{label} {role} '{spec.name}' is a scalar with no batch dimension, but "
                f"max_batch_size={max_batch_size} asks Triton to batch requests",
                hint="build with --max-batch-size 0 (no batching) or make the tensor's first dimension the batch",
            )
        first = spec.shape[0]
        if first is not None:
            raise ExportError(
                f"{label} {role} '{spec.name}' has a fixed batch dimension of {first}, but "
                f"max_batch_size={max_batch_size} asks Triton to batch requests",
                hint=(
                    f"build with --max-batch-size 0 (no batching; requests must then carry exactly {first} rows) "
                    "or re-export with a dynamic batch dimension (`tritonrec export` does)"
                ),
            )


def check_onnx_inputs(onnx_path: Path, inputs: Mapping[str, np.ndarray], *, role: str = "inputs") -> dict[str, np.ndarray]:
    """Check that ``inputs`` feed ``onnx_path``: one array per graph input, its dtype, N >= 1 rows each, equal N.

    Args:
        onnx_path: the ``.onnx`` file whose graph inputs are expected.
        inputs: ``{input name: array}``, e.g. ``{"dense_features": float32[N, 2], ...}``.
        role: what the arrays are, for messages (``"parity inputs"``, ``"calibration inputs"``).

    Returns:
        The arrays as numpy arrays, in graph input order.

    Raises:
        ExportError: a missing or unexpected name, a wrong dtype, a scalar or empty array,
            or different row counts, each naming the input and what was expected.
    """
    onnx_path = Path(onnx_path)
    in_specs, _ = read_io_specs(onnx_path)
    expected = [s.name for s in in_specs]
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        raise ExportError(
            f"{role} for {onnx_path.name} do not match its graph inputs {expected}: missing {missing}, unexpected {extra}",
            hint="pass one array per ONNX input, keyed by the input's name",
        )
    arrays = {n: np.asarray(inputs[n]) for n in expected}
    for spec in in_specs:
        arr = arrays[spec.name]
        if arr.dtype != spec.numpy_dtype:
            raise ExportError(
                f"{role} '{spec.name}' is {arr.dtype}, but {onnx_path.name} expects {spec.dtype}",
                hint=f"convert it with .astype(np.{spec.dtype})",
            )
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ExportError(f"{role} '{spec.name}' has 0 rows (shape {arr.shape})", hint="pass arrays of shape [N, ...] with N >= 1")
    rows = {n: int(a.shape[0]) for n, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise ExportError(f"{role} for {onnx_path.name} have different row counts: {rows}", hint="every input needs one row per sample")
    return arrays

"""Export a PyTorch model to ONNX with torch's dynamo exporter, atomically.

Works for any ``nn.Module`` whose ``forward`` takes tensors as arguments. The exported
graph's inputs are named after the keys of ``example_inputs``, its outputs after
``output_names``. When every key is the name of one of ``forward``'s parameters, each
tensor is bound to its parameter by name (whatever the dict's order); otherwise they are
bound by position, in the dict's order. With ``dynamic_batch`` the first dimension of
every input and output is one symbolic dimension named ``batch`` (what Triton's
``max_batch_size > 0`` needs).

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) keeps large weights in an
external data file ``<model file>.data`` next to the model; the model records that name, so
the data file must never be renamed (the model file may be, see
:func:`toolkit.export.onnx_info.copy_onnx_model`). Models over protobuf's 2 GB limit
therefore export without special handling. The export runs in a temporary folder next to
the destination, under the final file name, and the model file and its data files are then
moved into place together: a failed export leaves the previous files untouched.

``nn.EmbeddingBag`` (mode ``"sum"``, 2-D ids or flat ids with offsets) exports with correct
numerics, but as an ONNX ``Loop`` over the bags with sequence ops: in ONNX Runtime it is
one to two orders of magnitude slower than ``nn.Embedding`` over padded ids with a masked
sum, and TensorRT cannot parse it. :func:`export_onnx` logs a warning naming such modules;
:func:`find_embedding_bags` lets other exporters (TensorRT) reject them.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export._files import install_files, staging_dir
from toolkit.export.onnx_info import external_data_files, read_io_specs

__all__ = ["export_onnx", "find_embedding_bags", "BATCH_DIM_NAME"]

log = logging.getLogger(__name__)

#: Name of the symbolic batch dimension in exported graphs (``dim_param``).
BATCH_DIM_NAME = "batch"

# Loggers of the exporter stack that print noise on every export (nothing the user can act on).
_NOISY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",  # "torchvision is not installed. Skipping torchvision::nms"
    "onnxscript.optimizer._constant_folding",  # "Skipping constant folding for op SequenceEmpty ..."
    "onnx_ir.passes.common.initializer_deduplication",  # "Skipped deduplication of initializer ..."
)

# Warnings torch 2.13's dynamo exporter emits on ordinary exports; matched narrowly by message.
_BENIGN_WARNINGS = (
    # Several inputs share the one batch Dim: the exporter notes it keeps a single axis name.
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape constraints"),
    # torch.utils._pytree deprecation raised while unpickling a TreeSpec (attributed to copyreg).
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)

_TRACE_HINT = (
    "the model must be traceable by torch.export: no Python branching on tensor values, no .item()/.tolist(), "
    "tensors as positional forward arguments; run forward on the example inputs to check it works, "
    "set TRITONREC_DEBUG=1 for the full traceback, or call torch.onnx.export(..., dynamo=True, report=True) "
    "for the exporter's report"
)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known noise (narrowly) for the duration of one export."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for category, message in _BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe_failure(exc: BaseException) -> str:
    """One line: the exporter's stage error plus the root cause (e.g. the model's own exception)."""

    def first_line(e: BaseException) -> str:
        text = _ANSI.sub("", str(e)).strip()
        return f"{type(e).__name__}: {(text.splitlines() or [''])[0][:300]}"

    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is exc:
        return first_line(exc)
    # The exporter's own message goes on with generic "Next steps"; keep its first sentence.
    outer = first_line(exc).split(". ")[0].rstrip(".") + "."
    return f"{outer} Cause: {first_line(root)}"


def find_embedding_bags(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.EmbeddingBag`` modules in ``model`` (``""`` for the model itself).

    ONNX Runtime runs them correctly but slowly (an ONNX ``Loop`` per bag) and TensorRT has no
    EmbeddingBag at all; the export-friendly replacement is ``nn.Embedding`` over padded ids
    ``[B, L]`` followed by a masked sum over ``L``.
    """
    return [name for name, module in model.named_modules() if isinstance(module, nn.EmbeddingBag)]


def _check_signature(model: nn.Module, input_names: Sequence[str]) -> None:
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # builtins / C extensions: let torch.export judge
        return
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    names = ", ".join(p.name for p in positional) or "none"
    if len(input_names) > len(positional):
        raise ExportError(
            f"{type(model).__name__}.forward takes {len(positional)} positional argument(s) ({names}), "
            f"but example_inputs has {len(input_names)}: {', '.join(input_names)}",
            hint="pass one example tensor per positional argument of forward, in forward's order",
        )
    if len(input_names) < len(required):
        raise ExportError(
            f"{type(model).__name__}.forward needs {len(required)} positional argument(s) "
            f"({', '.join(p.name for p in required)}), but example_inputs has {len(input_names)}: "
            f"{', '.join(input_names) or 'none'}",
            hint="pass one example tensor per positional argument of forward, in forward's order",
        )


def _bind_by_name(model: nn.Module, names: list[str], tensors: tuple[torch.Tensor, ...]) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """``names`` and ``tensors`` put in the order of forward's parameters when every name is one of
    them (each tensor then reaches its own parameter); unchanged otherwise (bound by position)."""
    try:
        params = [
            p.name for p in inspect.signature(model.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return names, tensors
    if not set(names) <= set(params):
        return names, tensors
    position = {n: params.index(n) for n in names}
    if sorted(position.values()) != list(range(len(names))):
        return names, tensors  # a parameter left out in the middle: positional binding cannot skip it
    order = sorted(range(len(names)), key=lambda i: position[names[i]])
    return [names[i] for i in order], tuple(tensors[i] for i in order)


def _prepare_inputs(
    example_inputs: Mapping[str, torch.Tensor], output_names: Sequence[str], dynamic_batch: bool
) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    names = list(example_inputs)
    if not names:
        raise ExportError("example_inputs is empty", hint="pass {input name: example tensor} for every forward argument")
    for name, value in example_inputs.items():
        if not isinstance(value, torch.Tensor):
            raise ExportError(
                f"example input '{name}' is a {type(value).__name__}, expected a torch.Tensor",
                hint="pass tensors, e.g. torch.from_numpy(array)",
            )
    outputs = list(output_names)
    if isinstance(output_names, str) or not outputs:
        raise ExportError(
            f"output_names={output_names!r} must be a non-empty sequence of names",
            hint="e.g. output_names=['probability']",
        )
    dupes = sorted({n for n in names + outputs if (names + outputs).count(n) > 1})
    if dupes:
        raise ExportError(
            f"tensor name(s) {', '.join(repr(d) for d in dupes)} used more than once among inputs {names} and outputs {outputs}",
            hint="ONNX needs every input and output name to be unique",
        )
    tensors = tuple(example_inputs[n].detach() for n in names)
    if not dynamic_batch:
        return names, tensors
    for name, t in zip(names, tensors, strict=True):
        if t.dim() == 0:
            raise ExportError(
                f"example input '{name}' is a scalar, but dynamic_batch=True makes the first dimension of every input the batch dimension",
                hint="give every input a leading batch dimension, or export with dynamic_batch=False",
            )
    rows = {n: int(t.shape[0]) for n, t in zip(names, tensors, strict=True)}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"'{n}' ({r} rows)" for n, r in rows.items())
        raise ExportError(
            f"example inputs {listed} differ in their first dimension, but dynamic_batch=True makes "
            "the first dimension of every input the one batch dimension",
            hint=(
                "Triton batches requests by concatenating every input along its first dimension, so every "
                "input needs one row per sample (for nn.EmbeddingBag pass 2-D padded ids [B, L] rather than "
                "flat ids with offsets); or export with dynamic_batch=False (fixed shapes, max_batch_size 0)"
            ),
        )
    batch = next(iter(rows.values()))
    if batch == 0:
        raise ExportError(
            "example inputs have 0 rows; the exporter needs at least one example row",
            hint="pass a few real rows as example inputs",
        )
    if batch == 1:
        # torch.export specializes a size-1 dimension to the constant 1: repeat the row.
        tensors = tuple(torch.cat([t, t], dim=0) for t in tensors)
    return names, tensors


def _check_exported(tmp_path: Path, onnx_path: Path, input_names: list[str], output_names: list[str], dynamic_batch: bool) -> None:
    """Check the staged file has the promised names and batch dimension."""
    inputs, outputs = read_io_specs(tmp_path)
    if [s.name for s in inputs] != input_names:
        raise ExportError(
            f"exported {onnx_path.name} has inputs {[s.name for s in inputs]}, expected {input_names}",
            hint="inputs that forward ignores, or non-tensor inputs, are dropped by the exporter; pass only used tensors",
        )
    if [s.name for s in outputs] != output_names:
        raise ExportError(
            f"exported {onnx_path.name} has outputs {[s.name for s in outputs]}, but output_names={output_names}",
            hint="give one name per tensor that forward returns (forward must return a tensor or a tuple of tensors)",
        )
    if not dynamic_batch:
        return
    graph = onnx.load_model(str(tmp_path), load_external_data=False).graph
    for role, infos in (("input", graph.input), ("output", graph.output)):
        for info in infos:
            dims = info.type.tensor_type.shape.dim
            first = dims[0] if len(dims) else None
            if first is None or first.WhichOneof("value") != "dim_param" or first.dim_param != BATCH_DIM_NAME:
                shown = "none (scalar)" if first is None else (first.dim_param or str(first.dim_value))
                raise ExportError(
                    f"exported {onnx_path.name} {role} '{info.name}' has first dimension {shown}, "
                    f"expected the dynamic batch dimension '{BATCH_DIM_NAME}'",
                    hint=(
                        "every output must keep one row per input row (no reduction or reshape across the batch) "
                        "for Triton to batch requests; fix forward, or export with dynamic_batch=False"
                    ),
                )


def _strip_trace_metadata(onnx_path: Path) -> None:
    """Drop the exporter's per-node debug metadata (stack traces, FX nodes, name scopes).

    It is about as large as a small model's weights, and nothing at serving time reads it;
    ``torch.onnx.export(..., report=True)`` reproduces it when debugging an export.
    The external data is not loaded or rewritten.
    """
    model = onnx.load_model(str(onnx_path), load_external_data=False)
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save_model(model, str(onnx_path))


def export_onnx(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str],
    onnx_path: Path,
    *,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
) -> Path:
    """Export ``model`` to ONNX at ``onnx_path`` (plus ``<onnx_path>.data`` for its weights).

    The model is traced with ``torch.onnx.export(..., dynamo=True)`` in eval mode under
    ``torch.no_grad()``; its training/eval mode is restored afterwards.

    Args:
        model: any ``nn.Module`` whose ``forward`` takes tensors as arguments and returns a
            tensor or a tuple of tensors.
        example_inputs: ``{graph input name: example tensor}``, e.g.
            ``{"dense": float32[B, 13], "sparse_ids": int64[B, 26]}``. When every name is a
            parameter of ``forward`` the tensors are bound by name and the graph's inputs follow
            forward's order; otherwise they are bound by position in the dict's order. With ``dynamic_batch``
            all tensors must have the same number of rows ``B >= 1``; one row is repeated to
            two for tracing, since torch.export fixes a size-1 dimension to 1.
        output_names: graph output names, one per tensor ``forward`` returns.
        onnx_path: destination ``.onnx`` file; its folder is created if missing. Weights
            are written to ``<onnx_path>.data`` next to it (which replaces an old one).
        dynamic_batch: make the first dimension of every input and output the symbolic
            dimension ``"batch"`` (needed for Triton ``max_batch_size > 0``); when False
            every shape is fixed to the example's.
        opset_version: ONNX opset; ``None`` lets the exporter choose its default.

    Returns:
        ``onnx_path``.

    Raises:
        ExportError: the inputs or names are invalid (not tensors, duplicated names, inputs
            with different row counts under ``dynamic_batch``, more inputs than forward takes);
            the exporter failed (its exception is chained as ``__cause__``); the exported
            graph lacks the promised names or an output has no batch dimension; the files
            could not be moved into place. In all cases the files at ``onnx_path`` are unchanged.
    """
    onnx_path = Path(onnx_path)
    if onnx_path.is_dir():
        raise ExportError(
            f"ONNX destination {onnx_path} is a directory, expected a file path such as {onnx_path / 'model.onnx'}",
            hint="pass the path of the .onnx file to write",
        )
    input_names, args = _prepare_inputs(example_inputs, output_names, dynamic_batch)
    input_names, args = _bind_by_name(model, input_names, args)
    output_names = list(output_names)
    _check_signature(model, input_names)

    bags = find_embedding_bags(model)
    if bags:
        log.warning(
            "%s uses nn.EmbeddingBag (%s): it exports with correct values, but as an ONNX Loop over the "
            "bags that is far slower in ONNX Runtime than nn.Embedding over padded ids with a masked sum, "
            "and TensorRT cannot parse it",
            type(model).__name__,
            ", ".join(b or "<model>" for b in bags),
        )

    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim(BATCH_DIM_NAME)
        dynamic_shapes = tuple({0: batch} for _ in args)

    was_training = model.training
    with staging_dir(onnx_path.parent, onnx_path.name) as staging:
        tmp_path = staging / onnx_path.name
        try:
            model.eval()
            with torch.no_grad(), _quiet_exporter():
                torch.onnx.export(
                    model,
                    args,
                    str(tmp_path),
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset_version,
                    dynamo=True,
                    external_data=True,
                    dynamic_shapes=dynamic_shapes,
                    verbose=False,
                    artifacts_dir=str(staging),
                )
        except Exception as exc:
            raise ExportError(
                f"exporting {type(model).__name__} to ONNX file {onnx_path} failed: {_describe_failure(exc)}",
                hint=_TRACE_HINT,
            ) from exc
        finally:
            model.train(was_training)
        if not tmp_path.is_file():
            raise ExportError(
                f"the exporter reported success but wrote no file for {onnx_path}",
                hint=_TRACE_HINT,
            )
        _check_exported(tmp_path, onnx_path, input_names, output_names, dynamic_batch)
        _strip_trace_metadata(tmp_path)
        data_rel = [str(p.relative_to(staging)) for p in external_data_files(tmp_path)]
        try:
            install_files(staging, [onnx_path.name, *data_rel], onnx_path.parent)
        except OSError as exc:
            raise ExportError(
                f"moving the exported {onnx_path.name} (and {len(data_rel)} data file(s)) into {onnx_path.parent} failed: {exc}",
                hint="check permissions and free disk space of the destination folder",
            ) from exc
    log.info("exported %s to %s (+ %s)", type(model).__name__, onnx_path, ", ".join(data_rel) or "no external data")
    return onnx_path

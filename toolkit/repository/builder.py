"""Build a Triton model repository with every serving variant of one trained DLRM.

Variants (each its own model folder ``<model>_<variant>``, version ``1``):

==============  =====================================  ==========================================
variant         how it runs                            where it loads
==============  =====================================  ==========================================
``pytorch``     FP32 eager PyTorch, Python backend     any Triton with torch in the Python env
                (the baseline the paper compares to)
``onnx``        ``platform: "onnxruntime_onnx"``       the stock ``tritonserver`` container
``onnx_python`` ONNX Runtime inside a Python backend   servers without the onnxruntime backend
                                                       (the one in the ``nvidia-pytriton`` wheel)
==============  =====================================  ==========================================

Every config is built from Triton's protobuf schema, parsed back and checked against the
model's own tensors before anything is written. The whole set is staged in a temporary
folder next to the repository; only when every model is complete and valid is each model
folder swapped into place, so a failed build leaves the previous repository untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import onnx

from toolkit.errors import ExportError, RepositoryError
from toolkit.export import check_batch_dimension, copy_onnx_model, read_io_specs
from toolkit.models import dlrm as dlrm_module
from toolkit.models.signature import dlrm_signature
from toolkit.repository.config import BatchingOptions, build_model_config, check_config_against, config_to_text, read_config
from toolkit.tensors import TensorSpec
from toolkit.train.checkpoint import load_checkpoint

__all__ = ["VARIANTS", "BuiltModel", "build_repository"]

VARIANTS = ("pytorch", "onnx", "onnx_python")
_VERSION = "1"


@dataclass(frozen=True)
class BuiltModel:
    """One model folder written by :func:`build_repository`."""

    name: str
    variant: str
    path: Path
    runtime: str  # "platform: onnxruntime_onnx" or "backend: python (...)"


def _runner_source(name: str) -> bytes:
    return resources.files("toolkit.repository").joinpath("python_models", name).read_bytes()


def _check_onnx_matches(
    onnx_path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], weight_shapes: dict[str, tuple[int, ...]]
) -> None:
    hint = "export the ONNX file from this checkpoint with `tritonrec export`"
    onnx_in, onnx_out = read_io_specs(onnx_path)
    for kind, want, have in (("inputs", inputs, onnx_in), ("outputs", outputs, onnx_out)):
        w = [(s.name, s.dtype, len(s.shape)) for s in want]
        h = [(s.name, s.dtype, len(s.shape)) for s in have]
        if w != h:
            raise RepositoryError(
                f"{onnx_path}: ONNX {kind} {[s.describe() for s in have]} do not match the checkpoint's {[s.describe() for s in want]}",
                hint=hint,
            )
    # The same tensors do not make the same model: an export of another checkpoint (other table
    # sizes or widths) keeps its weights under the state dict's names, with other shapes.
    graph = onnx.load_model(str(onnx_path), load_external_data=False).graph
    wrong = [
        f"{t.name} {list(t.dims)} (checkpoint: {list(weight_shapes[t.name])})"
        for t in graph.initializer
        if t.name in weight_shapes and tuple(t.dims) != weight_shapes[t.name]
    ]
    if wrong:
        raise RepositoryError(f"{onnx_path}: ONNX weights do not match the checkpoint's: {', '.join(wrong)}", hint=hint)


def build_repository(
    repository: Path,
    *,
    checkpoint: Path,
    onnx_model: Path,
    model_name: str = "dlrm",
    options: BatchingOptions | None = None,
    variants: Sequence[str] = VARIANTS,
) -> list[BuiltModel]:
    """Write the serving variants of one checkpoint into ``repository``.

    Args:
        repository: the model repository folder (created if missing). Other models in it are kept.
        checkpoint: a folder written by :func:`toolkit.train.save_checkpoint`.
        onnx_model: the ONNX file exported from that checkpoint (external data alongside).
        model_name: prefix of the model folders (``<model_name>_<variant>``).
        options: batching and placement (defaults: :class:`BatchingOptions`).
        variants: a subset of :data:`VARIANTS`.

    Returns:
        The models written, in ``variants`` order.

    Raises:
        RepositoryError: unknown variant, an ONNX file that does not fit the checkpoint, a
            config that does not match its model. CheckpointError / ExportError from reading
            the inputs (e.g. an ONNX file with a fixed batch while batching is asked for).
    """
    options = options or BatchingOptions()
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise RepositoryError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not model_name or not model_name.replace("_", "").replace("-", "").isalnum():
        raise RepositoryError(f"model name {model_name!r} must be letters, digits, '-' or '_'")
    repository = Path(repository)
    ckpt = load_checkpoint(checkpoint)
    inputs, outputs = dlrm_signature(ckpt.config)
    onnx_model = Path(onnx_model)
    if any(v.startswith("onnx") for v in variants):
        check_batch_dimension(onnx_model, options.max_batch_size)
        weight_shapes = {name: tuple(t.shape) for name, t in ckpt.model.state_dict().items()}
        _check_onnx_matches(onnx_model, inputs, outputs, weight_shapes)
        # ONNX variants declare the file's own shapes (a fixed batch stays fixed under max_batch_size 0).
        onnx_inputs, onnx_outputs = read_io_specs(onnx_model)
    threads = {"intra_op_threads": "1"}

    repository.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}.staging-", dir=repository.parent))
    built: list[BuiltModel] = []
    try:
        for variant in variants:
            name = f"{model_name}_{variant}"
            version_dir = staging / name / _VERSION
            version_dir.mkdir(parents=True)
            if variant == "pytorch":
                shutil.copyfile(ckpt.path / "model.pt", version_dir / "model.pt")
                shutil.copyfile(ckpt.path / "model_config.json", version_dir / "model_config.json")
                shutil.copyfile(dlrm_module.__file__, version_dir / "dlrm.py")
                (version_dir / "model.py").write_bytes(_runner_source("torch_runner.py"))
                config = build_model_config(name, inputs, outputs, options, backend="python", parameters=threads)
                runtime = "backend: python (PyTorch FP32 eager)"
            elif variant == "onnx":
                copy_onnx_model(onnx_model, version_dir)
                config = build_model_config(
                    name, onnx_inputs, onnx_outputs, options, platform="onnxruntime_onnx", parameters={"intra_op_thread_count": "1"}
                )
                runtime = "platform: onnxruntime_onnx"
            else:
                copy_onnx_model(onnx_model, version_dir)
                (version_dir / "model.py").write_bytes(_runner_source("onnx_runner.py"))
                config = build_model_config(name, onnx_inputs, onnx_outputs, options, backend="python", parameters=threads)
                runtime = "backend: python (ONNX Runtime)"
            # The vocabularies travel with every model: clients and ensembles map raw values with them.
            if ckpt.encoder is not None:
                shutil.copyfile(ckpt.path / "vocabularies.json", staging / name / "vocabularies.json")
            (staging / name / "config.pbtxt").write_text(config_to_text(config))
            parsed = read_config(staging / name / "config.pbtxt")
            if parsed != config:
                raise RepositoryError(f"{name}/config.pbtxt does not parse back to the config that was written")
            check_config_against(parsed, inputs, outputs)
            if variant != "pytorch":
                check_config_against(parsed, *read_io_specs(version_dir / "model.onnx"))
            built.append(BuiltModel(name, variant, repository / name, runtime))
        _install(staging, repository, [b.name for b in built])
    except ExportError as exc:
        raise RepositoryError(f"cannot build the ONNX variants: {exc}", hint=exc.hint) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return built


def _install(staging: Path, repository: Path, names: Sequence[str]) -> None:
    """Swap each staged model folder into ``repository`` (rename old aside, rename new in, delete old)."""
    repository.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = repository / name
        old = None
        if target.exists():
            old = staging / f".old-{name}"
            os.rename(target, old)
        os.rename(staging / name, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

"""Compression of any ``nn.Module``: a user's own model (``--model-file``) or a registered architecture's.

:func:`compress_module` applies a :class:`~toolkit.compress.recipe.Recipe` to a module that uses
``nn.Embedding``/``nn.EmbeddingBag`` tables and ``nn.Linear`` blocks, whatever its layout, with
its inputs by name (the module's signature):

* ``prune``: the ``nn.Linear`` layers Torch-Pruning's dependency graph allows
  (:func:`~toolkit.compress.prunable.prune_linears`: the output layer and layers whose width an
  interaction shares with the tables stay intact, found from the graph) lose ``ratio`` of their
  output neurons (L2 magnitude, per layer), then are fine-tuned on the training rows;
* ``distill``: a student the user names (another factory's module taking the same inputs) is
  trained from the module's soft targets and the labels
  (:func:`~toolkit.compress.distill.distill_into`); a registered architecture without one
  distills into a narrower copy of itself (:func:`~toolkit.compress.distill.distill`);
* ``quantize_embeddings``: the tables become row-wise INT8
  (:func:`~toolkit.compress.quantize_embeddings.quantize_embeddings`: in place in a user's module; a
  registered architecture is rebuilt with ``embedding_quantization="int8_rowwise"``);
* the ONNX step (dynamic or static INT8, FP16) converts the export, which is accepted only if
  ONNX Runtime matches the compressed PyTorch module within 1e-5.

Rows: labelled rows by input name (:class:`LabelledRows`, e.g. an ``.npz`` with one array per
input plus ``label``, :func:`load_labelled_rows`), split 80/10/10. Without rows, what needs them
is skipped with the reason (fine-tuning after pruning, distillation, the AUC check) and the rest
still runs; static INT8 is then calibrated on random in-range rows of the signature. A step that
cannot apply to this module (no ``nn.Linear`` to prune, no table to quantize, a table that
renormalizes its rows) is refused with a message naming the module path and why
(:class:`~toolkit.compress.errors.StepRefused`), and the other steps still run.

Unlike :func:`toolkit.optimize.pipeline.compress` (a checkpoint with its data split), the steps
are applied as written: no timing-based selection.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from toolkit._io import atomic_directory
from toolkit.compress.distill import _WithLogits, distill, distill_into
from toolkit.compress.errors import StepRefused, StepSkipped
from toolkit.compress.prunable import prune_linears
from toolkit.compress.prune import prune
from toolkit.compress.quantize_embeddings import embedding_bytes, quantize_embeddings, rebuilds_from_config
from toolkit.compress.recipe import Recipe, StepConfig, save_recipe
from toolkit.compress.stats import count_params, state_dict_bytes
from toolkit.cpu import int8_settings
from toolkit.data.features import EncodedRows
from toolkit.errors import CompressError, TrainError
from toolkit.metrics import evaluate
from toolkit.models.protocol import check_input_names
from toolkit.models.registry import architecture_of
from toolkit.models.user import random_inputs, signature_inputs
from toolkit.optimize.bench import Variant, measure_variants, onnx_size_bytes
from toolkit.optimize.pipeline import _apply_onnx_step, copy_onnx_model, export_checked
from toolkit.train.checkpoint import save_checkpoint
from toolkit.train.loop import EpochStats, train_epochs

__all__ = [
    "LabelledRows",
    "StepOutcome",
    "ModuleCompression",
    "load_labelled_rows",
    "split_rows",
    "compress_module",
    "save_module_compression",
]

Log = Callable[[str], None]
LABEL = "label"
#: Rows of the module's signature (random, in range) that the export is checked on when there are no rows.
SAMPLE_ROWS = 1024


@dataclass
class LabelledRows:
    """N labelled rows of a module's inputs: ``features`` ``{input name: (N, ...) array}``, ``labels`` (N,) float32 in {0, 1}.

    Duck-compatible with :class:`~toolkit.data.features.EncodedRows` where the training loop reads
    rows (``inputs()``, ``labels``, ``take``, ``len``).
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self) -> dict[str, np.ndarray]:
        """The model inputs by name."""
        return dict(self.features)

    def take(self, index: np.ndarray | slice) -> LabelledRows:
        """The rows at ``index`` (an index array or a slice)."""
        return LabelledRows({k: v[index] for k, v in self.features.items()}, self.labels[index])


def load_labelled_rows(path: Path, inputs: Sequence[Mapping]) -> LabelledRows:
    """Read labelled rows from an ``.npz`` holding one array per input of the signature and ``label``.

    Args:
        path: the ``.npz`` file (``np.savez(path, dense=..., user_item=..., label=...)``).
        inputs: the signature's inputs (:func:`toolkit.models.user.signature_inputs` dicts: ``name``,
            ``dtype``, ``shape`` with None first, ``high`` for integer inputs).

    Returns:
        The rows, each input cast to its signature dtype (float arrays to float32, integer arrays
        to int64 as the signature says), labels float32.

    Raises:
        CompressError: the file is missing or not an ``.npz``; an input or ``label`` is missing; an
            array's shape is not (N, *shape[1:]) or the row counts differ; a float array for an
            integer input; ids outside ``[0, high)``; labels other than 0/1 — each naming the file,
            the array and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"rows file {path} does not exist", hint="give an .npz with one array per input and 'label'")
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:  # not a zip, a pickled object array, a truncated file
        raise CompressError(f"rows file {path} is not an .npz of numeric arrays ({type(exc).__name__}: {exc})") from exc
    names = [spec["name"] for spec in inputs]
    missing = [n for n in [*names, LABEL] if n not in arrays]
    if missing:
        raise CompressError(f"rows file {path} lacks {missing}: expected arrays {[*names, LABEL]}, got {sorted(arrays)}")
    labels = arrays[LABEL]
    n = len(labels)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise CompressError(
            f"rows file {path}: 'label' must be (N,) of 0 and 1, got shape {labels.shape} with values {np.unique(labels)[:5]}"
        )
    features = {}
    for spec in inputs:
        name, array = spec["name"], arrays[spec["name"]]
        shape = (n, *spec["shape"][1:])
        if array.shape != shape:
            raise CompressError(f"rows file {path}: {name!r} has shape {array.shape}, expected {shape} (N = {n} labels)")
        integer = np.dtype(spec["dtype"]).kind in "iu"
        if integer and array.dtype.kind not in "iu":
            raise CompressError(f"rows file {path}: {name!r} is {array.dtype}, expected integer ids ({spec['dtype']})")
        if array.dtype.kind not in "iuf":
            raise CompressError(f"rows file {path}: {name!r} is {array.dtype}, expected a number array ({spec['dtype']})")
        if integer and array.size and (array.min() < 0 or ("high" in spec and array.max() >= spec["high"])):
            raise CompressError(
                f"rows file {path}: {name!r} holds ids in [{array.min()}, {array.max()}], expected [0, {spec.get('high', 'inf')})"
            )
        features[name] = np.ascontiguousarray(array.astype(spec["dtype"]))
    return LabelledRows(features, labels.astype(np.float32))


def split_rows(rows: LabelledRows, *, seed: int = 42) -> tuple[LabelledRows, LabelledRows, LabelledRows]:
    """A random 80/10/10 train/validation/test split of ``rows`` (numpy's generator seeded with ``seed``).

    Raises:
        CompressError: the validation or the test part lacks one of the labels (AUC needs both).
    """
    order = np.random.default_rng(seed).permutation(len(rows))
    a, b = int(0.8 * len(rows)), int(0.9 * len(rows))
    parts = rows.take(order[:a]), rows.take(order[a:b]), rows.take(order[b:])
    for name, part in zip(("validation", "test"), parts[1:], strict=True):
        if len(np.unique(part.labels)) < 2:
            raise CompressError(
                f"the {name} part ({len(part)} of {len(rows)} rows, 10%) has only one label value; AUC needs both 0 and 1",
                hint="give more labelled rows",
            )
    return parts


@dataclass
class StepOutcome:
    """What became of one recipe step: ``applied`` (``reason`` says how), ``skipped`` (no rows) or ``refused``."""

    kind: str
    status: Literal["applied", "skipped", "refused"]
    reason: str


@dataclass
class ModuleCompression:
    """:func:`compress_module`'s result.

    Attributes:
        model: the module after its PyTorch steps (eval mode).
        onnx_path: the final ONNX file (under the work folder).
        recipe: the steps applied (``reduce_range`` filled in for INT8).
        outcomes: one :class:`StepOutcome` per recipe step, then ``onnx_export`` and ``auc_check``.
        report: JSON-safe numbers: sizes, parity, test AUC (when there are rows).
    """

    model: nn.Module
    onnx_path: Path
    recipe: Recipe
    outcomes: list[StepOutcome] = field(default_factory=list)
    report: dict = field(default_factory=dict)


@dataclass
class _Io:
    """How to make example rows of a module and what its output is called."""

    inputs: list[dict]
    example: Callable[..., dict[str, torch.Tensor]]
    outputs: list[str]
    registered: str | None  # the architecture's name, None for a module given with its signature


def _io(module: nn.Module, signature: Any) -> _Io:
    if signature is not None:
        inputs = signature_inputs(module, signature, f"{type(module).__name__}'s signature")
        try:
            check_input_names(module, [i["name"] for i in inputs])
        except TypeError as exc:
            raise CompressError(f"compress_module: {exc}") from exc
        return _Io(inputs, lambda n, seed=0: random_inputs(inputs, n, seed=seed), ["probability"], None)
    try:
        arch = architecture_of(module)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CompressError(
            f"compress_module: {type(module).__name__} has no config of a registered architecture ({exc}); "
            "pass its signature ({input name: (dtype, shape)})",
        ) from exc
    config = module.config
    specs, outs = arch.signature(config)
    inputs = getattr(config, "inputs", None) or [{"name": s.name, "dtype": s.dtype, "shape": [None, *s.shape[1:]]} for s in specs]
    return _Io(inputs, lambda n, seed=0: arch.example_inputs(config, n, seed=seed), [s.name for s in outs], arch.name)


def _finetune(model: nn.Module, step: StepConfig, train: LabelledRows, val: LabelledRows, log: Log, seed: int) -> str:
    """Fine-tune ``model`` in place with the one training loop; the no-training weights compete (epoch 0)."""
    trainable = model if hasattr(model, "logits") else _WithLogits(model)
    xs = {k: torch.from_numpy(v) for k, v in train.inputs().items()}
    y = torch.from_numpy(train.labels)

    def on_epoch(stats: EpochStats) -> None:
        log(f"  fine-tune epoch {stats.epoch}/{step.finetune_epochs}: val AUC {stats.val_auc:.4f}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            history, best = train_epochs(
                trainable,
                xs,
                y,
                val,
                max_epochs=step.finetune_epochs,
                patience=None,
                learning_rate=step.learning_rate,
                batch_size=256,
                score_before=True,
                on_epoch=on_epoch,
            )
        except TrainError as exc:
            raise CompressError(f"prune: fine-tuning: {exc}; try a lower learning_rate") from exc
    auc = next(h.val_auc for h in history if h.epoch == best)
    return f"fine-tuned {step.finetune_epochs} epoch(s) on {len(train)} rows, kept epoch {best} (val AUC {auc:.4f})"


def _prune(model: nn.Module, step: StepConfig, io: _Io, splits, log: Log, seed: int) -> tuple[nn.Module, str]:
    if io.registered not in (None, "user"):  # the architecture names its MLP blocks (toolkit.compress.prune)
        if splits is None or not isinstance(splits[0], EncodedRows):
            raise (StepSkipped if splits is None else StepRefused)(
                "prune",
                f"prune: a {io.registered} is pruned by its architecture's MLP blocks and fine-tuned on its feature rows "
                "(EncodedRows splits, as tritonrec compress CHECKPOINT gives)",
            )
        pruned = prune(model, step, splits[0], splits[1], seed=seed, on_log=log)
        return pruned, f"{io.registered}'s MLP blocks pruned by {step.ratio:.0%} ({step.importance}) and fine-tuned"
    if step.importance != "magnitude" or step.scope != "per_layer" or step.iterations != 1:
        log("prune: a module's layers are pruned once, per layer, by L2 magnitude (Torch-Pruning's graph)")
    pruned = prune_linears(model, io.example(16), step.ratio)
    changed = {n: (a.out_features, b.out_features) for (n, a), b in _linear_pairs(model, pruned)}
    shown = ", ".join(f"{n} {a} -> {b}" for n, (a, b) in changed.items() if a != b)
    how = f"{step.ratio:.0%} of the output neurons of the layers Torch-Pruning allows ({shown})"
    if splits is None:
        return pruned, how + "; not fine-tuned: no labelled rows (give --rows)"
    if step.finetune_epochs == 0:
        return pruned, how + "; finetune_epochs = 0"
    return pruned, how + "; " + _finetune(pruned, step, splits[0], splits[1], log, seed)


def _linear_pairs(a: nn.Module, b: nn.Module):
    other = dict(b.named_modules())
    return [((n, m), other[n]) for n, m in a.named_modules() if isinstance(m, nn.Linear) and isinstance(other.get(n), nn.Linear)]


def _distill(model: nn.Module, step: StepConfig, io: _Io, splits, student: nn.Module | None, log: Log, seed: int) -> tuple[nn.Module, str]:
    if student is None and io.registered in (None, "user"):
        raise StepRefused(
            "distill",
            f"distill: {type(model).__name__} is a module of its own, so there is no narrower copy to build: name a student "
            "(--student-file PATH.py:FACTORY, or student= from Python) taking the same inputs",
        )
    if splits is None:
        raise StepSkipped("distill", "distill: needs labelled rows to train the student on (give --rows)")
    if student is None:
        if not isinstance(splits[0], EncodedRows):
            raise StepRefused("distill", f"distill: a narrower {io.registered} trains on its feature rows (tritonrec compress CHECKPOINT)")
        small = distill(model, step, splits[0], splits[1], seed=seed, on_log=log)
        return small, f"distilled into a narrower {io.registered}"
    small = distill_into(model, copy.deepcopy(student), step, splits[0], splits[1], seed=seed, on_log=log)
    return small, f"distilled into the student {type(student).__name__} ({count_params(small):,} of {count_params(model):,} weights)"


def compress_module(
    module: nn.Module,
    signature: Any = None,
    recipe: Recipe | None = None,
    *,
    workdir: Path,
    rows: LabelledRows | tuple | None = None,
    student: nn.Module | None = None,
    cpu_target: str = "auto",
    seed: int = 42,
    timing_rounds: int = 0,
    on_log: Log | None = None,
) -> ModuleCompression:
    """Apply ``recipe`` to ``module`` step by step (see the module docstring) and write the final ONNX file under ``workdir``.

    Args:
        module: any ``nn.Module`` whose ``forward`` takes the inputs by name and returns the
            probability (B, 1) float32: a user's (:func:`toolkit.models.user.load_model_file`) or
            a registered architecture's; it is not modified.
        signature: ``{input name: (dtype, shape)}`` (the forms a model file's factory returns) for a
            module without a registered config; ``None`` reads it from ``module.config``.
        recipe: the steps (default: an empty recipe, export only).
        workdir: a folder for the exported files.
        rows: labelled rows (:class:`LabelledRows`, split 80/10/10 by :func:`split_rows`) or
            ``(train, val, test)`` already split; ``None``: the steps that need rows are skipped.
        student: the module to distill into (same input names); ``None``: a registered
            architecture distills into a narrower copy, another module's ``distill`` is refused.
        cpu_target: the serving CPU for the INT8 settings (:mod:`toolkit.cpu`).
        seed: seeds the split, fine-tuning and distillation.
        timing_rounds: when > 0, the module in PyTorch eager, its own FP32 ONNX export and the final
            file are timed side by side on this CPU, one thread each, in this many interleaved rounds
            (:func:`~toolkit.optimize.bench.measure_variants`: median batch-1 latency over 100 calls,
            batch-256 throughput over 10 batches per round); 0: not timed.
        on_log: called with one line per step.

    Returns:
        A :class:`ModuleCompression`; each step's outcome says applied, skipped (and why) or refused (and why).

    Raises:
        CompressError: the module or its signature is unusable (no forward by these names), an
            invalid recipe (two ONNX steps), a step failing on its own terms (NaN in fine-tuning).
        ExportError: the export failed or disagrees with the compressed PyTorch module (> 1e-5).
    """
    recipe = recipe or Recipe(name="export_only")
    log = on_log or (lambda _msg: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_step = recipe.onnx_step()
    io = _io(module, signature)
    splits = split_rows(rows, seed=seed) if isinstance(rows, LabelledRows) else (tuple(rows) if rows is not None else None)
    if student is not None:
        try:
            check_input_names(student, [i["name"] for i in io.inputs])
        except TypeError as exc:
            raise CompressError(f"distill: the student {type(student).__name__} does not take the teacher's inputs: {exc}") from exc

    model = copy.deepcopy(module).eval()
    outcomes: list[StepOutcome] = []
    applied: list[StepConfig] = []
    for step in recipe.torch_steps():
        log(f"step {step.kind}: {step.model_dump(exclude={'kind'})}")
        try:
            if step.kind == "prune":
                model, how = _prune(model, step, io, splits, log, seed)
            elif step.kind == "distill":
                model, how = _distill(model, step, io, splits, student, log, seed)
            else:
                model, how = quantize_embeddings(model, step, example_inputs=io.example(4)), "tables made row-wise INT8"
        except StepRefused as exc:  # this step cannot apply to this module (or lacks rows): the others still run
            status = "skipped" if isinstance(exc, StepSkipped) else "refused"
            outcomes.append(StepOutcome(step.kind, status, str(exc) + (f" ({exc.hint})" if exc.hint else "")))
            log(f"{step.kind} {status}: {exc}")
            continue
        model.eval()
        applied.append(step)
        outcomes.append(StepOutcome(step.kind, "applied", how))

    sample = LabelledRows({k: v.numpy() for k, v in io.example(SAMPLE_ROWS, seed=1).items()}, np.zeros(SAMPLE_ROWS, np.float32))
    test = splits[2] if splits is not None else sample
    fp32 = workdir / "fp32" / "model.onnx"
    parity = export_checked(model, io.example(8), io.outputs, fp32, test.take(slice(0, 2048)).inputs())
    where = f"{min(len(test), 2048)} test rows" if splits is not None else f"{SAMPLE_ROWS} random in-range rows of the signature"
    outcomes.append(StepOutcome("onnx_export", "applied", f"max |ONNX Runtime - PyTorch| = {parity.max_abs_diff:.2e} on {where}"))

    settings = int8_settings(cpu_target)
    calibration = splits[0] if splits is not None else sample
    final, kept_onnx = _apply_onnx_step(
        fp32, onnx_step, SimpleNamespace(train=calibration, test=test), workdir / "final", settings.cpu_target
    )
    if kept_onnx is not None:
        applied.append(kept_onnx)
        note = (
            "" if splits is not None or kept_onnx.kind != "onnx_static_int8" else " (calibrated on random in-range rows: no labelled rows)"
        )
        outcomes.append(StepOutcome(kept_onnx.kind, "applied", f"ONNX Runtime converted the export{note}"))

    report: dict[str, Any] = {
        "module": type(module).__name__,
        "architecture": io.registered,
        "params": {"before": count_params(module), "after": count_params(model)},
        "state_dict_bytes": {"before": state_dict_bytes(module), "after": state_dict_bytes(model)},
        "embedding_bytes": {"before": embedding_bytes(module), "after": embedding_bytes(model)},
        "onnx_bytes": {"fp32_export": onnx_size_bytes(fp32), "final": onnx_size_bytes(final)},
        "parity": asdict(parity),
    }
    if splits is None:
        outcomes.append(StepOutcome("auc_check", "skipped", "no labelled rows (give --rows): accuracy not measured"))
    else:
        base = evaluate(test.labels, Variant("baseline", 0, 0, 0, model=copy.deepcopy(module)).runner()(test.inputs()))
        got = evaluate(test.labels, Variant("final", 0, 0, 0, onnx_path=final).runner()(test.inputs()))
        ratio = got["auc"] / base["auc"]
        report["test"] = {"rows": len(test), "baseline": base, "compressed": got, "auc_ratio": ratio, "min_auc_ratio": recipe.min_auc_ratio}
        report["within_budget"] = bool(ratio >= recipe.min_auc_ratio)
        verdict = "within" if report["within_budget"] else "BELOW"
        outcomes.append(
            StepOutcome(
                "auc_check",
                "applied",
                f"test AUC {got['auc']:.4f} vs {base['auc']:.4f} ({ratio:.2%}), {verdict} the budget of {recipe.min_auc_ratio:.1%}",
            )
        )
    if timing_rounds > 0:
        report["timing"] = _timing(module, io, final, test if len(test) >= 256 else sample, workdir, timing_rounds, log)
        t = report["timing"]["compressed"]
        outcomes.append(
            StepOutcome(
                "timing",
                "applied",
                f"batch 256: {t['throughput_vs_pytorch_b256']:.2f}x the module's PyTorch eager throughput, "
                f"{t['throughput_vs_onnx_b256']:.2f}x its FP32 ONNX; batch 1: {t['latency_ms_b1']:.3f} ms "
                f"({t['latency_vs_pytorch_b1']:.2f}x eager's latency), one thread each",
            )
        )
    report["steps"] = [asdict(o) for o in outcomes]
    effective = recipe.model_copy(update={"steps": applied})
    return ModuleCompression(model, final, effective, outcomes, report)


def _timing(module: nn.Module, io: _Io, final: Path, bench: LabelledRows, workdir: Path, rounds: int, log: Log) -> dict:
    """The module eager, its own FP32 export and ``final`` timed side by side (see :func:`compress_module`)."""
    original = workdir / "original" / "model.onnx"
    export_checked(module, io.example(8), io.outputs, original, bench.take(slice(0, 256)).inputs())
    variants = [
        Variant("pytorch", count_params(module), state_dict_bytes(module), 0, model=copy.deepcopy(module).eval()),
        Variant("onnx", count_params(module), onnx_size_bytes(original), 0, onnx_path=original),
        Variant("compressed", 0, onnx_size_bytes(final), 0, onnx_path=final),
    ]
    measured = {r.name: r for r in measure_variants(variants, None, bench, rounds=rounds, b1_requests=100, b256_batches=10, on_log=log)}
    eager, onnx = measured["pytorch"], measured["onnx"]
    return {
        name: {
            "latency_ms_b1": r.latency_ms_b1,
            "throughput_rps_b256": r.throughput_rps_b256,
            "size_bytes": r.size_bytes,
            "throughput_vs_pytorch_b256": r.throughput_rps_b256 / eager.throughput_rps_b256,
            "throughput_vs_onnx_b256": r.throughput_rps_b256 / onnx.throughput_rps_b256,
            "latency_vs_pytorch_b1": r.latency_ms_b1 / eager.latency_ms_b1,
        }
        for name, r in measured.items()
    } | {"rounds": rounds}


def save_module_compression(result: ModuleCompression, out: Path) -> Path:
    """Write ``out/`` atomically: ``model.onnx`` (+ data), ``recipe.json`` (the steps applied),
    ``report.json``, and ``checkpoint/`` where ``load_checkpoint`` rebuilds the compressed module from
    it (a registered architecture; a user's pruned module: its config records the new widths; a user's
    module with ``nn.Embedding``/``nn.EmbeddingBag`` tables made int8: its ``structure.json`` records
    them); otherwise (a module changed in a way no checkpoint records, see
    :func:`~toolkit.compress.quantize_embeddings.rebuilds_from_config`) ``skipped.json`` says why there
    is no checkpoint.
    """
    out = Path(out)
    why = rebuilds_from_config(result.model)
    with atomic_directory(out) as tmp:
        if why is None:
            save_checkpoint(tmp / "checkpoint", result.model, None, {"compress": result.report})
        else:
            (tmp / "skipped.json").write_text(json.dumps({"checkpoint": f"no checkpoint/: {why}; serve model.onnx"}, indent=2) + "\n")
        copy_onnx_model(result.onnx_path, tmp, "model.onnx")
        save_recipe(result.recipe, tmp / "recipe.json")
        (tmp / "report.json").write_text(json.dumps(result.report, indent=2, default=float) + "\n")
    return out

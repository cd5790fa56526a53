"""Apply a compression recipe to a model of any registered architecture (DLRM, DCN-v2, DeepFM, ...),
export the result, and measure it against the baseline.

:func:`compress` runs a :class:`~toolkit.compress.recipe.Recipe`: its PyTorch steps
(distill, prune, quantize_embeddings) in order, then the export to ONNX (checked against
the compressed PyTorch model), then its ONNX step (dynamic INT8, static INT8 or FP16).
:func:`compress_and_report` also measures the result side by side with the FP32 PyTorch
eager baseline and the FP32 ONNX model, and judges it against the recipe's accuracy budget.

It calls :mod:`toolkit.compress` (the PyTorch steps), :mod:`toolkit.export` and the ONNX
converters of :mod:`toolkit.optimize.onnx_quant`, so it lives in ``toolkit.optimize``, above
compress and export in the layers (``.importlinter``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolkit._io import atomic_directory
from toolkit.compress.distill import distill
from toolkit.compress.errors import StepRefused
from toolkit.compress.prune import prune
from toolkit.compress.quantize_embeddings import quantize_embeddings, rebuilds_from_config
from toolkit.compress.recipe import ONNX_STEPS, Recipe, StepConfig, save_recipe
from toolkit.compress.stats import count_params, macs_per_sample, state_dict_bytes
from toolkit.cpu import detect_cpu, int8_settings
from toolkit.data.features import EncodedRows, FeatureEncoder
from toolkit.errors import CompressError
from toolkit.export.onnx_info import copy_onnx_model
from toolkit.export.parity import ParityReport, check_parity
from toolkit.export.torch2onnx import export_onnx
from toolkit.metrics import evaluate
from toolkit.models.protocol import PROBABILITY_OUTPUT
from toolkit.models.registry import architecture_of
from toolkit.optimize.bench import Variant, measure_variants, onnx_size_bytes
from toolkit.optimize.onnx_quant import convert_fp16, quantize_dynamic_int8, quantize_static_int8, resolve_reduce_range
from toolkit.optimize.select import Candidate, select_candidate
from toolkit.train.checkpoint import save_checkpoint

__all__ = [
    "CompressionData",
    "CompressedModel",
    "apply_torch_steps",
    "compress",
    "budget_fields",
    "compress_and_report",
    "export_checked",
    "save_compressed",
]

Log = Callable[[str], None]


@dataclass
class CompressionData:
    """The splits a recipe is fitted and judged on. ``test`` labels may be synthetic (Criteo-shaped rows)."""

    name: str
    train: EncodedRows
    val: EncodedRows
    test: EncodedRows
    encoder: FeatureEncoder | None = None


@dataclass
class CompressedModel:
    """A recipe's result: the PyTorch model after its PyTorch steps and the final ONNX file."""

    recipe: Recipe  # the steps kept (reduce_range filled in)
    model: nn.Module
    onnx_path: Path
    onnx_step: str | None
    selection: dict = field(default_factory=dict)  # cpu, int8 settings, and which optional steps were kept and why


def apply_torch_steps(
    model: nn.Module, steps: list[StepConfig], data: CompressionData, *, on_log: Log | None = None, refused: dict[str, str] | None = None
) -> nn.Module:
    """Run the PyTorch-stage steps in order; each returns a new model (the input is not modified).

    A step that cannot apply to this model (:class:`~toolkit.compress.errors.StepRefused`: no table to
    quantize, no ``nn.Linear`` to prune, ...) raises, unless ``refused`` is given: then its message is
    recorded there under the step's kind and the other steps still run.
    """
    for step in steps:
        if on_log:
            on_log(f"step {step.kind}: {step.model_dump(exclude={'kind'})}")
        try:
            if step.kind == "prune":
                model = prune(model, step, data.train, data.val, on_log=on_log)
            elif step.kind == "distill":
                model = distill(model, step, data.train, data.val, on_log=on_log)
            elif step.kind == "quantize_embeddings":
                model = quantize_embeddings(model, step)
            else:  # pragma: no cover - Recipe.torch_steps only yields the kinds above
                raise CompressError(f"{step.kind} is not a PyTorch step")
        except StepRefused as exc:
            if refused is None:
                raise
            refused[step.kind] = str(exc)
            if on_log:
                on_log(f"{step.kind} refused: {exc}")
    return model.eval()


def _export_checked(model: nn.Module, data: CompressionData, folder: Path) -> Path:
    """Export ``model`` to ``folder/model.onnx`` with a dynamic batch, checked against PyTorch to 1e-5."""
    fp32 = folder / "model.onnx"
    export_onnx(model, architecture_of(model).example_inputs(model.config, 8), [PROBABILITY_OUTPUT], fp32)
    check_parity(model, fp32, data.test.take(slice(0, 2048)).inputs(), atol=1e-5)
    return fp32


def export_checked(
    model: nn.Module, example_inputs: Mapping[str, torch.Tensor], output_names: list[str], onnx_path: Path, rows: Mapping[str, np.ndarray]
) -> ParityReport:
    """Export ``model`` to ``onnx_path`` with a dynamic batch, accepted only if ONNX Runtime matches it within
    1e-5 (probability units) on ``rows`` (inputs by name); the export step of :func:`toolkit.optimize.module.compress_module`.

    Raises:
        ExportError: the export failed or disagrees with PyTorch.
    """
    export_onnx(model, example_inputs, output_names, onnx_path)
    return check_parity(model, onnx_path, rows, atol=1e-5)


def _apply_onnx_step(
    fp32: Path, onnx_step: StepConfig | None, data: CompressionData, folder: Path, cpu_target: str
) -> tuple[Path, StepConfig | None]:
    """Apply ``onnx_step`` to the export ``fp32``, writing ``folder/model.onnx`` (None: ``fp32`` itself).

    Returns the final file and the step as applied (``reduce_range`` filled in for INT8).
    """
    if onnx_step is None:
        return fp32, None
    final = folder / "model.onnx"
    if onnx_step.kind in ("onnx_dynamic_int8", "onnx_static_int8"):
        onnx_step = onnx_step.model_copy(update={"reduce_range": resolve_reduce_range(onnx_step, cpu_target)})
    if onnx_step.kind == "onnx_dynamic_int8":
        quantize_dynamic_int8(fp32, final, onnx_step)
    elif onnx_step.kind == "onnx_static_int8":
        calibration = data.train.take(slice(0, onnx_step.calibration_rows)).inputs()
        quantize_static_int8(fp32, final, onnx_step, calibration)
    else:
        convert_fp16(fp32, final, onnx_step, sample_inputs=data.test.take(slice(0, 256)).inputs())
    return final, onnx_step


def compress(
    model: nn.Module,
    recipe: Recipe,
    data: CompressionData,
    workdir: Path,
    *,
    cpu_target: str = "auto",
    measure_accuracy: bool = True,
    on_log: Log | None = None,
) -> CompressedModel:
    """Apply ``recipe`` to ``model`` and write the final ONNX file under ``workdir``.

    The compressed PyTorch model is exported with a dynamic batch and accepted only if ONNX
    Runtime matches it within 1e-5 on up to 2,048 test rows; the ONNX step then converts that file
    (calibrating static INT8 on training rows; INT8 weights get ``reduce_range`` when
    ``cpu_target`` needs it, :mod:`toolkit.cpu`).

    Unless ``recipe.select == "as_written"``, the result is timed on this machine next to the
    same model without its optional steps (the ONNX step; ``quantize_embeddings`` when it is
    the last PyTorch step), and the fastest candidate within the accuracy budget on the
    validation split is kept (:func:`toolkit.optimize.select.select_candidate`). The returned
    recipe lists the steps kept; ``selection`` says why each optional step was kept or dropped, and
    its ``refused`` ``{step kind: why}`` lists the steps that cannot apply to this model (a
    :class:`~toolkit.compress.errors.StepRefused`, naming the module path): they are left out and
    the other steps still run. Timing here describes *this* CPU: pass ``cpu_target`` only to choose INT8 settings for
    another CPU, and compress on the serving CPU to choose steps for it.

    Raises:
        CompressError: an invalid recipe, or a converted model with NaN/Inf outputs.
        ExportError: the export failed or disagrees with PyTorch.
        ToolkitError: ``cpu_target`` is unknown.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = int8_settings(cpu_target)
    onnx_step = recipe.onnx_step()
    torch_steps = recipe.torch_steps()
    last_qe = bool(torch_steps) and torch_steps[-1].kind == "quantize_embeddings" and recipe.select != "as_written"
    refused: dict[str, str] = {}
    before_qe = apply_torch_steps(model, torch_steps[:-1] if last_qe else torch_steps, data, on_log=on_log, refused=refused)
    compressed = apply_torch_steps(before_qe, torch_steps[-1:], data, on_log=on_log, refused=refused) if last_qe else before_qe
    last_qe = last_qe and "quantize_embeddings" not in refused

    optional: list[str] = []
    if recipe.select != "as_written":
        optional = ([onnx_step.kind] if onnx_step is not None else []) + (["quantize_embeddings"] if last_qe else [])
    drop_sets: list[tuple[str, ...]] = [()] + [(s,) for s in optional] + ([tuple(optional)] if len(optional) == 2 else [])
    kinds = [s.kind for s in recipe.steps]
    exports: dict[bool, Path] = {}  # one checked export per PyTorch model (with / without INT8 embeddings)
    candidates: list[Candidate] = []
    applied: dict[tuple[str, ...], StepConfig | None] = {}
    for dropped in drop_sets:
        without_qe = "quantize_embeddings" in dropped
        torch_model = before_qe if without_qe else compressed
        if without_qe not in exports:
            exports[without_qe] = _export_checked(torch_model, data, workdir / ("fp32_without_qe" if without_qe else "fp32"))
        step = None if onnx_step is None or onnx_step.kind in dropped else onnx_step
        name = "recipe" if not dropped else "without_" + "+".join(dropped)
        final, applied[dropped] = _apply_onnx_step(exports[without_qe], step, data, workdir / name, settings.cpu_target)
        variant = _variant_for(name, torch_model, final, ", ".join(k for k in kinds if k not in dropped) or "none")
        candidates.append(Candidate(variant, dropped, torch_model))

    baseline_val_auc = None
    if measure_accuracy and len(candidates) > 1:
        probs = Variant("baseline", 0, 0, 0, model=model.eval()).runner()(data.val.inputs())
        baseline_val_auc = evaluate(data.val.labels, probs)["auc"]
    selection = select_candidate(
        candidates,
        optional,
        bench_rows=data.val,
        val=data.val if measure_accuracy else None,
        baseline_val_auc=baseline_val_auc,
        min_auc_ratio=recipe.min_auc_ratio,
        objective=recipe.select,
        cpu_target=settings.cpu_target,
        on_log=on_log,
    )
    chosen = selection.chosen
    kept_onnx = applied[chosen.dropped]
    kept_steps = [s for s in recipe.steps if s.kind not in chosen.dropped and s.kind not in ONNX_STEPS and s.kind not in refused]
    kept_steps += [kept_onnx] if kept_onnx else []
    effective = recipe.model_copy(update={"steps": kept_steps})
    info = {"cpu": detect_cpu().as_dict(), "int8": asdict(settings), "selection": selection.as_dict(), "refused": refused}
    return CompressedModel(effective, chosen.payload, chosen.variant.onnx_path, kept_onnx.kind if kept_onnx else None, info)


def budget_fields(test_auc: float | None, baseline_auc: float | None, min_auc_ratio: float) -> dict:
    """``auc_ratio``, ``within_budget`` (>= ``min_auc_ratio``) and ``within_99_9`` for a variant.

    Where accuracy is not measured (no labels worth judging), all three are None.
    """
    if test_auc is None or baseline_auc is None:
        return {"auc_ratio": None, "within_budget": None, "within_99_9": None}
    ratio = test_auc / baseline_auc
    return {"auc_ratio": ratio, "within_budget": ratio >= min_auc_ratio, "within_99_9": ratio >= 0.999}


def _variant_for(name: str, model: nn.Module, onnx_path: Path | None, description: str) -> Variant:
    size = onnx_size_bytes(onnx_path) if onnx_path is not None else state_dict_bytes(model)
    return Variant(name, count_params(model), size, macs_per_sample(model), model=model, onnx_path=onnx_path, description=description)


def compress_and_report(
    baseline: nn.Module,
    recipes: dict[str, Recipe],
    data: CompressionData,
    workdir: Path,
    *,
    measure_accuracy: bool = True,
    rounds: int = 5,
    b1_requests: int = 200,
    b256_batches: int = 20,
    cpu_target: str = "auto",
    on_log: Log | None = None,
) -> tuple[dict, dict[str, CompressedModel]]:
    """Compress ``baseline`` with every recipe and measure all results side by side.

    The variants are ``fp32_pytorch`` (the baseline, PyTorch eager), ``fp32_onnx`` and one per
    recipe (its name). Returns a JSON-safe report with ``baseline``, ``variants`` (each with
    ``name``, ``test_auc``, ``size_bytes``, ``params``, ``macs_per_sample``, ``latency_ms_b1``,
    ``throughput_rps_b256``, ``within_budget``, ratios to the baselines), and the compressed
    models by recipe name (their files live under ``workdir``). ``rounds``, ``b1_requests`` and
    ``b256_batches`` size the timing (see :func:`~toolkit.optimize.bench.measure_variants`).
    Each recipe row also holds ``steps`` (the steps kept) and ``selection`` (this CPU's
    features, the INT8 settings for ``cpu_target``, and why each optional step was kept or
    dropped: :func:`compress`); the report's ``cpu`` names the CPU features seen.
    """
    workdir = Path(workdir)
    baseline = baseline.eval()
    base_onnx = workdir / "fp32_onnx" / "model.onnx"
    export_onnx(baseline, architecture_of(baseline).example_inputs(baseline.config, 8), [PROBABILITY_OUTPUT], base_onnx)
    check_parity(baseline, base_onnx, data.test.take(slice(0, 2048)).inputs(), atol=1e-5)
    variants = [
        _variant_for("fp32_pytorch", baseline, None, "FP32 PyTorch eager (baseline)"),
        _variant_for("fp32_onnx", baseline, base_onnx, "FP32 ONNX Runtime"),
    ]
    budgets: dict[str, float] = {}
    results: dict[str, CompressedModel] = {}
    for name, recipe in recipes.items():
        if on_log:
            on_log(f"recipe {name}")
        result = results[name] = compress(
            baseline, recipe, data, workdir / name, cpu_target=cpu_target, measure_accuracy=measure_accuracy, on_log=on_log
        )
        variants.append(_variant_for(name, result.model, result.onnx_path, ", ".join(s.kind for s in result.recipe.steps) or "none"))
        budgets[name] = recipe.min_auc_ratio
    measured = measure_variants(
        variants,
        data.test if measure_accuracy else None,
        data.test,
        rounds=rounds,
        b1_requests=b1_requests,
        b256_batches=b256_batches,
        on_log=on_log,
    )
    base, base_onnx_result = measured[0], measured[1]
    rows = []
    for r in measured:
        row = asdict(r)
        row.pop("extra")
        row.update(budget_fields(r.test_auc, base.test_auc, budgets.get(r.name, 0.99)))
        row["min_auc_ratio"] = budgets.get(r.name, 0.99)
        row["size_ratio"] = r.size_bytes / base.size_bytes
        row["throughput_vs_pytorch_b256"] = r.throughput_rps_b256 / base.throughput_rps_b256
        row["throughput_vs_onnx_b256"] = r.throughput_rps_b256 / base_onnx_result.throughput_rps_b256
        row["latency_vs_pytorch_b1"] = r.latency_ms_b1 / base.latency_ms_b1
        if r.name in results:
            row["steps"] = [s.kind for s in results[r.name].recipe.steps]
            row["selection"] = results[r.name].selection
        rows.append(row)
    report = {"data": data.name, "baseline": "fp32_pytorch", "fp32_onnx": "fp32_onnx", "variants": rows}
    report["cpu"] = detect_cpu().as_dict()
    report["int8"] = asdict(int8_settings(cpu_target))
    return report, results


def save_compressed(result: CompressedModel, out: Path, encoder: FeatureEncoder | None, metrics: dict) -> Path:
    """Write a compressed model folder atomically: ``checkpoint/``, ``model.onnx`` (+ data), ``recipe.json``.

    ``checkpoint/`` is written only where ``load_checkpoint`` rebuilds the model from it
    (:func:`~toolkit.compress.quantize_embeddings.rebuilds_from_config`): a DLRM, DCN-v2 or DeepFM
    always (int8 tables included: their config says ``embedding_quantization``); another architecture
    whose ``nn.Embedding``/``nn.EmbeddingBag`` tables were made int8 in place too (the checkpoint's
    ``structure.json`` records them). One changed in a way no checkpoint records is served from
    ``model.onnx``, and ``skipped.json`` says why there is no checkpoint (``{"checkpoint": reason}``).
    """
    out = Path(out)
    why = rebuilds_from_config(result.model)
    with atomic_directory(out) as tmp:
        if why is None:
            save_checkpoint(tmp / "checkpoint", result.model, encoder, metrics)
        else:
            (tmp / "skipped.json").write_text(json.dumps({"checkpoint": f"no checkpoint/: {why}; serve model.onnx"}, indent=2) + "\n")
        copy_onnx_model(result.onnx_path, tmp, "model.onnx")
        save_recipe(result.recipe, tmp / "recipe.json")
    return out

"""Apply a compression recipe to a DLRM, export the result, and measure it against the baseline.

:func:`compress` runs a :class:`~toolkit.compress.recipe.Recipe`: its PyTorch steps
(distill, prune, quantize_embeddings) in order, then the export to ONNX (checked against
the compressed PyTorch model), then its ONNX step (dynamic INT8, static INT8 or FP16).
:func:`compress_and_report` also measures the result side by side with the FP32 PyTorch
eager baseline and the FP32 ONNX model, and judges it against the recipe's accuracy budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit._io import atomic_directory
from toolkit.compress.bench import Variant, measure_variants, onnx_size_bytes
from toolkit.compress.distill import distill
from toolkit.compress.onnx_quant import convert_fp16, quantize_dynamic_int8, quantize_static_int8
from toolkit.compress.prune import prune
from toolkit.compress.quantize_embeddings import quantize_embeddings
from toolkit.compress.recipe import Recipe, StepConfig, save_recipe
from toolkit.compress.stats import count_params, macs_per_sample, state_dict_bytes
from toolkit.data.features import EncodedRows, FeatureEncoder
from toolkit.errors import CompressError
from toolkit.export.onnx_info import copy_onnx_model
from toolkit.export.parity import check_parity
from toolkit.export.torch2onnx import export_onnx
from toolkit.models.dlrm import DLRM
from toolkit.models.signature import DLRM_OUTPUT, dlrm_example_inputs
from toolkit.train.checkpoint import save_checkpoint

__all__ = ["CompressionData", "CompressedModel", "apply_torch_steps", "compress", "budget_fields", "compress_and_report"]

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

    recipe: Recipe
    model: DLRM
    onnx_path: Path
    onnx_step: str | None


def apply_torch_steps(model: DLRM, steps: list[StepConfig], data: CompressionData, *, on_log: Log | None = None) -> DLRM:
    """Run the PyTorch-stage steps in order; each returns a new model (the input is not modified)."""
    for step in steps:
        if on_log:
            on_log(f"step {step.kind}: {step.model_dump(exclude={'kind'})}")
        if step.kind == "prune":
            model = prune(model, step, data.train, data.val, on_log=on_log)
        elif step.kind == "distill":
            model = distill(model, step, data.train, data.val, on_log=on_log)
        elif step.kind == "quantize_embeddings":
            model = quantize_embeddings(model, step)
        else:  # pragma: no cover - Recipe.torch_steps only yields the kinds above
            raise CompressError(f"{step.kind} is not a PyTorch step")
    return model.eval()


def compress(model: DLRM, recipe: Recipe, data: CompressionData, workdir: Path, *, on_log: Log | None = None) -> CompressedModel:
    """Apply ``recipe`` to ``model`` and write the final ONNX file to ``workdir/model.onnx``.

    The compressed PyTorch model is exported with a dynamic batch and accepted only if ONNX
    Runtime matches it within 1e-5 on up to 2,048 test rows; the ONNX step then converts that file
    (calibrating static INT8 on training rows).

    Raises:
        CompressError: an invalid recipe, or a converted model with NaN/Inf outputs.
        ExportError: the export failed or disagrees with PyTorch.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_step = recipe.onnx_step()
    compressed = apply_torch_steps(model, recipe.torch_steps(), data, on_log=on_log)
    fp32 = workdir / "fp32" / "model.onnx"
    export_onnx(compressed, dlrm_example_inputs(compressed.config, 8), [DLRM_OUTPUT], fp32)
    check_parity(compressed, fp32, data.test.take(slice(0, 2048)).inputs(), atol=1e-5)
    final = workdir / "model.onnx"
    if onnx_step is None:
        copy_onnx_model(fp32, workdir, final.name)
    elif onnx_step.kind == "onnx_dynamic_int8":
        quantize_dynamic_int8(fp32, final, onnx_step)
    elif onnx_step.kind == "onnx_static_int8":
        calibration = data.train.take(slice(0, onnx_step.calibration_rows)).inputs()
        quantize_static_int8(fp32, final, onnx_step, calibration)
    else:
        convert_fp16(fp32, final, onnx_step, sample_inputs=data.test.take(slice(0, 256)).inputs())
    return CompressedModel(recipe, compressed, final, onnx_step.kind if onnx_step else None)


def budget_fields(test_auc: float | None, baseline_auc: float | None, min_auc_ratio: float) -> dict:
    """``auc_ratio``, ``within_budget`` (>= ``min_auc_ratio``) and ``within_99_9`` for a variant.

    Where accuracy is not measured (no labels worth judging), all three are None.
    """
    if test_auc is None or baseline_auc is None:
        return {"auc_ratio": None, "within_budget": None, "within_99_9": None}
    ratio = test_auc / baseline_auc
    return {"auc_ratio": ratio, "within_budget": ratio >= min_auc_ratio, "within_99_9": ratio >= 0.999}


def _variant_for(name: str, model: DLRM, onnx_path: Path | None, description: str) -> Variant:
    size = onnx_size_bytes(onnx_path) if onnx_path is not None else state_dict_bytes(model)
    return Variant(name, count_params(model), size, macs_per_sample(model), model=model, onnx_path=onnx_path, description=description)


def compress_and_report(
    baseline: DLRM,
    recipes: dict[str, Recipe],
    data: CompressionData,
    workdir: Path,
    *,
    measure_accuracy: bool = True,
    rounds: int = 5,
    b1_requests: int = 200,
    b256_batches: int = 20,
    on_log: Log | None = None,
) -> tuple[dict, dict[str, CompressedModel]]:
    """Compress ``baseline`` with every recipe and measure all results side by side.

    The variants are ``fp32_pytorch`` (the baseline, PyTorch eager), ``fp32_onnx`` and one per
    recipe (its name). Returns a JSON-safe report with ``baseline``, ``variants`` (each with
    ``name``, ``test_auc``, ``size_bytes``, ``params``, ``macs_per_sample``, ``latency_ms_b1``,
    ``throughput_rps_b256``, ``within_budget``, ratios to the baselines), and the compressed
    models by recipe name (their files live under ``workdir``). ``rounds``, ``b1_requests`` and
    ``b256_batches`` size the timing (see :func:`~toolkit.compress.bench.measure_variants`).
    """
    workdir = Path(workdir)
    baseline = baseline.eval()
    base_onnx = workdir / "fp32_onnx" / "model.onnx"
    export_onnx(baseline, dlrm_example_inputs(baseline.config, 8), [DLRM_OUTPUT], base_onnx)
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
        result = results[name] = compress(baseline, recipe, data, workdir / name, on_log=on_log)
        variants.append(_variant_for(name, result.model, result.onnx_path, ", ".join(s.kind for s in recipe.steps) or "none"))
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
        rows.append(row)
    return {"data": data.name, "baseline": "fp32_pytorch", "fp32_onnx": "fp32_onnx", "variants": rows}, results


def save_compressed(result: CompressedModel, out: Path, encoder: FeatureEncoder | None, metrics: dict) -> Path:
    """Write a compressed model folder atomically: ``checkpoint/``, ``model.onnx`` (+ data), ``recipe.json``."""
    out = Path(out)
    with atomic_directory(out) as tmp:
        save_checkpoint(tmp / "checkpoint", result.model, encoder, metrics)
        copy_onnx_model(result.onnx_path, tmp, "model.onnx")
        save_recipe(result.recipe, tmp / "recipe.json")
    return out

"""Compression recipes: an ordered list of small step configs, saved next to their output.

A recipe is JSON (format version 1)::

    {"format_version": 1,
     "min_auc_ratio": 0.99,
     "steps": [{"kind": "prune", "ratio": 0.5, "importance": "taylor"},
               {"kind": "quantize_embeddings"},
               {"kind": "onnx_dynamic_int8"}]}

Steps are of two stages, applied in this order whatever their order in the list:
PyTorch steps (``distill``, ``prune``, ``quantize_embeddings``) change the model before
export, in list order; at most one ONNX step (``onnx_dynamic_int8``, ``onnx_static_int8``,
``onnx_fp16``) converts the exported file. Every config is a pydantic model that refuses
unknown fields and out-of-range values with a message naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolkit.errors import CompressError

__all__ = [
    "PruneConfig",
    "DistillConfig",
    "QuantizeEmbeddingsConfig",
    "OnnxDynamicInt8Config",
    "OnnxStaticInt8Config",
    "OnnxFp16Config",
    "StepConfig",
    "TORCH_STEPS",
    "ONNX_STEPS",
    "Recipe",
    "load_recipe",
    "save_recipe",
]

RECIPE_FORMAT_VERSION = 1


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PruneConfig(_Step):
    """Structured pruning of the DLRM's MLPs: whole hidden neurons are removed, so layers shrink.

    The bottom MLP's output width (= embedding dim, needed by the dot interaction) and
    the top MLP's single output are never pruned.
    """

    kind: Literal["prune"] = "prune"
    ratio: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of hidden neurons removed from each prunable layer (or overall when global)"
    )
    importance: Literal["magnitude", "taylor"] = Field(
        "magnitude", description="L2 weight magnitude, or first-order Taylor |w·∂L/∂w| on training batches (Molchanov et al., 2019)"
    )
    scope: Literal["per_layer", "global"] = Field("per_layer", description="same ratio in every layer, or one ranking across layers")
    iterations: int = Field(1, ge=1, le=20, description="prune in this many equal steps, fine-tuning after each")
    finetune_epochs: int = Field(1, ge=0, le=50, description="epochs of fine-tuning on the training split after each pruning step")
    learning_rate: float = Field(1e-3, gt=0.0, description="Adam learning rate of the fine-tuning")


class DistillConfig(_Step):
    """Lightweight design: a smaller student of the teacher's architecture trained by knowledge
    distillation (Hinton et al., 2015). ``bottom_mlp``/``top_mlp`` apply to a DLRM teacher;
    ``student`` sets other fields of the student's config (``{"deep_mlp": [32, 16]}`` for DCN-v2
    or DeepFM, ``{"cross_rank": 8}``), never the input sizes."""

    kind: Literal["distill"] = "distill"
    embedding_dim: int = Field(8, ge=1)
    bottom_mlp: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32])
    top_mlp: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 16])
    student: dict[str, Any] = Field(
        default_factory=dict, description="other fields of the student's config (e.g. deep_mlp), checked by its architecture"
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the teacher's soft targets vs. the labels in the loss")
    temperature: float = Field(1.0, gt=0.0, description="softens teacher logits before the sigmoid")
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(2, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)


class QuantizeEmbeddingsConfig(_Step):
    """Row-wise INT8 embedding tables: int8 codes plus a per-row FP16 scale and int8 zero point."""

    kind: Literal["quantize_embeddings"] = "quantize_embeddings"


class OnnxDynamicInt8Config(_Step):
    """ONNX Runtime dynamic quantization: INT8 weights, activations quantized on the fly."""

    kind: Literal["onnx_dynamic_int8"] = "onnx_dynamic_int8"
    per_channel: bool = False
    reduce_range: bool | None = Field(
        None, description="7-bit weights; None: chosen for the serving CPU (True on x86-64 without VNNI, see toolkit.cpu)"
    )


class OnnxStaticInt8Config(_Step):
    """ONNX Runtime static quantization in QDQ format, calibrated on training rows."""

    kind: Literal["onnx_static_int8"] = "onnx_static_int8"
    per_channel: bool = True
    reduce_range: bool | None = Field(
        None, description="7-bit weights; None: chosen for the serving CPU (True on x86-64 without VNNI, see toolkit.cpu)"
    )
    calibration_rows: int = Field(2048, ge=16)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"


class OnnxFp16Config(_Step):
    """FP16 weights and compute with FP32 inputs and outputs; overflow-prone nodes stay FP32."""

    kind: Literal["onnx_fp16"] = "onnx_fp16"


StepConfig = Annotated[
    PruneConfig | DistillConfig | QuantizeEmbeddingsConfig | OnnxDynamicInt8Config | OnnxStaticInt8Config | OnnxFp16Config,
    Field(discriminator="kind"),
]
TORCH_STEPS = ("distill", "prune", "quantize_embeddings")
ONNX_STEPS = ("onnx_dynamic_int8", "onnx_static_int8", "onnx_fp16")


class Recipe(BaseModel):
    """An ordered list of compression steps and the accuracy budget the result must meet.

    ``min_auc_ratio``: the compressed model's test AUC must be at least this share of the
    FP32 baseline's (default 0.99, MLPerf's convention of 99% of the reference accuracy).
    ``select``: how the optional steps are kept or dropped (:mod:`toolkit.optimize.select`).
    """

    model_config = ConfigDict(extra="forbid")
    format_version: Literal[1] = RECIPE_FORMAT_VERSION
    name: str = "recipe"
    min_auc_ratio: float = Field(0.99, gt=0.0, le=1.0)
    select: Literal["max_throughput", "min_latency", "as_written"] = Field(
        "max_throughput",
        description="keep an optional step (the ONNX step, a last quantize_embeddings) only if the model is faster with it "
        "on the serving CPU (batch-256 throughput or batch-1 latency), or as_written: keep every step",
    )
    steps: list[StepConfig] = Field(default_factory=list)

    def torch_steps(self) -> list[StepConfig]:
        """The PyTorch-stage steps, in list order."""
        return [s for s in self.steps if s.kind in TORCH_STEPS]

    def onnx_step(self) -> StepConfig | None:
        """The ONNX-stage step, or None."""
        found = [s for s in self.steps if s.kind in ONNX_STEPS]
        if len(found) > 1:
            raise CompressError(f"recipe {self.name!r} has {len(found)} ONNX steps ({', '.join(s.kind for s in found)}); use at most one")
        return found[0] if found else None


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe JSON file.

    Raises:
        CompressError: the file is missing or not JSON, or a step is unknown or has an
            invalid field (the message names the step index and field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompressError(f"recipe file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"recipe file {path} is not valid JSON ({exc})") from exc
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CompressError(f"recipe file {path}: {problems}") from exc
    recipe.onnx_step()  # at most one
    return recipe


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write ``recipe`` as JSON (atomically) so that a compressed model can be reproduced."""
    from toolkit._io import atomic_write_text

    atomic_write_text(Path(path), recipe.model_dump_json(indent=2) + "\n")

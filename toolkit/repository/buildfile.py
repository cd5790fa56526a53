"""The build file of ``tritonrec build --build-file FILE``: every build choice in one JSON file.

Example (every field optional; unknown fields are errors)::

    {
      "model_name": "dlrm",
      "target": "gpu",
      "variants": ["onnx", "onnx_fp16", "tensorrt"],
      "ensembles": true,
      "ensemble_ranker": "onnx",
      "top_k": 10,
      "model": {
        "max_batch_size": 256,
        "max_queue_delay_us": 200,
        "preferred_batch_sizes": [64, 256],
        "instance_groups": [{"kind": "KIND_GPU", "count": 2}, {"kind": "KIND_CPU", "count": 1}],
        "queue_timeout_us": 50000, "queue_timeout_action": "REJECT", "max_queue_size": 1024,
        "version_policy": {"kind": "latest", "num_versions": 2},
        "response_cache": true,
        "intra_op_threads": 2,
        "warmup_batch_sizes": [1, 64]
      },
      "overrides": {
        "onnx": {"gpu_execution_accelerator": "tensorrt", "tensorrt_precision_mode": "FP16"},
        "pytorch": {"max_batch_size": 64, "preferred_batch_sizes": [64]}
      }
    }

The ``model`` section and each ``overrides`` entry use :class:`~toolkit.repository.config.BatchingOptions`'
own field names, with its defaults; an override changes only the fields it sets, on top of
``model``. Values are checked strictly (``"32"`` is not a number), and every error names the
file, the field (pydantic's location, e.g. ``overrides.onnx.max_batch_size``), what was given
and what was expected.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolkit.errors import RepositoryError
from toolkit.repository.config import BatchingOptions, InstanceGroup, VersionPolicy

__all__ = ["BuildFile", "ModelSection", "InstanceGroupSpec", "VersionPolicySpec", "load_build_file"]

_STRICT = ConfigDict(extra="forbid", strict=True)
_HINT = "the build-file format and an example are in README.md (Model repository → Build files)"
_DEFAULTS = BatchingOptions()


class InstanceGroupSpec(BaseModel):
    """One ``instance_group`` entry (see :class:`~toolkit.repository.config.InstanceGroup`).

    Defaults: ``kind`` ``KIND_CPU``, ``count`` 1, ``gpus`` [] (every visible GPU for KIND_GPU).
    """

    model_config = _STRICT

    kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    count: int = Field(1, ge=1)
    gpus: list[int] = Field(default_factory=list)


class VersionPolicySpec(BaseModel):
    """``version_policy`` (see :class:`~toolkit.repository.config.VersionPolicy`). Default: latest 1."""

    model_config = _STRICT

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(1, ge=1)
    versions: list[int] = Field(default_factory=list)


class ModelSection(BaseModel):
    """Config choices of the served models: the fields of :class:`~toolkit.repository.config.BatchingOptions`.

    Defaults (those of ``BatchingOptions``): ``max_batch_size`` 256, ``dynamic_batching`` true,
    ``max_queue_delay_us`` 100, ``preferred_batch_sizes`` [], ``instance_count`` 1 (of the
    target's kind: KIND_CPU for ``cpu``, KIND_GPU for ``gpu``; there is no ``instance_kind`` field,
    so that the target cannot silently override it: give ``instance_groups`` for explicit kinds),
    ``instance_groups`` [], no queue policy (``queue_timeout_us`` 0 = none,
    ``queue_timeout_action`` REJECT, ``allow_timeout_override`` false, ``max_queue_size`` 0 =
    unbounded), ``version_policy`` latest 1, ``response_cache`` false,
    ``gpu_execution_accelerator`` null (``"tensorrt"`` or ``"cuda"``; ONNX variants on GPU only),
    ``tensorrt_precision_mode`` FP32, ``intra_op_threads``/``inter_op_threads`` 1 (ONNX Runtime;
    0 lets it choose), ``warmup_batch_sizes`` [] (no warmup).
    """

    model_config = _STRICT

    max_batch_size: int = Field(_DEFAULTS.max_batch_size, ge=0)
    dynamic_batching: bool = _DEFAULTS.dynamic_batching
    max_queue_delay_us: int = Field(_DEFAULTS.max_queue_delay_us, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    instance_count: int = Field(_DEFAULTS.instance_count, ge=1)
    instance_groups: list[InstanceGroupSpec] = Field(default_factory=list)
    queue_timeout_us: int = Field(0, ge=0)
    queue_timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    allow_timeout_override: bool = False
    max_queue_size: int = Field(0, ge=0)
    version_policy: VersionPolicySpec = Field(default_factory=VersionPolicySpec)
    response_cache: bool = False
    gpu_execution_accelerator: Literal["tensorrt", "cuda"] | None = None
    tensorrt_precision_mode: Literal["FP32", "FP16"] = "FP32"
    intra_op_threads: int = Field(_DEFAULTS.intra_op_threads, ge=0)
    inter_op_threads: int = Field(_DEFAULTS.inter_op_threads, ge=0)
    warmup_batch_sizes: list[int] = Field(default_factory=list)

    def set_fields(self) -> dict:
        """The fields this section sets explicitly, as ``BatchingOptions`` arguments."""
        out: dict = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name == "instance_groups":
                value = [InstanceGroup(g.kind, g.count, list(g.gpus)) for g in value]
            elif name == "version_policy":
                value = VersionPolicy(value.kind, value.num_versions, list(value.versions))
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out


class BuildFile(BaseModel):
    """What ``tritonrec build --build-file FILE`` builds.

    Attributes:
        model_name: prefix of the model folders (``<model_name>_<variant>``); default ``dlrm``.
        target: ``cpu`` (default) or ``gpu``: the placement profile (which variants by default,
            and the instance kind).
        variants: the serving variants to build; default (null): every variant of the target.
        ensembles: whether to build the raw-feature ensemble(s); default true.
        ensemble_ranker: the variant the ensemble calls; default (null): the builder's choice.
        top_k: K of the ``<model>_topk`` ensemble (postprocess returns the top K items of one
            user's candidate list; K >= 1); default 10, null for no top-K ensemble.
        calibration_cache: a TensorRT INT8 calibration cache for ``tensorrt_int8`` (a path,
            relative to the build file's folder); default null (calibrate on real rows).
        model: config choices for every model (:class:`ModelSection`).
        overrides: per-variant changes on top of ``model``, e.g. ``{"onnx": {"max_batch_size": 64}}``.
    """

    model_config = _STRICT

    model_name: str = Field("dlrm", pattern=r"^[A-Za-z0-9_-]+$")
    target: Literal["cpu", "gpu"] = "cpu"
    variants: list[str] | None = None
    ensembles: bool = True
    ensemble_ranker: str | None = None
    top_k: int | None = Field(10, ge=1)
    calibration_cache: str | None = None
    model: ModelSection = Field(default_factory=ModelSection)
    overrides: dict[str, ModelSection] = Field(default_factory=dict)

    def batching_options(self, variant: str | None = None, base: BatchingOptions | None = None) -> BatchingOptions:
        """The :class:`BatchingOptions` of ``variant``: ``base`` (default: :meth:`target_options`, e.g. the
        target's profile) with the ``model`` section's fields, then ``overrides[variant]``'s, applied
        (``variant=None``: the ``model`` section alone).

        Raises:
            RepositoryError: the combination is invalid (e.g. a preferred batch size above the
                variant's ``max_batch_size``), naming the section and the problem.
        """
        values = self.model.set_fields()
        section = "model"
        if variant is not None and variant in self.overrides:
            values |= self.overrides[variant].set_fields()
            section = f"model + overrides.{variant}"
        try:
            return replace(base or self.target_options(), **values)
        except RepositoryError as exc:
            label = f"{section} (variant {variant!r})" if variant is not None else section
            raise RepositoryError(f"{label}: {exc}", hint=exc.hint) from exc

    def target_options(self) -> BatchingOptions:
        """``BatchingOptions()`` with the target's instance kind (KIND_GPU for ``gpu``)."""
        return BatchingOptions(instance_kind="KIND_GPU" if self.target == "gpu" else "KIND_CPU")

    def check_variants(self, known: Sequence[str]) -> None:
        """Check that ``variants``, ``overrides`` and ``ensemble_ranker`` name only ``known`` variants.

        Raises:
            RepositoryError: naming the field and the unknown variant(s).
        """
        known = list(known)
        for fld, names in (
            ("variants", self.variants or []),
            ("overrides", list(self.overrides)),
            ("ensemble_ranker", [self.ensemble_ranker] if self.ensemble_ranker else []),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise RepositoryError(f"{fld}: unknown variant(s) {unknown}; expected some of {', '.join(known)}")
        if self.variants is not None:
            unused = [n for n in self.overrides if n not in self.variants]
            if unused:
                raise RepositoryError(
                    f"overrides: variant(s) {unused} are not built (variants: {self.variants})",
                    hint="remove the overrides or add the variants",
                )
            if self.ensemble_ranker and self.ensemble_ranker not in self.variants:
                raise RepositoryError(
                    f"ensemble_ranker: {self.ensemble_ranker!r} is not among the built variants {self.variants}",
                    hint="add it to variants or pick a built one",
                )


_SECTION_CLASSES: dict[str, type[BaseModel]] = {
    "instance_groups": InstanceGroupSpec,
    "version_policy": VersionPolicySpec,
    "model": ModelSection,
    "overrides": ModelSection,
}


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed_fields(loc: tuple) -> list[str]:
    cls: type[BaseModel] = BuildFile
    for part in reversed(loc[:-1]):
        if isinstance(part, str) and part in _SECTION_CLASSES:
            cls = _SECTION_CLASSES[part]
            break
    return list(cls.model_fields)


def _describe(error: dict) -> str:
    loc = tuple(error["loc"])
    where = _location(loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_fields(loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{where}: unknown field{guess}; expected one of {', '.join(allowed)}"
    given = error.get("input")
    shown = repr(given) if not isinstance(given, dict) else "an object"
    return f"{where}: {error['msg']} (got {shown})"


def load_build_file(path: Path) -> BuildFile:
    """Read and check a build file (JSON; see the module docstring for the format and defaults).

    The ``model`` section and every ``overrides`` entry are also turned into
    :class:`BatchingOptions` once (on the default base), so that combinations such as a
    preferred batch size above ``max_batch_size`` are reported here, naming the file.

    Raises:
        RepositoryError: the file is missing or unreadable, is not JSON (with line and column),
            or does not fit the format; the message names the file and every wrong field
            (its location, what was given and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise RepositoryError(f"build file {path} does not exist", hint="pass the path of a JSON build file")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RepositoryError(
            f"build file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", hint=_HINT
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"build file {path} cannot be read: {exc}") from exc
    try:
        build = BuildFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise RepositoryError(f"build file {path}: {problems}", hint=_HINT) from exc
    if build.calibration_cache is not None:
        cache = (path.parent / build.calibration_cache).resolve()
        if not cache.is_file():
            raise RepositoryError(f"build file {path}: calibration_cache {build.calibration_cache!r} ({cache}) does not exist", hint=_HINT)
        build.calibration_cache = str(cache)
    for variant in [None, *build.overrides]:
        try:
            build.batching_options(variant)
        except RepositoryError as exc:
            raise RepositoryError(f"build file {path}: {exc}", hint=exc.hint) from exc
    return build

"""``tritonrec verify``: send the same real test rows to every served variant and compare with PyTorch.

For each model family in a repository (the models sharing a ``<model>_`` prefix, whose
FP32 eager PyTorch model ``<model>_pytorch`` is the reference), every loaded ranker variant
gets the first N rows of the test split as model tensors and every loaded ensemble the same
rows as the raw-feature request (:func:`toolkit.repository.raw_inputs.raw_request`). Each
answer is compared with the *served* reference's on the same rows:

==============================  ====================================================================
precision (``tritonrec.json``)  tolerance
==============================  ====================================================================
``fp32``, or no metadata        max |Δp| ≤ 1e-5 (``fp32_max_abs_diff``)
``fp16``, ``int8``, ``mixed``   served AUC ≥ ``auc_budget`` × reference AUC (default 0.99, the
                                compression accuracy budget); max |Δp| is still reported
==============================  ====================================================================

Models the server could not load are listed as ``not loaded`` with Triton's reason (the
server in the ``nvidia-pytriton`` wheel has no onnxruntime backend, so ``platform:
"onnxruntime_onnx"`` models load only in the stock container): that is not a failure of
the model. Preprocess/postprocess models are covered by their ensembles. A top-K ensemble
(one user's candidates in, the best K item ids and scores out) of an FP32 ranker gets one
request: the user with the most rows among the N, all their rows as candidates; its scores
must equal the reference's K highest probabilities of those rows, and each returned item's
reference probability must be one of them (so ties may come in any order), to the FP32
tolerance. Top-K ensembles of FP16/INT8 rankers are skipped: their ranker's AUC judges them.

The planning half (:func:`scan_repository`, :func:`plan_verification`, :func:`tolerance_for`)
is pure and reads only files; :func:`verify_repository` talks to a server. Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from toolkit._io import atomic_write_json
from toolkit.data import FeatureEncoder, Splits
from toolkit.data.checkpoint_split import DEFAULT_SPLIT_SEED, checkpoint_splits
from toolkit.errors import InferenceError, RepositoryError, ServingError, ToolkitError
from toolkit.metrics import auc as auc_score
from toolkit.repository.config import ModelConfig, config_tensor_specs, read_config
from toolkit.repository.metadata import read_metadata
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS, raw_request
from toolkit.repository.versions import model_folders
from toolkit.serving.client import InferenceClient
from toolkit.serving.server import ModelState, TritonServer, explain_load_failure, free_ports
from toolkit.tensors import TensorSpec

__all__ = [
    "DEFAULT_AUC_BUDGET",
    "DEFAULT_FP32_MAX_ABS_DIFF",
    "OUTPUT_NAME",
    "TOPK_OUTPUTS",
    "ModelEntry",
    "ModelResult",
    "PlannedModel",
    "Tolerance",
    "VerificationPlan",
    "VerifyReport",
    "plan_verification",
    "repository_index",
    "scan_repository",
    "tolerance_for",
    "verify_repository",
]

#: FP32 variants must match the PyTorch reference to this many probability units.
DEFAULT_FP32_MAX_ABS_DIFF = 1e-5
#: FP16/INT8 variants must keep this fraction of the reference AUC (the compression accuracy budget).
DEFAULT_AUC_BUDGET = 0.99
#: The probability output every ranker and ranking ensemble returns: (B, 1) float32.
OUTPUT_NAME = "probability"
#: A top-K ensemble's outputs: BYTES [K] item ids and FP32 [K] scores, best first.
TOPK_OUTPUTS = ("top_item_ids", "top_scores")
_COMPRESSED_PRECISIONS = ("fp16", "int8", "mixed")
_BUILD_HINT = "build the reference with `tritonrec build --variant pytorch` (it writes <model>_pytorch with its tritonrec.json)"

Status = Literal["pass", "fail", "reference", "not loaded", "skipped"]


# -- tolerances -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """What a variant must satisfy against the reference.

    Attributes:
        kind: ``"max_abs_diff"`` (max |served − reference| probability ≤ ``value``) or
            ``"auc_ratio"`` (served AUC ≥ ``value`` × reference AUC).
        value: the bound (probability units, or a ratio in (0, 1]).
    """

    kind: Literal["max_abs_diff", "auc_ratio"]
    value: float

    def describe(self) -> str:
        """For people, e.g. ``|Δp| ≤ 1e-05`` or ``AUC ≥ 0.99×ref``."""
        return f"|Δp| ≤ {self.value:g}" if self.kind == "max_abs_diff" else f"AUC ≥ {self.value:g}×ref"

    def holds(self, *, max_abs_diff: float, auc: float, reference_auc: float) -> bool:
        """Whether a variant with these numbers passes (NaN numbers never pass)."""
        if self.kind == "max_abs_diff":
            return bool(max_abs_diff <= self.value)
        return bool(auc >= self.value * reference_auc)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "text": self.describe()}


def tolerance_for(
    precision: str | None, *, fp32_max_abs_diff: float = DEFAULT_FP32_MAX_ABS_DIFF, auc_budget: float = DEFAULT_AUC_BUDGET
) -> Tolerance:
    """The tolerance for a variant of ``precision`` (``None``: unknown, treated as FP32).

    ``fp16``, ``int8`` and ``mixed`` get the AUC budget; ``fp32`` and unknown precisions the
    max |Δp| bound.

    Raises:
        RepositoryError: an ``auc_budget`` outside (0, 1] or a negative ``fp32_max_abs_diff``.
    """
    if not 0.0 < auc_budget <= 1.0:
        raise RepositoryError(
            f"AUC budget {auc_budget!r} must lie in (0, 1]", hint="e.g. --auc-budget 0.99 (keep 99% of the reference AUC)"
        )
    if not fp32_max_abs_diff >= 0.0:
        raise RepositoryError(f"FP32 tolerance {fp32_max_abs_diff!r} must be >= 0")
    if precision in _COMPRESSED_PRECISIONS:
        return Tolerance("auc_ratio", auc_budget)
    return Tolerance("max_abs_diff", fp32_max_abs_diff)


# -- what the repository holds (pure: files only) ----------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """One model folder of a repository, as its files describe it.

    Attributes:
        name: the folder (= model) name.
        path: the folder.
        config: its parsed ``config.pbtxt``; ``None`` when it has none or it does not parse.
        role: from ``tritonrec.json`` (``ranker``, ``preprocess``, ``postprocess``, ``ensemble``);
            ``None`` without metadata.
        variant, precision, ranker: from ``tritonrec.json`` (``None``/``""`` without).
        split_seed: the split seed of the checkpoint it was built from (``tritonrec.json``'s
            ``source.split_seed``; ``None`` when not recorded, as in repositories built before it was).
        error: why ``config`` or the metadata could not be read (``""`` otherwise).
    """

    name: str
    path: Path
    config: ModelConfig | None
    role: str | None = None
    variant: str | None = None
    precision: str | None = None
    ranker: str = ""
    split_seed: int | None = None
    error: str = ""

    @property
    def has_metadata(self) -> bool:
        return self.role is not None

    @property
    def is_ensemble(self) -> bool:
        return self.role == "ensemble" or (self.config is not None and self.config.platform == "ensemble")

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The config's inputs and outputs (batch dimension included); empty without a config."""
        return config_tensor_specs(self.config) if self.config is not None else ([], [])


def scan_repository(repository: Path) -> list[ModelEntry]:
    """Every model folder of ``repository`` (a sub-folder holding ``config.pbtxt``), sorted by name.

    Hidden folders (staging folders of an interrupted build) are ignored. A config that does
    not parse or an invalid ``tritonrec.json`` does not stop the scan: the entry carries the
    error.

    Raises:
        RepositoryError: ``repository`` is not a folder.
    """
    repository = Path(repository)
    entries: list[ModelEntry] = []
    for folder in model_folders(repository):
        if not (folder / "config.pbtxt").is_file():
            continue
        config, errors = None, []
        try:
            config = read_config(folder / "config.pbtxt")
        except RepositoryError as exc:
            errors.append(str(exc))
        metadata = None
        try:
            metadata = read_metadata(folder)
        except RepositoryError as exc:
            errors.append(str(exc))
        if metadata is None:
            entries.append(ModelEntry(folder.name, folder, config, error="; ".join(errors)))
        else:
            entries.append(
                ModelEntry(
                    folder.name,
                    folder,
                    config,
                    role=metadata.role,
                    variant=metadata.variant,
                    precision=metadata.precision,
                    ranker=metadata.ranker,
                    split_seed=_recorded_seed(metadata.source),
                    error="; ".join(errors),
                )
            )
    return entries


def _recorded_seed(source: object) -> int | None:
    seed = source.get("split_seed") if isinstance(source, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def family_test_splits(reference: ModelEntry, data_dir: Path, encoder: FeatureEncoder, seed: int | None = None) -> tuple[Splits, int]:
    """The splits a family's rows come from, and their seed: ``seed`` when given, else the one the
    reference's checkpoint recorded (:attr:`ModelEntry.split_seed`; ``DEFAULT_SPLIT_SEED`` when the
    repository records none), rebuilt by the checkpoint loader every stage uses
    (:func:`toolkit.data.checkpoint_split.checkpoint_splits`) with the reference's vocabularies.

    Raises:
        DataError: ``data_dir`` cannot be read.
    """
    if seed is None:
        seed = reference.split_seed if reference.split_seed is not None else DEFAULT_SPLIT_SEED
    return checkpoint_splits(reference.path, data_dir, encoder=encoder, metrics={"split": {"seed": seed}}), seed


Kind = Literal["reference", "ranker", "ensemble", "topk", "skip"]


@dataclass(frozen=True)
class PlannedModel:
    """What :func:`verify_repository` will do with one model.

    Attributes:
        entry: the model folder.
        kind: ``reference`` (the family's PyTorch model), ``ranker`` (sent model tensors),
            ``ensemble`` (sent the raw-feature request), ``topk`` (a top-K ensemble of an FP32
            ranker: sent one user's candidates) or ``skip``.
        family: the reference it is compared with (``<model>`` of ``<model>_pytorch``); ``""`` if none.
        precision: the precision whose tolerance applies (``None``: unknown, FP32 tolerance).
        note: why it is skipped, or what was assumed (e.g. a ranker recognised without metadata).
        ranker: an ensemble's ranker model (``""`` when unknown or not an ensemble).
    """

    entry: ModelEntry
    kind: Kind
    family: str = ""
    precision: str | None = None
    note: str = ""
    ranker: str = ""


@dataclass(frozen=True)
class VerificationPlan:
    """References by family (family -> ``<model>_pytorch`` entry) and one :class:`PlannedModel` per model folder."""

    references: dict[str, ModelEntry]
    models: list[PlannedModel]


def _prefix(entry: ModelEntry) -> str:
    suffix = f"_{entry.variant}"
    return entry.name[: -len(suffix)] if entry.variant and entry.name.endswith(suffix) and len(entry.name) > len(suffix) else entry.name


def _same_tensors(a: Sequence[TensorSpec], b: Sequence[TensorSpec]) -> bool:
    """Same names, dtypes and ranks, and equal dims wherever both are fixed (order does not matter)."""
    if sorted(s.name for s in a) != sorted(s.name for s in b):
        return False
    other = {s.name: s for s in b}
    for s in a:
        t = other[s.name]
        if s.numpy_dtype != t.numpy_dtype or len(s.shape) != len(t.shape):
            return False
        if any(x is not None and y is not None and x != y for x, y in zip(s.shape, t.shape, strict=True)):
            return False
    return True


def _by_prefix(name: str, families: Sequence[str]) -> str | None:
    matches = [f for f in families if name.startswith(f + "_")]
    return max(matches, key=len) if matches else None


def plan_verification(entries: Sequence[ModelEntry]) -> VerificationPlan:
    """Decide, from the files alone, which model is each family's reference and what to do with the rest.

    * A model with ``tritonrec.json`` ``role: ranker, variant: pytorch`` is its family's reference;
      the family is its name without ``_pytorch``.
    * Other rankers with metadata belong to the family their name starts with (``<family>_<variant>``).
    * Ensembles belong to the family of their ``ranker`` (metadata) or of the first composing
      step that is a known ranker. Top-K ensembles (variant ``topk``, a ``postprocess`` step, or
      no ``probability`` output) are checked when they return :data:`TOPK_OUTPUTS` and their
      ranker is FP32, else skipped; ensembles whose inputs are not the raw-feature request are skipped.
    * A model without metadata whose config inputs equal a reference's inputs is verified as a
      ranker of unknown precision (FP32 tolerance), said in its note; with several such
      references, the one whose family prefixes its name wins, else it is skipped as ambiguous.
    * Preprocess/postprocess models are skipped (their ensembles cover them).

    Raises:
        RepositoryError: no PyTorch reference at all, or a family with rankers/ensembles but no
            reference (names the models and how to build the reference); two references for one family.
    """
    by_name = {e.name: e for e in entries}
    references: dict[str, ModelEntry] = {}
    for e in entries:
        if e.role == "ranker" and e.variant == "pytorch":
            family = _prefix(e)
            if family in references:
                raise RepositoryError(f"models {references[family].name!r} and {e.name!r} are both the PyTorch reference of {family!r}")
            references[family] = e
    if not references:
        rankers = [e.name for e in entries if e.role in ("ranker", "ensemble") or e.role is None]
        raise RepositoryError(
            "no PyTorch reference in the repository: no model's tritonrec.json says role 'ranker', variant 'pytorch'"
            + (f" (models: {', '.join(rankers)})" if rankers else " (it holds no models)"),
            hint=_BUILD_HINT,
        )
    families = sorted(references)
    ref_inputs = {f: references[f].specs()[0] for f in families}

    def family_of_ranker(name: str) -> str | None:
        e = by_name.get(name)
        if e is None or e.config is None or e.is_ensemble:
            return None
        if e.role == "ranker":
            return _prefix(e) if _prefix(e) in references else _by_prefix(e.name, families)
        if e.role is None:
            p = _plan_unknown(e, families, ref_inputs)
            return p.family if p.kind == "ranker" else None
        return None

    planned: list[PlannedModel] = []
    orphans: list[str] = []
    for e in entries:
        if e.config is None:
            planned.append(PlannedModel(e, "skip", note=e.error or "no readable config.pbtxt"))
        elif e.role == "ranker" and e.variant == "pytorch":
            planned.append(PlannedModel(e, "reference", _prefix(e), e.precision))
        elif e.role in ("preprocess", "postprocess"):
            planned.append(PlannedModel(e, "skip", note=f"{e.role} model: verified through its ensembles"))
        elif e.is_ensemble:
            planned.append(_plan_ensemble(e, by_name, families, family_of_ranker, orphans))
        elif e.role == "ranker":
            family = family_of_ranker(e.name)
            if family is None:
                orphans.append(e.name)
                continue
            planned.append(PlannedModel(e, "ranker", family, e.precision))
        else:  # no metadata, or a role this version does not know
            planned.append(_plan_unknown(e, families, ref_inputs))
    if orphans:
        raise RepositoryError(
            f"no PyTorch reference for {', '.join(orphans)}: references exist only for "
            + ", ".join(f"{f} ({references[f].name})" for f in families),
            hint=_BUILD_HINT,
        )
    return VerificationPlan(references, planned)


def _plan_ensemble(
    e: ModelEntry,
    by_name: dict[str, ModelEntry],
    families: Sequence[str],
    family_of_ranker: Callable[[str], str | None],
    orphans: list[str],
) -> PlannedModel:
    assert e.config is not None
    steps = [s.model_name for s in e.config.ensemble_scheduling.step]
    inputs, outputs = e.specs()
    output_names = {o.name for o in outputs}
    topk = e.variant == "topk" or any(by_name[s].role == "postprocess" for s in steps if s in by_name) or OUTPUT_NAME not in output_names
    if sorted(s.name for s in inputs) != sorted(s.name for s in RAW_INPUT_SPECS):
        return PlannedModel(
            e, "skip", note=f"inputs {sorted(s.name for s in inputs)} are not the raw-feature request {[s.name for s in RAW_INPUT_SPECS]}"
        )
    if topk and output_names != set(TOPK_OUTPUTS):
        return PlannedModel(e, "skip", note=f"top-K ensemble with outputs {sorted(output_names)}, not {list(TOPK_OUTPUTS)}: not verified")
    ranker = e.ranker if e.ranker else next((s for s in steps if family_of_ranker(s) is not None), "")
    family = family_of_ranker(ranker) if ranker else None
    if family is None and not e.has_metadata:
        family = _by_prefix(e.name, families)
    if family is None:
        if ranker and ranker not in by_name:
            return PlannedModel(e, "skip", note=f"its ranker {ranker!r} is not in the repository")
        orphans.append(e.name)
        return PlannedModel(e, "skip")
    precision = e.precision if e.has_metadata else by_name[ranker].precision if ranker in by_name else None
    note = "" if e.has_metadata else "no tritonrec.json: " + (f"ranker {ranker}" if ranker else f"family {family} by name")
    if topk and precision in _COMPRESSED_PRECISIONS:
        return PlannedModel(
            e,
            "skip",
            family,
            precision,
            f"top-K ensemble of an {precision.upper()} ranker: judged by the ranker's AUC budget (the exact top-K check needs FP32)",
        )
    return PlannedModel(e, "topk" if topk else "ensemble", family, precision, note, ranker)


def _plan_unknown(e: ModelEntry, families: Sequence[str], ref_inputs: dict[str, list[TensorSpec]]) -> PlannedModel:
    inputs, outputs = e.specs()
    what = e.error or ("no tritonrec.json" if e.role is None else f"unknown role {e.role!r} in tritonrec.json")
    matching = [f for f in families if _same_tensors(inputs, ref_inputs[f])]
    if not matching:
        return PlannedModel(e, "skip", note=f"{what}, and its inputs are not a reference ranker's: not verified")
    if OUTPUT_NAME not in {o.name for o in outputs}:
        return PlannedModel(e, "skip", note=f"{what}; takes a ranker's inputs but has no {OUTPUT_NAME!r} output")
    family = _by_prefix(e.name, matching) or (matching[0] if len(matching) == 1 else None)
    if family is None:
        return PlannedModel(e, "skip", note=f"{what}; its inputs match the references of {', '.join(matching)}: ambiguous")
    return PlannedModel(e, "ranker", family, None, f"{what}: a ranker of unknown precision (its inputs equal {family}_pytorch's)")


# -- results ----------------------------------------------------------------------------------
@dataclass
class ModelResult:
    """The verdict on one model.

    Attributes:
        model, family, role, variant, precision: what it is (``role`` ``"unknown"`` and
            ``precision`` ``None`` without metadata).
        status: ``pass``, ``fail``, ``reference`` (the family's PyTorch model), ``not loaded``
            (the server could not load it; ``reason`` is Triton's) or ``skipped`` (``reason`` says why).
        max_abs_diff: max |served − reference| probability over the rows (``None`` when not measured).
        auc: served AUC on the rows; ``reference_auc``: the served reference's on the same rows.
        tolerance: the tolerance applied (``None`` when not measured).
        n_rows: rows sent.
        reason: Triton's load error, the skip reason, the inference error, or a note.
    """

    model: str
    family: str
    role: str
    variant: str
    precision: str | None
    status: Status
    max_abs_diff: float | None = None
    auc: float | None = None
    reference_auc: float | None = None
    tolerance: Tolerance | None = None
    n_rows: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-safe: a NaN number (a variant that answered NaN) becomes ``None``; ``reason`` says why."""
        d = asdict(self)
        d["tolerance"] = self.tolerance.to_dict() if self.tolerance else None
        for key in ("max_abs_diff", "auc", "reference_auc"):
            if d[key] is not None and not math.isfinite(d[key]):
                d[key] = None
        return d


@dataclass
class VerifyReport:
    """Everything ``tritonrec verify`` found; :meth:`to_dict` is ``report.json``.

    Attributes:
        repository: the repository folder; url, protocol: the server and how it was called.
        data_dir, seed, n_rows: the test rows (first ``n_rows`` of the test split of ``seed``; ``None``:
            each family's checkpoint's seed, in ``references[family]["split_seed"]``).
        auc_budget, fp32_max_abs_diff: the tolerances in force.
        references: family -> {"model", "auc", "split_seed"} of the served PyTorch reference.
        results: one :class:`ModelResult` per model (the server's index order).
    """

    repository: str
    url: str
    protocol: str
    data_dir: str
    seed: int | None
    n_rows: int
    auc_budget: float
    fp32_max_abs_diff: float
    references: dict[str, dict] = field(default_factory=dict)
    results: list[ModelResult] = field(default_factory=list)

    @property
    def failed(self) -> list[ModelResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        """No model failed (models not loaded or skipped do not count as failures)."""
        return not self.failed

    def to_dict(self) -> dict:
        return {
            "repository": self.repository,
            "url": self.url,
            "protocol": self.protocol,
            "data": {"data_dir": self.data_dir, "seed": self.seed, "split": "test", "n_rows": self.n_rows},
            "tolerances": {"fp32_max_abs_diff": self.fp32_max_abs_diff, "auc_budget": self.auc_budget},
            "passed": self.passed,
            "counts": {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "reference", "not loaded", "skipped")},
            "references": self.references,
            "models": [r.to_dict() for r in self.results],
        }

    def write(self, path: Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically (temporary file, then rename)."""
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)


# -- talking to the server --------------------------------------------------------------------
def repository_index(url: str, protocol: Literal["http", "grpc"]) -> list[ModelState]:
    """The server's model repository index over ``protocol`` (one :class:`ModelState` per model version).

    Raises:
        ServingError: the server cannot be reached (names the URL and protocol).
    """
    url = url.split("://", 1)[-1]
    module = httpclient if protocol == "http" else grpcclient
    try:
        with contextlib.closing(module.InferenceServerClient(url)) as client:
            index = client.get_model_repository_index() if protocol == "http" else client.get_model_repository_index(as_json=True)
    except (InferenceServerException, OSError) as exc:
        raise ServingError(
            f"cannot read the model repository index from the Triton server at {url} ({protocol}): {exc}",
            hint="check that the server runs and that the port matches --protocol",
        ) from exc
    models = index if protocol == "http" else index.get("models", [])
    return [ModelState(m["name"], str(m.get("version", "")), m.get("state", ""), m.get("reason", "")) for m in models]


def _load_state(states: Sequence[ModelState], name: str) -> tuple[bool, str]:
    mine = [s for s in states if s.name == name]
    if not mine:
        return False, "not in the server's model repository index (does the server serve this repository?)"
    if any(s.state == "READY" for s in mine):
        return True, ""
    return False, "; ".join(
        dict.fromkeys(f"{s.state}: {s.reason}" if s.state and s.reason else (s.reason or s.state or "not loaded") for s in mine)
    )


def _with_reasons(states: Sequence[ModelState], repository: Path) -> list[ModelState]:
    """``states`` where every model that is not READY has a reason.

    Triton lists a model refused while its config is read with no state and no reason (its log
    says why; :meth:`TritonServer.model_states` reads it there). For a server whose log is out
    of reach (``--url``), such a model gets the errors ``tritonrec validate`` finds in its folder
    of ``repository`` instead, said to be ours.
    """
    missing = {s.name for s in states if s.state != "READY" and not s.reason}
    if not missing:
        return list(states)
    from toolkit.repository.validate import validate_repository  # noqa: PLC0415 (only when Triton gives no reason)

    try:
        findings = validate_repository(repository)
    except RepositoryError:
        findings = []
    ours = {name: "; ".join(f"{f.field}: {f.message}" for f in findings if f.model == name and f.severity == "error") for name in missing}
    note = "Triton gives no reason in its repository index (its log has it)"
    return [
        ModelState(
            s.name, s.version, s.state, f"{note}; tritonrec validate: {ours[s.name]}" if ours[s.name] else f"{note}: read the server log"
        )
        if s.name in missing
        else s
        for s in states
    ]


def _load_encoder(reference: ModelEntry) -> tuple[FeatureEncoder, dict]:
    path = reference.path / "vocabularies.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RepositoryError(
            f"{path}: cannot read the vocabularies of reference {reference.name} ({exc})",
            hint="rebuild it with `tritonrec build` from a checkpoint with vocabularies.json",
        ) from exc
    return FeatureEncoder.from_dict(d), d


def _infer(url: str, protocol: Literal["http", "grpc"], model: str, inputs: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    with InferenceClient(url, protocol=protocol, model_name=model) as client:
        if OUTPUT_NAME not in {s.name for s in client.output_specs}:
            raise InferenceError(f"model {model!r} has no {OUTPUT_NAME!r} output (outputs: {[s.name for s in client.output_specs]})")
        out = client.infer_batched(inputs, batch_size)[OUTPUT_NAME]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def verify_repository(
    repository: Path,
    *,
    data_dir: Path,
    url: str | None = None,
    protocol: Literal["http", "grpc"] = "grpc",
    seed: int | None = None,
    n_rows: int = 2000,
    batch_size: int = 256,
    auc_budget: float = DEFAULT_AUC_BUDGET,
    fp32_max_abs_diff: float = DEFAULT_FP32_MAX_ABS_DIFF,
    on_progress: Callable[[str], None] | None = None,
    server_log: Path | None = None,
) -> VerifyReport:
    """Serve ``repository`` (or use the server at ``url``) and check every loaded variant against PyTorch.

    Every family's rows are the first ``n_rows`` of the test split of ``data_dir`` (random
    80/10/10 split the reference's checkpoint was trained on, or ``seed``), encoded with the
    reference's ``vocabularies.json``. Rankers
    get them as model tensors (``dense_features`` float32 (N, 2), ``sparse_ids`` int64 (N, 7),
    ``multi_hot_ids`` int64 (N, G)); ensembles as the raw-feature request (BYTES, see
    :mod:`toolkit.repository.raw_inputs`). Each model's ``probability`` (N, 1) is compared with
    the served ``<family>_pytorch``'s on the same rows: max |Δp| and served AUC
    (:func:`toolkit.metrics.auc`), judged by :func:`tolerance_for` its precision.

    Args:
        repository: the model repository folder (read for configs, ``tritonrec.json`` and
            vocabularies, and served unless ``url`` is given).
        data_dir: MovieLens-100K folder.
        url: ``host:port`` of a running server that serves ``repository`` (its ``protocol``
            endpoint); ``None`` starts the bundled/stock server on free loopback ports.
        protocol: ``"grpc"`` or ``"http"``.
        seed, n_rows: the split seed (``None``: the one each reference's checkpoint recorded, 42 for
            repositories that record none) and the number of test rows (capped by the test split).
        batch_size: rows per request (capped by each model's ``max_batch_size``).
        auc_budget, fp32_max_abs_diff: tolerances (see the module docstring).
        on_progress: called with one line per step (server start, each model).
        server_log: where a started server writes its log (default: a temporary file).

    Returns:
        The report; ``report.passed`` is False when any loaded variant fails its tolerance or
        its request fails.

    Raises:
        RepositoryError: no PyTorch reference (see :func:`plan_verification`), unreadable
            vocabularies, bad tolerances, ``n_rows < 1``.
        ServingError: the server does not start or cannot be reached, or the reference of a
            repository with one model family is not loaded (with Triton's reason) or fails its
            request. With several families, such a reference is reported as ``fail`` and its
            family's other models as ``skipped``, and the other families are still verified.
        DataError: the data folder cannot be read.
    """
    if protocol not in ("http", "grpc"):
        raise ServingError(f"unknown protocol {protocol!r}", hint="use 'http' or 'grpc'")
    if n_rows < 1:
        raise RepositoryError(f"the number of test rows must be >= 1, got {n_rows}")
    tolerance_for(None, fp32_max_abs_diff=fp32_max_abs_diff, auc_budget=auc_budget)  # validates both
    say = on_progress or (lambda _: None)
    plan = plan_verification(scan_repository(repository))  # before starting anything: a missing reference fails fast

    server: TritonServer | None = None
    if url is None:
        http_port, grpc_port, metrics_port = free_ports(3)
        server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=server_log)
        say(f"starting Triton on {repository}")
        server.start()
        url = server.grpc_url if protocol == "grpc" else server.http_url
    try:
        states = _with_reasons(server.model_states() if server is not None else repository_index(url, protocol), repository)
        report = VerifyReport(
            repository=str(repository),
            url=url,
            protocol=protocol,
            data_dir=str(data_dir),
            seed=seed,
            n_rows=0,
            auc_budget=auc_budget,
            fp32_max_abs_diff=fp32_max_abs_diff,
        )
        results = {p.entry.name: r for p in plan.models if (r := _static_result(p, states)) is not None}
        for family, reference in sorted(plan.references.items()):
            members = [p for p in plan.models if p.family == family and p.entry.name not in results]
            try:
                family_results = _verify_family(
                    reference,
                    members,
                    {e.entry.name: e.entry for e in plan.models},
                    states,
                    report,
                    url=url,
                    protocol=protocol,
                    n_rows=n_rows,
                    batch_size=batch_size,
                    data_dir=Path(data_dir),
                    say=say,
                )
            except ServingError as exc:
                if len(plan.references) == 1:
                    raise  # nothing can be verified: say so as an error
                # several families: this one fails, the others are still verified
                family_results = {reference.name: _failed_reference(reference, family, exc)}
                for p in members:
                    if p.entry.name != reference.name:
                        role, variant, precision = _describe(p)
                        family_results[p.entry.name] = ModelResult(
                            p.entry.name, family, role, variant, precision, "skipped", reason=f"no reference: {reference.name} failed"
                        )
            results.update(family_results)
        known = {p.entry.name for p in plan.models}
        for s in states:
            if s.name not in known and s.name not in results:
                results[s.name] = ModelResult(
                    s.name, "", "unknown", "", None, "skipped", reason=f"served, but not a model folder of {repository}"
                )
        report.results = [results[n] for n in sorted(results)]
        return report
    finally:
        if server is not None:
            server.stop()


def _failed_reference(reference: ModelEntry, family: str, exc: ServingError) -> ModelResult:
    return ModelResult(reference.name, family, "ranker", "pytorch", reference.precision, "fail", reason=f"reference unusable: {exc}")


def _describe(p: PlannedModel) -> tuple[str, str, str | None]:
    e = p.entry
    role = e.role or ("ensemble" if e.is_ensemble else "ranker" if p.kind == "ranker" else "unknown")
    variant = e.variant or ""
    precision = p.precision if p.kind != "skip" else e.precision
    # pre/postprocessing is numpy, not a model precision (their tritonrec.json says fp32 by default)
    return role, variant, None if role in ("preprocess", "postprocess") else precision


def _static_result(p: PlannedModel, states: Sequence[ModelState]) -> ModelResult | None:
    """The result of a model that is not sent rows (not loaded, or skipped); ``None`` for the rest.

    A model the server could not load is ``not loaded`` whatever its role, with Triton's reason.
    """
    role, variant, precision = _describe(p)
    loaded, reason = _load_state(states, p.entry.name)
    if not loaded and p.kind != "reference":
        return ModelResult(p.entry.name, p.family, role, variant, precision, "not loaded", reason=explain_load_failure(reason))
    if p.kind == "skip":
        return ModelResult(p.entry.name, p.family, role, variant, precision, "skipped", reason=p.note)
    return None


def _verify_family(
    reference: ModelEntry,
    members: Sequence[PlannedModel],
    entries: dict[str, ModelEntry],
    states: Sequence[ModelState],
    report: VerifyReport,
    *,
    url: str,
    protocol: Literal["http", "grpc"],
    n_rows: int,
    batch_size: int,
    data_dir: Path,
    say: Callable[[str], None],
) -> dict[str, ModelResult]:
    """Send the family's rows to its reference, then to every loaded member; one result per model."""
    family = _prefix(reference)
    loaded, reason = _load_state(states, reference.name)
    if not loaded:
        raise ServingError(
            f"the PyTorch reference {reference.name} is not loaded on the server at {url}: {reason}",
            hint="it runs in the Python backend with torch: read the server log, and check that torch imports in the server's Python",
        )
    encoder, vocabularies = _load_encoder(reference)
    splits, seed = family_test_splits(reference, data_dir, encoder, report.seed)
    origin = "given" if report.seed is not None else ("its checkpoint's" if reference.split_seed is not None else "the default")
    say(f"{family}: test rows of {data_dir} (seed {seed}, {origin}) encoded with {reference.name}/vocabularies.json")
    n = min(n_rows, len(splits.test))
    rows = splits.test.take(slice(0, n))
    tensors, labels = rows.inputs(), rows.labels
    report.n_rows = n
    say(f"{reference.name}: {n} rows (reference)")
    try:
        ref_p = _infer(url, protocol, reference.name, tensors, batch_size)
        ref_auc = auc_score(labels, ref_p)
    except ToolkitError as exc:
        raise ServingError(f"the PyTorch reference {reference.name} did not answer the test rows: {exc}", hint=exc.hint) from exc
    report.references[family] = {"model": reference.name, "auc": ref_auc, "split_seed": seed}
    results = {
        reference.name: ModelResult(
            reference.name,
            family,
            role="ranker",
            variant="pytorch",
            precision=reference.precision,
            status="reference",
            max_abs_diff=0.0,
            auc=ref_auc,
            reference_auc=ref_auc,
            n_rows=n,
            reason="FP32 eager PyTorch: the family's other models are compared with it",
        )
    }
    raw: dict[str, np.ndarray] | None = None
    for p in members:
        if p.kind == "reference":
            continue
        role, variant, precision = _describe(p)
        tolerance = tolerance_for(precision, fp32_max_abs_diff=report.fp32_max_abs_diff, auc_budget=report.auc_budget)
        result = ModelResult(
            p.entry.name, family, role, variant, precision, "fail", tolerance=tolerance, n_rows=n, reason=p.note, reference_auc=ref_auc
        )
        own = p.entry.path / "vocabularies.json"
        if p.kind == "ranker" and own.is_file() and _read_json(own) != vocabularies:
            result.status, result.reason = (
                "skipped",
                f"its vocabularies.json differs from {reference.name}'s: rows would be encoded differently",
            )
            result.tolerance, result.n_rows = None, 0
            results[p.entry.name] = result
            continue
        try:
            if p.kind == "topk":
                result.max_abs_diff, result.n_rows, how = _check_topk(p, entries, splits, n, ref_p, url=url, protocol=protocol, say=say)
                result.reason = "; ".join(x for x in (how, p.note) if x)
            else:
                say(f"{p.entry.name}: {n} rows ({'raw-feature request' if p.kind == 'ensemble' else 'model tensors'})")
                if p.kind == "ensemble":
                    raw = raw if raw is not None else raw_request(splits.raw_test.take(np.arange(n)))
                    served = _infer(url, protocol, p.entry.name, raw, batch_size)
                else:
                    served = _infer(url, protocol, p.entry.name, tensors, batch_size)
                if served.shape != ref_p.shape:
                    raise InferenceError(f"model {p.entry.name!r} returned {served.size} probabilities for {n} rows")
                result.max_abs_diff = float(np.max(np.abs(served - ref_p)))
                result.auc = auc_score(labels, served)
        except ToolkitError as exc:  # a request the variant refuses or answers with NaN fails the variant, with the reason
            result.reason = "; ".join(x for x in (str(exc), p.note) if x)
            results[p.entry.name] = result
            continue
        auc = math.nan if result.auc is None else result.auc
        ok = tolerance.holds(max_abs_diff=result.max_abs_diff, auc=auc, reference_auc=ref_auc)
        result.status = "pass" if ok else "fail"
        if not ok:
            result.reason = "; ".join(x for x in (_why(tolerance, result.max_abs_diff, auc, ref_auc), result.reason) if x)
        results[p.entry.name] = result
    return results


def _check_topk(
    p: PlannedModel,
    entries: dict[str, ModelEntry],
    splits: Splits,
    n: int,
    ref_p: np.ndarray,
    *,
    url: str,
    protocol: Literal["http", "grpc"],
    say: Callable[[str], None],
) -> tuple[float, int, str]:
    """One top-K request: the user with the most of the first ``n`` test rows, those rows as candidates.

    Returns:
        (max |Δ| over the K positions of both the returned scores and the returned items'
        reference probabilities against the reference's K best, candidates sent, a note).

    Raises:
        InferenceError: the answer is malformed (ids and scores of different lengths, more than
            the candidates, an id that was not a candidate), or the request fails.
    """
    users = np.asarray(splits.raw_test.columns["user_id"][:n]).astype(str)
    values, counts = np.unique(users, return_counts=True)
    user = values[int(np.argmax(counts))]
    caps = [entries[s.model_name].config.max_batch_size for s in p.entry.config.ensemble_scheduling.step if s.model_name in entries]
    cap = min([c for c in caps if c > 0], default=None)
    index = np.flatnonzero(users == user)[:cap]
    items = [str(i) for i in splits.raw_test.columns["item_id"][index]]
    say(f"{p.entry.name}: user {user}'s {len(index)} candidates (top-K)")
    with InferenceClient(url, protocol=protocol, model_name=p.entry.name) as client:
        out = client.infer(raw_request(splits.raw_test.take(index)))
    ids = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(out[TOPK_OUTPUTS[0]]).reshape(-1)]
    scores = np.asarray(out[TOPK_OUTPUTS[1]], dtype=np.float64).reshape(-1)
    if len(ids) != len(scores) or not 1 <= len(ids) <= len(index):
        raise InferenceError(
            f"top-K ensemble {p.entry.name!r} returned {len(ids)} ids and {len(scores)} scores for {len(index)} candidates"
        )
    reference = dict(zip(items, ref_p[index].tolist(), strict=True))
    strangers = [i for i in ids if i not in reference]
    if strangers:
        raise InferenceError(f"top-K ensemble {p.entry.name!r} returned item ids {strangers[:5]} that were not among the candidates")
    best = np.sort(ref_p[index])[::-1][: len(ids)]
    diff = max(float(np.max(np.abs(scores - best))), float(np.max(np.abs(np.array([reference[i] for i in ids]) - best))))
    return diff, len(index), f"one request: user {user}'s {len(index)} test rows as candidates, top {len(ids)} compared"


def _why(tolerance: Tolerance, max_abs_diff: float, auc: float, reference_auc: float) -> str:
    if tolerance.kind == "max_abs_diff":
        return f"max |Δp| {max_abs_diff:.3g} > {tolerance.value:g}"
    return f"served AUC {auc:.6f} < {tolerance.value:g} × reference AUC {reference_auc:.6f} = {tolerance.value * reference_auc:.6f}"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None

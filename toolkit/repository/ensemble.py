"""Raw-feature ensembles: preprocess -> ranker (-> top-K postprocess), as Triton ensembles.

For a ranker model ``R`` (any variant: its config says which tensors it takes),
:func:`write_ensembles` writes four model folders:

=========================  ===========================  ======================================================
model                      kind                         does
=========================  ===========================  ======================================================
``<model>_preprocess``     Python backend, batches      raw BYTES features (:data:`RAW_INPUT_SPECS`) -> R's
                           like R                       inputs, with the checkpoint's vocabularies; numeric
                                                        values clipped to the training range and counted
                                                        (metric ``tritonrec_preprocess_clipped_values_total``)
``<model>_ensemble``       ``platform: "ensemble"``     preprocess -> R; returns R's ``probability`` [B, 1]
``<model>_postprocess``    Python backend,              one candidate list's ``item_id`` and ``probability``
                           ``max_batch_size: 0``        -> ``top_item_ids`` BYTES [K], ``top_scores`` FP32 [K]
``<model>_topk``           ``platform: "ensemble"``,    preprocess -> R -> postprocess: one request is one
                           ``max_batch_size: 0``        user's N candidates (N rows), answer its top K
=========================  ===========================  ======================================================

How the top-K ensemble fits Triton's ensemble rules (Triton docs, "Ensemble Models";
``ValidateEnsembleConfig`` in triton-inference-server/core ``src/ensemble_utils.cc``): an
ensemble has no ``dynamic_batching`` or ``instance_group``, and a composing model that
batches must allow at least the ensemble's ``max_batch_size`` (one with ``max_batch_size: 0``
is exempt). ``<model>_topk`` has ``max_batch_size: 0`` and declares full shapes (``[-1, 1]``,
genres ``[-1, -1]``), so the whole request is the candidate list. Triton compares a tensor
shared by a batching and a non-batching model on full shapes (``[-1] + dims`` of the
batching one, ``ValidateTensorConsistency``); the preprocess and the ranker therefore see
the N candidates as a batch of N rows, and the postprocess (``max_batch_size: 0``) sees
``item_id`` and ``probability`` as [N, 1]. The bundled Triton 2.51 loads this and answers
as described. A candidate list can hold at most the ranker's ``max_batch_size`` rows (Triton
refuses more: "inference request batch-size must be <= 256 for '<model>_preprocess'").

Every config is built from Triton's protobuf schema (``json_format.ParseDict``), written with
``text_format`` and parsed back before it counts as written. Each folder gets its
``tritonrec.json`` (:mod:`toolkit.repository.metadata`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from google.protobuf import json_format

from toolkit._io import atomic_write_text
from toolkit.data.features import FeatureEncoder
from toolkit.errors import DataError, RepositoryError
from toolkit.repository.config import (
    BatchingOptions,
    ModelConfig,
    build_model_config,
    config_tensor_specs,
    config_to_text,
    read_config,
    tensor_entry,
)
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.repository.raw_inputs import RAW_INPUT_SPECS
from toolkit.tensors import TensorSpec

__all__ = [
    "EnsembleModel",
    "RANKER_INPUTS",
    "RANKER_OUTPUT",
    "TOPK_OUTPUTS",
    "write_ensembles",
    "preprocess_config",
    "postprocess_config",
    "ensemble_config",
]

# The ranker tensors the preprocess model can produce (toolkit.models.signature.DLRM_INPUTS).
RANKER_INPUTS = ("dense_features", "sparse_ids", "multi_hot_ids")
RANKER_OUTPUT = "probability"
TOPK_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("top_item_ids", "object", (None,)),
    TensorSpec("top_scores", "float32", (None,)),
)


@dataclass(frozen=True)
class EnsembleModel:
    """One model folder written by :func:`write_ensembles`.

    Attributes:
        name: the model's name (its folder), e.g. ``dlrm_ensemble``.
        role: ``preprocess``, ``postprocess`` or ``ensemble`` (as in ``tritonrec.json``).
        config: the config written to ``<name>/config.pbtxt``.
    """

    name: str
    role: str
    config: ModelConfig


def python_model_source(file_name: str) -> bytes:
    """The text of ``toolkit/repository/python_models/<file_name>``, written as a Python-backend model's ``model.py``."""
    return resources.files("toolkit.repository").joinpath("python_models", file_name).read_bytes()


def ensemble_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    steps: Sequence[tuple[str, dict[str, str], dict[str, str]]],
    *,
    max_batch_size: int,
    version_policy: dict | None = None,
) -> ModelConfig:
    """A ``platform: "ensemble"`` config.

    Args:
        name: the ensemble's name.
        inputs, outputs: the ensemble's tensors, batch dimension first (dropped from ``dims``
            when ``max_batch_size > 0``, as for any model).
        steps: ``(model_name, input_map, output_map)`` in order; ``input_map`` maps the
            composing model's input name to an ensemble tensor, ``output_map`` its output name
            to an ensemble tensor (Triton's ``ensemble_scheduling.step``). Each step calls the
            model's latest version (``model_version: -1``).
        max_batch_size: the ensemble's; a composing model that batches may not have a smaller one
            (Triton exempts models with ``max_batch_size: 0``).
        version_policy: ``ModelVersionPolicy`` fields (e.g. ``{"latest": {"num_versions": 1}}``); default: Triton's.

    Returns:
        The config, without ``dynamic_batching`` or ``instance_group`` (Triton rejects both on an ensemble).
    """
    d = {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch_size,
        "input": [tensor_entry(s, max_batch_size) for s in inputs],
        "output": [tensor_entry(s, max_batch_size) for s in outputs],
        "ensemble_scheduling": {
            "step": [
                {"model_name": model, "model_version": -1, "input_map": dict(input_map), "output_map": dict(output_map)}
                for model, input_map, output_map in steps
            ]
        },
    }
    if version_policy is not None:
        d["version_policy"] = version_policy
    return json_format.ParseDict(d, ModelConfig())


def _ranker_tensors(ranker_config: ModelConfig) -> tuple[list[TensorSpec], TensorSpec]:
    """The ranker's inputs and its ``probability`` output; checks that the preprocess can feed it."""
    inputs, outputs = config_tensor_specs(ranker_config)
    where = f"ranker model {ranker_config.name!r}"
    unknown = [s.name for s in inputs if s.name not in RANKER_INPUTS]
    if unknown or not inputs:
        raise RepositoryError(
            f"{where}: inputs {[s.name for s in inputs]} are not tensors the preprocess model produces ({', '.join(RANKER_INPUTS)})",
            hint="ensembles need a ranker built by `tritonrec build` (or one with the same input names)",
        )
    probability = [s for s in outputs if s.name == RANKER_OUTPUT]
    if not probability:
        raise RepositoryError(
            f"{where}: has no output {RANKER_OUTPUT!r} (outputs: {[s.name for s in outputs]})",
            hint="ensembles call a ranker whose output is 'probability' [B, 1]",
        )
    return inputs, probability[0]


def _check_encoder_fits(encoder: dict, inputs: Sequence[TensorSpec], ranker: str) -> None:
    want = {
        "dense_features": len(encoder["dense_features"]),
        "sparse_ids": len(encoder["sparse_features"]),
        "multi_hot_ids": int(encoder["max_genres"]) * len(encoder["multi_hot_features"]),
    }
    wrong = [
        f"{s.name} has {s.shape[-1]} columns, the vocabularies give {want[s.name]}"
        for s in inputs
        if s.shape and s.shape[-1] is not None and s.shape[-1] != want[s.name]
    ]
    if wrong:
        raise RepositoryError(
            f"ranker model {ranker!r} does not fit the vocabularies: {'; '.join(wrong)}",
            hint="pass the vocabularies.json of the checkpoint the ranker was built from",
        )


def _python_model_options(options: BatchingOptions, max_batch_size: int) -> BatchingOptions:
    """``options`` for a pre/postprocess model: batching as given (off when ``max_batch_size`` is 0), on CPU.

    Keeps the dynamic batcher's delay and queue policy and the version policy; instances run on
    CPU (the work is Python dict look-ups and a sort), as many as the ranker's largest group;
    no accelerator, warmup or response cache.
    """
    batching = options.dynamic_batching and max_batch_size > 0
    return replace(
        options,
        max_batch_size=max_batch_size,
        dynamic_batching=batching,
        preferred_batch_sizes=[b for b in options.preferred_batch_sizes if b <= max_batch_size],
        instance_count=max(g.count for g in options.groups),
        instance_kind="KIND_CPU",
        instance_groups=[],
        queue_timeout_us=options.queue_timeout_us if batching else 0,
        queue_timeout_action=options.queue_timeout_action if batching else "REJECT",
        allow_timeout_override=options.allow_timeout_override if batching else False,
        max_queue_size=options.max_queue_size if batching else 0,
        response_cache=False,
        gpu_execution_accelerator=None,
        tensorrt_precision_mode="FP32",
        warmup_batch_sizes=[],
    )


def preprocess_config(name: str, ranker_config: ModelConfig, options: BatchingOptions, *, zip_prefix_len: int = 3) -> ModelConfig:
    """Config of the preprocess model feeding ``ranker_config``.

    Inputs: :data:`RAW_INPUT_SPECS` (``TYPE_STRING``: scalars [B, 1], ``genres`` [B, G]).
    Outputs: the ranker's inputs with their names, dtypes and dims. Batches like the ranker
    (its ``max_batch_size``); ``dynamic_batching``, ``preferred_batch_size`` and the instance
    count come from ``options``; instances always run on CPU (the work is Python dict look-ups).
    Parameters: ``zip_prefix_len`` and ``vocabularies`` (the file name in the version folder).

    Raises:
        RepositoryError: the ranker has inputs the preprocess cannot produce, or ``zip_prefix_len < 1``.
    """
    if zip_prefix_len < 1:
        raise RepositoryError(f"model {name!r}: zip_prefix_len must be >= 1, got {zip_prefix_len}")
    inputs, _ = _ranker_tensors(ranker_config)
    batching = _python_model_options(options, ranker_config.max_batch_size)
    return build_model_config(
        name,
        RAW_INPUT_SPECS,
        inputs,
        batching,
        backend="python",
        parameters={"zip_prefix_len": str(zip_prefix_len), "vocabularies": "vocabularies.json"},
    )


def postprocess_config(name: str, ranker_config: ModelConfig, options: BatchingOptions, *, top_k: int = 10) -> ModelConfig:
    """Config of the top-K postprocess model (``max_batch_size: 0``, one request = one candidate list).

    Inputs: ``item_id`` ``TYPE_STRING`` [-1, 1] and ``probability`` [-1, 1] with the ranker's dtype.
    Outputs: :data:`TOPK_OUTPUTS` (``top_item_ids`` ``TYPE_STRING`` [-1], ``top_scores`` FP32 [-1]).
    Parameter ``top_k``. Instance count from ``options``, on CPU.

    Raises:
        RepositoryError: ``top_k < 1``, or the ranker has no ``probability`` output.
    """
    if top_k < 1:
        raise RepositoryError(f"model {name!r}: top_k must be >= 1, got {top_k}")
    _, probability = _ranker_tensors(ranker_config)
    inputs = [TensorSpec("item_id", "object", (None, 1)), TensorSpec(RANKER_OUTPUT, probability.dtype, (None, *probability.shape[1:]))]
    batching = _python_model_options(options, 0)
    return build_model_config(name, inputs, TOPK_OUTPUTS, batching, backend="python", parameters={"top_k": str(top_k)})


def _write_model(
    repository: Path, config: ModelConfig, version: str, files: dict[str, bytes], metadata: ModelMetadata, role: str
) -> EnsembleModel:
    model_dir = repository / config.name
    version_dir = model_dir / version
    if version_dir.exists():
        raise RepositoryError(
            f"{version_dir} already exists; a version a server may be serving is never rewritten",
            hint="write into a new version folder (or a fresh staging folder)",
        )
    version_dir.mkdir(parents=True)
    for file_name, content in files.items():
        (version_dir / file_name).write_bytes(content)
    atomic_write_text(model_dir / "config.pbtxt", config_to_text(config))
    if read_config(model_dir / "config.pbtxt") != config:
        raise RepositoryError(f"{model_dir / 'config.pbtxt'} does not parse back to the config that was written")
    write_metadata(model_dir, metadata)
    return EnsembleModel(config.name, role, config)


def write_ensembles(
    repository: Path,
    *,
    model_name: str,
    ranker_config: ModelConfig,
    encoder: dict,
    options: BatchingOptions,
    top_k: int | None = 10,
    ranker_precision: str = "fp32",
    zip_prefix_len: int = 3,
    version: str = "1",
) -> list[EnsembleModel]:
    """Write the raw-feature ensembles of one ranker into ``repository``.

    Args:
        repository: folder to write into (the builder passes its staging folder). The ranker
            itself (``ranker_config.name``) is expected next to them; it is not written here.
        model_name: prefix of the folders: ``<model_name>_preprocess``, ``_ensemble``,
            ``_postprocess``, ``_topk``.
        ranker_config: the ranker's config; the preprocess produces exactly its inputs
            (names, dtypes, dims) and the ensembles batch as it does (its ``max_batch_size``).
        encoder: ``FeatureEncoder.to_dict()`` (a checkpoint's ``vocabularies.json``), copied
            into the preprocess model's version folder.
        options: batching and instance count of the preprocess model (see :func:`preprocess_config`).
        top_k: K of the ``_topk`` ensemble; ``None`` writes no postprocess and no ``_topk``.
        ranker_precision: the ranker's precision, recorded as the ensembles' (``tritonrec.json``).
        zip_prefix_len: characters of the zip code the model uses (as at training, default 3).
        version: version folder to write (``"1"``); it must not exist yet.

    Returns:
        The models written: preprocess, ensemble, then (with ``top_k``) postprocess and topk.

    Raises:
        RepositoryError: the vocabularies are malformed or do not fit the ranker's input
            widths; the ranker has tensors the preprocess cannot feed or no ``probability``;
            ``top_k < 1``; a bad ``model_name``; a version folder that already exists (checked before
            anything is written); a config that does not parse back.
    """
    repository = Path(repository)
    ranker = ranker_config.name
    if not model_name or not model_name.replace("_", "").replace("-", "").isalnum():
        raise RepositoryError(f"model name {model_name!r} must be letters, digits, '-' or '_'")
    try:
        FeatureEncoder.from_dict(encoder)
        missing = [k for k in ("sparse_features", "multi_hot_features", "dense_features") if k not in encoder]
        if missing:
            raise DataError(f"vocabularies: no field {', '.join(missing)}")
    except DataError as exc:
        raise RepositoryError(
            f"vocabularies for the ensembles of {ranker!r} are malformed: {exc}",
            hint="pass FeatureEncoder.to_dict() of the ranker's checkpoint (its vocabularies.json)",
        ) from exc
    ranker_inputs, probability = _ranker_tensors(ranker_config)
    _check_encoder_fits(encoder, ranker_inputs, ranker)
    if top_k is not None and top_k < 1:
        raise RepositoryError(f"top_k must be >= 1 (or None for no top-K ensemble), got {top_k}")
    mbs = ranker_config.max_batch_size
    policy = options.version_policy.to_dict()
    source = {"ranker": ranker, "zip_prefix_len": zip_prefix_len}

    pre_name, ens_name = f"{model_name}_preprocess", f"{model_name}_ensemble"
    pre = preprocess_config(pre_name, ranker_config, options, zip_prefix_len=zip_prefix_len)
    raw_names = [s.name for s in RAW_INPUT_SPECS]
    pre_step = (pre_name, {n: n for n in raw_names}, {s.name: s.name for s in ranker_inputs})
    ranker_step = (ranker, {s.name: s.name for s in ranker_inputs}, {RANKER_OUTPUT: RANKER_OUTPUT})
    ens = ensemble_config(ens_name, RAW_INPUT_SPECS, [probability], [pre_step, ranker_step], max_batch_size=mbs, version_policy=policy)
    vocabularies = (json.dumps(encoder, indent=2) + "\n").encode()
    # (config, files in the version folder, metadata, role); every config is built before anything is written.
    plan = [
        (
            pre,
            {"model.py": python_model_source("preprocess.py"), "vocabularies.json": vocabularies},
            ModelMetadata("preprocess", "preprocess", "fp32", "", dict(source)),
            "preprocess",
        ),
        (ens, {}, ModelMetadata("ensemble", "ensemble", ranker_precision, ranker, dict(source)), "ensemble"),
    ]
    if top_k is not None:
        post_name, topk_name = f"{model_name}_postprocess", f"{model_name}_topk"
        post = postprocess_config(post_name, ranker_config, options, top_k=top_k)
        post_step = (post_name, {"item_id": "item_id", RANKER_OUTPUT: RANKER_OUTPUT}, {s.name: s.name for s in TOPK_OUTPUTS})
        # max_batch_size 0: full shapes, the request's rows are the candidate list.
        topk = ensemble_config(
            topk_name, RAW_INPUT_SPECS, TOPK_OUTPUTS, [pre_step, ranker_step, post_step], max_batch_size=0, version_policy=policy
        )
        topk_source = dict(source, top_k=top_k)
        plan += [
            (
                post,
                {"model.py": python_model_source("postprocess.py")},
                ModelMetadata("postprocess", "postprocess", "fp32", "", dict(topk_source)),
                "postprocess",
            ),
            (topk, {}, ModelMetadata("ensemble", "topk", ranker_precision, ranker, topk_source), "ensemble"),
        ]
    existing = [str(repository / config.name / version) for config, *_ in plan if (repository / config.name / version).exists()]
    if existing:
        raise RepositoryError(
            f"{', '.join(existing)} already exist; a version a server may be serving is never rewritten",
            hint="write into a new version folder (or a fresh staging folder)",
        )
    return [_write_model(repository, config, version, files, metadata, role) for config, files, metadata, role in plan]

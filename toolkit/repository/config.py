"""Triton ``config.pbtxt`` files built and parsed with Triton's own protobuf schema.

Configs are assembled as dicts, converted with ``json_format.ParseDict`` into
``tritonclient.grpc.model_config_pb2.ModelConfig`` (which rejects unknown fields and
wrong types) and written with ``text_format`` — the same format Triton reads
(Triton docs, "Model Configuration"). No string templates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from toolkit.errors import RepositoryError
from toolkit.tensors import TensorSpec

__all__ = [
    "BatchingOptions",
    "InstanceGroup",
    "VersionPolicy",
    "ModelConfig",
    "build_model_config",
    "tensor_entry",
    "thread_parameter_keys",
    "config_to_text",
    "config_to_json",
    "retuned_config",
    "parse_config",
    "read_config",
    "config_tensor_specs",
    "check_config_against",
]

ModelConfig = model_config_pb2.ModelConfig


INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")
QUEUE_TIMEOUT_ACTIONS = ("REJECT", "DELAY")
GPU_EXECUTION_ACCELERATORS = ("tensorrt", "cuda")
TENSORRT_PRECISION_MODES = ("FP32", "FP16")
VERSION_POLICY_KINDS = ("latest", "all", "specific")


@dataclass
class InstanceGroup:
    """One ``instance_group`` entry: ``count`` model instances of one ``kind``.

    Attributes:
        kind: ``KIND_CPU`` or ``KIND_GPU``.
        count: instances of the model; for ``KIND_GPU`` that many *per listed GPU*
            (Triton docs, "Model Configuration", "Instance Groups").
        gpus: GPU ids the ``KIND_GPU`` instances go on; empty = every visible GPU. Not
            allowed with ``KIND_CPU`` (Triton refuses a CPU group that names GPUs).

    Raises:
        RepositoryError: an unknown kind, ``count < 1``, negative or repeated GPU ids, GPUs on a CPU group.
    """

    kind: str = "KIND_CPU"
    count: int = 1
    gpus: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in INSTANCE_KINDS:
            raise RepositoryError(f"instance_group kind must be KIND_CPU or KIND_GPU, got {self.kind!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise RepositoryError(f"instance_group count must be >= 1, got {self.count!r}")
        self.gpus = list(self.gpus)
        if self.gpus and self.kind != "KIND_GPU":
            raise RepositoryError(
                f"instance_group kind {self.kind} lists gpus {self.gpus}; only KIND_GPU groups name GPUs",
                hint="drop the gpus or make the group KIND_GPU",
            )
        bad = [g for g in self.gpus if isinstance(g, bool) or not isinstance(g, int) or g < 0]
        if bad or len(set(self.gpus)) != len(self.gpus):
            raise RepositoryError(f"instance_group gpus must be distinct GPU ids >= 0, got {self.gpus}")

    def to_dict(self) -> dict:
        """The ``ModelInstanceGroup`` fields as ``json_format.ParseDict`` takes them."""
        d: dict = {"count": self.count, "kind": self.kind}
        if self.gpus:
            d["gpus"] = list(self.gpus)
        return d


@dataclass
class VersionPolicy:
    """``version_policy``: which version folders Triton serves.

    Attributes:
        kind: ``latest`` (the ``num_versions`` highest versions), ``all``, or ``specific``
            (the listed ``versions``). Default: ``latest`` with ``num_versions=1`` (Triton's own
            default), so a rebuild that adds version N+1 serves N+1 and keeps N on disk.
        num_versions: for ``latest``, >= 1.
        versions: for ``specific``, distinct version numbers >= 1.

    Raises:
        RepositoryError: an unknown kind; ``num_versions < 1``; ``specific`` without versions;
            versions given for another kind.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in VERSION_POLICY_KINDS:
            raise RepositoryError(f"version_policy kind must be one of {', '.join(VERSION_POLICY_KINDS)}, got {self.kind!r}")
        self.versions = list(self.versions)
        if self.kind == "latest" and (
            isinstance(self.num_versions, bool) or not isinstance(self.num_versions, int) or self.num_versions < 1
        ):
            raise RepositoryError(f"version_policy latest num_versions must be >= 1, got {self.num_versions!r}")
        if self.kind == "specific":
            bad = [v for v in self.versions if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if not self.versions or bad or len(set(self.versions)) != len(self.versions):
                raise RepositoryError(
                    f"version_policy specific needs distinct versions >= 1, got {self.versions}",
                    hint="list the version folders to serve, e.g. versions [1, 2]",
                )
        elif self.versions:
            raise RepositoryError(f"version_policy {self.kind} takes no versions (got {self.versions}); use kind 'specific'")

    def to_dict(self) -> dict:
        """The ``ModelVersionPolicy`` as ``json_format.ParseDict`` takes it."""
        if self.kind == "latest":
            return {"latest": {"num_versions": self.num_versions}}
        if self.kind == "all":
            return {"all": {}}
        return {"specific": {"versions": list(self.versions)}}


def _coerce(value, cls, what: str):
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as exc:
            raise RepositoryError(f"{what}: {exc}") from exc
    raise RepositoryError(f"{what} must be a {cls.__name__} or a mapping of its fields, got {type(value).__name__}")


def _non_negative_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RepositoryError(f"{name} must be an integer >= 0, got {value!r}")


@dataclass
class BatchingOptions:
    """Batching, placement and serving options of one served model.

    Every default below is what ``tritonrec build`` writes when neither a CLI option nor a
    build file sets the field.

    Attributes:
        max_batch_size: largest batch Triton may form (``max_batch_size``); 0 turns
            batching off and makes every dim, batch included, explicit. Default 256.
        dynamic_batching: whether Triton's dynamic batcher combines requests. Default on.
        max_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``: how long a
            request may wait for others to join its batch. 100 µs keeps single-row latency
            nearly unchanged on CPU while letting concurrent requests merge.
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size``; each in [1, max_batch_size].
        instance_count: ``instance_group[0].count`` model instances (used when ``instance_groups`` is empty).
        instance_kind: ``KIND_CPU`` or ``KIND_GPU`` (used when ``instance_groups`` is empty).
        instance_groups: the full ``instance_group`` list; when non-empty it replaces
            ``instance_count``/``instance_kind`` (which are then ignored). CPU and GPU groups
            may be mixed (heterogeneous placement). Entries may be :class:`InstanceGroup` or
            mappings of its fields.
        queue_timeout_us: ``dynamic_batching.default_queue_policy.default_timeout_microseconds``:
            how long a request may wait in the queue before ``queue_timeout_action``; 0 = no timeout.
        queue_timeout_action: ``REJECT`` (answer with an error) or ``DELAY`` (keep the request,
            behind the others) for a timed-out request.
        allow_timeout_override: whether a request may set its own (shorter) queue timeout.
        max_queue_size: most requests the queue holds before new ones are rejected; 0 = unbounded.
            The four queue settings are written only when one differs from its default.
        version_policy: ``version_policy`` (default: latest 1); always written. A
            :class:`VersionPolicy` or a mapping of its fields.
        response_cache: ``response_cache { enable: true }``: Triton answers repeated identical
            requests from its cache (the server must be started with a cache, e.g.
            ``--cache-config local,size=...``). Default off.
        gpu_execution_accelerator: ``None`` (ONNX Runtime's default CUDA provider on GPU
            instances), ``"tensorrt"`` (ONNX Runtime's TensorRT execution provider) or
            ``"cuda"``, written to ``optimization.execution_accelerators.gpu_execution_accelerator``.
            Only for ``platform: onnxruntime_onnx`` models with a ``KIND_GPU`` instance group
            (onnxruntime backend docs, "Execution Accelerators").
        tensorrt_precision_mode: ``FP32`` (default) or ``FP16``: the TensorRT provider's
            ``precision_mode`` parameter; only with ``gpu_execution_accelerator="tensorrt"``.
        intra_op_threads, inter_op_threads: ONNX Runtime session threads (default 1 each; 0 lets
            ONNX Runtime pick). Written as backend ``parameters`` by :meth:`thread_parameters`.
        warmup_batch_sizes: batch sizes of the ``model_warmup`` samples the builder writes
            (see :mod:`toolkit.repository.warmup`); each in [1, max_batch_size] (just ``[1]``
            without batching). Default: none.

    Raises:
        RepositoryError: any field out of range, naming the field, the value and what was expected.
    """

    max_batch_size: int = 256
    dynamic_batching: bool = True
    max_queue_delay_us: int = 100
    preferred_batch_sizes: list[int] = field(default_factory=list)
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    instance_groups: list[InstanceGroup] = field(default_factory=list)
    queue_timeout_us: int = 0
    queue_timeout_action: str = "REJECT"
    allow_timeout_override: bool = False
    max_queue_size: int = 0
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    response_cache: bool = False
    gpu_execution_accelerator: str | None = None
    tensorrt_precision_mode: str = "FP32"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    warmup_batch_sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise RepositoryError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise RepositoryError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_us}")
        if self.instance_count < 1:
            raise RepositoryError(f"instance_group count must be >= 1, got {self.instance_count}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise RepositoryError(f"instance_group kind must be KIND_CPU or KIND_GPU, got {self.instance_kind!r}")
        self.instance_groups = [_coerce(g, InstanceGroup, f"instance_groups[{i}]") for i, g in enumerate(self.instance_groups)]
        self.version_policy = _coerce(self.version_policy, VersionPolicy, "version_policy")
        if self.dynamic_batching and self.max_batch_size == 0:
            raise RepositoryError(
                "dynamic_batching needs max_batch_size >= 1",
                hint="set --max-batch-size to 1 or more, or turn dynamic batching off",
            )
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise RepositoryError(
                f"preferred_batch_size {bad} must lie in [1, max_batch_size={self.max_batch_size}]",
                hint="lower the preferred batch sizes or raise --max-batch-size",
            )
        self._check_queue_policy()
        self._check_accelerator()
        for name in ("intra_op_threads", "inter_op_threads"):
            _non_negative_int(getattr(self, name), name)
        limit = max(self.max_batch_size, 1)
        bad = [b for b in self.warmup_batch_sizes if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= limit]
        if bad:
            raise RepositoryError(
                f"warmup batch sizes {bad} must lie in [1, {limit}]"
                + (
                    " (max_batch_size 0: a warmup request is one whole tensor)"
                    if self.max_batch_size == 0
                    else f" (max_batch_size={limit})"
                ),
                hint="lower the warmup batch sizes or raise --max-batch-size",
            )

    def _check_queue_policy(self) -> None:
        _non_negative_int(self.queue_timeout_us, "queue_timeout_us (default_timeout_microseconds)")
        _non_negative_int(self.max_queue_size, "max_queue_size")
        if self.queue_timeout_action not in QUEUE_TIMEOUT_ACTIONS:
            raise RepositoryError(f"queue_timeout_action must be REJECT or DELAY, got {self.queue_timeout_action!r}")
        if self.has_queue_policy and not self.dynamic_batching:
            raise RepositoryError(
                "a queue policy (queue_timeout_us, queue_timeout_action, allow_timeout_override, max_queue_size) "
                "is part of dynamic_batching, which is off",
                hint="turn dynamic batching on or drop the queue settings",
            )

    def _check_accelerator(self) -> None:
        if self.tensorrt_precision_mode not in TENSORRT_PRECISION_MODES:
            raise RepositoryError(f"tensorrt_precision_mode must be FP32 or FP16, got {self.tensorrt_precision_mode!r}")
        if self.gpu_execution_accelerator is None:
            if self.tensorrt_precision_mode != "FP32":
                raise RepositoryError(
                    f"tensorrt_precision_mode {self.tensorrt_precision_mode} needs gpu_execution_accelerator 'tensorrt'",
                    hint="set gpu_execution_accelerator to 'tensorrt' or drop the precision mode",
                )
            return
        if self.gpu_execution_accelerator not in GPU_EXECUTION_ACCELERATORS:
            raise RepositoryError(
                f"gpu_execution_accelerator must be one of {', '.join(GPU_EXECUTION_ACCELERATORS)} or unset, "
                f"got {self.gpu_execution_accelerator!r}"
            )
        if self.gpu_execution_accelerator != "tensorrt" and self.tensorrt_precision_mode != "FP32":
            raise RepositoryError(f"tensorrt_precision_mode applies to the 'tensorrt' accelerator, not {self.gpu_execution_accelerator!r}")
        if not any(g.kind == "KIND_GPU" for g in self.groups):
            raise RepositoryError(
                f"gpu_execution_accelerator {self.gpu_execution_accelerator!r} acts only on KIND_GPU instances, "
                "and every instance group is KIND_CPU",
                hint="add a KIND_GPU instance group (--target gpu) or drop the accelerator",
            )

    @property
    def groups(self) -> list[InstanceGroup]:
        """The ``instance_group`` entries written: ``instance_groups``, or one group of ``instance_count`` × ``instance_kind``."""
        return list(self.instance_groups) or [InstanceGroup(self.instance_kind, self.instance_count)]

    @property
    def has_queue_policy(self) -> bool:
        """Whether any queue setting differs from its default (and ``default_queue_policy`` is written)."""
        return bool(self.queue_timeout_us or self.queue_timeout_action != "REJECT" or self.allow_timeout_override or self.max_queue_size)

    def thread_parameters(self, *, platform: str | None = None, backend: str | None = None) -> dict[str, str]:
        """ONNX Runtime thread counts as backend ``parameters`` for a model of this platform/backend.

        The onnxruntime backend (``platform: onnxruntime_onnx`` or ``backend: onnxruntime``) reads
        ``intra_op_thread_count``/``inter_op_thread_count`` (onnxruntime backend docs); the
        toolkit's Python-backend runners read ``intra_op_threads``/``inter_op_threads``.
        """
        intra, inter = thread_parameter_keys(platform=platform, backend=backend)
        return {intra: str(self.intra_op_threads), inter: str(self.inter_op_threads)}


def thread_parameter_keys(*, platform: str | None = None, backend: str | None = None) -> tuple[str, str]:
    """The ``parameters`` keys of the intra-op and inter-op thread counts for a model of this platform/backend:
    the onnxruntime backend's ``intra_op_thread_count``/``inter_op_thread_count`` (onnxruntime backend
    docs), else the toolkit's Python-backend runners' ``intra_op_threads``/``inter_op_threads``."""
    if platform == "onnxruntime_onnx" or backend == "onnxruntime":
        return "intra_op_thread_count", "inter_op_thread_count"
    return "intra_op_threads", "inter_op_threads"


def _dims(spec: TensorSpec, max_batch_size: int) -> list[int]:
    shape = spec.shape[1:] if max_batch_size > 0 else spec.shape
    return [-1 if d is None else int(d) for d in shape]


def _triton_type(dtype: np.dtype) -> str:
    """``TYPE_*`` name of a numpy dtype; object/bytes/str arrays are Triton BYTES, spelled ``TYPE_STRING`` in a config."""
    name = np_to_triton_dtype(dtype)
    if name is None:
        raise RepositoryError(f"numpy dtype {dtype} has no Triton data type")
    return "TYPE_STRING" if name == "BYTES" else "TYPE_" + name


def tensor_entry(spec: TensorSpec, max_batch_size: int) -> dict:
    """A ``ModelInput``/``ModelOutput`` dict for ``spec``, in the form Triton accepts for its rank.

    With ``max_batch_size > 0`` the batch dimension is dropped: ``(B, 7)`` becomes ``dims: [7]``.
    A tensor of one value per row (``(B,)``, ONNX shape ``[N]``) has no dimension left, and
    Triton refuses a tensor without ``dims`` ("must specify 'dims'"); its form for it is
    ``dims: [1]`` with ``reshape { shape: [] }`` (Triton docs, "Model Configuration",
    "Reshape"): clients send and receive ``(B, 1)``, the model sees ``(B,)``. numpy
    object/bytes/str (Triton BYTES) are spelled ``TYPE_STRING`` as a config needs.

    Raises:
        RepositoryError: a scalar (rank 0) tensor without batching (``max_batch_size: 0``):
            Triton refuses empty reshapes there ("scalar tensors are not supported" for a
            non-batching model, checked on the Triton 2.51 server); or a dtype without a
            Triton data type.
    """
    dtype = spec.numpy_dtype
    if dtype.kind in "SU":
        dtype = np.dtype(object)
    entry: dict = {"name": spec.name, "data_type": _triton_type(dtype), "dims": _dims(spec, max_batch_size)}
    if not entry["dims"]:
        if max_batch_size == 0:
            raise RepositoryError(
                f"tensor {spec.describe()} is a scalar, and Triton serves no scalar tensor in a model without batching (max_batch_size 0)",
                hint="export the model with a batch dimension (shape [N]) and build it with --max-batch-size 1 or more",
            )
        entry["dims"] = [1]
        entry["reshape"] = {"shape": []}
    return entry


def _batcher_knobs(options: BatchingOptions) -> dict:
    """``dynamic_batching``'s queue delay and preferred batch sizes (the list only when it has entries)."""
    batching: dict = {"max_queue_delay_microseconds": options.max_queue_delay_us}
    if options.preferred_batch_sizes:
        batching["preferred_batch_size"] = list(options.preferred_batch_sizes)
    return batching


def _accelerator(options: BatchingOptions) -> dict:
    accelerator: dict = {"name": options.gpu_execution_accelerator}
    if options.gpu_execution_accelerator == "tensorrt":
        accelerator["parameters"] = {"precision_mode": options.tensorrt_precision_mode}
    return {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}


def build_model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    options: BatchingOptions,
    *,
    platform: str | None = None,
    backend: str | None = None,
    parameters: dict[str, str] | None = None,
    warmup: list[dict] | None = None,
) -> ModelConfig:
    """A ``ModelConfig`` for a model with the given tensors and batching.

    Args:
        name: the model's name (its folder in the repository).
        inputs, outputs: tensors with the batch dimension first (dropped from ``dims``
            when ``options.max_batch_size > 0``), of any rank Triton serves: a tensor of one
            value per row (``(B,)``, ONNX ``[N]``) is written ``dims: [1]`` with
            ``reshape { shape: [] }`` (see :func:`tensor_entry`). Object/bytes/str dtypes become
            ``TYPE_STRING``.
        options: batching, instance groups, queue policy, version policy, response cache,
            execution accelerator (see :class:`BatchingOptions`).
        platform: e.g. ``"onnxruntime_onnx"``; backend: e.g. ``"python"`` (one of the two).
        parameters: backend ``parameters`` as string key/values.
        warmup: ``model_warmup`` entries as dicts of ``ModelWarmup`` fields, e.g. as returned by
            :func:`toolkit.repository.warmup.write_warmup`.

    Raises:
        RepositoryError: neither or both of platform/backend; batching asked for a tensor
            without a dynamic batch dimension; a scalar tensor without batching (Triton serves
            none); an execution accelerator on a model that is not
            ``platform: onnxruntime_onnx``; warmup entries that are not ``ModelWarmup`` fields.
    """
    if (platform is None) == (backend is None):
        raise RepositoryError(f"model {name!r}: give exactly one of platform or backend")
    if options.max_batch_size > 0:
        fixed = [s.describe() for s in (*inputs, *outputs) if not s.has_dynamic_batch]
        if fixed:
            raise RepositoryError(
                f"model {name!r}: max_batch_size={options.max_batch_size} needs a dynamic first dimension, "
                f"but {', '.join(fixed)} has a fixed one",
                hint="build with --max-batch-size 0 or re-export the model with a dynamic batch dimension",
            )
    if options.gpu_execution_accelerator is not None and platform != "onnxruntime_onnx":
        runtime = f"platform {platform!r}" if platform is not None else f"backend {backend!r}"
        raise RepositoryError(
            f"model {name!r}: gpu_execution_accelerator {options.gpu_execution_accelerator!r} is an ONNX Runtime "
            f"execution provider, but the model runs on {runtime}",
            hint="set the accelerator only for the onnx variants (platform onnxruntime_onnx)",
        )
    try:
        entries = {
            kind: [tensor_entry(s, options.max_batch_size) for s in specs] for kind, specs in (("input", inputs), ("output", outputs))
        }
    except RepositoryError as exc:
        raise RepositoryError(f"model {name!r}: {exc}", hint=exc.hint) from exc
    d: dict = {
        "name": name,
        "version_policy": options.version_policy.to_dict(),
        "max_batch_size": options.max_batch_size,
        "input": entries["input"],
        "output": entries["output"],
        "instance_group": [g.to_dict() for g in options.groups],
    }
    if platform is not None:
        d["platform"] = platform
    if backend is not None:
        d["backend"] = backend
    if options.dynamic_batching:
        batching: dict = _batcher_knobs(options)
        if options.has_queue_policy:
            batching["default_queue_policy"] = {
                "timeout_action": options.queue_timeout_action,
                "default_timeout_microseconds": options.queue_timeout_us,
                "allow_timeout_override": options.allow_timeout_override,
                "max_queue_size": options.max_queue_size,
            }
        d["dynamic_batching"] = batching
    if options.response_cache:
        d["response_cache"] = {"enable": True}
    if options.gpu_execution_accelerator is not None:
        d["optimization"] = _accelerator(options)
    if parameters:
        d["parameters"] = {k: {"string_value": str(v)} for k, v in parameters.items()}
    config = json_format.ParseDict(d, ModelConfig())
    if warmup:
        for i, entry in enumerate(warmup):
            try:
                json_format.ParseDict(entry, config.model_warmup.add())
            except (json_format.ParseError, TypeError, AttributeError) as exc:
                raise RepositoryError(f"model {name!r}: model_warmup[{i}] is not a Triton ModelWarmup ({exc})") from exc
    return config


def retuned_config(
    base: ModelConfig,
    *,
    max_batch_size: int,
    instance_count: int,
    max_queue_delay_us: int,
    preferred_batch_sizes: Sequence[int],
    intra_op_threads: int,
    inter_op_threads: int,
) -> ModelConfig:
    """A copy of ``base`` with its batching, instance count and ONNX Runtime threads changed; the rest kept.

    The values are checked as :class:`BatchingOptions` checks them (the same messages) and
    written as :func:`build_model_config` writes them: ``max_batch_size``;
    ``instance_group[0].count`` (the group's kind and GPUs kept); ``dynamic_batching``'s
    ``max_queue_delay_microseconds`` and ``preferred_batch_size`` (switched on where ``base``
    had no dynamic batching; a queue policy and the batcher's other settings kept); the thread
    ``parameters`` under the keys of ``base``'s platform or backend
    (:func:`thread_parameter_keys`). Tensors, backend, version policy, warmup and everything
    else stay as they are. The copy is rebuilt with ``json_format.ParseDict`` (Triton's
    schema), like every config the toolkit writes. Used by ``tritonrec tune`` for its
    candidates and the config it writes.

    Raises:
        RepositoryError: ``base`` has ``max_batch_size: 0`` (its dims include the batch
            dimension, so batching cannot be switched on by the config alone); ``base`` has
            several instance groups (a heterogeneous placement: which count would change is not
            clear); a value out of range (naming the field, as :class:`BatchingOptions` does).
    """
    if base.max_batch_size == 0:
        raise RepositoryError(
            f"model {base.name!r} has max_batch_size 0: its dims include the batch dimension, so it cannot be tuned for batching",
            hint="build the model with --max-batch-size >= 1",
        )
    if len(base.instance_group) > 1:
        raise RepositoryError(
            f"model {base.name!r} has {len(base.instance_group)} instance groups (a heterogeneous placement); "
            "only the instance count of a single group can be changed",
            hint="tune a build with one instance group, then add the other groups with `tritonrec build --instance-group`",
        )
    options = BatchingOptions(
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        preferred_batch_sizes=list(preferred_batch_sizes),
        instance_count=instance_count,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
    )
    d = json_format.MessageToDict(base, preserving_proto_field_name=True)
    d["max_batch_size"] = options.max_batch_size
    group = dict(d["instance_group"][0]) if d.get("instance_group") else {}
    group["count"] = options.instance_count
    d["instance_group"] = [group]
    batching = {k: v for k, v in d.get("dynamic_batching", {}).items() if k != "preferred_batch_size"}
    d["dynamic_batching"] = batching | _batcher_knobs(options)
    threads = options.thread_parameters(platform=base.platform or None, backend=base.backend or None)
    d["parameters"] = d.get("parameters", {}) | {k: {"string_value": v} for k, v in threads.items()}
    return json_format.ParseDict(d, ModelConfig())


def config_to_json(config: ModelConfig) -> str:
    """The JSON of ``config`` that Triton's model-control API takes (``load_model(name, config=...)``,
    Triton docs "Model Repository Extension"): one line, field names as in ``config.pbtxt``."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)


def config_to_text(config: ModelConfig) -> str:
    """``config.pbtxt`` text of ``config``.

    ``max_batch_size: 0`` is proto3's default, so ``text_format`` omits it; Triton reads
    a missing field as 0, so the text still means the same (pytriton notes the same).
    """
    return text_format.MessageToString(config)


def parse_config(text: str, *, source: str = "config.pbtxt") -> ModelConfig:
    """Parse ``config.pbtxt`` text. Raises RepositoryError naming ``source`` and the parse error."""
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source}: not a valid Triton ModelConfig ({exc})") from exc


def read_config(path: Path) -> ModelConfig:
    """Read and parse a ``config.pbtxt`` file (see :func:`parse_config`)."""
    path = Path(path)
    if not path.is_file():
        raise RepositoryError(f"{path} does not exist")
    return parse_config(path.read_text(), source=str(path))


def _numpy_dtype(data_type: int, tensor: str) -> np.dtype:
    """numpy dtype of a config ``data_type``; ``TYPE_STRING`` (Triton BYTES) is ``object``."""
    name = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    converted = triton_to_np_dtype("BYTES" if name == "STRING" else name)
    if converted is None:
        raise RepositoryError(
            f"tensor {tensor!r}: data_type TYPE_{name} has no numpy dtype", hint="declare a concrete data_type such as TYPE_FP32"
        )
    return np.dtype(converted)


def config_tensor_specs(config: ModelConfig, *, as_model_sees: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of ``config`` as :class:`TensorSpec` with the batch dimension put back.

    Works for any config, ensembles included. ``TYPE_STRING`` tensors come back with dtype
    ``"object"`` (numpy's type for Triton BYTES).

    Args:
        as_model_sees: ``False`` (default): the shapes clients send and receive (``dims``),
            e.g. ``(B, 1)`` for ``dims: [1] reshape { shape: [] }``. ``True``: the shapes the
            model itself takes and returns (a tensor's ``reshape.shape`` where it has one:
            ``(B,)``), as compared with a model file.

    Raises:
        RepositoryError: a tensor's ``data_type`` has no numpy dtype (``TYPE_INVALID``).
    """

    def spec(t) -> TensorSpec:
        dtype = _numpy_dtype(t.data_type, t.name)
        values = t.reshape.shape if as_model_sees and t.HasField("reshape") else t.dims
        dims = tuple(None if d == -1 else int(d) for d in values)
        return TensorSpec(t.name, dtype.name, ((None,) + dims) if config.max_batch_size > 0 else dims)

    return [spec(t) for t in config.input], [spec(t) for t in config.output]


def check_config_against(config: ModelConfig, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Check that ``config`` declares exactly the model's tensors: names, dtypes, ranks and fixed dims.

    ``inputs``/``outputs`` are the model file's tensors (batch first); a config tensor with a
    ``reshape`` is compared by the shape the model sees (``reshape.shape``), so ``(B,)`` matches
    ``dims: [1] reshape { shape: [] }``.

    Raises:
        RepositoryError: one line per mismatch, each naming the model, the tensor and the fix.
    """
    got_in, got_out = config_tensor_specs(config, as_model_sees=True)
    problems: list[str] = []
    for kind, declared, actual in (("input", got_in, inputs), ("output", got_out, outputs)):
        want = {s.name: s for s in actual}
        have = {s.name: s for s in declared}
        for missing in want.keys() - have.keys():
            problems.append(f"{kind} {missing!r} of the model is not declared in the config")
        for extra in have.keys() - want.keys():
            problems.append(f"config declares {kind} {extra!r}, which the model does not have")
        for n in want.keys() & have.keys():
            a, c = want[n], have[n]
            if a.numpy_dtype != c.numpy_dtype:
                problems.append(f"{kind} {n!r}: config says {c.dtype}, the model takes {a.dtype}")
            if len(a.shape) != len(c.shape):
                problems.append(f"{kind} {n!r}: config rank {len(c.shape)} ({c.describe()}), model rank {len(a.shape)} ({a.describe()})")
            elif any(x is not None and y is not None and x != y for x, y in zip(a.shape, c.shape, strict=True)):
                problems.append(f"{kind} {n!r}: config shape {c.describe()}, model shape {a.describe()}")
    if problems:
        raise RepositoryError(f"model {config.name!r}: " + "; ".join(sorted(problems)))

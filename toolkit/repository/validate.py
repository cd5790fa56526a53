"""Validate a Triton model repository the way Triton would, before a server sees it.

:func:`validate_repository` reads every model folder of a repository and returns a list of
:class:`Finding` (model, field, what is wrong, how to fix it, severity); :func:`check_repository`
raises one :class:`~toolkit.errors.RepositoryError` listing every error (``tritonrec build``
runs it on its staged repository before installing anything; ``tritonrec validate`` prints
the list). The rules follow Triton's own checks (``triton-inference-server/core``:
``model_config_utils.cc`` ``ValidateModelConfig``/``ValidateEnsembleSchedulingConfig``/
``ValidateIOShape``, ``ensemble_utils.cc`` ``ValidateEnsembleConfig``, and
``backend_model_instance.cc`` ``GenerateWarmupData``) plus what a backend checks at load time
(an ONNX file's inputs and outputs):

Severity follows what the server does, checked rule by rule on the Triton 2.51 server
(``tests/integration/test_validate_agrees_with_triton.py`` loads a mutant repository in it):
an **error** is a model Triton refuses to load, or one whose every proper request it refuses;
a rule of ours stricter than Triton (the model loads and answers) is a **warning**.

* **config** -- ``config.pbtxt`` exists and parses as a ``ModelConfig`` (a folder without one
  is a warning where Triton completes the config from the model file, an error where it
  cannot); its ``name`` is the folder's; it names a platform or backend (a warning where Triton
  picks the backend from ``model.<ext>``); every tensor has a ``name``, ``data_type`` and
  ``dims`` (each >= 1 or -1; a tensor declared twice is a warning: Triton loads it).
* **backend** -- the backend it names, its platform's, or the one its model file implies is
  installed on the :class:`ServingTarget` (default: the server ``tritonrec serve`` starts here).
  A backend only the stock container has (``onnxruntime_onnx``/``tensorrt_plan`` on the bundled
  server) is a warning naming the server and the container, unless the target is strict; an
  unknown platform or backend name is an error with the closest known name.
* **versions** -- at least one numeric version folder; every version a ``specific``
  ``version_policy`` lists exists (an error only when none does; Triton serves the others);
  each served version holds the model file (``model.onnx`` for ``onnxruntime_onnx``,
  ``model.plan`` for ``tensorrt_plan``, ``model.py`` for the Python backend, ``model.pt`` for
  ``pytorch_libtorch``, or ``default_model_filename``; the ONNX file and its external data for
  the toolkit's ONNX-in-Python rankers).
* **model file** -- an ONNX model's inputs and outputs match the config: names, dtypes, ranks,
  fixed dims (by the shape the model sees: ``reshape.shape`` where the tensor has one); a
  variable batch dimension when ``max_batch_size > 0``; ``dims`` that do not repeat the batch
  dimension; its external data files exist. Python-backend models run arbitrary code, so their
  tensors cannot be read from a file in general and this check is skipped for them -- except
  for the toolkit's own ONNX-in-Python rankers (``tritonrec.json`` role ``ranker`` with a
  ``model.onnx`` next to ``model.py``), whose runner feeds the config's tensors to that file
  (the Python backend does not check outputs, so output mismatches are warnings there).
  TensorRT plans go through :func:`_tensorrt_findings` (a plan that cannot be read here is a
  finding, never an exception).
* **batching** -- every ``preferred_batch_size`` lies in [1, ``max_batch_size``]; KIND_CPU
  instance groups name no GPUs.
* **ensembles** -- no ``dynamic_batching``, ``sequence_batching``, ``instance_group``,
  ``optimization`` or ``model_warmup``; every step's model exists; ``input_map`` keys are inputs
  and ``output_map`` keys outputs of the composing model, and every (non-optional) input of it
  is mapped; every ``input_map`` value is an ensemble input or a step's output; each tensor is
  written by one step only; every ensemble output is produced by some step, every ensemble
  input and every intermediate tensor is used; the steps form no cycle; dtypes and shapes agree
  between producer and consumer (Triton's rule: equal with ``-1`` as a wildcard, compared again
  with the batch dimension put back for a non-batching model); a composing model's
  ``max_batch_size`` is 0 or >= the ensemble's.
* **model_warmup** -- inputs are the model's, with its dtypes and fixed dims; every
  ``input_data_file`` exists under ``<model>/warmup/`` and holds the bytes its dims and dtype
  imply; ``batch_size`` within ``max_batch_size``.

This module is torch-free (numpy, onnx and protobuf; tritonclient only where :meth:`ServingTarget.default`
looks for the local server), so serving and perf may use it.
"""

from __future__ import annotations

import difflib
import re
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from toolkit.errors import ExportError, RepositoryError, ServingError
from toolkit.repository.config import ModelConfig, check_config_against
from toolkit.repository.metadata import read_metadata
from toolkit.repository.versions import model_folders, model_versions
from toolkit.repository.warmup import WARMUP_FOLDER, warmup_byte_size

__all__ = ["Finding", "ServingTarget", "STOCK_CONTAINER", "validate_repository", "check_repository"]

Severity = Literal["error", "warning"]
ENSEMBLE_PLATFORM = "ensemble"
_DT = model_config_pb2.DataType

STOCK_CONTAINER = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"
#: Backends of the stock Triton container: the backends the Triton project supports and tests with
#: each release (``triton-inference-server/backend`` README, "Where can I find all the backends").
STOCK_BACKENDS = frozenset({"tensorrt", "onnxruntime", "tensorflow", "pytorch", "openvino", "python", "dali", "fil"})
#: Backends that ship in containers of their own, not in the stock one.
OTHER_CONTAINERS = {
    "vllm": "nvcr.io/nvidia/tritonserver:<yy.mm>-vllm-python-py3",
    "tensorrtllm": "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3",
}
#: The platforms Triton knows and the backend each runs on (``triton-inference-server/core``,
#: ``constants.h`` and ``backend_model.cc``); any other ``platform`` without a ``backend`` is refused
#: ("unexpected platform type", checked on the Triton 2.51 server).
PLATFORM_BACKENDS = {
    "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
}
#: Model files from which Triton picks the backend of a config that names none (and completes a
#: missing config): ``model.<backend's file type>``, in this order of precedence (observed on the
#: Triton 2.51 server: a version folder with ``model.onnx`` and ``model.py`` is run by onnxruntime,
#: one with ``model.pt`` and ``model.py`` by pytorch, ``model.plan`` wins over ``model.onnx``).
_FILE_BACKENDS = {
    "model.savedmodel": "tensorflow",
    "model.graphdef": "tensorflow",
    "model.plan": "tensorrt",
    "model.onnx": "onnxruntime",
    "model.pt": "pytorch",
    "model.py": "python",
}
#: Backends that read a model's inputs and outputs from its file when its config lacks them.
_SELF_DESCRIBING_BACKENDS = frozenset({"onnxruntime", "tensorrt", "tensorflow"})


@dataclass(frozen=True)
class ServingTarget:
    """The Triton server a repository is validated for: which backends it has.

    A model is refused by a server without its backend ("unable to find backend library for
    backend 'X'"), so a backend or platform is checked against the target's backends. Triton
    looks for backend ``B`` as ``<model>/<version>/libtriton_B.so``, ``<model>/libtriton_B.so``,
    then ``<backend directory>/B/libtriton_B.so`` (``triton-inference-server/backend`` README,
    "Backend Shared Library"); a Python-based backend is ``<backend directory>/B/model.py``.

    Attributes:
        name: the server in words, for findings ("the bundled Triton server (nvidia-pytriton 0.7.0)").
        backends: backend names it has.
        strict: what a backend the stock container has but this server lacks is: an error
            (``True``: the repository must load on this server) or a warning (``False``, the
            default target: a CPU build includes ``onnxruntime_onnx``/``tensorrt_plan`` models on
            purpose, for the stock container). A name no server knows is an error either way.
    """

    name: str
    backends: frozenset[str]
    strict: bool = False

    @classmethod
    def from_backend_directory(cls, path: Path, *, name: str | None = None, strict: bool = True) -> ServingTarget:
        """The server whose ``--backend-directory`` is ``path``: each subfolder ``B`` holding
        ``libtriton_B.so`` (or ``model.py``, a Python-based backend) is a backend.

        Raises:
            RepositoryError: ``path`` is not a folder.
        """
        path = Path(path)
        if not path.is_dir():
            raise RepositoryError(f"backend directory {path} is not a folder", hint="pass the server's --backend-directory")
        backends = frozenset(
            d.name for d in path.iterdir() if d.is_dir() and ((d / f"libtriton_{d.name}.so").is_file() or (d / "model.py").is_file())
        )
        return cls(name or f"the Triton server with backends in {path}", backends, strict)

    @classmethod
    def stock_container(cls) -> ServingTarget:
        """The stock container ``nvcr.io/nvidia/tritonserver:<yy.mm>-py3`` (:data:`STOCK_BACKENDS`), strictly."""
        return cls(f"the stock container {STOCK_CONTAINER}", STOCK_BACKENDS, strict=True)

    @classmethod
    def default(cls, *, strict: bool = False) -> ServingTarget:
        """The server ``tritonrec serve`` would start here (``tritonserver`` on PATH, else the bundled one),
        read from its backends folder without starting or installing anything.

        Where no server is installed (or its backends folder is unknown), the stock container's
        backends, never strictly: only names no Triton server knows are errors then.
        """
        from toolkit.repository.server_backends import default_server_backends  # noqa: PLC0415

        try:
            name, directory = default_server_backends()
        except ServingError as exc:
            return cls(f"the stock container {STOCK_CONTAINER} (no Triton server here: {exc})", STOCK_BACKENDS, strict=False)
        if directory is None or not directory.is_dir():
            return cls(f"{name} (its backends folder is unknown; assumed the stock container's)", STOCK_BACKENDS, strict=False)
        return cls.from_backend_directory(directory, name=name, strict=strict)


@dataclass(frozen=True)
class Finding:
    """One problem in a repository.

    Attributes:
        model: the model folder's name (``""`` for the repository itself).
        field: where in the model: a config field (``dynamic_batching.preferred_batch_size``,
            ``input[sparse_ids].dims``, ``ensemble_scheduling.step[1].input_map[x]``) or a file
            (``config.pbtxt``, ``1/model.onnx``, ``warmup/row_0_x.bin``).
        message: what is wrong, with the values involved.
        fix: what to change.
        severity: ``error`` (Triton refuses the model, or it fails at run time) or ``warning``
            (it loads, but probably not as meant).
    """

    model: str
    field: str
    message: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.model}: {self.field}" if self.model else self.field
        return f"[{self.severity}] {where}: {self.message} (fix: {self.fix})"


@dataclass
class _Model:
    name: str
    path: Path
    config: ModelConfig | None  # None when config.pbtxt is missing or does not parse
    versions: list[int]


# -- small helpers -----------------------------------------------------------------------------


def _dtype_name(data_type: int) -> str:
    return _DT.Name(data_type) if data_type in _DT.values() else str(data_type)


def _dims(values: Iterable[int]) -> list[int]:
    return [int(d) for d in values]


def _full(dims: list[int], batching: bool) -> list[int]:
    return ([-1] + dims) if batching else list(dims)


def _dims_match(a: list[int], b: list[int]) -> bool:
    """Triton's ``CompareDimsWithWildcard``: same rank, and equal where neither is -1."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _onnx_numpy_to_config(dtype: np.dtype) -> int | None:
    from tritonclient.utils import np_to_triton_dtype

    name = np_to_triton_dtype(dtype)
    if name is None:
        return None
    return _DT.Value("TYPE_STRING" if name == "BYTES" else "TYPE_" + name)


def _served_versions(config: ModelConfig, versions: list[int]) -> list[int]:
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return list(versions)
    if kind == "specific":
        return [v for v in versions if v in set(policy.specific.versions)]
    n = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return sorted(versions)[-n:]


def _model_file(config: ModelConfig) -> str | None:
    """The file Triton loads from a version folder, or None when it cannot be told (custom backend, ensemble)."""
    if config.default_model_filename:
        return config.default_model_filename
    platform, backend = config.platform, config.backend
    if platform == "onnxruntime_onnx" or backend == "onnxruntime":
        return "model.onnx"
    if platform == "tensorrt_plan" or backend == "tensorrt":
        return "model.plan"
    if backend == "python":
        return "model.py"
    if platform == "pytorch_libtorch" or backend == "pytorch":
        return "model.pt"
    return None


# -- the rules -----------------------------------------------------------------------------------


def _read_model(model_dir: Path) -> tuple[_Model, list[Finding]]:
    name = model_dir.name
    findings: list[Finding] = []
    versions = model_versions(model_dir)
    config_path = model_dir / "config.pbtxt"
    config: ModelConfig | None = None
    if not config_path.is_file():
        findings.append(_missing_config_finding(model_dir, versions))
    else:
        try:
            config = text_format.Parse(config_path.read_text(encoding="utf-8"), ModelConfig())
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            findings.append(_parse_finding(name, str(exc)))
    return _Model(name, model_dir, config, versions), findings


def _implied_backend(model_dir: Path, versions: list[int]) -> tuple[str, str] | None:
    """``(version/file, backend)``: the backend Triton picks for a model whose config names none, from
    the first version folder holding a ``model.<ext>`` file (by :data:`_FILE_BACKENDS` precedence);
    ``None`` when no version folder has one (Triton: "Could not determine backend")."""
    for v in sorted(versions):
        for file, backend in _FILE_BACKENDS.items():
            if (model_dir / str(v) / file).exists():
                return f"{v}/{file}", backend
    return None


def _missing_config_finding(model_dir: Path, versions: list[int]) -> Finding:
    """A model folder without ``config.pbtxt``.

    Triton (auto-complete on, its default) then builds the config from the model file, so the
    model loads (checked on the Triton 2.51 server): a warning where the backend reads the
    tensors from the file (ONNX Runtime, TensorRT, TensorFlow) or the Python model defines
    ``auto_complete_config``; an error where the config would have no inputs (the model loads,
    but every request is refused) or no model file names a backend (Triton refuses the folder).
    """
    name = model_dir.name
    implied = _implied_backend(model_dir, versions)
    if implied is None:
        return Finding(
            name,
            "config.pbtxt",
            f"the model folder has no config.pbtxt, and no model file Triton could build one from ({', '.join(_FILE_BACKENDS)})",
            "write a config.pbtxt (`tritonrec build` does)",
        )
    rel, backend = implied
    completes = backend in _SELF_DESCRIBING_BACKENDS or (
        backend == "python" and "def auto_complete_config" in (model_dir / rel).read_text(encoding="utf-8", errors="replace")
    )
    if completes:
        return Finding(
            name,
            "config.pbtxt",
            f"no config.pbtxt: Triton completes one from {rel} (backend {backend}), with its default batching and instances; "
            "a server started with --disable-auto-complete-config refuses the model",
            "write the config.pbtxt you mean (`tritonrec build` does)",
            "warning",
        )
    return Finding(
        name,
        "config.pbtxt",
        f"no config.pbtxt: Triton loads {rel} (backend {backend}) with a config it cannot complete (no inputs or outputs), "
        "so every request is refused",
        "write a config.pbtxt declaring the inputs and outputs (`tritonrec build` does)",
    )


def _parse_finding(name: str, error: str) -> Finding:
    """A finding for a config that does not parse; scheduler clashes get their own words.

    ``dynamic_batching``, ``sequence_batching`` and ``ensemble_scheduling`` are one protobuf
    ``oneof`` (``scheduling_choice``): a config with two of them does not parse at all.
    """
    clash = re.search(r'Field "(\w+)" is specified along with field "(\w+)", another member of oneof "scheduling_choice"', error)
    if clash:
        first, second = clash.groups()
        if "ensemble_scheduling" in (first, second):
            other = second if first == "ensemble_scheduling" else first
            return Finding(
                name,
                other,
                f"an ensemble has no {other} of its own (its steps' models batch); {other} and ensemble_scheduling "
                "are alternatives in Triton's schema, so the config does not even parse",
                f"remove {other} from the ensemble's config",
            )
        return Finding(
            name, second, f"{first} and {second} are alternatives (oneof scheduling_choice); the config does not parse", "keep one"
        )
    return Finding(name, "config.pbtxt", f"not a valid Triton ModelConfig: {error}", "correct the field named in the message")


def _config_findings(m: _Model) -> list[Finding]:
    c, name = m.config, m.name
    assert c is not None
    out: list[Finding] = []
    if c.name and c.name != name:
        out.append(
            Finding(name, "name", f"the config is named {c.name!r}, but its folder is {name!r}", f'set name: "{name}" or rename the folder')
        )
    ensemble = c.platform == ENSEMBLE_PLATFORM
    if not ensemble and not c.platform and not c.backend:
        implied = _implied_backend(m.path, m.versions)
        if implied is not None:
            rel, backend = implied
            out.append(
                Finding(
                    name,
                    "backend",
                    f"the config names neither a platform nor a backend; Triton picks backend {backend!r} from {rel}",
                    f'set backend: "{backend}" to say so',
                    "warning",
                )
            )
        else:
            out.append(
                Finding(
                    name,
                    "platform",
                    "the config names neither a platform nor a backend, and no model file tells Triton which "
                    f"({', '.join(_FILE_BACKENDS)})",
                    'set e.g. platform: "onnxruntime_onnx" or backend: "python"',
                )
            )
    if ensemble and c.backend:
        out.append(Finding(name, "backend", f"an ensemble has no backend, got {c.backend!r}", "remove backend"))
    if c.max_batch_size < 0:
        out.append(Finding(name, "max_batch_size", f"max_batch_size is {c.max_batch_size}", "use 0 (no batching) or a positive batch size"))
    for kind, tensors in (("input", c.input), ("output", c.output)):
        seen: set[str] = set()
        for t in tensors:
            where = f"{kind}[{t.name}]"
            if not t.name:
                out.append(Finding(name, kind, f"an {kind} has no name", "name every tensor as the model does"))
            elif t.name in seen:
                out.append(
                    Finding(
                        name,
                        where,
                        f"{kind} {t.name!r} is declared twice"
                        + (
                            " (Triton then wants one more input than a request can carry, and refuses every request)"
                            if kind == "input"
                            else ""
                        ),
                        "declare each tensor once",
                    )
                )
            seen.add(t.name)
            if t.data_type == _DT.TYPE_INVALID:
                out.append(Finding(name, f"{where}.data_type", "no data_type", "set the tensor's data_type, e.g. TYPE_FP32"))
            if len(t.dims) == 0:
                out.append(
                    Finding(
                        name,
                        f"{where}.dims",
                        "no dims (Triton needs at least one)",
                        "declare the per-row shape, e.g. dims: [1] with reshape { shape: [] }",
                    )
                )
            bad = [d for d in t.dims if d < 1 and d != -1]
            if bad:
                out.append(
                    Finding(
                        name, f"{where}.dims", f"dims {_dims(t.dims)} hold {bad}", "use sizes >= 1, or -1 for a variable-size dimension"
                    )
                )
    if c.HasField("dynamic_batching") and not ensemble:
        bad = [int(b) for b in c.dynamic_batching.preferred_batch_size if not 1 <= b <= c.max_batch_size]
        if bad:
            out.append(
                Finding(
                    name,
                    "dynamic_batching.preferred_batch_size",
                    f"preferred_batch_size {bad} outside [1, max_batch_size={c.max_batch_size}]",
                    f"keep preferred batch sizes between 1 and {c.max_batch_size}, or raise max_batch_size",
                )
            )
        if c.max_batch_size == 0:
            out.append(
                Finding(
                    name,
                    "dynamic_batching",
                    "dynamic_batching on a model with max_batch_size 0 batches nothing",
                    "set max_batch_size >= 1 or remove dynamic_batching",
                    "warning",
                )
            )
    for i, g in enumerate(c.instance_group):
        if g.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and len(g.gpus):
            out.append(
                Finding(
                    name, f"instance_group[{i}].gpus", f"a KIND_CPU group lists gpus {list(g.gpus)}", "drop gpus or make the group KIND_GPU"
                )
            )
    return out


def _version_findings(m: _Model) -> list[Finding]:
    c, name = m.config, m.name
    assert c is not None
    out: list[Finding] = []
    if not m.versions:
        out.append(Finding(name, "versions", "no numeric version folder (1/, 2/, ...)", "put the model files into a folder named 1"))
        return out
    if c.version_policy.WhichOneof("policy_choice") == "specific":
        listed = [int(v) for v in c.version_policy.specific.versions]
        missing = [v for v in listed if v not in m.versions]
        if missing:
            # Triton serves the listed versions that exist, and refuses the model only when none does.
            none_left = len(missing) == len(listed)
            out.append(
                Finding(
                    name,
                    "version_policy.specific.versions",
                    f"versions {missing} are listed but have no folder (the model has {m.versions})"
                    + ("; Triton needs at least one version under the policy" if none_left else "; Triton serves the others"),
                    "list only existing versions, or add their folders",
                    "error" if none_left else "warning",
                )
            )
    filename = _model_file(c)
    if filename is not None:
        for v in _served_versions(c, m.versions):
            if not (m.path / str(v) / filename).exists():
                runtime = f"platform {c.platform}" if c.platform else f"backend {c.backend}"
                out.append(
                    Finding(name, f"{v}/{filename}", f"version {v} has no {filename}, which {runtime} loads", f"put {filename} into {v}/")
                )
    return out


_OnnxTensor = tuple[str, np.dtype | None, list[int | None] | None]


def _read_onnx_io(path: Path) -> tuple[list[_OnnxTensor], list[_OnnxTensor], list[str]]:
    """``(name, numpy dtype or None, dims or None)`` of the graph's inputs and outputs, without its weights,
    and the external data files its weights live in (relative to the file's folder).

    A symbolic or unknown dimension is ``None``; dims are ``None`` when the graph records no shape.
    """
    model = onnx.load_model(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    external = sorted(
        {
            entry.value
            for t in model.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL
            for entry in t.external_data
            if entry.key == "location"
        }
    )

    def describe(vi: onnx.ValueInfoProto) -> _OnnxTensor:
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:  # UNDEFINED or a type numpy lacks
            dtype = None
        if not tt.HasField("shape"):
            return vi.name, dtype, None
        return (
            vi.name,
            dtype,
            [int(d.dim_value) if d.WhichOneof("value") == "dim_value" and d.dim_value > 0 else None for d in tt.shape.dim],
        )

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [describe(v) for v in model.graph.output], external


def _onnx_findings(m: _Model, version: int, *, python_runner: bool = False) -> list[Finding]:
    """An ONNX file's tensors against the config (by the shape the model sees: ``reshape.shape`` where given).

    ``python_runner``: the file is run by the toolkit's ONNX Runtime runner in the Python backend,
    which (like the Python backend itself) does not compare outputs with the config: a request
    gets the file's outputs whatever the config says (checked on the Triton 2.51 server), so
    output dtype and shape mismatches are warnings there. The onnxruntime backend refuses them.
    """
    c, name = m.config, m.name
    assert c is not None
    rel = f"{version}/model.onnx"
    path = m.path / str(version) / "model.onnx"
    try:
        onnx_in, onnx_out, external = _read_onnx_io(path)
    except Exception as exc:
        return [Finding(name, rel, f"not a readable ONNX model: {type(exc).__name__}: {exc}", "re-export the model (`tritonrec export`)")]
    out: list[Finding] = []
    for data in external:
        if not (path.parent / data).is_file():
            out.append(
                Finding(
                    name,
                    f"{version}/{data}",
                    f"{rel} keeps its weights in {data}, which is missing: ONNX Runtime cannot load the model",
                    f"copy {data} next to model.onnx (an ONNX file and its external data travel together)",
                )
            )
    for kind, declared, actual in (("input", c.input, onnx_in), ("output", c.output, onnx_out)):
        have = {t.name: t for t in declared}
        want = {n: (dtype, dims) for n, dtype, dims in actual}
        for missing in [n for n in want if n not in have]:
            if kind == "output":
                continue  # Triton lets a config declare a subset of the outputs
            out.append(
                Finding(name, kind, f"{rel} takes input {missing!r}, which the config does not declare", f"declare input {missing!r}")
            )
        for t in declared:
            where = f"{kind}[{t.name}]"
            if t.name not in want:
                out.append(
                    Finding(
                        name,
                        where,
                        f"{rel} has no {kind} {t.name!r} (it has {sorted(want)})",
                        f"rename the {kind} to one of the model's, or remove it",
                    )
                )
                continue
            dtype, model_dims = want[t.name]
            unchecked = python_runner and kind == "output"
            expected = _onnx_numpy_to_config(dtype) if dtype is not None else None
            if expected is not None and t.data_type != expected:
                out.append(
                    Finding(
                        name,
                        f"{where}.data_type",
                        f"config says {_dtype_name(t.data_type)}, {rel} has {_dtype_name(expected)}"
                        + (
                            "; the Python backend returns the file's type, so clients get what the config does not say" if unchecked else ""
                        ),
                        f"set data_type: {_dtype_name(expected)}",
                        "warning" if unchecked else "error",
                    )
                )
            if model_dims is not None:  # an ONNX tensor without a recorded shape fits any dims
                dims = _dims(t.reshape.shape) if t.HasField("reshape") else _dims(t.dims)
                shape = _shape_findings(name, where, rel, dims, model_dims, c.max_batch_size)
                if unchecked:
                    shape = [
                        Finding(
                            f.model,
                            f.field,
                            f.message + "; the Python backend returns the file's shape, so clients get what the config does not say",
                            f.fix,
                            "warning",
                        )
                        for f in shape
                    ]
                out += shape
    return out


def _shape_findings(name: str, where: str, rel: str, dims: list[int], model_dims: list[int | None], max_batch_size: int) -> list[Finding]:
    batching = max_batch_size > 0
    shown = ["B" if d is None and i == 0 else ("?" if d is None else d) for i, d in enumerate(model_dims)]
    if batching:
        if not model_dims:
            return [
                Finding(
                    name,
                    where,
                    f"{rel} tensor is a scalar, but max_batch_size={max_batch_size} needs a batch dimension",
                    "set max_batch_size: 0",
                )
            ]
        first = model_dims[0]
        if first is not None:
            return [
                Finding(
                    name,
                    where,
                    f"{rel} has a fixed batch dimension of {first} (shape {shown}), but max_batch_size={max_batch_size} batches requests",
                    f"re-export with a dynamic batch dimension, or set max_batch_size: 0 and dims {[first, *dims]}",
                )
            ]
        if len(dims) == len(model_dims) and dims and dims[0] == -1:
            return [
                Finding(
                    name,
                    f"{where}.dims",
                    f"dims {dims} repeat the batch dimension: with max_batch_size={max_batch_size} Triton adds it, "
                    f"making the tensor rank {len(dims) + 1} while {rel} has rank {len(model_dims)} {shown}",
                    f"drop the leading -1: dims {dims[1:]}",
                )
            ]
        model_row = model_dims[1:]
    else:
        model_row = model_dims
    if len(dims) != len(model_row):
        full = _full(dims, batching)
        return [
            Finding(
                name,
                f"{where}.dims",
                f"config shape {full} (rank {len(full)}) does not match {rel}'s {shown} (rank {len(model_dims)})",
                f"declare dims {[-1 if d is None else d for d in model_row]}",
            )
        ]
    out: list[Finding] = []
    wrong = [(i, d, md) for i, (d, md) in enumerate(zip(dims, model_row, strict=True)) if md is not None and d != -1 and d != md]
    if wrong:
        out.append(
            Finding(
                name,
                f"{where}.dims",
                f"dims {dims} differ from {rel}'s {shown} at " + ", ".join(f"dim {i}: {d} vs {md}" for i, d, md in wrong),
                f"declare dims {[-1 if d is None else d for d in model_row]}",
            )
        )
    loose = [i for i, (d, md) in enumerate(zip(dims, model_row, strict=True)) if md is not None and d == -1]
    if loose:
        out.append(
            Finding(
                name,
                f"{where}.dims",
                f"dims {dims} are variable where {rel} is fixed ({shown}); requests of another size fail at run time",
                f"declare dims {[-1 if d is None else d for d in model_row]}",
                "warning",
            )
        )
    return out


def _tensorrt_findings(model_dir: Path, config: ModelConfig) -> list[Finding]:
    """Findings about a ``tensorrt_plan`` model's engines: bindings and optimization profile vs ``max_batch_size``.

    An engine can only be deserialized with TensorRT on a GPU (of the kind it was built for),
    so where :func:`toolkit.export.tensorrt.tensorrt_unavailable` gives a reason this returns
    one warning saying the engine was not inspected and why. Where TensorRT runs, each version's
    ``model.plan`` is compared with the config (names, dtypes, ranks of its I/O tensors) and goes
    through :func:`toolkit.export.tensorrt.plan_findings` (a profile whose max batch is below
    ``max_batch_size``, a fixed batch dimension, ...), one error per problem. A plan TensorRT
    cannot deserialize here (not a plan, or one built for another GPU or TensorRT version) is one
    finding for that version (:func:`_unreadable_plan_finding`), never an exception.
    TensorRT is imported only here, and only when a plan is present.
    """
    from toolkit.export.tensorrt import plan_findings, read_plan_io, tensorrt_unavailable  # noqa: PLC0415 (torch-free callers pay nothing)

    reason = tensorrt_unavailable()
    if reason is not None:
        return [
            Finding(
                model_dir.name,
                "model.plan",
                f"TensorRT engine not inspected here ({reason})",
                "run `tritonrec validate` on the GPU machine the plan was built for",
                "warning",
            )
        ]
    out: list[Finding] = []
    for version in sorted(d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit()):
        plan = version / (config.default_model_filename or "model.plan")
        if not plan.is_file():
            continue
        try:
            engine_io = read_plan_io(plan)
            problems = plan_findings(plan, config.max_batch_size)
        except ExportError as exc:  # not a plan, or one for another TensorRT version or GPU
            out.append(_unreadable_plan_finding(model_dir, version.name, plan, exc))
            continue
        try:
            check_config_against(config, *engine_io)
        except RepositoryError as exc:
            out.append(
                Finding(
                    model_dir.name,
                    "input/output",
                    f"version {version.name}: the config does not declare the engine's tensors: {exc}",
                    "rebuild the model with `tritonrec build --target gpu` (configs are written from the engine)",
                    "error",
                )
            )
        for problem in problems:
            out.append(
                Finding(
                    model_dir.name,
                    "max_batch_size",
                    f"version {version.name}: {problem}",
                    "rebuild the engine with `tritonrec build --target gpu` (its profile covers max_batch_size)",
                    "error",
                )
            )
    return out


def _unreadable_plan_finding(model_dir: Path, version: str, plan: Path, exc: ExportError) -> Finding:
    """A plan TensorRT cannot deserialize here: an error, unless its ``tensorrt_build.json`` says it was built
    for another GPU or TensorRT version (it may load there: a warning naming both)."""
    import json  # noqa: PLC0415

    built_for = None
    record = plan.parent / "tensorrt_build.json"
    try:
        info = json.loads(record.read_text())
        gpu = info.get("gpu", {})
        built_for = f"TensorRT {info.get('tensorrt_version', '?')} on {gpu.get('name', '?') if isinstance(gpu, dict) else gpu}"
    except (OSError, ValueError, AttributeError):
        pass
    here = None
    try:
        import tensorrt  # noqa: PLC0415  (present: tensorrt_unavailable() said so)

        from toolkit.export.tensorrt import gpu_info  # noqa: PLC0415

        here = f"TensorRT {tensorrt.__version__} on {gpu_info()['name']}"
    except Exception:  # noqa: BLE001 (only for the message)
        pass
    elsewhere = built_for is not None and here is not None and built_for != here
    return Finding(
        model_dir.name,
        f"{version}/{plan.name}",
        f"TensorRT cannot read this plan here: {exc}"
        + (f" (built for {built_for}; this machine has {here}: a plan runs only where it was built)" if elsewhere else ""),
        "validate and serve it on the GPU and TensorRT version it was built for"
        if elsewhere
        else "rebuild the engine (`tritonrec build --target gpu`)",
        "warning" if elsewhere else "error",
    )


def _warmup_findings(m: _Model) -> list[Finding]:
    c, name = m.config, m.name
    assert c is not None
    out: list[Finding] = []
    inputs = {t.name: t for t in c.input}
    for i, w in enumerate(c.model_warmup):
        base = f"model_warmup[{w.name or i}]"
        if w.batch_size == 0:
            out.append(Finding(name, f"{base}.batch_size", "batch_size 0: Triton skips this warmup", "set batch_size >= 1", "warning"))
        elif c.max_batch_size > 0 and w.batch_size > c.max_batch_size:
            out.append(
                Finding(
                    name,
                    f"{base}.batch_size",
                    f"batch_size {w.batch_size} exceeds max_batch_size {c.max_batch_size}",
                    f"use a warmup batch size <= {c.max_batch_size}",
                )
            )
        for missing in [n for n, t in inputs.items() if n not in w.inputs and not t.optional]:
            out.append(
                Finding(
                    name, f"{base}.inputs", f"no data for input {missing!r}; the warmup request would lack it", f"add input {missing!r}"
                )
            )
        for input_name, wi in w.inputs.items():
            where = f"{base}.inputs[{input_name}]"
            t = inputs.get(input_name)
            if t is None:
                out.append(
                    Finding(name, where, f"{input_name!r} is not an input of the model (it has {sorted(inputs)})", "remove it or rename it")
                )
                continue
            if wi.data_type != t.data_type:
                out.append(
                    Finding(
                        name,
                        f"{where}.data_type",
                        f"{_dtype_name(wi.data_type)}, but the input is {_dtype_name(t.data_type)}",
                        f"set data_type: {_dtype_name(t.data_type)}",
                    )
                )
            wdims, cdims = _dims(wi.dims), _dims(t.dims)
            if any(d < 1 for d in wdims):
                out.append(
                    Finding(
                        name, f"{where}.dims", f"dims {wdims}: Triton needs every warmup dimension fixed", "give the sample's actual shape"
                    )
                )
            elif not _dims_match(wdims, cdims):
                out.append(
                    Finding(
                        name,
                        f"{where}.dims",
                        f"dims {wdims} do not fit the input's dims {cdims}",
                        "give a sample shape that fits the input's dims",
                    )
                )
            choice = wi.WhichOneof("input_data_type")
            if choice is None:
                out.append(
                    Finding(
                        name,
                        where,
                        "no data: set one of zero_data, random_data or input_data_file",
                        "set input_data_file (see write_warmup)",
                    )
                )
            elif choice == "random_data" and wi.data_type in (_DT.TYPE_INT32, _DT.TYPE_INT64, _DT.TYPE_UINT32, _DT.TYPE_UINT64):
                out.append(
                    Finding(
                        name,
                        f"{where}.random_data",
                        "random integers are out of range for an id input (an embedding lookup fails)",
                        "warm up with real rows: toolkit.repository.warmup.write_warmup",
                        "warning",
                    )
                )
            elif choice == "input_data_file":
                out += _warmup_file_findings(m, where, wi)
    return out


def _warmup_file_findings(m: _Model, where: str, wi) -> list[Finding]:
    rel = f"{WARMUP_FOLDER}/{wi.input_data_file}"
    path = m.path / WARMUP_FOLDER / wi.input_data_file
    if not path.is_file():
        return [
            Finding(
                m.name,
                f"{where}.input_data_file",
                f"{rel} does not exist",
                f"write the file into {m.name}/{WARMUP_FOLDER}/ (write_warmup does)",
            )
        ]
    size = path.stat().st_size
    dims = _dims(wi.dims)
    if wi.data_type == _DT.TYPE_STRING:
        data = path.read_bytes()
        elements, offset = 0, 0
        while offset + 4 <= len(data):
            (length,) = struct.unpack_from("<I", data, offset)
            offset += 4 + length
            elements += 1
        expected = int(np.prod(dims, dtype=np.int64)) if all(d > 0 for d in dims) else None
        if offset != len(data) or (expected is not None and elements != expected):
            return [
                Finding(
                    m.name,
                    f"{where}.input_data_file",
                    f"{rel} is not {expected} BYTES elements, each a 4-byte little-endian length and its bytes",
                    "rewrite it with write_warmup",
                )
            ]
        return []
    try:
        need = warmup_byte_size(_dtype_name(wi.data_type), dims)
    except Exception:  # a data type without a numpy equivalent (TYPE_BF16)
        need = None
    if need is None:
        return []
    if size < need:
        return [
            Finding(
                m.name,
                f"{where}.input_data_file",
                f"{rel} has {size} bytes, but dims {dims} of {_dtype_name(wi.data_type)} need {need}",
                "rewrite the file from one sample row (write_warmup), or fix dims",
            )
        ]
    if size > need:
        return [
            Finding(
                m.name,
                f"{where}.input_data_file",
                f"{rel} has {size} bytes, more than the {need} that dims {dims} of {_dtype_name(wi.data_type)} use; "
                f"Triton reads only the first {need}",
                "write exactly one sample per file, or fix dims",
                "warning",
            )
        ]
    return []


# -- ensembles -------------------------------------------------------------------------------


@dataclass
class _Tensor:
    data_type: int
    dims: list[int]
    batching: bool
    origin: str  # "ensemble input", "step 0 (model x) output y", ...


def _consistency(model: str, field: str, tensor: str, producer: _Tensor, consumer: _Tensor) -> list[Finding]:
    out: list[Finding] = []
    if producer.data_type != consumer.data_type:
        out.append(
            Finding(
                model,
                field,
                f"tensor {tensor!r}: {_dtype_name(producer.data_type)} from {producer.origin}, "
                f"but {consumer.origin} takes {_dtype_name(consumer.data_type)}",
                "make both sides the same data_type (cast in the producing model)",
            )
        )
    if not _dims_match(producer.dims, consumer.dims) and not _dims_match(
        _full(producer.dims, producer.batching), _full(consumer.dims, consumer.batching)
    ):
        out.append(
            Finding(
                model,
                field,
                f"tensor {tensor!r}: shape {_full(producer.dims, producer.batching)} from {producer.origin}, "
                f"but {consumer.origin} takes {_full(consumer.dims, consumer.batching)}",
                "make the shapes agree (-1 matches any size)",
            )
        )
    return out


def _ensemble_findings(m: _Model, models: dict[str, _Model]) -> list[Finding]:
    c, name = m.config, m.name
    assert c is not None
    out: list[Finding] = []
    for fld in ("dynamic_batching", "sequence_batching", "optimization"):
        if c.HasField(fld):
            out.append(
                Finding(
                    name, fld, f"an ensemble has no {fld} of its own (its steps' models batch)", f"remove {fld} from the ensemble's config"
                )
            )
    if len(c.instance_group):
        out.append(
            Finding(name, "instance_group", "an ensemble has no instance_group (its steps' models have instances)", "remove instance_group")
        )
    if len(c.model_warmup):
        out.append(
            Finding(
                name, "model_warmup", "an ensemble cannot be warmed up (Triton refuses model_warmup on it)", "warm up the composing models"
            )
        )
    steps = list(c.ensemble_scheduling.step)
    if not steps:
        out.append(
            Finding(
                name, "ensemble_scheduling.step", "an ensemble needs at least one step", "add the steps (model_name, input_map, output_map)"
            )
        )
        return out

    batching = c.max_batch_size > 0

    def io_dims(t) -> list[int]:
        return _dims(t.reshape.shape) if t.HasField("reshape") else _dims(t.dims)

    ens_inputs = {t.name: _Tensor(t.data_type, io_dims(t), batching, "the ensemble input") for t in c.input}
    ens_outputs = {t.name: _Tensor(t.data_type, io_dims(t), batching, "the ensemble output") for t in c.output}
    produced: dict[str, tuple[int, _Tensor | None]] = {}  # tensor -> (step index, tensor as produced)
    consumed: dict[str, list[int]] = {}
    for i, step in enumerate(steps):
        sf = f"ensemble_scheduling.step[{i}]"
        if not step.model_name:
            out.append(Finding(name, f"{sf}.model_name", "the step names no model", "set model_name"))
        if not step.input_map:
            out.append(Finding(name, f"{sf}.input_map", "the step maps no input", "map the model's inputs to ensemble tensors"))
        if not step.output_map:
            out.append(Finding(name, f"{sf}.output_map", "the step maps no output", "map the model's outputs to ensemble tensors"))
        for value in step.input_map.values():
            consumed.setdefault(value, []).append(i)
        composing = models.get(step.model_name)
        cc = composing.config if composing is not None else None  # None: missing, or its config is broken (reported there)
        if step.model_name and composing is None:
            out.append(
                Finding(
                    name,
                    f"{sf}.model_name",
                    f"model {step.model_name!r} is not in the repository",
                    f"add model {step.model_name!r} or name an existing one ({', '.join(sorted(models)) or 'none'})",
                )
            )
        elif composing is not None and step.model_version > 0 and step.model_version not in composing.versions:
            out.append(
                Finding(
                    name,
                    f"{sf}.model_version",
                    f"model {step.model_name!r} has no version {step.model_version} (it has {composing.versions})",
                    "use -1 (latest) or an existing version",
                )
            )
        for key, value in step.output_map.items():
            if value in ens_inputs:
                out.append(
                    Finding(
                        name,
                        f"{sf}.output_map[{key}]",
                        f"writes {value!r}, which is an ensemble input",
                        "map the output to a new tensor name",
                    )
                )
            if value in produced:
                out.append(
                    Finding(
                        name,
                        f"{sf}.output_map[{key}]",
                        f"tensor {value!r} is already written by step {produced[value][0]}; a tensor appears in one output_map only",
                        "give the output another tensor name",
                    )
                )
                continue
            tensor = None
            if cc is not None:
                outputs = {t.name: t for t in cc.output}
                if key in outputs:
                    t = outputs[key]
                    tensor = _Tensor(t.data_type, _dims(t.dims), cc.max_batch_size > 0, f"step {i} ({step.model_name}) output {key!r}")
            produced[value] = (i, tensor)
        if cc is None:
            continue
        if cc.max_batch_size != 0 and cc.max_batch_size < c.max_batch_size:
            out.append(
                Finding(
                    name,
                    f"{sf}.model_name",
                    f"the ensemble allows max_batch_size {c.max_batch_size}, but model {step.model_name!r} only {cc.max_batch_size}",
                    f"lower the ensemble's max_batch_size to {cc.max_batch_size} or raise the model's",
                )
            )
        inputs = {t.name: t for t in cc.input}
        outputs = {t.name: t for t in cc.output}
        for key in step.input_map:
            if key not in inputs:
                out.append(
                    Finding(
                        name,
                        f"{sf}.input_map[{key}]",
                        f"model {step.model_name!r} has no input {key!r} (its inputs: {sorted(inputs)})",
                        "map one of the model's inputs",
                    )
                )
        for missing in [n for n, t in inputs.items() if n not in step.input_map and not t.optional]:
            out.append(
                Finding(
                    name,
                    f"{sf}.input_map",
                    f"input {missing!r} of model {step.model_name!r} is not mapped",
                    f"map {missing!r} to an ensemble tensor",
                )
            )
        for key in step.output_map:
            if key not in outputs:
                out.append(
                    Finding(
                        name,
                        f"{sf}.output_map[{key}]",
                        f"model {step.model_name!r} has no output {key!r} (its outputs: {sorted(outputs)})",
                        "map one of the model's outputs",
                    )
                )

    # where each consumed tensor comes from
    for i, step in enumerate(steps):
        for key, value in step.input_map.items():
            if value not in ens_inputs and value not in produced:
                out.append(
                    Finding(
                        name,
                        f"ensemble_scheduling.step[{i}].input_map[{key}]",
                        f"tensor {value!r} is neither an ensemble input ({sorted(ens_inputs)}) nor any step's output",
                        "map it to an ensemble input or to a tensor an earlier step writes",
                    )
                )
    for o in ens_outputs:
        if o not in produced:
            out.append(
                Finding(
                    name, f"output[{o}]", f"no step produces ensemble output {o!r}", f"map some step's output to {o!r} in its output_map"
                )
            )
    for i_name in ens_inputs:
        if i_name not in consumed:
            out.append(
                Finding(name, f"input[{i_name}]", f"ensemble input {i_name!r} is not used by any step", "map it into a step or remove it")
            )
    for value, (i, _) in produced.items():
        if value not in consumed and value not in ens_outputs:
            out.append(
                Finding(
                    name,
                    f"ensemble_scheduling.step[{i}].output_map",
                    f"tensor {value!r} is written but neither used by a step nor an ensemble output (Triton refuses unused tensors)",
                    "remove the mapping or use the tensor",
                )
            )
    out += _cycle_findings(name, steps, produced)

    # dtypes and shapes, producer -> every consumer (Triton's ValidateTensorConsistency)
    for i, step in enumerate(steps):
        cc = models[step.model_name].config if step.model_name in models else None
        if cc is None:
            continue
        inputs = {t.name: t for t in cc.input}
        for key, value in step.input_map.items():
            if key not in inputs:
                continue
            source = ens_inputs.get(value) or (produced[value][1] if value in produced else None)
            if source is None:
                continue
            t = inputs[key]
            consumer = _Tensor(t.data_type, _dims(t.dims), cc.max_batch_size > 0, f"step {i} ({step.model_name}) input {key!r}")
            out += _consistency(name, f"ensemble_scheduling.step[{i}].input_map[{key}]", value, source, consumer)
    for o, declared in ens_outputs.items():
        source = produced.get(o, (None, None))[1]
        if source is not None:
            out += _consistency(name, f"output[{o}]", o, source, declared)
    return out


def _cycle_findings(name: str, steps: list, produced: dict[str, tuple[int, _Tensor | None]]) -> list[Finding]:
    """Steps that (transitively) consume their own output: Triton's data flow never reaches them."""
    edges = {i: sorted({produced[v][0] for v in s.input_map.values() if v in produced}) for i, s in enumerate(steps)}
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done
    cycles: list[list[int]] = []

    def visit(i: int, stack: list[int]) -> None:
        state[i] = 1
        stack.append(i)
        for j in edges[i]:
            if state.get(j) == 1:
                cycles.append(stack[stack.index(j) :] + [j])
            elif j not in state:
                visit(j, stack)
        stack.pop()
        state[i] = 2

    for i in edges:
        if i not in state:
            visit(i, [])
    return [
        Finding(
            name,
            "ensemble_scheduling.step",
            "the steps form a cycle: " + " <- ".join(f"step {i} ({steps[i].model_name})" for i in cycle),
            "break the cycle: a step may only take ensemble inputs or outputs of steps that do not depend on it",
        )
        for cycle in cycles
    ]


# -- entry points --------------------------------------------------------------------------------


def _backend_findings(m: _Model, target: ServingTarget) -> list[Finding]:
    """The model's backend (named, implied by its platform, or picked from its model file) against ``target``.

    An unknown ``platform`` (without a ``backend``) is refused while Triton reads the config; a
    backend the serving Triton lacks is refused when the model loads ("unable to find backend
    library", both checked on the Triton 2.51 server). A backend the stock container has but
    ``target`` lacks is a warning unless ``target.strict``; a name no Triton server knows is an
    error with the closest known name.
    """
    c, name = m.config, m.name
    assert c is not None
    if c.platform == ENSEMBLE_PLATFORM:
        return []
    if c.backend:
        backend, field = c.backend, "backend"
    elif c.platform:
        if c.platform not in PLATFORM_BACKENDS:
            close = difflib.get_close_matches(c.platform, [*PLATFORM_BACKENDS, ENSEMBLE_PLATFORM], n=1)
            return [
                Finding(
                    name,
                    "platform",
                    f"Triton knows no platform {c.platform!r} (it knows {', '.join([*PLATFORM_BACKENDS, ENSEMBLE_PLATFORM])})"
                    + (f"; did you mean {close[0]!r}?" if close else ""),
                    f'set platform: "{close[0]}"' if close else "name one of Triton's platforms, or set backend instead",
                )
            ]
        backend, field = PLATFORM_BACKENDS[c.platform], "platform"
    else:
        implied = _implied_backend(m.path, m.versions)
        if implied is None:
            return []  # reported by _config_findings
        backend, field = implied[1], "backend"
    library = f"libtriton_{backend}.so"
    if backend in target.backends or any((m.path / d / library).is_file() for d in ["", *map(str, m.versions)]):
        return []
    if field == "platform":
        needs = f", which platform {c.platform!r} runs on"
    elif not c.backend:
        needs = f", which Triton picks for {implied[0]}"
    else:
        needs = ""
    if backend in STOCK_BACKENDS or backend in OTHER_CONTAINERS:
        container = OTHER_CONTAINERS.get(backend, STOCK_CONTAINER)
        where = " on the GPU its plan was built for" if backend == "tensorrt" else ""
        twin = " (here, its *_python twin runs the same ONNX file)" if backend == "onnxruntime" else ""
        return [
            Finding(
                name,
                field,
                f"{target.name} has no {backend} backend{needs}, so that server refuses the model; it loads in {container}{where}",
                f"serve it with {container}{twin}",
                "error" if target.strict else "warning",
            )
        ]
    known = sorted(target.backends | STOCK_BACKENDS | set(OTHER_CONTAINERS))
    close = difflib.get_close_matches(backend, known, n=1)
    return [
        Finding(
            name,
            field,
            f"no Triton backend is named {backend!r}: {target.name} has {', '.join(sorted(target.backends)) or 'none'}, "
            f"the stock container {', '.join(sorted(STOCK_BACKENDS))}" + (f"; did you mean {close[0]!r}?" if close else ""),
            f'set backend: "{close[0]}"' if close else f"name an installed backend, or put {library} into the model folder",
        )
    ]


def _is_onnx_runner(metadata) -> bool:
    """A toolkit ranker whose ``model.py`` is the ONNX Runtime runner (``onnx_python``, ``onnx_int8_python``, ...)."""
    return (
        metadata is not None and metadata.role == "ranker" and metadata.variant.startswith("onnx") and metadata.variant.endswith("_python")
    )


def _validate_model(model: _Model, models: dict[str, _Model], target: ServingTarget) -> list[Finding]:
    """Findings of one parsed model (see the module docstring); ``models`` is the whole repository (for ensembles)."""
    c = model.config
    if c is None:  # no config.pbtxt (Triton completes one; its backend must still be there) or one that does not parse
        missing = not (model.path / "config.pbtxt").is_file()
        return _backend_findings(_Model(model.name, model.path, ModelConfig(), model.versions), target) if missing else []
    out = _config_findings(model)
    out += _version_findings(model)
    out += _backend_findings(model, target)
    if c.platform == ENSEMBLE_PLATFORM:
        return out + _ensemble_findings(model, models)
    if c.HasField("ensemble_scheduling"):
        out.append(
            Finding(
                model.name,
                "ensemble_scheduling",
                f"ensemble_scheduling on a model whose platform is {c.platform!r}",
                'set platform: "ensemble"',
            )
        )
    out += _warmup_findings(model)
    served = _served_versions(c, model.versions)
    if c.platform == "onnxruntime_onnx" or c.backend == "onnxruntime":
        for v in served:
            if (model.path / str(v) / "model.onnx").is_file() and not c.default_model_filename:
                out += _onnx_findings(model, v)
    elif c.platform == "tensorrt_plan" or c.backend == "tensorrt":
        out += _tensorrt_findings(model.path, c)
    elif c.backend == "python":
        metadata = None
        try:
            metadata = read_metadata(model.path)
        except RepositoryError as exc:
            out.append(Finding(model.name, "tritonrec.json", str(exc), "rebuild the model with `tritonrec build`", "warning"))
        if metadata is not None and metadata.role == "ranker":
            for v in served:
                if (model.path / str(v) / "model.onnx").is_file():
                    out += _onnx_findings(model, v, python_runner=True)
                elif _is_onnx_runner(metadata) and (model.path / str(v)).is_dir():
                    out.append(
                        Finding(
                            model.name,
                            f"{v}/model.onnx",
                            f"version {v} has no model.onnx, which its model.py (the {metadata.variant} runner) loads",
                            "rebuild the model (`tritonrec build`), or copy model.onnx and its external data into the version folder",
                        )
                    )
    return out


def validate_repository(repo: Path, *, target: ServingTarget | None = None) -> list[Finding]:
    """Every finding in the model repository ``repo``, errors first, then by model.

    Each model folder is checked on its own and, for ensembles, against the models its steps
    name. Hidden folders (names starting with ``.``, such as a build's staging folders) and
    plain files at the top level are skipped.

    Args:
        target: the server the repository is meant for (its backends). Default
            :meth:`ServingTarget.default`: the server ``tritonrec serve`` would start here, where a
            backend only the stock container has is a warning (a CPU build's ``onnxruntime_onnx``
            models are for the stock container). Pass ``ServingTarget.default(strict=True)`` for
            "must load here", or :meth:`ServingTarget.stock_container`.

    Raises:
        RepositoryError: ``repo`` is not a folder.
    """
    repo = Path(repo)
    findings: list[Finding] = []
    models: dict[str, _Model] = {}
    for model_dir in model_folders(repo):
        model, problems = _read_model(model_dir)
        findings += problems
        models[model.name] = model
    if not models and not findings:
        findings.append(Finding("", str(repo), "the repository holds no model folder", "build the models into it (`tritonrec build`)"))
    if target is None and models:
        target = ServingTarget.default()
    for model in models.values():
        findings += _validate_model(model, models, target)  # type: ignore[arg-type]  (None only without models)
    return sorted(findings, key=lambda f: (f.severity != "error", f.model))


def check_repository(repo: Path, *, tolerated: Collection[Finding] = (), target: ServingTarget | None = None) -> list[Finding]:
    """Validate ``repo`` and raise if Triton would reject any of it.

    Args:
        target: the server it is meant for (see :func:`validate_repository`).
        tolerated: error findings known before and not to be raised again (the builder passes
            the errors a repository already had, so that a broken model it does not touch does
            not block a build, while any error the build would add does).

    Returns:
        The warnings (nothing that stops Triton from loading the repository).

    Raises:
        RepositoryError: one or more error findings; the message lists every one of them
            (model, field, problem, fix), one per line. Also when ``repo`` is not a folder.
    """
    findings = validate_repository(repo, target=target)
    errors = [f for f in findings if f.severity == "error" and f not in tolerated]
    if errors:
        lines = "\n".join(f"  - {f}" for f in errors)
        raise RepositoryError(
            f"model repository {repo}: {len(errors)} problem(s) Triton would reject:\n{lines}",
            hint="fix each finding (run `tritonrec validate` for warnings too)",
        )
    return [f for f in findings if f.severity != "error"]

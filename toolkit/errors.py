"""The toolkit's exceptions: one root, one subclass per stage of the data flow.

::

    ToolkitError                     every error this toolkit raises on purpose
    ├── DataError                    a dataset file is missing, truncated or malformed
    ├── CheckpointError              a checkpoint is missing, corrupt or inconsistent
    ├── ModelFileError               a user's --model-file cannot be loaded, or its factory's result is not a model + signature
    ├── TrainError                   training cannot proceed (bad hyper-parameters, no data)
    ├── CompressError                a compression recipe or step is invalid, or its result is unusable
    ├── ExportError                  a model cannot be exported, or its export disagrees with PyTorch
    ├── RepositoryError              a Triton model repository or config is invalid
    ├── ServingError                 a Triton server cannot start or be reached
    │   └── PortInUseError           a port the server needs is already taken
    ├── InferenceError               a request is malformed (shape, dtype) or the server rejected it
    ├── PerfError                    perf_analyzer is missing or fails, or its measurement is unusable
    ├── AutoscaleError               the autoscaler cannot read its inputs or act on them
    │   ├── MetricsError             a pod's /metrics text cannot be parsed as Prometheus' text format
    │   └── InvalidAutoscalerSpecError  a TritonAutoscaler resource's spec is invalid (names the field)
    ├── DeployError                  the Helm chart cannot be rendered: values it rejects (named), no chart, Helm failed
    └── MissingDependencyError       a command needs an optional dependency (a tritonrec extra) that is not installed

The CLI prints ``str(error)`` as one line (plus ``error.hint`` when set) and exits 1;
set ``TRITONREC_DEBUG=1`` to see the traceback. Errors raised by the libraries
underneath (torch, onnx, tritonclient) are chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ToolkitError",
    "DataError",
    "CheckpointError",
    "ModelFileError",
    "TrainError",
    "CompressError",
    "ExportError",
    "RepositoryError",
    "ServingError",
    "PortInUseError",
    "InferenceError",
    "PerfError",
    "UnstableMeasurementError",
    "AutoscaleError",
    "MetricsError",
    "InvalidAutoscalerSpecError",
    "DeployError",
    "MissingDependencyError",
    "EXTRAS",
    "optional_dependencies",
]


class ToolkitError(Exception):
    """Root of every error the toolkit raises on purpose.

    Args:
        message: one line that names the file, field or value and what was expected.
        hint: optional next step for the user ("re-run `make data`").
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class DataError(ToolkitError):
    """A dataset file is missing, truncated or malformed."""


class CheckpointError(ToolkitError):
    """A checkpoint directory is missing files, corrupt, or its parts disagree."""


class ModelFileError(ToolkitError):
    """A user's model file (``--model-file my_model.py:build``) is missing, fails to run (the message
    shows the user's traceback line), or its factory does not return ``(nn.Module, signature)``."""


class TrainError(ToolkitError):
    """Training cannot proceed with the given data or hyper-parameters."""


class CompressError(ToolkitError):
    """A compression recipe or step is invalid, or a compressed model is unusable (NaN/Inf outputs)."""


class ExportError(ToolkitError):
    """A model cannot be exported, or the exported model disagrees with PyTorch."""


class RepositoryError(ToolkitError):
    """A Triton model repository or one of its ``config.pbtxt`` files is invalid."""


class ServingError(ToolkitError):
    """A Triton server cannot be found, started or reached."""


class PortInUseError(ServingError):
    """A port the Triton server needs is already bound by another process."""


class InferenceError(ToolkitError):
    """An inference request is malformed (tensor shape or dtype) or the server rejected it."""


class PerfError(ToolkitError):
    """``perf_analyzer`` is missing or cannot run, the server it should load is unreachable,
    its measurement did not stabilize, or its report cannot be read."""


class UnstableMeasurementError(PerfError):
    """perf_analyzer's measurement did not stabilize at a load level, even after a retry with a longer window."""


class AutoscaleError(ToolkitError):
    """The autoscaler cannot read its inputs (a pod's metrics, the cluster's objects) or act on them."""


class MetricsError(AutoscaleError):
    """A pod's ``/metrics`` text is not Prometheus' text exposition format (names the pod or source)."""


class InvalidAutoscalerSpecError(AutoscaleError):
    """A ``TritonAutoscaler`` spec is invalid; the message names each field (``spec.minReplicas``) and value."""


class DeployError(ToolkitError):
    """The Helm chart cannot be rendered: a value its ``values.schema.json`` rejects (the message is
    Helm's and names the value), a missing chart, or Helm itself failed."""


class MissingDependencyError(ToolkitError):
    """A command needs an optional dependency (one of the tritonrec package's extras) that is not installed."""


#: The optional dependencies, by the extra of the ``tritonrec`` package that installs them (import names;
#: pyproject.toml's ``[project.optional-dependencies]`` lists the same distributions).
EXTRAS: dict[str, tuple[str, ...]] = {
    "perf": ("matplotlib", "psutil", "prometheus_client"),
    "gpu": ("tensorrt", "polygraphy"),
    # helm_sdkpy cannot be in the extra (it declares Python >= 3.12): toolkit.deploy.helm gives its own hint.
    "k8s": ("kubernetes", "tenacity", "urllib3", "yaml", "kmock", "helm_sdkpy", "prometheus_api_client"),
}


@contextmanager
def optional_dependencies(what: str) -> Iterator[None]:
    """Import the modules of a command that needs an extra inside this block: a missing module of
    :data:`EXTRAS` becomes a :class:`MissingDependencyError` with its install hint
    (``pip install 'tritonrec[perf]'``); any other ``ImportError`` propagates unchanged.

    Args:
        what: what needs the dependency, for the message (e.g. ``"tritonrec perf"``).
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        extra = next((e for e, modules in EXTRAS.items() if top in modules), None)
        if extra is None:
            raise
        raise MissingDependencyError(
            f"{what} needs {top}, which is not installed (an optional dependency: the [{extra}] extra)",
            hint=f"pip install 'tritonrec[{extra}]'",
        ) from exc

"""``tritonrec.json``: what the toolkit knows about each model folder it built.

Triton ignores files in a model folder other than ``config.pbtxt`` and the version
folders, so every model ``tritonrec build`` writes carries a small JSON record next to
its config: which role it plays (ranker, preprocess, postprocess, ensemble), which
serving variant and numeric precision it is, and where it came from. ``tritonrec
verify`` reads the precision to pick its tolerance; ``tritonrec validate`` reads the
role. A repository written by hand has no such files, and both tools still work on it
(the metadata is then ``None``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from toolkit._io import atomic_write_json
from toolkit.errors import RepositoryError

__all__ = ["METADATA_FILE", "ModelMetadata", "write_metadata", "read_metadata"]

METADATA_FILE = "tritonrec.json"
METADATA_FORMAT_VERSION = 1

Role = Literal["ranker", "preprocess", "postprocess", "ensemble"]
Precision = Literal["fp32", "fp16", "int8", "mixed"]


@dataclass(frozen=True)
class ModelMetadata:
    """One model folder's record.

    Attributes:
        role: ``ranker`` (takes the model's tensors, returns ``probability``), ``preprocess``
            (raw features to tensors), ``postprocess`` (top-K), ``ensemble``.
        variant: the serving variant (``pytorch``, ``onnx``, ``onnx_int8``, ...); for the other
            roles, the role itself.
        precision: numeric precision of the weights and compute: ``fp32``, ``fp16``, ``int8``
            (ONNX Runtime/TensorRT INT8) or ``mixed``; ensembles take their ranker's.
        ranker: for an ensemble, the ranker model it calls; else ``""``.
        source: free-form provenance (checkpoint path, ONNX file, TensorRT version and GPU, ...).
    """

    role: Role
    variant: str
    precision: Precision = "fp32"
    ranker: str = ""
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format_version": METADATA_FORMAT_VERSION, **asdict(self)}


def write_metadata(model_dir: Path, metadata: ModelMetadata) -> Path:
    """Write ``model_dir/tritonrec.json`` atomically; returns its path."""
    path = Path(model_dir) / METADATA_FILE
    atomic_write_json(path, metadata.to_dict())
    return path


def read_metadata(model_dir: Path) -> ModelMetadata | None:
    """The record of ``model_dir``, or ``None`` when it has none (a model not built by the toolkit).

    Raises:
        RepositoryError: the file exists but is not valid JSON or misses a field.
    """
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        if d.get("format_version") != METADATA_FORMAT_VERSION:
            raise RepositoryError(f"{path}: format_version {d.get('format_version')!r}, expected {METADATA_FORMAT_VERSION}")
        return ModelMetadata(
            role=d["role"], variant=d["variant"], precision=d["precision"], ranker=d.get("ranker", ""), source=d.get("source", {})
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise RepositoryError(f"{path}: not a valid {METADATA_FILE} ({exc!r})", hint="rebuild the model with `tritonrec build`") from exc

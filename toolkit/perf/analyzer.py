"""Run NVIDIA's ``perf_analyzer`` against a Triton model and read its reports.

Two installations are supported (DESIGN.md, "Facts about the real components"):

* ``perf_analyzer`` on ``PATH`` -- the Triton SDK container
  (``nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk``) -- used as it is;
* the binary that ``make perf-tools`` unpacks from the manylinux1 ``tritonclient==2.50.0`` wheel
  into ``<venv>/perf_analyzer/bin/`` (the ``perf-analyzer`` wheels need glibc 2.38). It needs
  Debian's ``libb64-0d`` and ``libcudart.so.12``, which comes from the PyPI wheel
  ``nvidia-cuda-runtime-cu12``: its ``nvidia/cuda_runtime/lib`` folder is put on ``LD_LIBRARY_PATH``.

Facts checked against perf_analyzer 2.50 and the bundled Triton 2.51 server:

* ``-f report.csv`` always has ``p50/p90/p95/p99 latency`` columns (no ``--percentile`` needed;
  ``--percentile=99`` only makes perf_analyzer *stabilize* on p99, which on a 2-core CPU box fails
  far more often than the default, the average). ``--verbose-csv`` adds ``Avg latency``. Every
  time column is in **microseconds**; :class:`LoadPoint` holds milliseconds.
* ``--input-data file.json``: with ``-b N`` on a batching model (``max_batch_size > 0``) every
  entry of ``"data"`` is **one sample** (``shape`` without the batch dimension) and a request
  carries N *consecutive* entries, request k starting at entry ``k*N mod len(data)``
  (perf_analyzer's ``InferContext::UpdateJsonData``). :func:`write_input_data` therefore writes
  one entry per row, trimmed to a multiple of N, so that every request is N real rows.
  ``BYTES`` (``TYPE_STRING``) inputs take JSON strings in ``"content"``, one per element
  (perf_analyzer ``docs/input_data.md``, "Real Input Data"; its ``DataLoader`` serializes
  them with the 4-byte length prefixes itself): a ``BYTES`` tensor of N rows is written as
  UTF-8 strings, so the raw-feature ensembles (``<model>_ensemble``) can be swept with real rows.
* An unstable level prints ``Failed to obtain stable measurement ...`` and ends the sweep, but
  the exit code is still 0: the text is what tells. An unreachable server exits 99 with
  ``failed to connect to all addresses`` (gRPC) or ``Couldn't connect to server`` (HTTP).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from toolkit._io import atomic_write_text
from toolkit.errors import PerfError, UnstableMeasurementError
from toolkit.tensors import TensorSpec

__all__ = [
    "PerfAnalyzer",
    "LoadPoint",
    "ProfileExperiment",
    "find_perf_analyzer",
    "write_input_data",
    "read_input_data",
    "run_perf_analyzer",
    "parse_perf_csv",
    "parse_profile_export",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "run `make perf-tools` (or `make install` then `make perf-tools`), or use the Triton SDK container where it is on PATH"
_VENV_BINARY = Path("perf_analyzer") / "bin" / "perf_analyzer"
_CUDA_RUNTIME_PIN = "nvidia-cuda-runtime-cu12==12.9.79"
_ID_DTYPES = ("int32", "int64")
_UNSTABLE = "Failed to obtain stable measurement"
_UNREACHABLE = ("failed to connect to all addresses", "Couldn't connect to server", "Connection refused", "Name or service not known")
_UNKNOWN_MODEL = ("Request for unknown model", "is not found")
_CSV_NAME, _EXPORT_NAME, _LOG_NAME = "perf_analyzer.csv", "profile_export.json", "perf_analyzer.log"


# -- finding the binary ----------------------------------------------------------------------


@dataclass(frozen=True)
class PerfAnalyzer:
    """A runnable ``perf_analyzer`` and the environment it needs.

    Attributes:
        executable: path of the binary.
        env: variables to set on top of ``os.environ`` when running it (``LD_LIBRARY_PATH``).
        source: ``"path"`` (found on ``PATH``) or the wheel it was unpacked from, e.g.
            ``"tritonclient==2.50.0"`` (what ``make perf-tools`` records in its stamp).
    """

    executable: Path
    env: dict[str, str] = field(default_factory=dict)
    source: str = "path"

    def environment(self) -> dict[str, str]:
        """``os.environ`` with :attr:`env` applied: what perf_analyzer is started with."""
        return {**os.environ, **self.env}

    def version(self) -> str:
        """The version ``perf_analyzer --version`` prints; when that is blank (the 2.50 wheel's
        binary prints ``Perf Analyzer Version  (commit unknown)``), the version of :attr:`source`.

        Raises:
            PerfError: the binary does not run (names the exit code and its last output line).
        """
        try:
            result = subprocess.run(
                [str(self.executable), "--version"], env=self.environment(), capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PerfError(f"cannot run {self.executable} --version: {e}", hint=_INSTALL_HINT) from e
        out = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            last = out.splitlines()[-1] if out else "no output"
            raise PerfError(f"{self.executable} --version exited with code {result.returncode}: {last}", hint=_INSTALL_HINT)
        match = re.search(r"Perf Analyzer Version[ \t]*([^\s(]*)", out)
        if match and match.group(1):
            return match.group(1)
        pinned = re.search(r"==\s*(\S+)", self.source)
        return pinned.group(1) if pinned else "unknown"


def find_perf_analyzer(*, search_path: str | None = None, prefix: Path | str | None = None) -> PerfAnalyzer:
    """Locate ``perf_analyzer``: on ``PATH`` first, else the one ``make perf-tools`` put into the virtualenv.

    Args:
        search_path: the ``PATH`` to search (default: ``os.environ["PATH"]``).
        prefix: the virtualenv whose ``perf_analyzer/bin/perf_analyzer`` and
            ``lib/python*/site-packages/nvidia/cuda_runtime/lib`` are used (default: ``sys.prefix``).

    Raises:
        PerfError: neither exists (with the ``make perf-tools`` hint), or a shared library the
            binary needs is missing (names it: ``libb64.so.0d`` -> Debian's ``libb64-0d``,
            ``libcudart.so.12`` -> the ``nvidia-cuda-runtime-cu12`` wheel).
    """
    on_path = shutil.which("perf_analyzer", path=search_path if search_path is not None else os.environ.get("PATH", ""))
    if on_path:
        analyzer = PerfAnalyzer(executable=Path(on_path))
        _check_libraries(analyzer)
        return analyzer
    root = Path(prefix if prefix is not None else sys.prefix)
    binary = root / _VENV_BINARY
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise PerfError(f"perf_analyzer not found: it is not on PATH and {binary} does not exist", hint=_INSTALL_HINT)
    stamps = sorted(binary.parent.parent.glob(".installed-*"))
    source = stamps[-1].read_text().strip() if stamps else "virtualenv"
    lib_dirs = [str(d) for d in _cuda_runtime_lib_dirs(root)]
    inherited = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env = {"LD_LIBRARY_PATH": os.pathsep.join(lib_dirs + inherited)} if lib_dirs or inherited else {}
    analyzer = PerfAnalyzer(executable=binary, env=env, source=source or "virtualenv")
    _check_libraries(analyzer)
    return analyzer


def _cuda_runtime_lib_dirs(prefix: Path) -> list[Path]:
    """``nvidia/cuda_runtime/lib`` of the nvidia-cuda-runtime-cu12 wheel installed under ``prefix``."""
    found = sorted(p for p in prefix.glob("lib*/python3*/site-packages/nvidia/cuda_runtime/lib") if p.is_dir())
    unique: dict[Path, Path] = {}
    for p in found:  # lib64 is often a link to lib: keep the first spelling
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _check_libraries(analyzer: PerfAnalyzer) -> None:
    ldd = shutil.which("ldd")
    if ldd is None:
        return
    out = subprocess.run([ldd, str(analyzer.executable)], env=analyzer.environment(), capture_output=True, text=True, check=False).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if not missing:
        return
    fixes = []
    if any(m.startswith("libb64") for m in missing):
        fixes.append("`apt-get install libb64-0d` (Debian/Ubuntu)")
    if any(m.startswith("libcudart") for m in missing):
        fixes.append(f"`pip install {_CUDA_RUNTIME_PIN}` into this virtualenv")
    hint = (" and ".join(fixes) + ", or run `make perf-tools`") if fixes else _INSTALL_HINT
    raise PerfError(f"perf_analyzer ({analyzer.executable}) cannot run, shared libraries are missing: {', '.join(missing)}", hint=hint)


# -- input data ------------------------------------------------------------------------------


def _as_arrays(inputs: object) -> dict[str, np.ndarray]:
    """``inputs`` as name -> array; accepts a mapping or anything with ``.inputs()`` (``EncodedRows``)."""
    if hasattr(inputs, "inputs") and callable(inputs.inputs):
        inputs = inputs.inputs()
    if not isinstance(inputs, Mapping) or not inputs:
        raise PerfError("input data must be a non-empty mapping of tensor name -> array (or EncodedRows)")
    return {str(name): np.asarray(array) for name, array in inputs.items()}


def _is_bytes_tensor(a: np.ndarray) -> bool:
    """An array Triton sends as ``BYTES``: numpy ``object`` (of bytes/str) or ``bytes_`` (``S``)."""
    return a.dtype.kind in "OS"


def _string_content(name: str, a: np.ndarray) -> list[str]:
    """The elements of a ``BYTES`` array, row-major, as the UTF-8 strings perf_analyzer's JSON takes.

    Raises:
        PerfError: an element that is neither ``bytes`` nor ``str``, or bytes that are not UTF-8
            (names the input and the element's index).
    """
    out: list[str] = []
    for index, value in enumerate(a.reshape(-1).tolist()):
        if isinstance(value, bytes):
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise PerfError(
                    f"input '{name}': element {index} ({value[:20]!r}) is not UTF-8, which perf_analyzer's JSON strings cannot carry",
                    hint="send text features as UTF-8",
                ) from e
        elif isinstance(value, str):
            out.append(value)
        else:
            raise PerfError(
                f"input '{name}': element {index} is {type(value).__name__} ({value!r}); a BYTES tensor holds bytes or str",
                hint="convert the values to strings first, e.g. raw_request(rows) for the raw-feature ensembles",
            )
    return out


def write_input_data(path: Path | str, inputs: Mapping[str, np.ndarray], *, batch_size: int, model_batches: bool = True) -> Path:
    """Write real rows as a perf_analyzer ``--input-data`` JSON file (written to a temporary name, then renamed).

    With ``model_batches=True`` (the model's ``max_batch_size > 0``; run perf_analyzer with
    ``-b batch_size``) every ``"data"`` entry is **one row** -- ``{"name": {"content": [...],
    "shape": [dims without the batch dimension]}}`` -- and perf_analyzer puts ``batch_size``
    consecutive entries into each request. Rows are trimmed to a multiple of ``batch_size`` so
    that every request is exactly ``batch_size`` real rows, in order.

    With ``model_batches=False`` (``max_batch_size: 0``; run with ``-b 1``) every entry is one
    whole request of ``batch_size`` rows whose ``shape`` includes that first dimension.

    Numeric tensors (bool, int, uint, float) are written as JSON numbers. ``BYTES`` tensors --
    numpy ``object`` arrays of ``bytes``/``str`` or ``bytes_`` arrays, what Triton's clients send
    as ``BYTES`` (``TYPE_STRING`` in a config) -- are written as JSON strings, bytes decoded as
    UTF-8, as perf_analyzer's ``docs/input_data.md`` ("Real Input Data") specifies for
    ``STRING``/``BYTES`` inputs. A variable dimension (the raw ensembles' ``genres``, [B, G]) is
    fine: ``shape`` gives it per entry, and every row of one array has the same width.
    Numpy unicode arrays (``<U``) are refused: tritonclient does not send them as ``BYTES``
    either; pass ``array.astype(object)``.

    Args:
        path: the JSON file to write (its folder is created).
        inputs: tensor name -> (N, ...) array, every tensor with the same N; or an
            ``EncodedRows`` (its :meth:`~toolkit.data.features.EncodedRows.inputs`), or the
            raw-feature request of :func:`toolkit.repository.raw_inputs.raw_request`.
        batch_size: rows per request.

    Returns:
        ``path``.

    Raises:
        PerfError: no inputs; tensors with different row counts; fewer than ``batch_size``
            rows; a tensor that is neither numeric nor ``BYTES``; a ``BYTES`` element that is not
            ``bytes``/``str`` or not UTF-8; ``batch_size < 1``. Nothing is written then.
    """
    arrays = _as_arrays(inputs)
    if batch_size < 1:
        raise PerfError(f"batch_size must be >= 1, got {batch_size}")
    counts = {name: (a.shape[0] if a.ndim else 0) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise PerfError(f"input data tensors have different row counts: {counts}", hint="pass the same rows for every input")
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf" and not _is_bytes_tensor(a):
            raise PerfError(
                f"input '{name}': {a.dtype} data cannot be written as perf_analyzer JSON "
                "(numbers, or BYTES as a numpy object or bytes_ array)",
                hint="for a BYTES input pass array.astype(object)" if a.dtype.kind == "U" else None,
            )
    n_rows = next(iter(counts.values()))
    if n_rows < batch_size:
        raise PerfError(f"input data has {n_rows} rows, fewer than batch_size={batch_size}", hint="pass at least one batch of real rows")
    n_requests = n_rows // batch_size
    used = n_requests * batch_size
    if used < n_rows:
        logger.info("input data: using %d of %d rows (a multiple of batch_size=%d)", used, n_rows, batch_size)
    # BYTES tensors become strings once (checked before anything is written), then are cut per entry.
    contents = {
        name: (np.asarray(_string_content(name, a[:used]), dtype=object).reshape(a[:used].shape) if _is_bytes_tensor(a) else a)
        for name, a in arrays.items()
    }

    def entry(a: np.ndarray) -> dict:
        return {"content": a.reshape(-1).tolist(), "shape": list(a.shape)}

    if model_batches:
        data = [{name: entry(a[i]) for name, a in contents.items()} for i in range(used)]
    else:
        data = [{name: entry(a[i * batch_size : (i + 1) * batch_size]) for name, a in contents.items()} for i in range(n_requests)]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"data": data}, separators=(",", ":")))
    return path


def _as_bytes_array(values: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Stacked string rows as a BYTES array: ``object`` of UTF-8 ``bytes`` (what Triton's clients
    return for BYTES), or numpy ``bytes_`` when ``dtype`` is an ``S`` dtype."""
    stacked = np.stack(values)
    out = np.empty(stacked.shape, dtype=object)
    out.reshape(-1)[:] = [str(v).encode("utf-8") for v in stacked.reshape(-1).tolist()]
    return out if dtype.kind == "O" else out.astype(dtype)


def read_input_data(path: Path | str, dtypes: Mapping[str, str | np.dtype | type] | None = None) -> dict[str, np.ndarray]:
    """Read a ``--input-data`` JSON file written by :func:`write_input_data` (``model_batches=True``)
    back into name -> (N, ...) arrays: one row per entry.

    ``dtypes`` gives each tensor's dtype (JSON has none). Defaults: int64 for integer content,
    ``object`` arrays of UTF-8 ``bytes`` for string content (a ``BYTES`` tensor, as Triton's
    clients return it), float32 otherwise. ``object``/``bytes`` (or ``"S"``/``"O"``) for a
    tensor of strings give that BYTES array (``bytes`` gives numpy ``bytes_``).

    Raises:
        PerfError: not JSON, no ``"data"`` list, entries of different shapes, or strings read
            with a numeric dtype that does not parse them.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())["data"]
        names = list(data[0])
        rows = {n: [np.asarray(e[n]["content"]).reshape(e[n]["shape"]) for e in data] for n in names}
        out = {}
        for n, values in rows.items():
            strings = any(v.dtype.kind == "U" for v in values)
            if strings:
                default: np.dtype = np.dtype(object)
            else:
                default = np.dtype(np.int64 if all(v.dtype.kind in "iub" for v in values) else np.float32)
            dtype = np.dtype((dtypes or {}).get(n, default))
            if strings and dtype.kind in "OS":
                out[n] = _as_bytes_array(values, dtype)
            else:
                out[n] = np.stack(values).astype(dtype)
        return out
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise PerfError(f"{path}: not a perf_analyzer input-data file of one row per entry ({e!r})") from e


# -- reports ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPoint:
    """One load level of a perf_analyzer sweep (one row of its ``-f`` CSV).

    perf_analyzer writes microseconds; every ``*_ms`` field here is that value / 1000.
    Latencies are client-side, per request (a request carries ``batch_size`` rows); the
    ``server_*`` and ``client_*`` fields are the averages of that request's parts.

    Attributes:
        concurrency: outstanding requests (concurrency sweeps), else ``None``.
        request_rate: requests per second asked for (request-rate sweeps), else ``None``.
        batch_size: rows per request (``-b``).
        throughput_infer_per_s: rows (inferences) per second, perf_analyzer's ``Inferences/Second``.
        p50_latency_ms ... p99_latency_ms: client-side request latency percentiles.
        avg_latency_ms: client-side average (present with ``--verbose-csv``), else ``None``.
        client_send_ms, network_server_send_recv_ms, server_queue_ms, server_compute_input_ms,
        server_compute_infer_ms, server_compute_output_ms, client_recv_ms: the CSV's breakdown.
    """

    concurrency: int | None
    request_rate: float | None
    batch_size: int
    throughput_infer_per_s: float
    p50_latency_ms: float
    p90_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    avg_latency_ms: float | None
    client_send_ms: float
    network_server_send_recv_ms: float
    server_queue_ms: float
    server_compute_input_ms: float
    server_compute_infer_ms: float
    server_compute_output_ms: float
    client_recv_ms: float

    @property
    def mode(self) -> Literal["concurrency", "request_rate"]:
        """Which kind of sweep produced this point."""
        return "concurrency" if self.concurrency is not None else "request_rate"

    @property
    def load(self) -> float:
        """The load level: the concurrency or the request rate."""
        if self.concurrency is not None:
            return float(self.concurrency)
        return float(self.request_rate or 0.0)

    @property
    def throughput_requests_per_s(self) -> float:
        """Requests per second: ``throughput_infer_per_s / batch_size``."""
        return self.throughput_infer_per_s / self.batch_size

    @property
    def server_compute_ms(self) -> float:
        """Server time per request: queue + compute input + compute infer + compute output."""
        return self.server_queue_ms + self.server_compute_input_ms + self.server_compute_infer_ms + self.server_compute_output_ms

    def to_dict(self) -> dict:
        """JSON-safe form (every field, plus ``mode``)."""
        return {"mode": self.mode, **asdict(self)}


_US_COLUMNS = {
    "p50 latency": "p50_latency_ms",
    "p90 latency": "p90_latency_ms",
    "p95 latency": "p95_latency_ms",
    "p99 latency": "p99_latency_ms",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_send_recv_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
}


def parse_perf_csv(path: Path | str, *, batch_size: int = 1) -> list[LoadPoint]:
    """The load points of a perf_analyzer ``-f`` CSV, in file order (µs converted to ms).

    The first column is ``Concurrency`` or ``Request Rate``; the other required columns are
    ``Inferences/Second``, ``p50/p90/p95/p99 latency`` and the breakdown columns. ``Avg latency``
    (``--verbose-csv``) is optional; unknown columns are ignored, and so is anything after the
    first blank line (``--collect-metrics`` appends server metrics there).

    Args:
        batch_size: the ``-b`` of that run (the CSV does not record it).

    Raises:
        PerfError: the file is missing, empty, or lacks a required column or number (named).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise PerfError(f"cannot read the perf_analyzer report {path}: {e.strerror or e}") from e
    if "" in lines:
        lines = lines[: lines.index("")]
    if not lines:
        raise PerfError(f"perf_analyzer report {path} is empty", hint="perf_analyzer measured no load level; see its log")
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    if "Concurrency" in header:
        load_column = "Concurrency"
    elif "Request Rate" in header:
        load_column = "Request Rate"
    else:
        raise PerfError(f"perf_analyzer report {path}: no 'Concurrency' or 'Request Rate' column (header: {', '.join(header)})")
    missing = [c for c in ("Inferences/Second", *_US_COLUMNS) if c not in header]
    if missing:
        raise PerfError(f"perf_analyzer report {path}: missing column(s) {', '.join(missing)}")

    points = []
    for line_no, row in enumerate(reader, start=2):
        try:
            values = {field_name: float(row[column]) / 1000.0 for column, field_name in _US_COLUMNS.items()}
            load = float(row[load_column])
            avg = row.get("Avg latency")
            points.append(
                LoadPoint(
                    concurrency=int(load) if load_column == "Concurrency" else None,
                    request_rate=load if load_column == "Request Rate" else None,
                    batch_size=batch_size,
                    throughput_infer_per_s=float(row["Inferences/Second"]),
                    avg_latency_ms=float(avg) / 1000.0 if avg not in (None, "") else None,
                    **values,
                )
            )
        except (TypeError, ValueError) as e:
            raise PerfError(f"perf_analyzer report {path}, line {line_no}: not a number ({e})") from e
    return points


@dataclass(frozen=True)
class ProfileExperiment:
    """One load level of a ``--profile-export-file`` JSON, summarized from its per-request records.

    These cover every request perf_analyzer sent at that level, warm-up and unstable windows
    included, so they differ from the CSV's numbers (which cover the last, stable, windows).

    Attributes:
        mode: ``"concurrency"`` or ``"request_rate"``.
        value: the concurrency or request rate.
        request_count: requests with at least one response.
        duration_s: first request sent to last response received.
        avg_latency_ms, p50_latency_ms, p99_latency_ms: request start to last response
            (``nan`` when ``request_count`` is 0).
        window_count: measurement windows (``len(window_boundaries) - 1``).
    """

    mode: str
    value: float
    request_count: int
    duration_s: float
    avg_latency_ms: float
    p50_latency_ms: float
    p99_latency_ms: float
    window_count: int


def parse_profile_export(path: Path | str) -> list[ProfileExperiment]:
    """Summarize a perf_analyzer ``--profile-export-file`` JSON: one :class:`ProfileExperiment` per level.

    Raises:
        PerfError: the file is missing, not JSON, or not a profile export (no ``experiments``).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        experiments = doc["experiments"]
        out = []
        for e in experiments:
            starts, latencies_ns, ends = [], [], []
            for r in e.get("requests", []):
                if r.get("response_timestamps"):
                    starts.append(int(r["timestamp"]))
                    ends.append(int(r["response_timestamps"][-1]))
                    latencies_ns.append(ends[-1] - starts[-1])
            lat_ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
            has = lat_ms.size > 0
            out.append(
                ProfileExperiment(
                    mode=str(e["experiment"]["mode"]),
                    value=float(e["experiment"]["value"]),
                    request_count=int(lat_ms.size),
                    duration_s=(max(ends) - min(starts)) / 1e9 if has else 0.0,
                    avg_latency_ms=float(lat_ms.mean()) if has else math.nan,
                    p50_latency_ms=float(np.percentile(lat_ms, 50)) if has else math.nan,
                    p99_latency_ms=float(np.percentile(lat_ms, 99)) if has else math.nan,
                    window_count=max(len(e.get("window_boundaries", [])) - 1, 0),
                )
            )
        return out
    except OSError as e:
        raise PerfError(f"cannot read the perf_analyzer profile export {path}: {e.strerror or e}") from e
    except (ValueError, KeyError, TypeError) as e:
        raise PerfError(f"{path}: not a perf_analyzer profile export ({e!r})") from e


# -- running ---------------------------------------------------------------------------------


def _range_arg(values: Sequence[float], kind: str) -> list[str]:
    """perf_analyzer ``start:end:step`` strings covering ``values``: one when they step evenly, else one per value."""
    if len(values) == 1:
        return [f"{values[0]:g}"]
    steps = {round(b - a, 9) for a, b in zip(values, values[1:], strict=False)}
    if len(steps) == 1 and next(iter(steps)) > 0:
        return [f"{values[0]:g}:{values[-1]:g}:{next(iter(steps)):g}"]
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise PerfError(f"{kind} levels must increase, got {list(values)}")
    return [f"{v:g}" for v in values]


def _check_ids_have_data(input_specs: Sequence[TensorSpec], input_data: Path | None) -> None:
    if input_data is not None:
        return
    ids = [s for s in input_specs if s.dtype in _ID_DTYPES]
    if ids:
        names = ", ".join(s.describe() for s in ids)
        raise PerfError(
            f"input(s) {names} hold integer ids and no input_data was given: perf_analyzer's random data "
            "would index outside the embedding tables",
            hint="pass real rows: write_input_data(path, rows.inputs(), batch_size=...) and input_data=path",
        )


@dataclass
class _Attempt:
    returncode: int
    output: str
    csv_path: Path
    export_path: Path | None


def _run_once(
    analyzer: PerfAnalyzer, args: list[str], interval_ms: int, work: Path, tag: str, profile_export: bool, deadline: float
) -> _Attempt:
    csv_path = work / f"{tag}.csv"
    export_path = work / f"{tag}.json" if profile_export else None
    cmd = [str(analyzer.executable), *args, "--measurement-interval", str(interval_ms), "-f", str(csv_path)]
    if export_path is not None:
        cmd += ["--profile-export-file", str(export_path)]
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PerfError("perf_analyzer ran out of time before this load level", hint="raise timeout_s")
    logger.debug("running %s", " ".join(cmd))
    try:
        result = subprocess.run(cmd, env=analyzer.environment(), capture_output=True, text=True, timeout=remaining, check=False)
    except subprocess.TimeoutExpired as e:
        raise PerfError(
            f"perf_analyzer did not finish within the timeout ({' '.join(cmd[1:])})",
            hint="raise timeout_s, or lower max_trials / measurement_interval_ms",
        ) from e
    except OSError as e:
        raise PerfError(f"cannot run {analyzer.executable}: {e}", hint=_INSTALL_HINT) from e
    output = result.stdout + ("\n" if result.stdout and result.stderr else "") + result.stderr
    return _Attempt(result.returncode, output, csv_path, export_path)


def _error_lines(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error") or _UNSTABLE in ln]
    return "; ".join(errors[-3:] or lines[-3:]) or "no output"


def run_perf_analyzer(
    model_name: str,
    url: str,
    *,
    protocol: Literal["grpc", "http"],
    input_data: Path | None,
    input_specs: Sequence[TensorSpec],
    batch_size: int = 1,
    concurrency: Sequence[int] | None = None,
    request_rate: Sequence[float] | None = None,
    request_distribution: Literal["constant", "poisson"] = "constant",
    measurement_interval_ms: int = 2000,
    stability_percentage: float = 10,
    max_trials: int = 10,
    out_dir: Path,
    timeout_s: float = 900,
    profile_export: bool = True,
    analyzer: PerfAnalyzer | None = None,
) -> list[LoadPoint]:
    """Sweep a Triton model with perf_analyzer and return one :class:`LoadPoint` per load level,
    in ascending load (perf_analyzer's CSV lists a sweep's levels in its own order, not the sweep's).

    Runs ``perf_analyzer -m MODEL -u URL -i PROTOCOL -b BATCH --input-data FILE
    --concurrency-range A:B:STEP | --request-rate-range A:B:STEP [--request-distribution D]
    -s STABILITY -r MAX_TRIALS --verbose-csv --measurement-interval MS -f CSV
    [--profile-export-file JSON]``. Levels that do not step evenly (1, 2, 4, 8) run one
    perf_analyzer each. A run that reports ``Failed to obtain stable measurement`` (or exits
    non-zero for another reason than an unreachable server or unknown model) is retried once with
    the measurement interval doubled; the retry is logged at WARNING.

    Writes into ``out_dir`` (created; files replaced only after a successful run):
    ``perf_analyzer.csv`` (perf_analyzer's CSV, rows of every run), ``profile_export.json``
    (with ``profile_export``: every request's timestamps and data -- megabytes at thousands of
    requests per second) and ``perf_analyzer.log`` (its output; also written when it fails).

    Args:
        model_name: the model as the server knows it.
        url: ``host:port`` of the server's gRPC or HTTP endpoint (no scheme).
        protocol: ``"grpc"`` or ``"http"``.
        input_data: a ``--input-data`` JSON of real rows (:func:`write_input_data`) or ``None``
            for perf_analyzer's random data (refused for integer id inputs).
        input_specs: the model's inputs (``InferenceClient(...).input_specs``, or
            ``config_tensor_specs(read_config(...))[0]``).
        batch_size: rows per request (``-b``); the input data must have been written for it.
        concurrency: concurrency levels (default ``[1]`` when neither this nor ``request_rate``).
        request_rate: request rates per second (mutually exclusive with ``concurrency``).
        request_distribution: gaps between requests of a request-rate sweep.
        measurement_interval_ms, stability_percentage, max_trials: perf_analyzer's ``-p``,
            ``-s`` and ``-r``. Each level takes at least 3 windows.
        timeout_s: wall-clock budget for the whole call, retries included.
        analyzer: the binary to run (default :func:`find_perf_analyzer`).

    Raises:
        PerfError: an integer id input without ``input_data`` (names the tensor; raised before
            anything runs); bad arguments; perf_analyzer missing; the server unreachable (names
            the url) or the model unknown (names it); a level still unstable after the retry;
            perf_analyzer failing (its error line; the full output is in ``perf_analyzer.log``).
    """
    _check_ids_have_data(input_specs, input_data)
    if protocol not in ("grpc", "http"):
        raise PerfError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    if concurrency is not None and request_rate is not None:
        raise PerfError("give concurrency levels or request rates, not both")
    if request_distribution not in ("constant", "poisson"):
        raise PerfError(f"request_distribution must be 'constant' or 'poisson', got {request_distribution!r}")
    if batch_size < 1 or measurement_interval_ms < 1 or max_trials < 1 or stability_percentage <= 0:
        raise PerfError("batch_size, measurement_interval_ms, max_trials and stability_percentage must be positive")
    if input_data is not None and not Path(input_data).is_file():
        raise PerfError(f"input data file {input_data} does not exist", hint="write it with write_input_data()")
    if request_rate is not None:
        levels: list[float] = [float(r) for r in request_rate]
        flag, kind = "--request-rate-range", "request rate"
    else:
        levels = [float(c) for c in (concurrency if concurrency is not None else [1])]
        flag, kind = "--concurrency-range", "concurrency"
        if any(c < 1 or c != int(c) for c in levels):
            raise PerfError(f"concurrency levels must be whole numbers >= 1, got {list(levels)}")
    if not levels or any(v <= 0 for v in levels):
        raise PerfError(f"{kind} levels must be positive and not empty, got {list(levels)}")
    ranges = _range_arg(levels, kind)
    analyzer = analyzer or find_perf_analyzer()

    base = ["-m", model_name, "-u", url, "-i", protocol, "-b", str(batch_size)]
    base += ["-s", f"{stability_percentage:g}", "-r", str(max_trials), "--verbose-csv"]
    if input_data is not None:
        base += ["--input-data", str(input_data)]
    if request_rate is not None:
        base += ["--request-distribution", request_distribution]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".perf_analyzer-", dir=out_dir))
    deadline = time.monotonic() + timeout_s
    log_parts: list[str] = []
    done: list[_Attempt] = []
    try:
        for i, range_value in enumerate(ranges):
            args = [*base, flag, range_value]
            interval = measurement_interval_ms
            for attempt_no in (1, 2):
                attempt = _run_once(analyzer, args, interval, work, f"run{i}-{attempt_no}", profile_export, deadline)
                log_parts.append(f"$ perf_analyzer {' '.join(args)} --measurement-interval {interval}\n{attempt.output}")
                _raise_if_unreachable(attempt, model_name, url, protocol)
                unstable = _UNSTABLE in attempt.output
                if attempt.returncode == 0 and not unstable:
                    break
                what = "did not stabilize" if unstable else f"exited with code {attempt.returncode}"
                if attempt_no == 1:
                    logger.warning(
                        "perf_analyzer %s at %s %s (%s); retrying once with --measurement-interval %d ms",
                        what,
                        kind,
                        range_value,
                        _error_lines(attempt.output),
                        interval * 2,
                    )
                    interval *= 2
                    continue
                raise (UnstableMeasurementError if unstable else PerfError)(
                    f"perf_analyzer {what} at {kind} {range_value} of model '{model_name}' ({url}), "
                    f"also with --measurement-interval {interval} ms: {_error_lines(attempt.output)}",
                    hint=(
                        "raise stability_percentage or measurement_interval_ms, or lower the load"
                        if unstable
                        else f"full output: {out_dir / _LOG_NAME}"
                    ),
                )
            done.append(attempt)

        points: list[LoadPoint] = []
        for attempt in done:
            points += parse_perf_csv(attempt.csv_path, batch_size=batch_size)
        got = {p.load for p in points}
        lost = [v for v in levels if not any(math.isclose(v, g, rel_tol=1e-6) for g in got)]
        if lost:
            raise PerfError(f"perf_analyzer reported no result for {kind} {', '.join(f'{v:g}' for v in lost)} of model '{model_name}'")
        points.sort(key=lambda p: p.load)
        _publish(out_dir, work, done, log_parts)
    except PerfError:
        if log_parts:  # what perf_analyzer said, for the user to read; the reports stay as they were
            _write_log(out_dir, log_parts)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return points


def _raise_if_unreachable(attempt: _Attempt, model_name: str, url: str, protocol: str) -> None:
    if attempt.returncode == 0:
        return
    if any(marker in attempt.output for marker in _UNREACHABLE):
        raise PerfError(
            f"perf_analyzer cannot reach the Triton server at {url} over {protocol}: {_error_lines(attempt.output)}",
            hint=f"is the server running, and is {url} its {protocol} endpoint (host:port, no scheme)?",
        )
    if any(marker in attempt.output for marker in _UNKNOWN_MODEL):
        raise PerfError(
            f"the Triton server at {url} has no ready model '{model_name}': {_error_lines(attempt.output)}",
            hint="check the model name and the server's model states",
        )


def _write_log(out_dir: Path, parts: list[str]) -> None:
    atomic_write_text(out_dir / _LOG_NAME, "\n".join(parts))


def _publish(out_dir: Path, work: Path, done: list[_Attempt], log_parts: list[str]) -> None:
    """Move the reports of the successful runs into ``out_dir`` (one CSV and one export for all runs)."""
    if len(done) == 1:
        os.replace(done[0].csv_path, out_dir / _CSV_NAME)
    else:
        lines = [done[0].csv_path.read_text().splitlines()[0]]
        for attempt in done:
            rows = attempt.csv_path.read_text().splitlines()[1:]
            lines += rows[: rows.index("")] if "" in rows else rows
        atomic_write_text(out_dir / _CSV_NAME, "\n".join(lines) + "\n")
    exports = [a.export_path for a in done if a.export_path is not None and a.export_path.is_file()]
    if exports:
        if len(exports) == 1:
            os.replace(exports[0], out_dir / _EXPORT_NAME)
        else:
            merged = json.loads(exports[0].read_text())
            for extra in exports[1:]:
                merged["experiments"] += json.loads(extra.read_text())["experiments"]
            merged_path = work / "merged.json"
            merged_path.write_text(json.dumps(merged, separators=(",", ":")))
            os.replace(merged_path, out_dir / _EXPORT_NAME)
    _write_log(out_dir, log_parts)

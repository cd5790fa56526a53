"""Load traces for the autoscaling simulator: generated shapes and two public trace formats.

A :class:`Trace` is an offered request rate that is constant within each bin (``rate_rps``, one value
per ``bin_s`` seconds). Generated traces (:func:`diurnal`, :func:`step`, :func:`spike`, :func:`on_off`,
:func:`ramp`) use 1 s bins; the readers keep the resolution of their source:

* :func:`read_azure_functions` -- Azure Functions 2019 per-minute invocation counts
  (``HashOwner,HashApp,HashFunction,Trigger,1..1440``; Shahrad et al., "Serverless in the Wild",
  USENIX ATC 2020): 60 s bins, one function's row or the sum of all rows.
* :func:`read_azure_llm` -- Azure LLM inference 2023 per-request timestamps (``TIMESTAMP,...``;
  Patel et al., "Splitwise", ISCA 2024): requests counted in ``bin_s`` bins (10 s by default: at the
  trace's few requests per second, 1 s bins would be mostly Poisson noise once scaled up).

:meth:`Trace.scaled` stretches a trace to a chosen duration and multiplies it to a chosen peak rate
(the highest bin), which is how a trace of a few requests per second (or a day of minutes) becomes
an hour at thousands of requests per second. :meth:`Trace.arrivals` draws Poisson arrival counts per
simulation step from a seeded generator, so a trace and a seed fix the arrivals exactly.

The real files are read where they lie (``../shared/traces/`` in this project, with their licences);
nothing here copies them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from toolkit.errors import AutoscaleError

__all__ = [
    "Trace",
    "GENERATED",
    "diurnal",
    "step",
    "spike",
    "on_off",
    "ramp",
    "read_azure_functions",
    "read_azure_llm",
    "load_trace",
]

_FUNCTIONS_KEYS = ("HashOwner", "HashApp", "HashFunction", "Trigger")


@dataclass(frozen=True)
class Trace:
    """An offered request rate, constant within each bin.

    Attributes:
        name: short name (``"spike"``, ``"azure-llm-code"``), used as the key in reports.
        rate_rps: (B,) float64, offered requests per second in each bin, >= 0.
        bin_s: length of one bin in seconds (> 0).
        source: one line saying where the shape came from (the generator and its parameters, or the
            file, the rows used and the binning), kept through :meth:`scaled` with the scaling added.
    """

    name: str
    rate_rps: np.ndarray
    bin_s: float
    source: str

    def __post_init__(self) -> None:
        rate = np.asarray(self.rate_rps, dtype=np.float64)
        if rate.ndim != 1 or rate.size == 0:
            raise AutoscaleError(f"trace {self.name!r}: rate_rps must be a non-empty 1-D array, got shape {rate.shape}")
        if not np.all(np.isfinite(rate)) or np.any(rate < 0):
            raise AutoscaleError(f"trace {self.name!r}: rate_rps must be finite and >= 0")
        if not self.bin_s > 0:
            raise AutoscaleError(f"trace {self.name!r}: bin_s must be > 0, got {self.bin_s}")
        object.__setattr__(self, "rate_rps", rate)

    @property
    def duration_s(self) -> float:
        """Length of the trace in seconds (bins x ``bin_s``)."""
        return self.rate_rps.size * self.bin_s

    @property
    def peak_rps(self) -> float:
        """Highest bin rate in requests per second."""
        return float(self.rate_rps.max())

    @property
    def mean_rps(self) -> float:
        """Mean rate over the trace in requests per second."""
        return float(self.rate_rps.mean())

    def rate_at(self, t_s: float | np.ndarray) -> np.ndarray:
        """Offered rate (req/s) at times ``t_s`` (seconds from the start; clipped to the trace)."""
        idx = np.clip((np.asarray(t_s, dtype=np.float64) // self.bin_s).astype(np.int64), 0, self.rate_rps.size - 1)
        return self.rate_rps[idx]

    def scaled(self, *, peak_rps: float | None = None, duration_s: float | None = None) -> Trace:
        """This trace stretched (or compressed) in time to ``duration_s`` and multiplied so that its
        highest bin is ``peak_rps``; either left as is when None.

        Raises:
            AutoscaleError: ``peak_rps`` or ``duration_s`` is not > 0, or the trace is all zeros.
        """
        rate, bin_s, notes = self.rate_rps, self.bin_s, []
        if peak_rps is not None:
            if not peak_rps > 0:
                raise AutoscaleError(f"trace {self.name!r}: peak_rps must be > 0, got {peak_rps}")
            if self.peak_rps <= 0:
                raise AutoscaleError(f"trace {self.name!r} has no requests: it cannot be scaled to a peak of {peak_rps} req/s")
            rate = rate * (peak_rps / self.peak_rps)
            notes.append(f"scaled to a peak of {peak_rps:g} req/s")
        if duration_s is not None:
            if not duration_s > 0:
                raise AutoscaleError(f"trace {self.name!r}: duration_s must be > 0, got {duration_s}")
            bin_s = duration_s / rate.size
            notes.append(f"stretched to {duration_s:g} s ({bin_s:g} s bins)")
        source = self.source if not notes else f"{self.source}; {', '.join(notes)}"
        return replace(self, rate_rps=rate, bin_s=bin_s, source=source)

    def expected_counts(self, step_s: float) -> np.ndarray:
        """Expected arrivals in each step of ``step_s`` seconds: (ceil(duration / step_s),) float64,
        the integral of the piecewise-constant rate over each step."""
        if not step_s > 0:
            raise AutoscaleError(f"step_s must be > 0, got {step_s}")
        n_steps = int(math.ceil(self.duration_s / step_s - 1e-9))
        edges_bins = np.arange(self.rate_rps.size + 1) * self.bin_s
        cumulative = np.concatenate([[0.0], np.cumsum(self.rate_rps * self.bin_s)])
        t = np.minimum(np.arange(n_steps + 1) * step_s, self.duration_s)
        return np.diff(np.interp(t, edges_bins, cumulative))

    def arrivals(self, step_s: float, seed: int, *, noise_s: float = 1.0) -> np.ndarray:
        """Arrival counts per step: (ceil(duration / step_s),) float64.

        The count of each ``noise_s`` window is Poisson with the window's expected count (drawn from
        ``numpy.random.default_rng(seed)``, independent per window) and is spread over the window's
        steps in proportion to their expected counts. Poisson noise enters once, at the scale of a
        second: the simulator's per-replica model already holds the Poisson variation within a step.

        Raises:
            AutoscaleError: ``step_s`` or ``noise_s`` is not > 0.
        """
        if not noise_s > 0:
            raise AutoscaleError(f"noise_s must be > 0, got {noise_s}")
        expected = self.expected_counts(step_s)
        per_window = max(1, int(round(noise_s / step_s)))
        n_win = int(math.ceil(expected.size / per_window))
        padded = np.concatenate([expected, np.zeros(n_win * per_window - expected.size)]).reshape(n_win, per_window)
        window_mean = padded.sum(axis=1)
        drawn = np.random.default_rng(seed).poisson(window_mean).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(window_mean[:, None] > 0, padded / window_mean[:, None], 0.0)
        return (share * drawn[:, None]).reshape(-1)[: expected.size]


# ---------------------------------------------------------------------------------------------------------------------
# Generated shapes (1 s bins)


def _seconds(duration_s: float, name: str) -> np.ndarray:
    if not duration_s >= 1:
        raise AutoscaleError(f"{name}: duration_s must be >= 1, got {duration_s}")
    return np.arange(int(round(duration_s)), dtype=np.float64) + 0.5


def _check_fraction(name: str, field: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise AutoscaleError(f"{name}: {field} must be within [0, 1], got {value}")


def _trapezoid(t: np.ndarray, start: float, rise_s: float, hold_s: float, fall_s: float) -> np.ndarray:
    """0..1 envelope: 0 before ``start``, linear rise over ``rise_s``, 1 for ``hold_s``, linear fall."""
    up = np.clip((t - start) / rise_s, 0, 1) if rise_s > 0 else (t >= start).astype(float)
    end = start + rise_s + hold_s
    down = np.clip(1 - (t - end) / fall_s, 0, 1) if fall_s > 0 else (t < end).astype(float)
    return np.minimum(up, down)


def diurnal(duration_s: float = 3600, peak_rps: float = 1.0, *, trough_fraction: float = 0.1, periods: float = 1.0) -> Trace:
    """A day compressed into ``duration_s``: a raised cosine from the night trough
    (``trough_fraction`` x peak at the start and end) to the peak half-way, ``periods`` times."""
    _check_fraction("diurnal", "trough_fraction", trough_fraction)
    t = _seconds(duration_s, "diurnal")
    shape = trough_fraction + (1 - trough_fraction) * 0.5 * (1 - np.cos(2 * np.pi * periods * t / duration_s))
    return Trace("diurnal", peak_rps * shape, 1.0, f"generated diurnal(trough {trough_fraction:g} x peak, {periods:g} period(s))")


def step(
    duration_s: float = 3600, peak_rps: float = 1.0, *, base_fraction: float = 0.25, up_at: float = 1 / 3, down_at: float = 2 / 3
) -> Trace:
    """``base_fraction`` x peak, a step up to the peak at ``up_at`` x duration, back down at ``down_at``."""
    _check_fraction("step", "base_fraction", base_fraction)
    if not 0 <= up_at < down_at <= 1:
        raise AutoscaleError(f"step: expected 0 <= up_at < down_at <= 1, got up_at={up_at}, down_at={down_at}")
    t = _seconds(duration_s, "step")
    on = (t >= up_at * duration_s) & (t < down_at * duration_s)
    rate = peak_rps * np.where(on, 1.0, base_fraction)
    return Trace(
        "step", rate, 1.0, f"generated step(base {base_fraction:g} x peak, up at {up_at:.3g}, down at {down_at:.3g} of the duration)"
    )


def spike(
    duration_s: float = 3600,
    peak_rps: float = 1.0,
    *,
    base_fraction: float = 0.2,
    at: float = 0.5,
    rise_s: float = 30.0,
    hold_s: float = 300.0,
    fall_s: float = 120.0,
) -> Trace:
    """A flash crowd: ``base_fraction`` x peak, then from ``at`` x duration a linear rise to the peak
    over ``rise_s``, ``hold_s`` at the peak, a linear fall over ``fall_s``."""
    _check_fraction("spike", "base_fraction", base_fraction)
    t = _seconds(duration_s, "spike")
    env = _trapezoid(t, at * duration_s, rise_s, hold_s, fall_s)
    rate = peak_rps * (base_fraction + (1 - base_fraction) * env)
    return Trace(
        "spike",
        rate,
        1.0,
        f"generated spike(base {base_fraction:g} x peak, at {at:g} of the duration, "
        f"rise {rise_s:g} s, hold {hold_s:g} s, fall {fall_s:g} s)",
    )


def on_off(
    duration_s: float = 3600,
    peak_rps: float = 1.0,
    *,
    off_fraction: float = 0.1,
    on_s: float = 300.0,
    off_s: float = 600.0,
    rise_s: float = 30.0,
) -> Trace:
    """Bursts: ``off_s`` at ``off_fraction`` x peak, then ``on_s`` at the peak (reached over ``rise_s``,
    left over ``rise_s``), repeated; the trace starts with an off period."""
    _check_fraction("on_off", "off_fraction", off_fraction)
    if not (on_s > 0 and off_s > 0 and rise_s >= 0):
        raise AutoscaleError(f"on_off: on_s and off_s must be > 0 and rise_s >= 0, got {on_s}, {off_s}, {rise_s}")
    t = _seconds(duration_s, "on_off")
    period = on_s + off_s
    env = _trapezoid(np.mod(t, period), off_s, rise_s, max(on_s - rise_s, 0.0), rise_s)
    rate = peak_rps * (off_fraction + (1 - off_fraction) * env)
    return Trace("on_off", rate, 1.0, f"generated on_off(off {off_s:g} s at {off_fraction:g} x peak, on {on_s:g} s, ramps {rise_s:g} s)")


def ramp(duration_s: float = 3600, peak_rps: float = 1.0, *, base_fraction: float = 0.1) -> Trace:
    """A slow ramp: linear from ``base_fraction`` x peak at the start to the peak at the end."""
    _check_fraction("ramp", "base_fraction", base_fraction)
    t = _seconds(duration_s, "ramp")
    rate = peak_rps * (base_fraction + (1 - base_fraction) * t / duration_s)
    return Trace("ramp", rate, 1.0, f"generated ramp(from {base_fraction:g} x peak to the peak)")


#: The generated shapes by name (``tritonrec autoscale simulate --trace NAME``).
GENERATED: dict[str, Callable[..., Trace]] = {"diurnal": diurnal, "step": step, "spike": spike, "on_off": on_off, "ramp": ramp}


# ---------------------------------------------------------------------------------------------------------------------
# Readers of the public formats


def _open_csv(path: Path) -> list[list[str]]:
    path = Path(path)
    if not path.is_file():
        raise AutoscaleError(f"trace file {path} does not exist", hint="pass the path of a CSV file (e.g. ../shared/traces/...)")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AutoscaleError(f"trace file {path} cannot be read as CSV: {exc}") from exc
    if not rows:
        raise AutoscaleError(f"trace file {path} is empty (expected a header row)")
    return rows


def read_azure_functions(path: Path, function: str | None = None) -> Trace:
    """Per-minute invocation counts in the Azure Functions 2019 format as a trace with 60 s bins.

    Args:
        path: ``invocations*.csv`` with header ``HashOwner,HashApp,HashFunction,Trigger,1,2,...,N``
            (N = 1440 for one day), one row per function, non-negative integer counts.
        function: a ``HashFunction`` (or a prefix of one that matches a single row) to take that
            function's counts; None sums every row (the whole sample's load).

    Returns:
        A trace named ``azure-functions`` (``azure-functions-<first 8 hex>`` for one function) whose
        ``source`` names the file and the rows used.

    Raises:
        AutoscaleError: the file is missing or not CSV; a key column is missing; the minute columns
            are not ``1..N`` in order; a row has the wrong number of fields or a count that is not a
            non-negative integer (the message names the file, line and column); ``function`` matches
            no row or several.
    """
    path = Path(path)
    rows = _open_csv(path)
    header = [h.strip() for h in rows[0]]
    for key in _FUNCTIONS_KEYS:
        if key not in header:
            raise AutoscaleError(
                f"{path}: column {key!r} is missing from the header (expected {','.join(_FUNCTIONS_KEYS)},1..1440)",
                hint="is this an Azure Functions 2019 invocations file?",
            )
    first_minute = max(header.index(k) for k in _FUNCTIONS_KEYS) + 1
    minutes = header[first_minute:]
    if not minutes:
        raise AutoscaleError(f"{path}: no minute columns after {_FUNCTIONS_KEYS[-1]!r} (expected columns 1..1440)")
    for i, name in enumerate(minutes, start=1):
        if name != str(i):
            raise AutoscaleError(
                f"{path}: header column {first_minute + i} is {name!r}, expected minute {str(i)!r} (minute columns 1..N in order)"
            )
    fn_col = header.index("HashFunction")
    counts, names = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise AutoscaleError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
        values = []
        for j in range(first_minute, len(header)):
            cell = row[j].strip()
            try:
                value = int(cell)
            except ValueError:
                value = None
            if value is None or value < 0:
                raise AutoscaleError(f"{path}: line {line}, column {header[j]!r}: {cell!r} is not a non-negative integer invocation count")
            values.append(value)
        counts.append(values)
        names.append(row[fn_col].strip())
    if not counts:
        raise AutoscaleError(f"{path}: no function rows after the header")
    table = np.asarray(counts, dtype=np.float64)
    if function is None:
        per_minute, label, what = table.sum(axis=0), "azure-functions", f"sum of all {len(names)} functions"
    else:
        hits = [i for i, n in enumerate(names) if n.startswith(function)]
        if len(hits) != 1:
            found = "no row" if not hits else f"{len(hits)} rows"
            raise AutoscaleError(
                f"{path}: HashFunction {function!r} matches {found}",
                hint=f"give a longer prefix of one of: {', '.join(n[:12] for n in names)}",
            )
        i = hits[0]
        per_minute, label, what = (
            table[i],
            f"azure-functions-{names[i][:8]}",
            f"function {names[i][:12]} ({rows[i + 1][header.index('Trigger')]})",
        )
    return Trace(label, per_minute / 60.0, 60.0, f"{path.name} (Azure Functions 2019 format), {what}, {len(minutes)} one-minute bins")


def read_azure_llm(path: Path, bin_s: float = 10.0) -> Trace:
    """Per-request timestamps in the Azure LLM inference 2023 format as a trace of ``bin_s`` bins.

    Args:
        path: CSV with a ``TIMESTAMP`` column (``2023-11-16 18:17:03.9799600``; other columns are
            ignored); rows in any order (they are sorted).
        bin_s: bin length in seconds: the rate of a bin is its request count over ``bin_s``.

    Returns:
        A trace named ``azure-llm-<stem>`` (``azure-llm-code`` for ``AzureLLMInferenceTrace_code.csv``)
        from the first request to the last, whose ``source`` names the file and the binning.

    Raises:
        AutoscaleError: the file is missing or not CSV; it has no ``TIMESTAMP`` column or no rows; a
            timestamp does not parse (the message names the file, line and column).
    """
    path = Path(path)
    if not bin_s > 0:
        raise AutoscaleError(f"bin_s must be > 0, got {bin_s}")
    rows = _open_csv(path)
    header = [h.strip() for h in rows[0]]
    if "TIMESTAMP" not in header:
        raise AutoscaleError(
            f"{path}: column 'TIMESTAMP' is missing from the header {header} (expected TIMESTAMP,ContextTokens,GeneratedTokens)"
        )
    col = header.index("TIMESTAMP")
    stamps = []
    for line, row in enumerate(rows[1:], start=2):
        cell = row[col].strip() if col < len(row) else ""
        try:
            stamps.append(np.datetime64(cell.replace(" ", "T"), "ns"))
        except ValueError:
            raise AutoscaleError(
                f"{path}: line {line}, column 'TIMESTAMP': {cell!r} is not a timestamp like '2023-11-16 18:17:03.9799600'"
            ) from None
    if not stamps:
        raise AutoscaleError(f"{path}: no request rows after the header")
    ns = np.sort(np.asarray(stamps, dtype="datetime64[ns]").astype(np.int64))
    seconds = (ns - ns[0]) / 1e9
    n_bins = max(1, int(math.ceil(seconds[-1] / bin_s + 1e-12)))
    counts = np.bincount(np.minimum((seconds // bin_s).astype(np.int64), n_bins - 1), minlength=n_bins)
    stem = path.stem.removeprefix("AzureLLMInferenceTrace_")
    return Trace(
        f"azure-llm-{stem}",
        counts / bin_s,
        float(bin_s),
        f"{path.name} (Azure LLM inference 2023), {len(stamps)} requests in {bin_s:g} s bins",
    )


def load_trace(spec: str, *, duration_s: float, peak_rps: float, function: str | None = None, bin_s: float = 10.0, **shape: float) -> Trace:
    """A trace by its command-line name, scaled to ``peak_rps`` and ``duration_s``.

    Args:
        spec: a generated shape (``diurnal``, ``step``, ``spike``, ``on_off``, ``ramp``; ``on-off`` is
            accepted too), ``azure-functions:PATH`` or ``azure-llm:PATH``.
        duration_s: length of the result in seconds.
        peak_rps: its highest bin rate, req/s.
        function: for ``azure-functions``, the function to take (see :func:`read_azure_functions`).
        bin_s: for ``azure-llm``, the bin length of the source in seconds (before stretching).
        shape: keyword parameters of the generated shape (``rise_s=60``).

    Raises:
        AutoscaleError: an unknown name, a reader's error, or a bad parameter.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.replace("-", "_") if not sep else kind
    if not sep and kind in GENERATED:
        try:
            return GENERATED[kind](duration_s, peak_rps, **shape)
        except TypeError as exc:
            raise AutoscaleError(f"trace {kind!r}: {exc}") from exc
    if sep and kind == "azure-functions":
        return read_azure_functions(Path(rest), function).scaled(peak_rps=peak_rps, duration_s=duration_s)
    if sep and kind == "azure-llm":
        return read_azure_llm(Path(rest), bin_s).scaled(peak_rps=peak_rps, duration_s=duration_s)
    raise AutoscaleError(f"unknown trace {spec!r}", hint=f"use one of {', '.join(GENERATED)}, azure-functions:PATH or azure-llm:PATH")

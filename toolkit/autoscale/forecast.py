"""A seasonal forecast of the arrival rate from its own history: what lets the policy start pods
*before* a load that recurs (bursts on a schedule, a daily peak), where any reactive policy is a pod
start late (see ``perf/results/autoscale_sim_references.md``: knowing the rate one pod start ahead is
what reaches 99% on bursts).

Two steps, both pure functions of ``(time, rate)`` samples:

1. **Period** (:func:`detect_period`): the samples are averaged into bins of ``bin_s`` seconds, and
   the period is the lag of the highest peak of their autocorrelation function (ACF) after its first
   zero crossing. Before the first zero crossing the ACF only says that neighbouring bins are alike
   (any slow change does that); a recurring pattern shows as a peak at its lag (Hyndman &
   Athanasopoulos, *Forecasting: Principles and Practice*, 3rd ed., §2.8 "Autocorrelation": "the
   autocorrelations will be larger for the seasonal lags"). The ACF at lag L is the mean of
   ``(x[t] - mean)(x[t + L] - mean)`` over the L-shifted overlap divided by the variance, so a
   pattern repeated exactly gives 1 whatever the overlap. A peak counts when it is at least
   ``min_correlation`` and the history holds two periods (the overlap is then a whole period: one
   repetition has been seen, not guessed).
2. **Forecast** (:meth:`SeasonalHistory.peak_within`): the seasonal naïve method (the same book, §5.2: "each
   forecast equal to the last observed value from the same season"), as the highest binned rate of
   the window one period earlier than ``[now, now + horizon]``. The highest, not the mean: the
   policy sizes for the load it must serve in that window. The policy asks it twice: for a pod's
   start ahead (scale up before the load comes back) and for the scale-down window ahead (scale down
   when the load will not come back within it).

No state and no clock: the policy keeps the samples in its history and passes ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Seasonality", "SeasonalHistory", "bin_rates", "detect_period", "fit_seasonal"]


@dataclass(frozen=True)
class Seasonality:
    """A period found in a rate history.

    Attributes:
        period_s: the period in seconds (a whole number of bins).
        correlation: the ACF at that lag, in [-1, 1] (1: the history repeats exactly).
    """

    period_s: float
    correlation: float


def bin_rates(samples: Sequence[tuple[float, float]], now: float, bin_s: float) -> np.ndarray:
    """The samples' mean rate per bin, oldest first; the last bin ends at ``now``.

    Args:
        samples: ``(time s, rate req/s)`` pairs, in any order; those after ``now`` are ignored.
        now: the end of the last bin (seconds, the samples' clock).
        bin_s: bin width in seconds (> 0).

    Returns:
        float64 array of shape ``(n,)``, n = the bins from the oldest sample's to ``now``; a bin with no
        sample takes the value interpolated linearly between its neighbours (a missed scrape is no
        zero load). Empty when there is no sample.

    Raises:
        ValueError: ``bin_s`` is not positive.
    """
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    t = np.array([s[0] for s in samples if s[0] <= now], dtype=np.float64)
    y = np.array([s[1] for s in samples if s[0] <= now], dtype=np.float64)
    if t.size == 0:
        return np.zeros(0)
    age = np.floor((now - t) / bin_s).astype(np.int64)  # 0: the newest bin
    n = int(age.max()) + 1
    sums = np.bincount(age, weights=y, minlength=n)
    counts = np.bincount(age, minlength=n)
    filled = counts > 0
    idx = np.arange(n)
    means = np.interp(idx, idx[filled], sums[filled] / counts[filled])
    return means[::-1]


def detect_period(rates: np.ndarray, bin_s: float, *, min_period_s: float, min_correlation: float) -> Seasonality | None:
    """The period of binned rates (see the module docstring), or None when they show none.

    Args:
        rates: float array of shape ``(n,)``, oldest first (:func:`bin_rates`).
        bin_s: the bins' width in seconds.
        min_period_s: the shortest period to consider (shorter patterns are the panic window's job).
        min_correlation: the ACF a peak must reach (0..1].

    Returns:
        The period of the highest ACF peak after its first zero crossing, at lags from ``min_period_s``
        to half the history (two periods seen); among peaks within 0.05 of the highest, the shortest
        lag (a multiple of the period peaks too). None: a flat history, one shorter than two
        ``min_period_s``, no zero crossing, or no peak reaching ``min_correlation``.
    """
    n = len(rates)
    max_lag = n // 2
    min_lag = max(1, math.ceil(min_period_s / bin_s - 1e-9))
    if max_lag < min_lag:
        return None
    x = np.asarray(rates, dtype=np.float64) - float(np.mean(rates))
    var = float(np.mean(x * x))
    if var <= 1e-12 * max(1.0, float(np.mean(np.abs(rates))) ** 2):
        return None
    full = np.correlate(x, x, mode="full")[n - 1 :]  # full[L] = sum over t of x[t] x[t + L]
    lags = np.arange(max_lag + 1)
    acf = full[: max_lag + 1] / (n - lags) / var
    below = np.nonzero(acf[1:] < 0)[0]
    if below.size == 0:
        return None
    first = int(below[0]) + 1
    peaks = [
        lag
        for lag in range(max(min_lag, first), max_lag + 1)
        if acf[lag] >= acf[lag - 1] and (lag == max_lag or acf[lag] >= acf[lag + 1]) and acf[lag] >= min_correlation
    ]
    if not peaks:
        return None
    best = max(float(acf[lag]) for lag in peaks)
    lag = min(lag for lag in peaks if acf[lag] >= best - 0.05)
    return Seasonality(period_s=lag * bin_s, correlation=float(acf[lag]))


@dataclass(frozen=True)
class SeasonalHistory:
    """A binned rate history with the period found in it: what :meth:`peak_within` forecasts from.

    Attributes:
        rates: float64 array ``(n,)`` of binned rates (req/s), oldest first; the last bin ends now.
        bin_s: the bins' width in seconds.
        period_s, correlation: the :class:`Seasonality` found in ``rates``.
    """

    rates: np.ndarray
    bin_s: float
    period_s: float
    correlation: float

    def peak_within(self, horizon_s: float) -> float:
        """The highest rate (req/s) expected within ``[now, now + horizon_s]``: the seasonal naïve
        forecast, the highest bin of the same window one period ago (a horizon beyond one period
        reads the last period whole)."""
        n = len(self.rates)
        period = round(self.period_s / self.bin_s)
        # the bin of age a (0: the newest) covers (now - (a + 1) bin_s, now - a bin_s]; the future bin
        # [now, now + bin_s) one period back is age period - 1, and now + horizon is age period - horizon / bin_s
        oldest = period - 1
        newest = max(0, min(oldest, period - math.ceil(horizon_s / self.bin_s - 1e-9)))
        return float(self.rates[n - 1 - oldest : n - newest].max())


def fit_seasonal(
    samples: Sequence[tuple[float, float]], now: float, *, bin_s: float, min_period_s: float, min_correlation: float
) -> SeasonalHistory | None:
    """Bin ``samples`` (:func:`bin_rates`) and find their period (:func:`detect_period`).

    Args:
        samples: ``(time s, arrival rate req/s)`` of the history (the policy's, one per decision).
        now: the decision time (seconds, the samples' clock).
        bin_s, min_period_s, min_correlation: see :func:`bin_rates` and :func:`detect_period`.

    Returns:
        The history and its period, or None when it shows none.
    """
    rates = bin_rates(samples, now, bin_s)
    found = detect_period(rates, bin_s, min_period_s=min_period_s, min_correlation=min_correlation)
    if found is None:
        return None
    return SeasonalHistory(rates, bin_s, found.period_s, found.correlation)

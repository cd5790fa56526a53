"""The seasonal forecast: binning a rate history, finding its period from the autocorrelation, and the
seasonal naive forecast, on histories whose period is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.autoscale.forecast import bin_rates, detect_period, fit_seasonal

SETTINGS = {"bin_s": 15.0, "min_period_s": 120.0, "min_correlation": 0.7}


def _bursts(
    duration_s: float, *, period_s: float = 900.0, on_s: float = 300.0, low: float = 5000.0, high: float = 50000.0, step_s: float = 5.0
):
    """``(t, rate)`` every ``step_s``: ``low``, then ``high`` for the last ``on_s`` of each period (on_off's shape)."""
    t = np.arange(0.0, duration_s, step_s)
    return [(float(x), high if (x % period_s) >= period_s - on_s else low) for x in t]


def test_bins_are_means_oldest_first_ending_now_and_gaps_are_interpolated() -> None:
    samples = [(0.0, 10.0), (5.0, 20.0), (31.0, 40.0), (40.0, 60.0)]  # nothing in (10, 25]: one bin is empty
    rates = bin_rates(samples, now=45.0, bin_s=15.0)
    # ages: 40 and 31 -> bin 0 (mean 50); 5 and 0 -> bins 2 and 2 (ages 40/15 = 2.67, 45/15 = 3) -> 2: 20, 3: 10
    assert rates.tolist() == pytest.approx([10.0, 20.0, 35.0, 50.0])  # bin 1 empty: halfway between 20 and 50
    assert bin_rates([], now=10.0, bin_s=15.0).size == 0
    assert bin_rates([(20.0, 5.0)], now=10.0, bin_s=15.0).size == 0  # a sample after now is not history
    with pytest.raises(ValueError, match="bin_s must be > 0, got 0"):
        bin_rates(samples, now=45.0, bin_s=0.0)


def test_the_period_of_bursts_is_found_once_two_periods_are_seen() -> None:
    rng = np.random.default_rng(0)
    noisy = [(t, r * (1 + 0.05 * rng.standard_normal())) for t, r in _bursts(2700.0)]
    found = fit_seasonal(noisy, 2700.0, **SETTINGS)
    assert found is not None and found.period_s == 900.0 and found.correlation > 0.9
    # one burst seen (1000 s): no repetition yet, so no period, however regular the rest looks
    assert fit_seasonal(_bursts(1000.0), 1000.0, **SETTINGS) is None


def test_a_multiple_of_the_period_is_not_taken_for_it() -> None:
    """Lags 300, 600, 900 s all repeat a 300 s pattern exactly: the shortest is the period."""
    found = fit_seasonal(_bursts(3600.0, period_s=300.0, on_s=100.0), 3600.0, **SETTINGS)
    assert found is not None and found.period_s == 300.0


@pytest.mark.parametrize(
    "name, rate",
    [
        ("steady", lambda t: 20000.0),
        ("ramp", lambda t: 5000.0 + 10.0 * t),
        ("one diurnal period", lambda t: 5000.0 + 45000.0 * 0.5 * (1 - np.cos(2 * np.pi * t / 3600.0))),
        ("one spike", lambda t: 50000.0 if 1800 <= t < 2100 else 10000.0),
    ],
)
def test_histories_that_do_not_repeat_have_no_period(name, rate) -> None:
    samples = [(float(t), float(rate(t))) for t in np.arange(0.0, 3600.0, 5.0)]
    assert fit_seasonal(samples, 3600.0, **SETTINGS) is None, name


def test_noise_alone_has_no_period() -> None:
    rng = np.random.default_rng(1)
    samples = [(float(t), 20000.0 + 2000.0 * rng.standard_normal()) for t in np.arange(0.0, 3600.0, 5.0)]
    assert detect_period(bin_rates(samples, 3600.0, 15.0), 15.0, min_period_s=120.0, min_correlation=0.7) is None


def test_load_that_drifts_without_repeating_seldom_shows_a_period() -> None:
    """A drifting load (random walks and AR(1) with phi 0.98, 2 h of 15 s bins) looks alike at
    neighbouring bins but repeats nowhere. A period found there would let the scale-down go below
    the window's memory, so false periods must be rare: at most 1% of 400 seeded histories (this
    seed gives 1: an AR(1) with a "period" of 2670 s at 0.81)."""
    rng = np.random.default_rng(0)
    found = 0
    for i in range(400):
        steps = rng.standard_normal(480)
        if i % 2:
            x = np.cumsum(steps)
        else:
            x = np.zeros(480)
            for t in range(1, 480):
                x[t] = 0.98 * x[t - 1] + steps[t]
        found += detect_period(20000.0 + 500.0 * x, 15.0, min_period_s=120.0, min_correlation=0.7) is not None
    assert found <= 4


def test_the_forecast_is_the_highest_rate_of_the_same_window_one_period_ago() -> None:
    """At 2365 s (35 s before on_off's third burst) the window [2365, 2400] one period back is [1465, 1500]:
    all low; a horizon of 40 s reaches 1505 s, where the second burst had begun."""
    found = fit_seasonal(_bursts(2365.0), 2365.0, **SETTINGS)
    assert found is not None and found.period_s == 900.0
    assert found.peak_within(30.0) == pytest.approx(5000.0)
    assert found.peak_within(40.0) == pytest.approx(50000.0)
    # after a burst (2705 s), the next 300 s one period back ([1805, 2105]) are low: safe to scale down
    after = fit_seasonal(_bursts(2705.0), 2705.0, **SETTINGS)
    assert after is not None and after.peak_within(300.0) == pytest.approx(5000.0)
    assert after.peak_within(900.0) == pytest.approx(50000.0)  # the whole last period holds a burst

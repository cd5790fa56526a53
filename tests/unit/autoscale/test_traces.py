"""Load traces: the generated shapes, scaling, seeded arrivals, and the readers of the two public
formats on the real files in ../shared/traces/ and on small bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.autoscale.traces import (
    GENERATED,
    Trace,
    diurnal,
    load_trace,
    on_off,
    ramp,
    read_azure_functions,
    read_azure_llm,
    spike,
    step,
)
from toolkit.errors import AutoscaleError

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_TRACES = REPO_ROOT.parent / "shared" / "traces"
FUNCTIONS = SHARED_TRACES / "azure-functions-2019-format-vhive-invitro" / "invocations.csv"
LLM_CODE = SHARED_TRACES / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_code.csv"
LLM_CONV = SHARED_TRACES / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"

needs_shared = pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason=f"the public traces are not at {SHARED_TRACES} (../shared/traces)")

HEADER = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(i) for i in range(1, 6))


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- generated shapes ----------------------------------------------------------------------------------------------


def test_spike_rises_from_its_base_to_the_peak_and_back():
    t = spike(3600, 1000, base_fraction=0.2, at=0.5, rise_s=30, hold_s=300, fall_s=120)
    assert t.bin_s == 1.0 and t.rate_rps.size == 3600
    assert t.rate_at(100.0) == pytest.approx(200.0)
    assert t.rate_at(1800 + 15) == pytest.approx(200 + 800 * 15.5 / 30)  # bin centre 1815.5 s, half-way up
    assert t.rate_at(1800 + 30 + 150) == pytest.approx(1000.0)
    assert t.rate_at(3500.0) == pytest.approx(200.0)
    assert t.peak_rps == pytest.approx(1000.0)


def test_on_off_alternates_off_and_on_periods():
    t = on_off(1800, 500, off_fraction=0.1, on_s=300, off_s=600, rise_s=0)
    assert t.rate_at(np.array([10.0, 599.0, 600.0, 899.0, 900.0, 1500.0])).tolist() == pytest.approx([50, 50, 500, 500, 50, 500])
    assert t.mean_rps == pytest.approx((600 * 50 + 300 * 500) / 900)


def test_diurnal_goes_from_the_trough_to_the_peak_half_way():
    t = diurnal(3600, 100, trough_fraction=0.1)
    assert t.rate_rps[0] == pytest.approx(10.0, abs=0.01)
    assert t.rate_rps[1800] == pytest.approx(100.0, abs=0.01)
    assert t.mean_rps == pytest.approx(55.0, rel=1e-3)  # mean of a raised cosine from 10 to 100


def test_step_and_ramp_shapes():
    s = step(300, 40, base_fraction=0.25)
    assert s.rate_at(np.array([0.0, 150.0, 250.0])).tolist() == [10.0, 40.0, 10.0]
    r = ramp(100, 10, base_fraction=0.0)
    assert r.rate_rps[0] == pytest.approx(0.05) and r.rate_rps[-1] == pytest.approx(9.95)


@pytest.mark.parametrize("make", [diurnal, step, spike, on_off, ramp])
def test_generated_shapes_refuse_a_fraction_outside_zero_one(make):
    field = {"diurnal": "trough_fraction", "on_off": "off_fraction"}.get(make.__name__, "base_fraction")
    with pytest.raises(AutoscaleError, match=field):
        make(100, 10, **{field: 1.5})


def test_scaled_sets_peak_and_duration_and_keeps_the_shape():
    t = Trace("x", np.array([1.0, 2.0, 4.0, 0.0]), 60.0, "made up")
    s = t.scaled(peak_rps=1000, duration_s=40)
    assert s.peak_rps == pytest.approx(1000) and s.duration_s == pytest.approx(40) and s.bin_s == pytest.approx(10)
    assert s.rate_rps.tolist() == pytest.approx([250, 500, 1000, 0])
    assert "scaled to a peak of 1000 req/s" in s.source and "stretched to 40 s" in s.source
    with pytest.raises(AutoscaleError, match="peak_rps must be > 0"):
        t.scaled(peak_rps=0)
    with pytest.raises(AutoscaleError, match="has no requests"):
        Trace("z", np.zeros(3), 1.0, "zeros").scaled(peak_rps=10)


def test_trace_refuses_negative_rates():
    with pytest.raises(AutoscaleError, match="finite and >= 0"):
        Trace("bad", np.array([1.0, -1.0]), 1.0, "")


def test_expected_counts_integrate_the_rate_over_each_step():
    t = Trace("x", np.array([100.0, 300.0]), 1.0, "")
    e = t.expected_counts(0.5)
    assert e.tolist() == pytest.approx([50, 50, 150, 150])
    e3 = t.expected_counts(0.75)  # steps straddle the bin edge; the last is cut at the trace's end
    assert e3.tolist() == pytest.approx([75, 25 + 150, 150])


def test_arrivals_are_fixed_by_the_seed_and_poisson_around_the_rate():
    t = spike(600, 2000)
    a, b, c = t.arrivals(0.02, seed=7), t.arrivals(0.02, seed=7), t.arrivals(0.02, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    expected = t.expected_counts(0.02).sum()
    # Poisson total: standard deviation sqrt(expected) (~1,000 here); 5 of them is a 1-in-3-million miss
    assert abs(a.sum() - expected) < 5 * np.sqrt(expected)
    per_second = a.reshape(-1, 50).sum(axis=1)
    assert np.allclose(per_second, np.round(per_second))  # whole requests per second, spread over its steps


def test_load_trace_by_name_and_unknown_names():
    assert load_trace("on-off", duration_s=900, peak_rps=10).name == "on_off"
    assert load_trace("spike", duration_s=900, peak_rps=10, rise_s=60).source.count("rise 60 s") == 1
    assert set(GENERATED) == {"diurnal", "step", "spike", "on_off", "ramp"}
    with pytest.raises(AutoscaleError, match="unknown trace 'sawtooth'"):
        load_trace("sawtooth", duration_s=10, peak_rps=1)
    with pytest.raises(AutoscaleError, match="unexpected keyword"):
        load_trace("spike", duration_s=10, peak_rps=1, wobble=3)


# -- the real files ------------------------------------------------------------------------------------------------


@needs_shared
def test_azure_functions_sum_of_the_ten_functions():
    t = read_azure_functions(FUNCTIONS)
    assert t.name == "azure-functions" and t.bin_s == 60.0 and t.rate_rps.size == 1440
    # 13,037,064 invocations in the file (summed with the csv module when the sample was chosen)
    assert (t.rate_rps * 60).sum() == pytest.approx(13_037_064)
    assert "sum of all 10 functions" in t.source


@needs_shared
def test_azure_functions_one_function_by_hash_prefix():
    t = read_azure_functions(FUNCTIONS, "e72c1540")
    assert t.name == "azure-functions-e72c1540" and "(event)" in t.source
    assert (t.rate_rps * 60).sum() == pytest.approx(575_863)
    s = t.scaled(peak_rps=30_000, duration_s=3600)
    assert s.peak_rps == pytest.approx(30_000) and s.duration_s == pytest.approx(3600) and s.bin_s == pytest.approx(2.5)


@needs_shared
@pytest.mark.parametrize(("path", "rows"), [(LLM_CODE, 8819), (LLM_CONV, 19366)])
def test_azure_llm_counts_every_request(path, rows):
    t = read_azure_llm(path, bin_s=60)
    assert (t.rate_rps * 60).sum() == pytest.approx(rows)  # SOURCE.md: 8,819 and 19,366 rows
    assert t.duration_s == pytest.approx(3480 if rows == 8819 else 3540)  # first to last request, in whole bins
    assert t.name in ("azure-llm-code", "azure-llm-conv")


# -- bad files -----------------------------------------------------------------------------------------------------


def test_functions_reader_names_a_missing_key_column(tmp_path):
    path = _write(tmp_path, "HashOwner,HashApp,Trigger,1,2\na,b,http,1,2\n")
    with pytest.raises(AutoscaleError, match=r"t\.csv: column 'HashFunction' is missing"):
        read_azure_functions(path)


def test_functions_reader_names_a_minute_column_out_of_order(tmp_path):
    path = _write(tmp_path, "HashOwner,HashApp,HashFunction,Trigger,1,3\na,b,c,http,1,2\n")
    with pytest.raises(AutoscaleError, match="is '3', expected minute '2'"):
        read_azure_functions(path)


@pytest.mark.parametrize(("cell", "what"), [("-4", "'-4' is not a non-negative integer"), ("2.5", "'2.5' is not"), ("x", "'x' is not")])
def test_functions_reader_names_line_and_column_of_a_bad_count(tmp_path, cell, what):
    path = _write(tmp_path, f"{HEADER}\no,a,f1,http,1,2,3,4,5\no,a,f2,http,1,2,{cell},4,5\n")
    with pytest.raises(AutoscaleError, match=rf"t\.csv: line 3, column '3': {what}"):
        read_azure_functions(path)


def test_functions_reader_names_a_short_row(tmp_path):
    path = _write(tmp_path, f"{HEADER}\no,a,f1,http,1,2,3\n")
    with pytest.raises(AutoscaleError, match="line 2 has 7 fields, the header has 9"):
        read_azure_functions(path)


def test_functions_reader_refuses_unknown_and_ambiguous_functions(tmp_path):
    path = _write(tmp_path, f"{HEADER}\no,a,abc1,http,1,2,3,4,5\no,a,abc2,timer,0,0,0,0,60\n")
    assert read_azure_functions(path, "abc2").rate_rps.tolist() == [0, 0, 0, 0, 1.0]
    assert read_azure_functions(path).rate_rps.tolist() == pytest.approx([1 / 60, 2 / 60, 3 / 60, 4 / 60, 65 / 60])
    with pytest.raises(AutoscaleError, match="HashFunction 'abc' matches 2 rows"):
        read_azure_functions(path, "abc")
    with pytest.raises(AutoscaleError, match="HashFunction 'zz' matches no row"):
        read_azure_functions(path, "zz")


def test_readers_name_a_missing_or_empty_file(tmp_path):
    with pytest.raises(AutoscaleError, match="nope.csv does not exist"):
        read_azure_llm(tmp_path / "nope.csv")
    with pytest.raises(AutoscaleError, match="is empty"):
        read_azure_functions(_write(tmp_path, ""))


def test_llm_reader_names_a_missing_timestamp_column(tmp_path):
    path = _write(tmp_path, "TIME,ContextTokens\n2023-11-16 18:17:03.9799600,3\n")
    with pytest.raises(AutoscaleError, match="column 'TIMESTAMP' is missing"):
        read_azure_llm(path)


def test_llm_reader_names_line_and_column_of_a_bad_timestamp(tmp_path):
    path = _write(tmp_path, "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,3\nyesterday,4\n")
    with pytest.raises(AutoscaleError, match=r"line 3, column 'TIMESTAMP': 'yesterday' is not a timestamp"):
        read_azure_llm(path)


def test_llm_reader_sorts_and_bins_requests(tmp_path):
    rows = ["2023-11-16 18:00:25.5", "2023-11-16 18:00:00.0", "2023-11-16 18:00:09.9", "2023-11-16 18:00:10.0"]
    path = _write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(f"{r},1,1" for r in rows))
    t = read_azure_llm(path, bin_s=10)
    assert (t.rate_rps * 10).tolist() == [2, 1, 1]  # [0, 10): 2, [10, 20): 1, [20, 25.5]: 1

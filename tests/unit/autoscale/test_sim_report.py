"""Policies side by side: the same arrivals for each, the report's JSON shape, the target checks,
missing policies named, and the ``tritonrec autoscale simulate`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.autoscale.sim_report import SimulationSettings, check_targets, compare, make_policy, make_spec, write_report
from toolkit.autoscale.simulate import ReplicaModel, SimulationResult, load_service_curve
from toolkit.autoscale.traces import spike
from toolkit.cli.app import app
from toolkit.errors import AutoscaleError, InvalidAutoscalerSpecError

REPO_ROOT = Path(__file__).resolve().parents[3]
PERF_REPORT = REPO_ROOT / "perf" / "results" / "triton_movielens.json"


@pytest.fixture(scope="module")
def model() -> ReplicaModel:
    return ReplicaModel.from_curve(load_service_curve(PERF_REPORT), slo_ms=10.0)


def _result(name: str, attainment: float, replica_seconds: float) -> SimulationResult:
    return SimulationResult(name, 10.0, attainment, 5.0, replica_seconds, 3, 1000.0, 0.0, timeline={})


def test_static_peak_has_the_replicas_for_the_peak_at_the_slo(model):
    trace = spike(600, 20_000)
    policy, _, settings = make_policy("static_peak", model=model, trace=trace)
    assert policy.replicas == settings["replicas"] == int(np.ceil(20_000 / model.capacity_at_slo_rps))
    with pytest.raises(AutoscaleError, match="unknown policy 'hpa'"):
        make_policy("hpa", model=model, trace=trace)


def test_spec_overrides_merge_field_by_field_and_bad_ones_name_the_field(model):
    spec = make_spec(model, 10, {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}, "maxReplicas": 7})
    assert spec.behavior.scale_down.stabilization_window_seconds == 60
    assert spec.behavior.scale_down.policies[0].value == 100  # the rest of scaleDown keeps the HPA's default
    assert spec.max_replicas == 7 and spec.slo.p99_latency_ms == 10.0 and spec.capacity.per_replica_rps == pytest.approx(5547.72)
    whole = make_spec(model, 10, {"apiVersion": "tritonrec.io/v1alpha1", "kind": "TritonAutoscaler", "spec": {"minReplicas": 2}})
    assert whole.min_replicas == 2
    with pytest.raises(InvalidAutoscalerSpecError, match=r"`spec.minReplicas` \(9\) > `spec.maxReplicas` \(3\)"):
        make_spec(model, 10, {"minReplicas": 9, "maxReplicas": 3})


def test_compare_replays_the_same_arrivals_for_every_policy(model):
    trace = spike(300, 20_000, at=0.3, rise_s=20, hold_s=60)
    results, missing, used = compare(trace, model, ["static_peak", "hpa_cpu"], SimulationSettings(seed=3))
    assert [r.name for r in results] == ["static_peak", "hpa_cpu"] and not missing
    assert results[0].requests == results[1].requests
    assert np.array_equal(results[0].timeline["arrival_rps"], results[1].timeline["arrival_rps"])
    assert used["hpa_cpu"]["sync_period_s"] == 15.0 and used["hpa_cpu"]["initial_replicas"] == model.replicas_for(
        4000
    )  # the first minute of the spike trace: its 20% base
    # static at the peak holds the SLO through the spike; the HPA starts small and scales only after it
    assert results[0].slo_attainment > 0.99 > results[1].slo_attainment
    assert results[1].scaling_actions >= 1 and results[1].replica_seconds < results[0].replica_seconds


def test_oracles_bound_what_reactive_and_clairvoyant_scaling_reach(model):
    # a spike from 4k to 20k req/s in 10 s with 30 s pod starts: knowing the present is not enough,
    # knowing a pod start ahead is
    trace = spike(400, 20_000, at=0.4, rise_s=10, hold_s=120)
    results, _, used = compare(trace, model, ["oracle_now", "oracle_ahead"], SimulationSettings())
    now, ahead = results
    assert used["oracle_now"]["lookahead_s"] == 0 and used["oracle_ahead"]["lookahead_s"] == 35.0
    assert ahead.slo_attainment > 0.99 > now.slo_attainment
    assert ahead.replica_seconds < model.replicas_for(20_000) * 400  # less than static at the peak


def test_targets_are_checked_as_the_issue_states_them():
    results = [_result("static_peak", 0.999, 1000), _result("hpa_cpu", 0.95, 600), _result("hpa_queue_time", 0.97, 800)]
    lines = check_targets([*results, _result("tritonrec", 0.992, 650)], "spike")
    assert lines[0].endswith(": met") and "99.2000%" in lines[0]
    assert lines[1] == "replica-seconds 65.0% of static_peak <= 70%: met"
    assert lines[2].endswith("NOT met")  # more replica-seconds than hpa_cpu's 600
    assert lines[3].endswith(": met")
    assert check_targets([*results, _result("tritonrec", 0.99, 610)], "diurnal") == ["replica-seconds 61.0% of static_peak <= 60%: NOT met"]
    assert "no target checked" in check_targets(results, "spike")[0]


def test_report_json_has_the_shape_the_issue_asks_for(model, tmp_path):
    trace = spike(120, 10_000, at=0.25, rise_s=10, hold_s=30)
    results, missing, used = compare(trace, model, ["static_peak", "hpa_cpu"], SimulationSettings())
    missing["tritonrec"] = "not in this checkout"
    paths = write_report(
        tmp_path, {"spike": (trace, results, missing, used)}, command="tritonrec autoscale simulate", model=model,
        perf_report="perf/results/triton_movielens.json", settings=SimulationSettings(),
    )  # fmt: skip
    assert [p.name for p in paths] == ["autoscale_sim.json", "autoscale_sim.md", "autoscale_sim.png"]
    report = json.loads(paths[0].read_text())
    assert set(report) == {"traces", "command", "perf_report", "machine", "parameters"}
    entries = report["traces"]["spike"]["policies"]
    assert [e["name"] for e in entries] == ["static_peak", "hpa_cpu"]
    assert all(set(e) == {"name", "slo_attainment", "p99_ms", "replica_seconds", "scaling_actions"} for e in entries)
    assert report["parameters"]["traces"]["spike"]["missing_policies"] == {"tritonrec": "not in this checkout"}
    assert report["parameters"]["replica_model"]["source"] == "triton_movielens.json: optimized_onnx_python, http, client batch 1"
    md = paths[1].read_text()
    assert "| tritonrec | missing: not in this checkout |" in md and "![load, pods and latency" in md
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_command_writes_the_report(tmp_path):
    out = tmp_path / "out"
    spec = tmp_path / "ta.yaml"
    spec.write_text("kind: TritonAutoscaler\nspec:\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 30\n")
    result = CliRunner().invoke(
        app,
        ["autoscale", "simulate", "--trace", "spike", "--duration", "120", "--peak-rps", "8000", "--policies", "static_peak,hpa_cpu",
         "--perf-report", str(PERF_REPORT), "--spec", str(spec), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "autoscale_sim.json").read_text())
    assert [e["name"] for e in report["traces"]["spike"]["policies"]] == ["static_peak", "hpa_cpu"]
    assert report["parameters"]["traces"]["spike"]["duration_s"] == 120
    assert report["parameters"]["spec_overrides"]["spec"]["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 30}
    assert "git_commit" in report["parameters"] and report["parameters"]["queue_timeout_s"] is None
    assert report["parameters"]["replica_model"]["queue_scale"] == 1.0  # markov unless asked


def test_simulate_command_takes_the_allen_cunneen_queue_model_and_refuses_others(tmp_path):
    runner = CliRunner()
    args = ["autoscale", "simulate", "--trace", "spike", "--duration", "60", "--peak-rps", "8000", "--policies", "static_peak",
            "--perf-report", str(PERF_REPORT), "--out", str(tmp_path)]  # fmt: skip
    done = runner.invoke(app, [*args, "--queue-model", "allen-cunneen"])
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "autoscale_sim.json").read_text())
    assert 0.5 <= report["parameters"]["replica_model"]["queue_scale"] < 1.0
    assert "Allen-Cunneen" in (tmp_path / "autoscale_sim.md").read_text()
    bad = runner.invoke(app, [*args, "--queue-model", "erlang"])
    assert bad.exit_code != 0 and "expected markov or allen-cunneen" in bad.output


def test_simulate_command_refuses_unknown_policies_and_bad_reports(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["autoscale", "simulate", "--policies", "static_peak,magic", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "magic" in bad.output
    shape = runner.invoke(app, ["autoscale", "simulate", "--trace", "diurnal", "--shape", "rise_s=60", "--out", str(tmp_path)])
    assert shape.exit_code != 0 and "no trace given takes ['rise_s']" in shape.output
    malformed = runner.invoke(app, ["autoscale", "simulate", "--shape", "rise_s", "--out", str(tmp_path)])
    assert malformed.exit_code != 0 and "expected KEY=NUMBER" in malformed.output
    (tmp_path / "list.json").write_text("[1, 2]")
    not_a_spec = runner.invoke(app, ["autoscale", "simulate", "--spec", str(tmp_path / "list.json"), "--out", str(tmp_path)])
    assert not_a_spec.exit_code != 0 and "must hold a mapping" in str(not_a_spec.exception)
    missing = runner.invoke(app, ["autoscale", "simulate", "--perf-report", str(tmp_path / "none.json"), "--out", str(tmp_path)])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, AutoscaleError) and "cannot be read" in str(missing.exception)


def test_simulate_help_explains_the_traces():
    result = CliRunner().invoke(app, ["autoscale", "simulate", "--help"])
    assert result.exit_code == 0
    for word in ("azure-functions:PATH", "azure-llm:PATH", "--start-delay", "--perf-report"):
        assert word in result.output

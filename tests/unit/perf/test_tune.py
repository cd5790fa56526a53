"""The tuner without a server: search strategies replayed on recorded curves, configs, new versions.

``tests/fixtures/perf/tune_movielens_curves.json`` is the brute force of ``perf/tune_comparison.py``:
every candidate of the default space loaded into the bundled Triton 2.51 and measured by
perf_analyzer (client batch 16, concurrency 1/4/8) -- real curves, replayed here as lookups.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format

from toolkit.errors import PerfError, RepositoryError
from toolkit.perf.analyzer import LoadPoint
from toolkit.perf.tune import (
    Candidate,
    CoordinateSearch,
    GridSearch,
    Measurement,
    MeasureSettings,
    Objective,
    SearchSpace,
    candidate_config,
    candidate_from_config,
    config_json,
    load_recorded,
    pareto_front,
    replay,
    run_search,
    summarize,
    write_version,
)
from toolkit.repository.config import (
    BatchingOptions,
    InstanceGroup,
    VersionPolicy,
    build_model_config,
    config_to_text,
    parse_config,
    read_config,
)
from toolkit.tensors import TensorSpec

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "perf" / "tune_movielens_curves.json"


# -- helpers ---------------------------------------------------------------------------------


def _point(concurrency: int, throughput: float, p99: float) -> LoadPoint:
    return LoadPoint(
        concurrency=concurrency,
        request_rate=None,
        batch_size=16,
        throughput_infer_per_s=throughput,
        p50_latency_ms=p99 / 2,
        p90_latency_ms=p99 * 0.8,
        p95_latency_ms=p99 * 0.9,
        p99_latency_ms=p99,
        avg_latency_ms=p99 / 2,
        client_send_ms=0.0,
        network_server_send_recv_ms=0.0,
        server_queue_ms=0.0,
        server_compute_input_ms=0.0,
        server_compute_infer_ms=0.0,
        server_compute_output_ms=0.0,
        client_recv_ms=0.0,
    )


def _synthetic(space: SearchSpace, curve) -> list[Measurement]:
    """One measurement per candidate: ``curve(candidate) -> [(concurrency, throughput, p99), ...]``."""
    return [Measurement(c, [_point(*p) for p in curve(c)]) for c in space.candidates()]


def _search(space: SearchSpace, objective: Objective, recorded: list[Measurement], start: Candidate | None = None, **kw):
    strategy = CoordinateSearch(space, objective, start=start, **kw)
    measured = run_search(strategy, replay(recorded))
    return strategy, measured, strategy.trace(measured)


def _best(objective: Objective, measurements: list[Measurement]) -> float:
    return max(objective.score(m) or 0.0 for m in measurements)


@pytest.fixture(scope="module")
def recorded():
    space, measurements, doc = load_recorded(FIXTURE)
    objective = Objective(p99_budget_ms=doc["objective"]["p99_budget_ms"], throughput_floor=doc["objective"]["throughput_floor"])
    return space, measurements, objective, Candidate.from_dict(doc["start"])


# -- on the recorded curves ------------------------------------------------------------------


def test_recorded_curves_cover_the_whole_space(recorded):
    space, measurements, objective, start = recorded
    assert {m.candidate for m in measurements} == set(space.candidates())
    assert len(measurements) == len(space) == 32
    assert start in space
    assert all(p.concurrency in (1, 4, 8) for m in measurements for p in m.points)


def test_search_finds_within_5_percent_of_the_brute_force_best_with_a_third_of_the_measurements(recorded):
    space, measurements, objective, start = recorded
    strategy, measured, trace = _search(space, objective, measurements, start=start)
    assert measured[0].candidate == start
    assert 3 * len(measured) <= len(measurements)
    assert _best(objective, measured) >= 0.95 * _best(objective, measurements)
    assert trace.stop_reason and trace.stop_reason.startswith("flattened")
    assert strategy.next_candidate(measured) is None


def test_search_never_measures_what_it_pruned(recorded):
    space, measurements, objective, start = recorded
    strategy, measured, trace = _search(space, objective, measurements, start=start)
    keys = [m.candidate for m in measured]
    assert len(keys) == len(set(keys))
    assert not set(trace.pruned) & set(keys)
    # every pruned candidate is dominated by what the search had measured when it stopped
    known = {m.candidate: m for m in measured}
    assert all(strategy.prune_reason(c, known) for c in trace.pruned)


def test_search_is_pure_same_measurements_same_proposal(recorded):
    space, measurements, objective, start = recorded
    strategy = CoordinateSearch(space, objective, start=start)
    evaluate = replay(measurements)
    measured = [evaluate(start)]
    first = strategy.next_candidate(measured)
    assert first == strategy.next_candidate(list(measured)) == CoordinateSearch(space, objective, start=start).next_candidate(measured)
    assert first != start


def test_grid_search_measures_every_candidate_once(recorded):
    space, measurements, objective, _ = recorded
    measured = run_search(GridSearch(space), replay(measurements))
    assert [m.candidate for m in measured] == space.candidates()
    result = summarize("dlrm_onnx_python", GridSearch(space), measured, objective, space)
    assert result.best_score == _best(objective, measurements)
    assert result.to_dict()["n_measurements"] == 32


# -- pruning and the early stop on crafted curves ---------------------------------------------

SPACE = SearchSpace()


def test_a_delay_that_misses_the_budget_everywhere_prunes_every_longer_delay():
    def curve(c: Candidate):
        # latency grows with the queue delay; 500 us and more miss the 5 ms budget at every level
        base = 1.0 + c.max_queue_delay_us / 100
        return [(1, 10_000, base), (4, 30_000, base + 1), (8, 40_000 + c.instance_count, base + 2)]

    recorded = _synthetic(SPACE, curve)
    objective = Objective(p99_budget_ms=5.0)
    start = Candidate(1, 500, 256, (64, 256), 1, 1)  # infeasible start: the search must walk to shorter delays
    _, measured, trace = _search(SPACE, objective, recorded, start=start)
    keys = {m.candidate for m in measured}
    longer = start.with_value("max_queue_delay_us", 2000)
    assert longer not in keys
    assert "misses the p99 budget at every load" in trace.pruned[longer]
    assert _best(objective, measured) == _best(objective, recorded)
    assert all(c.max_queue_delay_us < 2000 for c in keys)


def test_a_falling_score_prunes_the_rest_of_the_line():
    def curve(c: Candidate):
        # throughput peaks at 100 us; every other knob is flat
        return [(8, {0: 50_000, 100: 60_000, 500: 40_000, 2000: 45_000}[c.max_queue_delay_us], 3.0)]

    recorded = _synthetic(SPACE, curve)
    objective = Objective(p99_budget_ms=10.0)
    _, measured, trace = _search(SPACE, objective, recorded, start=Candidate())
    far = Candidate().with_value("max_queue_delay_us", 2000)
    assert far not in {m.candidate for m in measured}  # 45k would beat 40k, but not the 60k before it
    assert "dominated along max_queue_delay_us" in trace.pruned[far]


def test_the_search_stops_when_the_curve_flattens():
    def curve(c: Candidate):
        return [(8, 50_000 + 10 * c.instance_count + c.max_queue_delay_us / 1000, 3.0)]  # < 2% between any two

    recorded = _synthetic(SPACE, curve)
    _, measured, trace = _search(SPACE, Objective(p99_budget_ms=10.0), recorded, start=Candidate())
    assert "flattened" in trace.stop_reason
    assert len(measured) <= 8  # start, then one line per knob: 1 + 1 + 3 + 1 + 1 at most
    assert {s["knob"] for s in trace.steps} == {"batching", "max_queue_delay_us", "instance_count", "intra_op_threads"}


def test_the_search_keeps_going_while_it_improves_and_finds_a_corner():
    def curve(c: Candidate):
        # every knob helps a lot towards its maximum: the optimum is the far corner
        x = (
            c.instance_count * 3
            + SPACE.max_queue_delays_us.index(c.max_queue_delay_us)
            + c.intra_op_threads * 2
            + (c.max_batch_size == 256) * 2
        )
        return [(8, 10_000 * 1.2**x, 3.0)]

    recorded = _synthetic(SPACE, curve)
    objective = Objective(p99_budget_ms=10.0)
    _, measured, trace = _search(SPACE, objective, recorded, start=Candidate(1, 0, 64, (32,), 1, 1))
    assert max(measured, key=lambda m: objective.score(m) or 0).candidate == Candidate(2, 2000, 256, (64, 256), 2, 1)
    assert len(measured) < len(SPACE)


def test_minimizing_p99_under_a_throughput_floor():
    def curve(c: Candidate):
        # one instance never reaches 30,000/s; p99 grows with the queue delay and with 2 threads
        top = 20_000 * c.instance_count * (1 + 0.05 * SPACE.max_queue_delays_us.index(c.max_queue_delay_us))
        p99 = 2.0 + c.max_queue_delay_us / 500 + 3.0 * (c.intra_op_threads - 1) + (c.max_batch_size == 64)
        return [(1, top / 4, p99 / 2), (8, top, p99)]

    recorded = _synthetic(SPACE, curve)
    objective = Objective(p99_budget_ms=None, throughput_floor=30_000)
    _, measured, trace = _search(SPACE, objective, recorded, start=Candidate())
    chosen = max(measured, key=objective.rank)
    assert chosen.candidate == Candidate(2, 0, 256, (64, 256), 1, 1)
    assert objective.operating_point(chosen).throughput_infer_per_s >= 30_000
    # it walked to longer delays while chasing the floor, then searched every knob again once feasible
    assert 2 * len(measured) < len(SPACE)
    assert [s["knob"] for s in trace.steps if s["cycle"] == 1] == ["batching", "max_queue_delay_us", "instance_count", "intra_op_threads"]


def test_an_infeasible_start_is_never_called_flat():
    def curve(c: Candidate):
        # only 2 instances with 2 threads meet the budget; each of the two alone gets closer to it
        return [(1, 1000.0, 20.0 - 5 * (c.instance_count - 1) - 6 * (c.intra_op_threads - 1))]

    recorded = _synthetic(SPACE, curve)
    objective = Objective(p99_budget_ms=10.0)
    _, measured, _ = _search(SPACE, objective, recorded, start=Candidate())
    assert _best(objective, measured) == 1000.0


def test_the_measurement_budget_caps_the_search():
    recorded = _synthetic(SPACE, lambda c: [(8, 1000.0 * c.instance_count * (1 + c.max_queue_delay_us), 3.0)])
    _, measured, trace = _search(SPACE, Objective(), recorded, max_measurements=3)
    assert len(measured) == 3
    assert "budget" in trace.stop_reason


def test_errors_are_infeasible_and_prune_nothing():
    objective = Objective(p99_budget_ms=10.0)
    failed = Measurement(Candidate(), [], error="load failed")
    assert objective.score(failed) is None and objective.rank(failed) == (-1, 0.0)
    search = CoordinateSearch(SPACE, objective)
    longer = Candidate().with_value("max_queue_delay_us", 2000)
    assert search.prune_reason(longer, {failed.candidate: failed}) is None
    # a measurement that lost a level is no proof that every level misses the budget
    partial = Measurement(Candidate(), [_point(8, 40_000, 30.0)], level_errors={1: "unstable", 4: "unstable"})
    assert not objective.misses_latency_everywhere(partial)
    assert search.prune_reason(longer, {partial.candidate: partial}) is None
    complete = Measurement(Candidate(), [_point(1, 9_000, 12.0), _point(8, 40_000, 30.0)])
    assert "misses the p99 budget" in search.prune_reason(longer, {complete.candidate: complete})


# -- objective, Pareto front, space ----------------------------------------------------------


def test_objective_picks_the_fastest_level_within_the_budget_or_the_lowest_p99_above_the_floor():
    m = Measurement(Candidate(), [_point(1, 10_000, 2.0), _point(4, 30_000, 6.0), _point(8, 40_000, 12.0)])
    assert Objective(p99_budget_ms=10.0).operating_point(m).concurrency == 4
    assert Objective(p99_budget_ms=10.0).score(m) == 30_000
    assert Objective(p99_budget_ms=1.0).score(m) is None
    assert Objective(p99_budget_ms=1.0).misses_latency_everywhere(m)
    floor = Objective(p99_budget_ms=None, throughput_floor=25_000)
    assert floor.mode == "min_p99" and floor.operating_point(m).concurrency == 4 and floor.score(m) == -6.0
    assert Objective(p99_budget_ms=10.0, throughput_floor=35_000).score(m) is None
    near, far = Measurement(Candidate(), [_point(1, 1, 11.0)]), Measurement(Candidate(), [_point(1, 1, 30.0)])
    assert Objective(p99_budget_ms=10.0).rank(near) > Objective(p99_budget_ms=10.0).rank(far)
    with pytest.raises(PerfError):
        Objective(p99_budget_ms=None, throughput_floor=None)


def test_pareto_front_keeps_only_undominated_points():
    a, b = Candidate(), Candidate(instance_count=2)
    front = pareto_front(
        [
            Measurement(a, [_point(1, 10_000, 1.0), _point(4, 30_000, 3.0), _point(8, 29_000, 5.0)]),
            Measurement(b, [_point(1, 12_000, 1.0), _point(4, 28_000, 4.0), _point(8, 45_000, 7.0)]),
        ]
    )
    assert [(p.candidate, p.concurrency) for p in front] == [(b, 1), (a, 4), (b, 8)]


def test_search_space_defaults_and_validation():
    space = SearchSpace()
    assert len(space) == len(space.candidates()) == 32
    assert len(set(space.candidates())) == 32
    assert space.nearest(Candidate(3, 150, 200, (50,), 4, 1)) == Candidate(2, 100, 256, (64, 256), 2, 1)
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(PerfError, match="ascending"):
        SearchSpace(max_queue_delays_us=(500, 100))
    with pytest.raises(PerfError, match="max_batch_size"):
        SearchSpace(batchings=((64, (128,)),))
    with pytest.raises(PerfError, match="instance_counts"):
        SearchSpace(instance_counts=(0, 1))
    with pytest.raises(PerfError):
        MeasureSettings(concurrency=())


def test_candidate_and_measurement_round_trip_through_json():
    c = Candidate(2, 500, 64, (32,), 2, 1)
    assert c.key == "i2_d500_b64p32_t2x1"
    assert Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.with_value("batching", (256, (64, 256))).batching == (256, (64, 256))
    m = Measurement(c, [_point(1, 1000.0, 2.0)], level_errors={8: "unstable"}, load_s=1.5)
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


# -- configs and versions --------------------------------------------------------------------

INPUTS = [TensorSpec("dense_features", "float32", (None, 2)), TensorSpec("sparse_ids", "int64", (None, 7))]
OUTPUTS = [TensorSpec("probability", "float32", (None, 1))]


def _base_config(**kw):
    options = BatchingOptions(max_batch_size=256, max_queue_delay_us=100, preferred_batch_sizes=[64, 256])
    return build_model_config("dlrm_onnx_python", INPUTS, OUTPUTS, options, backend="python", parameters={"intra_op_threads": "1"}, **kw)


def test_candidate_config_sets_every_knob_and_round_trips_through_protobuf_text():
    base = _base_config()
    c = Candidate(2, 2000, 64, (32,), 2, 1)
    config = candidate_config(base, c)
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == base.instance_group[0].kind
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert config.max_batch_size == 64
    assert config.parameters["intra_op_threads"].string_value == "2"
    assert config.parameters["inter_op_threads"].string_value == "1"
    assert list(config.input) == list(base.input) and config.backend == "python"
    assert parse_config(config_to_text(config)) == config
    assert candidate_from_config(config) == c
    assert candidate_from_config(base) == Candidate()
    assert base.instance_group[0].count == 1  # the base is not modified
    # what load_model(config=...) sends: proto field names, 64-bit integers as JSON strings (Triton parses them back)
    sent = json.loads(config_json(config))
    assert sent["max_batch_size"] == 64 and sent["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"
    assert json_format.Parse(config_json(config), type(config)()) == config


def test_candidate_config_uses_the_onnxruntime_backend_thread_parameters():
    options = BatchingOptions(max_batch_size=8)
    base = build_model_config("m", INPUTS, OUTPUTS, options, platform="onnxruntime_onnx", parameters={"intra_op_thread_count": "1"})
    config = candidate_config(base, Candidate(1, 0, 8, (4,), 2, 1))
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    assert "intra_op_threads" not in config.parameters


def test_candidate_config_keeps_what_it_does_not_tune_and_checks_values_as_the_builder_does():
    # the config goes through repository.config.retuned_config: a queue policy, the response cache, the
    # version policy and the group's GPUs stay; a preferred batch size over max_batch_size gets BatchingOptions' message
    options = BatchingOptions(
        max_batch_size=256,
        preferred_batch_sizes=[64],
        queue_timeout_us=5000,
        max_queue_size=32,
        response_cache=True,
        version_policy=VersionPolicy("all"),
        instance_groups=[InstanceGroup("KIND_GPU", 1, gpus=[0, 1])],
    )
    base = build_model_config("m", INPUTS, OUTPUTS, options, backend="python")
    config = candidate_config(base, Candidate(2, 500, 128, (), 1, 1))
    assert config.dynamic_batching.default_queue_policy == base.dynamic_batching.default_queue_policy
    assert config.response_cache.enable and config.version_policy == base.version_policy
    assert config.instance_group[0].count == 2 and list(config.instance_group[0].gpus) == [0, 1]
    assert list(config.dynamic_batching.preferred_batch_size) == [] and config.max_batch_size == 128
    with pytest.raises(RepositoryError, match=r"preferred_batch_size \[512\] must lie in \[1, max_batch_size=256\]"):
        candidate_config(base, Candidate(1, 100, 256, (512,), 1, 1))


def test_candidate_config_refuses_a_model_that_does_not_batch():
    base = build_model_config("m", INPUTS, OUTPUTS, BatchingOptions(max_batch_size=0, dynamic_batching=False), backend="python")
    with pytest.raises(RepositoryError, match="max_batch_size 0"):
        candidate_config(base, Candidate())


def test_candidate_config_refuses_a_heterogeneous_placement():
    groups = [InstanceGroup("KIND_GPU", 2), InstanceGroup("KIND_CPU", 1)]
    base = build_model_config("m", INPUTS, OUTPUTS, BatchingOptions(instance_groups=groups), backend="python")
    with pytest.raises(RepositoryError, match="2 instance groups"):
        candidate_config(base, Candidate())


def _repository(tmp_path: Path) -> Path:
    model = tmp_path / "repo" / "dlrm_onnx_python"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"onnx weights")
    (model / "1" / "model.py").write_text("# runner\n")
    (model / "1" / "__pycache__").mkdir()  # what the Python backend writes when it loads model.py
    (model / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"compiled")
    (model / "config.pbtxt").write_text(config_to_text(_base_config()))
    (model / "vocabularies.json").write_text("{}")
    return tmp_path / "repo"


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_write_version_adds_version_n_plus_1_and_leaves_version_n_untouched(tmp_path):
    repo = _repository(tmp_path)
    model = repo / "dlrm_onnx_python"
    old_text = (model / "config.pbtxt").read_text()
    before = _snapshot(model / "1")
    chosen = candidate_config(read_config(model / "config.pbtxt"), Candidate(2, 500, 64, (32,), 1, 1))

    path = write_version(repo, "dlrm_onnx_python", chosen)

    assert path == model / "2"
    assert _snapshot(model / "1") == before
    copied = {p: b for p, (b, _) in before.items() if "__pycache__" not in p.parts}
    assert {p: b for p, (b, _) in _snapshot(model / "2").items()} == copied
    assert read_config(model / "config.pbtxt") == chosen
    assert (model / "config.v1.pbtxt").read_text() == old_text
    assert not [p for p in os.listdir(model) if p.startswith(".")]  # no staging folder left behind

    again = write_version(repo, "dlrm_onnx_python", candidate_config(chosen, Candidate()))
    assert again == model / "3" and (model / "config.v2.pbtxt").read_text() == config_to_text(chosen)


def test_write_version_moves_a_specific_version_policy_to_the_new_version(tmp_path):
    repo = _repository(tmp_path)
    config = read_config(repo / "dlrm_onnx_python" / "config.pbtxt")
    config.version_policy.specific.versions.append(1)  # the builder writes latest { 1 }; switch the oneof
    write_version(repo, "dlrm_onnx_python", config)
    assert list(read_config(repo / "dlrm_onnx_python" / "config.pbtxt").version_policy.specific.versions) == [2]


def test_write_version_refuses_a_model_without_versions_or_another_models_config(tmp_path):
    repo = _repository(tmp_path)
    config = read_config(repo / "dlrm_onnx_python" / "config.pbtxt")
    other = type(config)()
    other.CopyFrom(config)
    other.name = "other"
    with pytest.raises(RepositoryError, match="not 'dlrm_onnx_python'"):
        write_version(repo, "dlrm_onnx_python", other)
    (repo / "empty").mkdir()
    (repo / "empty" / "config.pbtxt").write_text("")
    with pytest.raises(RepositoryError, match="no version folder"):
        write_version(repo, "empty", type(config)())


def test_the_tune_package_never_imports_torch_nor_the_builder():
    # importing toolkit.repository.config runs toolkit/repository/__init__.py, whose builder (torch) is
    # imported on first use only; lint-imports does not see that, so it is checked at run time
    code = (
        "import sys, toolkit.perf.tune; "
        "print([m for m in ('torch', 'toolkit.train', 'toolkit.export', 'toolkit.repository.builder') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out

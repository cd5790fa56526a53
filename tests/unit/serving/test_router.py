"""The router's pick rules (pure, on fake outstanding counts), its endpoint sources and the load generators."""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from collections import Counter

import pytest
from tritonclient.utils import InferenceServerException

from toolkit.errors import ServingError
from toolkit.serving import free_port
from toolkit.serving.endpoints import DnsEndpoints, StaticEndpoints
from toolkit.serving.load import closed_loop, open_loop
from toolkit.serving.router import (
    PEAK_EWMA_PENALTY,
    POLICIES,
    LeastOutstanding,
    PeakEwma,
    Pinned,
    RoundRobin,
    Router,
    is_replica_failure,
    make_policy,
    pick_least_outstanding,
    pick_pinned,
    pick_round_robin,
)

A, B, C = "10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001"


# -- least outstanding ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("outstanding", "expected"),
    [
        ({A: 3, B: 0, C: 5}, B),
        ({A: 0, B: 2, C: 1}, A),
        ({A: 4, B: 4, C: 1}, C),
        ({B: 1, C: 1}, A),  # a missing count is 0
    ],
)
def test_full_least_outstanding_picks_the_fewest_in_flight(outstanding: dict[str, int], expected: str) -> None:
    for seed in range(20):
        assert pick_least_outstanding([A, B, C], outstanding, random.Random(seed), choices=None) == expected


def test_full_least_outstanding_breaks_equal_counts_by_lower_recent_latency() -> None:
    latency = {A: 21.0, B: 6.0, C: 5.5}
    for seed in range(20):
        assert pick_least_outstanding([A, B, C], {A: 0, B: 0, C: 0}, random.Random(seed), choices=None, latency_ms=latency) == C
        # latency only breaks ties: fewer in flight still wins
        assert pick_least_outstanding([A, B, C], {A: 0, B: 1, C: 1}, random.Random(seed), choices=None, latency_ms=latency) == A


def test_full_least_outstanding_spreads_exact_ties_at_random() -> None:
    rng = random.Random(0)
    picks = Counter(pick_least_outstanding([A, B, C], {}, rng, choices=None) for _ in range(3000))
    # 1000 expected each; a binomial(3000, 1/3) is within +-100 of it with probability > 0.999
    assert all(abs(picks[x] - 1000) < 100 for x in (A, B, C)), picks


def test_power_of_two_choices_never_picks_the_most_loaded_of_three() -> None:
    # any two sampled of three include one with fewer than the maximum, so the most loaded never wins
    rng = random.Random(1)
    picks = Counter(pick_least_outstanding([A, B, C], {A: 0, B: 1, C: 9}, rng, choices=2) for _ in range(3000))
    assert picks[C] == 0
    # A wins every pair it is in (2 of 3 pairs); B only the pair (B, C)
    assert 1850 < picks[A] < 2150 and 850 < picks[B] < 1150, picks


def test_power_of_two_choices_samples_only_among_the_candidates() -> None:
    rng = random.Random(2)
    assert {pick_least_outstanding([A, B], {A: 0, B: 0, C: -5}, rng, choices=2) for _ in range(200)} <= {A, B}


def test_least_outstanding_rejects_no_candidates_and_zero_choices() -> None:
    with pytest.raises(ServingError, match="no endpoint"):
        pick_least_outstanding([], {}, random.Random(0))
    with pytest.raises(ServingError, match="choices must be >= 1"):
        pick_least_outstanding([A], {}, random.Random(0), choices=0)
    with pytest.raises(ServingError, match="choices must be >= 1"):
        LeastOutstanding(choices=0)


# -- peak EWMA ------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_peak_ewma_jumps_to_a_higher_latency_and_forgets_it_over_its_decay_time() -> None:
    clock = _Clock()
    policy = PeakEwma(decay_s=10.0, seed=0, clock=clock)
    policy.observe(A, 5.0)
    assert policy.cost(A, 0) == pytest.approx(5.0)
    policy.observe(A, 40.0)  # a peak replaces the estimate at once
    assert policy.cost(A, 0) == pytest.approx(40.0)
    clock.now += 10.0  # one time constant later a 5 ms answer weighs 1 - 1/e
    policy.observe(A, 5.0)
    assert policy.cost(A, 0) == pytest.approx(40.0 * math.exp(-1) + 5.0 * (1 - math.exp(-1)))
    # the cost of a pick is the estimate times (in flight + 1)
    assert policy.cost(A, 3) == pytest.approx(4 * policy.cost(A, 0))
    # with no answers, the estimate decays toward 0 (an endpoint left alone is tried again)
    before = policy.cost(A, 0)
    clock.now += 20.0
    assert policy.cost(A, 0) == pytest.approx(before * math.exp(-2))


def test_peak_ewma_sends_to_a_four_times_slower_endpoint_only_once_the_others_hold_four_times_the_work() -> None:
    clock = _Clock()
    policy = PeakEwma(seed=1, clock=clock)
    for address, ms in ((A, 5.0), (B, 5.0), (C, 20.0)):
        policy.observe(address, ms)
    # C costs 20 x (0 + 1) = 20; A and B cost 5 x (n + 1): below 20 while n <= 2
    assert policy.pick([A, B, C], {A: 2, B: 2, C: 0}, {}, "conn") in (A, B)
    assert policy.pick([A, B, C], {A: 4, B: 4, C: 0}, {}, "conn") == C
    # least outstanding would send the same request to C as soon as it has fewer in flight
    assert pick_least_outstanding([A, B, C], {A: 1, B: 1, C: 0}, random.Random(0)) == C
    assert policy.pick([A, B, C], {A: 1, B: 1, C: 0}, {}, "conn") in (A, B)


def test_peak_ewma_tries_a_new_endpoint_once_then_waits_for_its_first_answer() -> None:
    clock = _Clock()
    policy = PeakEwma(seed=2, clock=clock)
    policy.observe(A, 5.0)
    assert policy.pick([A, B], {A: 0, B: 0}, {}, "conn") == B  # unknown and idle: costs 0
    assert policy.cost(B, 1) == PEAK_EWMA_PENALTY + 1
    assert policy.pick([A, B], {A: 30, B: 1}, {}, "conn") == A  # until B answers, A is preferred
    policy.observe(B, 6.0)
    assert policy.pick([A, B], {A: 30, B: 1}, {}, "conn") == B


def test_peak_ewma_spreads_equal_costs_at_random_and_refuses_a_bad_decay() -> None:
    policy = PeakEwma(seed=3)
    picks = Counter(policy.pick([A, B, C], {}, {}, "conn") for _ in range(3000))
    # no estimates, nothing in flight: all cost 0; binomial(3000, 1/3) within +-100 of 1000 with p > 0.999
    assert all(abs(picks[x] - 1000) < 100 for x in (A, B, C)), picks
    with pytest.raises(ServingError, match="decay_s must be > 0 seconds, got 0"):
        PeakEwma(decay_s=0)
    with pytest.raises(ServingError, match="no endpoint"):
        policy.pick([], {}, {}, "conn")


# -- round robin and pinned -----------------------------------------------------------------------
def test_round_robin_takes_each_in_turn_whatever_the_load() -> None:
    policy = RoundRobin()
    picks = [policy.pick([A, B, C], {A: 100, B: 0, C: 0}, {}, "conn") for _ in range(6)]
    assert picks == [A, B, C, A, B, C]
    assert pick_round_robin([A, B], 7) == B


def test_pinned_keeps_a_connection_on_its_endpoint_until_it_goes_away() -> None:
    policy = Pinned(seed=3)
    first = policy.pick([A, B, C], {}, {}, "client-1")
    assert all(policy.pick([A, B, C], {first: 50}, {}, "client-1") == first for _ in range(20))
    others = [x for x in (A, B, C) if x != first]
    moved = policy.pick(others, {}, {}, "client-1")  # its endpoint was ejected or removed: a new one
    assert moved in others
    assert policy.pick([A, B, C], {}, {}, "client-1") == moved  # and it stays there
    assert pick_pinned([A, B], None, random.Random(0)) in (A, B)


def test_pinned_connections_land_uniformly_at_random_as_kube_proxy_does() -> None:
    policy = Pinned(seed=4)
    landed = Counter(policy.pick([A, B, C], {}, {}, f"client-{i}") for i in range(3000))
    assert all(abs(landed[x] - 1000) < 100 for x in (A, B, C)), landed


def test_make_policy_knows_the_four_names_and_refuses_others() -> None:
    assert [make_policy(name).name for name in POLICIES] == list(POLICIES)
    with pytest.raises(ServingError, match="unknown routing policy 'fastest'") as info:
        make_policy("fastest")
    assert "least_outstanding, peak_ewma, round_robin, pinned" in (info.value.hint or "")


# -- failures that count against a replica --------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "replica_failure"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE"), True),
        (InferenceServerException("unknown model", status="StatusCode.NOT_FOUND"), True),
        (InferenceServerException("model not ready", status="503"), True),
        (InferenceServerException("unexpected shape", status="StatusCode.INVALID_ARGUMENT"), False),
        (InferenceServerException("unexpected shape", status="400"), False),
        (ValueError("not a tritonclient error"), False),
    ],
)
def test_only_transport_and_unavailable_errors_count_against_a_replica(error: BaseException, replica_failure: bool) -> None:
    assert is_replica_failure(error) is replica_failure


# -- endpoint sources -----------------------------------------------------------------------------
def test_static_endpoints_refuse_what_is_not_host_port() -> None:
    with pytest.raises(ServingError, match="'127.0.0.2' is not host:port"):
        StaticEndpoints(["127.0.0.2"])
    with pytest.raises(ServingError, match="'127.0.0.2:http' is not host:port"):
        StaticEndpoints(["127.0.0.2:http"])
    with pytest.raises(ServingError, match="the endpoint list is empty"):
        StaticEndpoints([])
    source = StaticEndpoints(["grpc://127.0.0.2:8001", "127.0.0.2:8001", "127.0.0.3:8001"])
    assert source.endpoints() == ["127.0.0.2:8001", "127.0.0.3:8001"]  # scheme dropped, repeats once


def test_dns_endpoints_resolve_a_name_to_host_port_entries() -> None:
    # "localhost" resolves from /etc/hosts, without a DNS query leaving the machine
    assert "127.0.0.1:8001" in DnsEndpoints("localhost", 8001).endpoints()
    with pytest.raises(ServingError, match="need a name and a port"):
        DnsEndpoints("localhost", 0)


def test_a_source_that_fails_keeps_the_last_endpoint_set() -> None:
    calls = {"n": 0}

    def resolver(name: str, port: int, **kwargs: object) -> list:
        calls["n"] += 1
        if calls["n"] > 1:
            raise socket.gaierror(-2, "Name or service not known")
        return socket.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM)

    port = free_port()  # nothing listens there: the endpoint is known but not healthy
    router = Router(DnsEndpoints("triton-headless", port, resolver=resolver), protocol="http", start=False, health_timeout_s=0.5)
    try:
        assert [r.address for r in router.replicas()] == [f"127.0.0.1:{port}"]
        router.refresh()
        assert [r.address for r in router.replicas()] == [f"127.0.0.1:{port}"]
        assert "cannot resolve triton-headless" in router.last_refresh_error
    finally:
        router.close()


# -- a router with nothing healthy ----------------------------------------------------------------
def test_router_with_no_ready_endpoint_says_why_each_is_out() -> None:
    ports = [free_port(), free_port()]  # nothing listens: connection refused
    router = Router([f"127.0.0.1:{p}" for p in ports], protocol="grpc", start=False, health_timeout_s=0.5)
    try:
        assert router.healthy() == []
        with pytest.raises(ServingError, match="no healthy Triton endpoint") as info:
            router.infer("m", [])
        assert all(f"127.0.0.1:{p}: readiness check failed" in str(info.value) for p in ports)
    finally:
        router.close()


def test_router_refuses_an_unknown_protocol_or_policy() -> None:
    with pytest.raises(ServingError, match="unknown protocol 'tcp'"):
        Router(["127.0.0.1:1"], protocol="tcp", start=False)  # type: ignore[arg-type]
    with pytest.raises(ServingError, match="unknown routing policy 'random'"):
        Router(["127.0.0.1:1"], protocol="http", policy="random", start=False)


# -- load generators ------------------------------------------------------------------------------
def test_open_loop_offers_its_rate_and_stops_at_the_count() -> None:
    seen: list[tuple[int, object]] = []
    lock = threading.Lock()

    def send(i: int, connection: object) -> str:
        with lock:
            seen.append((i, connection))
        return f"replica-{i % 2}"

    started = time.perf_counter()
    result = open_loop(send, rate_rps=400, n_requests=200, max_duration_s=10, connections=4, workers=4, poisson=False)
    elapsed = time.perf_counter() - started
    assert len(result.records) == 200 and result.not_sent == 0 and result.errors == 0
    # 200 evenly spaced requests at 400/s take 0.5 s; a loaded 2-core machine may add some
    assert 0.45 < elapsed < 2.5
    assert {c for _, c in seen} == {0, 1, 2, 3} and sorted(i for i, _ in seen) == list(range(200))
    assert result.shares() == {"replica-0": 0.5, "replica-1": 0.5}


def test_open_loop_is_bounded_in_time_and_counts_failures() -> None:
    def send(i: int, connection: object) -> str:
        if i % 5 == 0:
            raise ServingError("replica gone")
        return "r"

    started = time.perf_counter()
    result = open_loop(send, rate_rps=200, n_requests=100_000, max_duration_s=0.5, workers=2)
    assert time.perf_counter() - started < 3
    assert result.not_sent > 90_000
    assert result.errors > 0 and all("replica gone" in r.error for r in result.records if r.error)
    assert result.summary()["errors"] == result.errors


def test_both_loops_run_with_the_heap_frozen_out_of_collections_and_unfreeze_it_after() -> None:
    # a full collection over a torch-sized heap pauses every thread for 100+ ms: an open loop would time that
    # pause as latency of every request due meanwhile (toolkit/serving/load.py's docstring)
    import gc

    seen: list[int] = []

    def send(i: int, connection: object) -> str:
        seen.append(gc.get_freeze_count())
        return "r"

    assert gc.get_freeze_count() == 0
    open_loop(send, rate_rps=1000, n_requests=5, max_duration_s=5, workers=2)
    closed_loop(send, concurrency=2, n_requests=5, max_duration_s=5)
    assert len(seen) == 10 and min(seen) > 0  # what existed before the run is left out of collections
    assert gc.get_freeze_count() == 0  # and is collected again afterwards


def test_closed_loop_is_bounded_in_count_and_time() -> None:
    result = closed_loop(lambda i, c: "r", concurrency=3, n_requests=50, max_duration_s=5)
    assert len(result.records) == 50 and {r.connection for r in result.records} <= {0, 1, 2}

    def slow(i: int, c: object) -> str:
        time.sleep(0.05)
        return "r"

    started = time.perf_counter()
    result = closed_loop(slow, concurrency=2, n_requests=10_000, max_duration_s=0.3)
    assert time.perf_counter() - started < 2 and 0 < len(result.records) < 100


def test_load_generators_refuse_non_positive_bounds() -> None:
    with pytest.raises(ServingError, match="must be positive"):
        open_loop(lambda i, c: "r", rate_rps=0, n_requests=1, max_duration_s=1)
    with pytest.raises(ServingError, match="must be positive"):
        closed_loop(lambda i, c: "r", concurrency=1, n_requests=0, max_duration_s=1)


def test_a_routed_client_with_no_ready_replica_names_the_model_and_why() -> None:
    from toolkit.serving.router import RoutedInferenceClient

    dead = f"127.0.0.1:{free_port()}"
    router = Router([dead], protocol="http", start=False, health_timeout_s=0.5)
    with pytest.raises(ServingError, match=f"no healthy Triton endpoint for model 'dlrm' \\({dead}: readiness check failed"):
        RoutedInferenceClient(router, model_name="dlrm")
    assert router.closed  # closed on the way out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay_ms": 0}, "delay_ms must be > 0, got 0"),
        ({"delay_ms": -5.0}, "delay_ms must be > 0, got -5.0"),
        ({"delay_ms": 5, "instances": 0}, "instances and max_batch_size must be >= 1, got 0 and 8"),
        ({"delay_ms": 5, "max_batch_size": 0}, "instances and max_batch_size must be >= 1, got 1 and 0"),
    ],
)
def test_delay_model_refuses_a_bad_delay_or_size_naming_the_value(tmp_path, kwargs: dict, message: str) -> None:
    from toolkit.serving.delay_model import write_delay_model

    with pytest.raises(ServingError, match=message.replace("(", r"\(")):
        write_delay_model(tmp_path, "slow", **kwargs)
    assert not (tmp_path / "slow").exists()


def test_delay_model_config_parses_back_with_its_delay_and_instances(tmp_path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from toolkit.serving.delay_model import write_delay_model

    folder = write_delay_model(tmp_path, "slow", delay_ms=20, instances=3)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.parameters["delay_ms"].string_value == "20"
    assert config.instance_group[0].count == 3 and config.max_batch_size == 8
    assert (folder / "1" / "model.py").is_file()


def test_open_loop_refuses_zero_connections_or_workers() -> None:
    with pytest.raises(ServingError, match="must be positive"):
        open_loop(lambda i, c: "r", rate_rps=10, n_requests=1, max_duration_s=1, connections=0)
    with pytest.raises(ServingError, match="must be positive"):
        open_loop(lambda i, c: "r", rate_rps=10, n_requests=1, max_duration_s=1, workers=0)

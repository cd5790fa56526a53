"""Client-side load-aware routing of Triton inference requests across the replicas of a Deployment.

A Kubernetes ClusterIP Service balances *connections*, not requests (kube-proxy picks a
backend when a TCP connection opens): a gRPC client keeps one HTTP/2 connection, so all of its
requests land on the replica it met first, however busy that one is. :class:`Router` instead
chooses a replica for every request, from the endpoints an
:class:`~toolkit.serving.endpoints.EndpointSource` gives (a static list, a headless Service's DNS
records, or a Service's EndpointSlices: :mod:`toolkit.serving.endpoints`).

Policies (:data:`POLICIES`), chosen per router:

* ``least_outstanding`` -- fewest requests in flight from this router, compared over all healthy
  replicas (join-the-shortest-queue; Envoy's ``LEAST_REQUEST`` with ``selection_method:
  FULL_SCAN``); equal counts go to the replica with the lower recent latency (an EWMA), then at
  random. ``LeastOutstanding(choices=2)`` is the *power of two choices* instead: sample two
  healthy replicas at random and take the less loaded one (Mitzenmacher, "The Power of Two
  Choices in Randomized Load Balancing", IEEE TPDS 12(10), 2001), Envoy's default
  ``choice_count: 2`` (envoy source/extensions/load_balancing_policies/least_request/
  least_request_lb.h, ``LeastRequestLoadBalancer``).
* ``peak_ewma`` -- least expected work: each replica's cost is a peak-sensitive, time-decayed EWMA of
  its latency times (its requests in flight + 1), the lowest cost wins (Finagle's ``PeakEwma``
  balancer, ``finagle-core`` ``loadbalancer/PeakEwma.scala``; tower's ``load::PeakEwma``, which
  linkerd2-proxy uses). Unlike outstanding counts alone, it sees a replica that answers slower at
  the same count: fewer instances, a slower node, a longer queue.
* ``round_robin`` -- each healthy replica in turn, blind to load (Envoy's ``ROUND_ROBIN``).
* ``pinned`` -- what a ClusterIP Service gives gRPC: each connection (by default, each calling
  thread) is pinned to one replica picked uniformly at random when it first sends (kube-proxy's
  iptables mode picks a backend per new connection with ``statistic --mode random``,
  pkg/proxy/iptables/proxier.go), and keeps it until that replica goes away.

Health (passive and active, as Envoy's outlier detection and active health checking): a replica
whose request fails at the transport level, or answers UNAVAILABLE/NOT_FOUND (HTTP 502/503/504/404),
is ejected at once and an idempotent request is retried once on another replica; a background
thread checks every replica's readiness (``GET /v2/health/ready`` over HTTP, the ``ServerReady``
RPC over gRPC -- and the model's readiness when the router is given a model) every
``health_every_s`` seconds, ejecting those that fail and re-admitting ejected ones that pass.
Another thread re-reads the endpoint source every ``refresh_every_s`` seconds (and at once when a
:class:`~toolkit.serving.endpoints.WatchedEndpointSource` says it changed; the router closes such a
source when it closes); new endpoints are
admitted after their first passing check, removed ones stop getting requests at once (requests
already sent to them finish).

Thread safety: one router serves many threads. gRPC calls share one ``tritonclient.grpc``
client per replica (its docs: thread-safe except streaming); ``tritonclient.http``'s client is
not thread-safe (its docs: "intended to be used by a single thread"), so each thread gets its
own HTTP client per replica.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from toolkit.errors import InferenceError, ServingError
from toolkit.serving.client import InferenceClient, model_metadata, prepare_inputs, request_tensors
from toolkit.serving.endpoints import EndpointSource, StaticEndpoints, WatchedEndpointSource

__all__ = [
    "POLICIES",
    "LATENCY_EWMA_WEIGHT",
    "PEAK_EWMA_DECAY_S",
    "PEAK_EWMA_PENALTY",
    "RoutingPolicy",
    "LeastOutstanding",
    "PeakEwma",
    "RoundRobin",
    "Pinned",
    "make_policy",
    "pick_least_outstanding",
    "pick_round_robin",
    "pick_pinned",
    "ReplicaStatus",
    "Routed",
    "Router",
    "RoutedInferenceClient",
    "is_replica_failure",
]

log = logging.getLogger(__name__)

POLICIES = ("least_outstanding", "peak_ewma", "round_robin", "pinned")
"""Routing policy names, as ``tritonrec infer --routing`` takes them."""

LATENCY_EWMA_WEIGHT = 0.1
"""Weight of the newest request in a replica's latency EWMA (about the last 10 requests count),
used by ``least_outstanding`` to break ties between equal outstanding counts."""

PEAK_EWMA_DECAY_S = 10.0
"""Time constant of ``peak_ewma``'s latency estimate, seconds: Finagle's default ``decayTime`` (10 s,
``finagle-core`` ``loadbalancer/Balancers.scala`` ``p2cPeakEwma``), as in linkerd2-proxy."""

PEAK_EWMA_PENALTY = 1e9
"""``peak_ewma``'s cost of an endpoint with requests in flight and no answer yet (Finagle's ``Penalty``:
a large finite number, so that a new endpoint gets one request and then waits for its first answer)."""

Protocol_ = Literal["http", "grpc"]

_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
# Statuses that say "this replica cannot serve now" rather than "this request is wrong":
# gRPC codes as tritonclient.grpc spells them (str(grpc.StatusCode.X)) and the HTTP statuses
# Triton's HTTP server maps them to (http_server.cc: UNAVAILABLE -> 503, NOT_FOUND -> 404).
_REPLICA_FAILURE_STATUSES = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND", "502", "503", "504", "404"}
)


def is_replica_failure(error: BaseException) -> bool:
    """Whether ``error`` (raised by a tritonclient call) says the replica, not the request, failed.

    True for transport errors (connection refused or reset, timeouts: ``OSError``,
    ``http.client.HTTPException``) and for Triton's UNAVAILABLE, DEADLINE_EXCEEDED and NOT_FOUND
    answers (a model that is unloading or not loaded on that replica), over gRPC or as HTTP
    404/502/503/504. False for everything else, e.g. INVALID_ARGUMENT / HTTP 400 (a malformed
    request fails on every replica alike, so it is neither retried nor held against the replica).
    """
    if isinstance(error, _TRANSPORT_ERRORS):
        return True
    if isinstance(error, InferenceServerException):
        return str(error.status()) in _REPLICA_FAILURE_STATUSES
    return False


# -- pick rules (pure) --------------------------------------------------------------------------
def pick_least_outstanding(
    candidates: Sequence[str],
    outstanding: Mapping[str, int],
    rng: random.Random,
    *,
    choices: int | None = None,
    latency_ms: Mapping[str, float] | None = None,
) -> str:
    """The candidate with the fewest outstanding requests among ``choices`` sampled at random.

    ``choices=2`` is the power of two choices (Mitzenmacher 2001; Envoy's ``LEAST_REQUEST``
    default ``choice_count``): two distinct candidates drawn uniformly, the one with fewer
    outstanding requests wins. ``choices=None`` (or at least ``len(candidates)``) compares all
    (join-the-shortest-queue). Equal counts go to the candidate with the lower recent latency
    (``latency_ms``; unknown counts as 0, so a new replica gets tried), remaining ties to a random
    one. At light load most counts are 0 or 1, and without that tie-break a replica whose
    requests take 4x longer would still get a third of the ties.

    Args:
        candidates: the healthy endpoints (non-empty, no repeats).
        outstanding: endpoint -> requests in flight (a missing endpoint counts 0).
        rng: the random source (seed it for a reproducible pick).
        choices: how many to sample (>= 1), or ``None`` for all.
        latency_ms: endpoint -> recent latency in ms (e.g. an EWMA), for ties; ``None``: ties at random.

    Raises:
        ServingError: no candidates, or ``choices < 1``.
    """
    if not candidates:
        raise ServingError("no endpoint to pick from")
    if choices is not None and choices < 1:
        raise ServingError(f"least_outstanding: choices must be >= 1 or None, got {choices}")
    latency = latency_ms or {}
    if choices is None or choices >= len(candidates):
        pool = list(candidates)
        rng.shuffle(pool)  # min() keeps the first of equals: a random one
    else:
        pool = rng.sample(list(candidates), choices)
    return min(pool, key=lambda c: (outstanding.get(c, 0), latency.get(c, 0.0)))


def pick_round_robin(candidates: Sequence[str], turn: int) -> str:
    """``candidates[turn % len(candidates)]``: each endpoint in turn, whatever its load.

    Raises:
        ServingError: no candidates.
    """
    if not candidates:
        raise ServingError("no endpoint to pick from")
    return candidates[turn % len(candidates)]


def pick_pinned(candidates: Sequence[str], pinned: str | None, rng: random.Random) -> str:
    """The connection's pinned endpoint while it is a candidate, else a new one uniformly at random.

    That is kube-proxy's choice for a new connection (iptables mode, ``statistic --mode random``):
    the client reconnects only when its backend goes away.

    Raises:
        ServingError: no candidates.
    """
    if not candidates:
        raise ServingError("no endpoint to pick from")
    if pinned is not None and pinned in candidates:
        return pinned
    return rng.choice(list(candidates))


class RoutingPolicy(Protocol):
    """Chooses the endpoint of each request. Called with the router's lock held (need not be thread-safe).

    A policy that keeps its own latency estimates may also define ``observe(address, latency_ms)``: the
    router then calls it, under the same lock, with each successful answer's latency in ms
    (:class:`PeakEwma` does).
    """

    name: str

    def pick(self, candidates: Sequence[str], outstanding: Mapping[str, int], latency_ms: Mapping[str, float], connection: Hashable) -> str:
        """One of ``candidates`` (non-empty, sorted) for a request of ``connection``.

        ``outstanding``: requests in flight per candidate; ``latency_ms``: each one's recent latency
        (an EWMA of its successful requests, in ms; missing before its first answer).
        """
        ...


class LeastOutstanding:
    """:func:`pick_least_outstanding` with its own seeded random source.

    Args:
        choices: sampled candidates per pick (``None``: all, the default; 2: power of two choices).
        seed: seed of the random source (``None``: from the OS).
    """

    name = "least_outstanding"

    def __init__(self, choices: int | None = None, seed: int | None = None) -> None:
        if choices is not None and choices < 1:
            raise ServingError(f"least_outstanding: choices must be >= 1 or None, got {choices}")
        self.choices, self._rng = choices, random.Random(seed)

    def pick(self, candidates: Sequence[str], outstanding: Mapping[str, int], latency_ms: Mapping[str, float], connection: Hashable) -> str:
        return pick_least_outstanding(candidates, outstanding, self._rng, choices=self.choices, latency_ms=latency_ms)


class PeakEwma:
    """Least expected work (Finagle's and tower's Peak EWMA load, compared over all candidates).

    Each endpoint keeps a latency estimate ``cost`` (ms), updated with every successful answer
    through :meth:`observe` (the router calls it): a latency above ``cost`` replaces it at once (the
    *peak*); a lower one is blended in with weight ``1 - exp(-dt / decay_s)``, ``dt`` the seconds
    since the last update, so the estimate forgets a slow spell over about ``decay_s``. At each pick
    the estimate is first decayed toward 0 over the time since its last update, as Finagle's
    ``load`` and tower's ``RttEstimate::decay`` do, so an endpoint that stopped being picked because
    it was slow is tried again. The cost of a pick is ``cost * (outstanding + 1)``: the time the new
    request would wait for the ones before it plus its own. An endpoint with no estimate costs 0 while
    nothing is in flight to it (it gets tried) and :data:`PEAK_EWMA_PENALTY` plus its count after that,
    until its first answer. Equal costs go to a random one.

    Args:
        decay_s: time constant of the estimate, seconds (> 0; default :data:`PEAK_EWMA_DECAY_S`).
        seed: seed of the random source for ties (``None``: from the OS).
        clock: seconds, monotonic (``time.monotonic``; a test passes a fake one).

    Raises:
        ServingError: ``decay_s <= 0``.
    """

    name = "peak_ewma"

    def __init__(self, decay_s: float = PEAK_EWMA_DECAY_S, seed: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if not decay_s > 0:
            raise ServingError(f"peak_ewma: decay_s must be > 0 seconds, got {decay_s}")
        self.decay_s, self._rng, self._clock = decay_s, random.Random(seed), clock
        self._estimates: dict[str, tuple[float, float]] = {}  # endpoint -> (cost ms, when it was last updated)

    def _decayed(self, address: str, now: float, sample_ms: float = 0.0) -> float | None:
        known = self._estimates.get(address)
        if known is None:
            return None
        cost, stamp = known
        weight = math.exp(-max(0.0, now - stamp) / self.decay_s)
        return cost * weight + sample_ms * (1.0 - weight)

    def observe(self, address: str, latency_ms: float) -> None:
        """Feed one successful answer's latency (ms) of ``address`` into its estimate."""
        now = self._clock()
        known = self._estimates.get(address)
        peak = known is None or latency_ms > known[0]  # above the stored estimate, as upstream compares
        self._estimates[address] = (latency_ms if peak else self._decayed(address, now, latency_ms), now)

    def cost(self, address: str, outstanding: int) -> float:
        """The expected work of sending one more request to ``address`` with ``outstanding`` in flight (ms)."""
        estimate = self._decayed(address, self._clock())
        if estimate is None or estimate <= 0.0:
            return PEAK_EWMA_PENALTY + outstanding if outstanding > 0 else 0.0
        return estimate * (outstanding + 1)

    def pick(self, candidates: Sequence[str], outstanding: Mapping[str, int], latency_ms: Mapping[str, float], connection: Hashable) -> str:
        if not candidates:
            raise ServingError("no endpoint to pick from")
        pool = list(candidates)
        self._rng.shuffle(pool)  # min() keeps the first of equals: a random one
        return min(pool, key=lambda c: self.cost(c, outstanding.get(c, 0)))


class RoundRobin:
    """:func:`pick_round_robin` over the current candidates with one counter for all connections."""

    name = "round_robin"

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[str], outstanding: Mapping[str, int], latency_ms: Mapping[str, float], connection: Hashable) -> str:
        choice = pick_round_robin(candidates, self._turn)
        self._turn += 1
        return choice


class Pinned:
    """:func:`pick_pinned`: one endpoint per connection key, chosen at its first request.

    Args:
        seed: seed of the random source (``None``: from the OS).
    """

    name = "pinned"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self.pins: dict[Hashable, str] = {}
        """connection -> its endpoint."""

    def pick(self, candidates: Sequence[str], outstanding: Mapping[str, int], latency_ms: Mapping[str, float], connection: Hashable) -> str:
        choice = pick_pinned(candidates, self.pins.get(connection), self._rng)
        self.pins[connection] = choice
        return choice


def make_policy(name: str, *, seed: int | None = None) -> RoutingPolicy:
    """The policy called ``name`` (one of :data:`POLICIES`).

    ``least_outstanding`` compares all candidates (``choices=None``): a client-side router knows
    its own counts exactly and a replica set is tens of endpoints at most, so the full scan is
    cheap. On three replicas with one slower (perf/results/routing.md, routing_fewer_instances.md)
    it sent the slow one less than two choices did (12.3% vs 14.7%; 23.5% vs 24.8%) and had the
    lower p99 in 5 of 5 same-seed runs in both set-ups (medians 26 vs 38 ms; 22 vs 24 ms).
    ``LeastOutstanding(choices=2)`` is the power of two choices. ``peak_ewma`` had a lower p99
    than ``least_outstanding`` in 5 of 5 runs in both set-ups (medians 22 vs 26 ms; 20 vs 22 ms);
    it stays the second choice because its latency estimate also mixes request sizes (a replica
    that just served a batch of 256 rows looks slow to a request of one).

    Raises:
        ServingError: an unknown name (lists the known ones).
    """
    if name == "least_outstanding":
        return LeastOutstanding(None, seed)
    if name == "peak_ewma":
        return PeakEwma(seed=seed)
    if name == "round_robin":
        return RoundRobin()
    if name == "pinned":
        return Pinned(seed)
    raise ServingError(f"unknown routing policy {name!r}", hint=f"use one of {', '.join(POLICIES)}")


# -- the router ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaStatus:
    """What the router knows of one endpoint (a snapshot).

    Attributes:
        address: ``host:port``.
        healthy: admitted (gets requests); ``False``: ejected, or new and not checked yet.
        outstanding: requests from this router in flight there now.
        requests: requests sent there so far (retries included).
        failures: of those, how many failed as replica failures (:func:`is_replica_failure`).
        last_error: why it was last ejected (``""`` if never).
        latency_ms: EWMA of its successful requests' latency in ms (:data:`LATENCY_EWMA_WEIGHT`), ``None`` before the first.
    """

    address: str
    healthy: bool
    outstanding: int
    requests: int
    failures: int
    last_error: str
    latency_ms: float | None = None


@dataclass(frozen=True)
class Routed:
    """The answer of :meth:`Router.infer`.

    Attributes:
        result: tritonclient's ``InferResult`` (``.as_numpy(name)``).
        address: the endpoint that answered.
        attempts: 1, or 2 when the first replica failed and the request was retried.
    """

    result: Any
    address: str
    attempts: int


class _Replica:
    __slots__ = ("address", "healthy", "outstanding", "requests", "failures", "last_error", "generation", "grpc", "latency_ms")

    def __init__(self, address: str) -> None:
        self.address = address
        self.healthy = False
        self.outstanding = self.requests = self.failures = 0
        self.last_error = ""
        self.generation = 0  # bumped on ejection: clients made before are dropped
        self.latency_ms: float | None = None  # EWMA of successful requests' latency
        self.grpc: Any = None

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(self.address, self.healthy, self.outstanding, self.requests, self.failures, self.last_error, self.latency_ms)


class Router:
    """Routes inference requests over the endpoints of ``source`` with ``policy``; a context manager.

    ``with Router(["127.0.0.2:8001", "127.0.0.3:8001"], protocol="grpc") as router:`` checks
    every endpoint once (so the router is usable when the block starts), then keeps two
    background threads: one re-reads the source every ``refresh_every_s`` seconds, the other
    checks readiness every ``health_every_s`` seconds. See the module docstring for the rules.

    Args:
        source: an :class:`EndpointSource`, or a list of ``host:port`` (a :class:`StaticEndpoints`).
        protocol: ``"http"`` or ``"grpc"`` -- what the endpoints' ports speak.
        policy: a name from :data:`POLICIES` or a :class:`RoutingPolicy`.
        model_name: when given, a replica is healthy only when this model is ready on it
            (``/v2/models/<name>/ready``), not just the server.
        model_version: the version the readiness check asks for (``""``: the server's choice).
        refresh_every_s: seconds between reads of the source (a scale event shows within about this).
        health_every_s: seconds between readiness checks (an ejected replica comes back within about this).
        health_timeout_s: timeout of one readiness check, in seconds.
        request_timeout_s: client-side timeout of one inference request, in seconds.
        seed: seed of the policy's random source (``None``: from the OS), for reproducible runs.
        start: start the background threads (``False``: call :meth:`refresh` and :meth:`check_health`
            yourself, e.g. in tests of the rules).

    Raises:
        ServingError: unknown protocol or policy; a static entry that is not ``host:port``.
    """

    def __init__(
        self,
        source: EndpointSource | Sequence[str],
        *,
        protocol: Protocol_,
        policy: str | RoutingPolicy = "least_outstanding",
        model_name: str | None = None,
        model_version: str = "",
        refresh_every_s: float = 2.0,
        health_every_s: float = 1.0,
        health_timeout_s: float = 1.0,
        request_timeout_s: float = 60.0,
        seed: int | None = None,
        start: bool = True,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ServingError(f"unknown protocol {protocol!r} for the router", hint="use 'http' or 'grpc'")
        self.source: EndpointSource = StaticEndpoints(source) if isinstance(source, (list, tuple)) else source  # type: ignore[assignment]
        self.protocol = protocol
        self.policy: RoutingPolicy = make_policy(policy, seed=seed) if isinstance(policy, str) else policy
        self.model_name, self.model_version = model_name, model_version
        self.refresh_every_s, self.health_every_s = refresh_every_s, health_every_s
        self.health_timeout_s, self.request_timeout_s = health_timeout_s, request_timeout_s
        self._module: Any = httpclient if protocol == "http" else grpcclient
        self._lock = threading.Lock()
        self._replicas: dict[str, _Replica] = {}
        self._retired: list[Any] = []
        self._local = threading.local()
        self._checkers: list[dict[str, Any]] = []  # every thread's readiness-check clients, for close()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_refresh_error: str = ""
        """Why the last read of the source failed (``""``: it succeeded)."""
        self.refresh()
        if start:
            self.start()

    # -- background work ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the refresh and health-check threads (daemon threads; :meth:`close` stops them)."""
        if self._threads:
            return
        watched = isinstance(self.source, WatchedEndpointSource)
        refresh_wait = self.source.wait_changed if watched else self._stop.wait  # type: ignore[union-attr]
        for target, wait, every, name in (
            (self.refresh, refresh_wait, self.refresh_every_s, "refresh"),
            (self.check_health, self._stop.wait, self.health_every_s, "health"),
        ):
            thread = threading.Thread(target=self._loop, args=(target, wait, every), name=f"router-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, step: Callable[[], object], wait: Callable[[float], object], every_s: float) -> None:
        while True:
            wait(every_s)
            if self._stop.is_set():
                return
            try:
                step()
            except Exception:  # noqa: BLE001 -- a background thread must outlive one bad round
                log.exception("router background step failed")

    def refresh(self) -> None:
        """Read the source once: add new endpoints (admitted after a passing check), drop removed ones.

        A source that cannot be read leaves the endpoint set as it was (:attr:`last_refresh_error` says why).
        """
        try:
            current = list(dict.fromkeys(self.source.endpoints()))
        except ServingError as e:
            self.last_refresh_error = str(e)
            log.warning("router: %s; keeping %d endpoints", e, len(self._replicas))
            return
        self.last_refresh_error = ""
        with self._lock:
            added = [a for a in current if a not in self._replicas]
            removed = [a for a in self._replicas if a not in current]
            for address in removed:
                replica = self._replicas.pop(address)
                if replica.grpc is not None:
                    self._retired.append(replica.grpc)  # requests in flight on it finish; closed with the router
                log.info("router: endpoint %s left the set", address)
            for address in added:
                self._replicas[address] = _Replica(address)
        for address in added:
            self._check(address)
            log.info("router: endpoint %s joined the set (%s)", address, "healthy" if self._is_healthy(address) else "not ready yet")

    def check_health(self) -> None:
        """Check every endpoint's readiness once: eject those that fail, re-admit those that pass."""
        with self._lock:
            addresses = list(self._replicas)
        clients = self._health_clients()
        for gone in [a for a in clients if a not in addresses]:
            with contextlib.suppress(Exception):
                clients.pop(gone).close()
        for address in addresses:
            self._check(address)

    def _health_clients(self) -> dict[str, Any]:
        """This thread's readiness-check clients (tritonclient.http's may not cross threads)."""
        clients = self._local.__dict__.get("health")
        if clients is None:
            clients = self._local.__dict__["health"] = {}
            with self._lock:
                self._checkers.append(clients)
        return clients

    def _is_healthy(self, address: str) -> bool:
        with self._lock:
            replica = self._replicas.get(address)
            return replica is not None and replica.healthy

    def _probe(self, address: str) -> str:
        """``""`` when the endpoint (and the model) is ready, else why not."""
        clients = self._health_clients()
        client = clients.get(address)
        if client is None:
            if self.protocol == "http":
                client = httpclient.InferenceServerClient(
                    address, connection_timeout=self.health_timeout_s, network_timeout=self.health_timeout_s
                )
            else:
                client = grpcclient.InferenceServerClient(address)
            clients[address] = client
        kwargs = {} if self.protocol == "http" else {"client_timeout": self.health_timeout_s}
        try:
            if not client.is_server_ready(**kwargs):
                return "server not ready"
            if self.model_name is not None and not client.is_model_ready(self.model_name, self.model_version, **kwargs):
                return f"model '{self.model_name}' not ready"
            return ""
        except (InferenceServerException, *_TRANSPORT_ERRORS) as e:
            # a fresh client next time: a gRPC channel in reconnect backoff would keep failing fast
            clients.pop(address, None)
            with contextlib.suppress(Exception):
                client.close()
            return f"readiness check failed: {e}"

    def _check(self, address: str) -> None:
        problem = self._probe(address)
        with self._lock:
            replica = self._replicas.get(address)
            if replica is None:
                return
            if not problem and not replica.healthy:
                replica.healthy = True
                if replica.last_error:
                    log.info("router: %s re-admitted (ready again)", address)
            elif problem and replica.healthy:
                self._eject_locked(replica, problem)
            elif problem:
                replica.last_error = problem

    def _eject_locked(self, replica: _Replica, why: str) -> None:
        replica.healthy = False
        replica.last_error = why
        replica.generation += 1
        if replica.grpc is not None:
            self._retired.append(replica.grpc)
            replica.grpc = None
        log.warning("router: %s ejected: %s", replica.address, why)

    # -- requests ----------------------------------------------------------------------------
    def _client(self, address: str, generation: int) -> Any:
        if self.protocol == "grpc":
            with self._lock:
                replica = self._replicas.get(address)
                if replica is not None and replica.grpc is None:
                    replica.grpc = grpcclient.InferenceServerClient(address)
                if replica is not None:
                    return replica.grpc
            return grpcclient.InferenceServerClient(address)  # left the set meanwhile: a one-off client
        clients: dict[str, tuple[int, Any]] = self._local.__dict__.setdefault("clients", {})
        held = clients.get(address)
        if held is not None and held[0] == generation:
            return held[1]
        if held is not None:  # made before an ejection: close it in the thread that made it
            with contextlib.suppress(Exception):
                held[1].close()
        client = httpclient.InferenceServerClient(
            address, connection_timeout=self.request_timeout_s, network_timeout=self.request_timeout_s
        )
        clients[address] = (generation, client)
        return client

    def _acquire(self, connection: Hashable, exclude: Sequence[str]) -> tuple[str, int]:
        with self._lock:
            candidates = sorted(a for a, r in self._replicas.items() if r.healthy and a not in exclude)
            if not candidates:
                raise ServingError(self._no_endpoint_message(exclude), hint="are the servers running and their models ready?")
            outstanding = {a: self._replicas[a].outstanding for a in candidates}
            latency = {a: ms for a in candidates if (ms := self._replicas[a].latency_ms) is not None}
            address = self.policy.pick(candidates, outstanding, latency, connection)
            replica = self._replicas[address]
            replica.outstanding += 1
            replica.requests += 1
            return address, replica.generation

    def _no_endpoint_message(self, exclude: Sequence[str]) -> str:
        states = [f"{a}: {r.last_error or 'not checked yet'}" for a, r in sorted(self._replicas.items()) if not r.healthy]
        tried = f" other than {', '.join(exclude)}" if exclude else ""
        known = "; ".join(states) if states else f"the source lists none ({self.last_refresh_error or self.source.describe()})"
        return f"no healthy Triton endpoint{tried} to send to ({known})"

    def _release(self, address: str, error: BaseException | None, generation: int, elapsed_ms: float | None = None) -> None:
        with self._lock:
            replica = self._replicas.get(address)
            if replica is None:
                return
            replica.outstanding -= 1
            if error is None and elapsed_ms is not None:
                previous = replica.latency_ms
                replica.latency_ms = elapsed_ms if previous is None else previous + LATENCY_EWMA_WEIGHT * (elapsed_ms - previous)
                observe = getattr(self.policy, "observe", None)
                if observe is not None:
                    observe(address, elapsed_ms)
            if error is not None:
                replica.failures += 1
                if replica.healthy and replica.generation == generation:
                    self._eject_locked(replica, f"request failed: {error}")

    def infer(
        self, model_name: str, inputs: Sequence[Any], *, idempotent: bool = True, connection: Hashable | None = None, **kwargs: Any
    ) -> Routed:
        """Send one inference request to the replica the policy picks; retry once elsewhere on a replica failure.

        Args:
            model_name: the model to call.
            inputs: ``InferInput`` objects of this router's protocol (``tritonclient.http`` or ``.grpc``).
            idempotent: retry once on another replica when the first fails as a replica
                (:func:`is_replica_failure`); ``False``: never resend.
            connection: the connection key the ``pinned`` policy pins (default: the calling thread).
            **kwargs: passed on to tritonclient's ``infer`` (``outputs``, ``model_version``, ...).

        Returns:
            :class:`Routed`: the result, the replica that answered, and the attempts made.

        Raises:
            ServingError: no healthy endpoint (says why each is out), or the request failed as a
                replica failure on every replica tried (tritonclient's error as ``__cause__``).
            InferenceError: a replica rejected the request itself (e.g. INVALID_ARGUMENT; not retried).
        """
        key = threading.get_ident() if connection is None else connection
        if self.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.request_timeout_s)
        tried: list[str] = []
        attempts = 2 if idempotent else 1
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                address, generation = self._acquire(key, tried)
            except ServingError:
                if last is None:
                    raise
                break
            tried.append(address)
            error: BaseException | None = None
            started = time.perf_counter()
            try:
                result = self._client(address, generation).infer(model_name, inputs, **kwargs)
            except (InferenceServerException, *_TRANSPORT_ERRORS) as e:
                if not is_replica_failure(e):
                    self._release(address, None, generation)
                    raise InferenceError(f"model '{model_name}' at {address} rejected the request: {e}") from e
                error = last = e
            except BaseException:
                self._release(address, None, generation)
                raise
            self._release(address, error, generation, (time.perf_counter() - started) * 1e3)
            if error is None:
                return Routed(result, address, attempt)
            log.info("router: %s failed on %s (%s)%s", model_name, address, error, "; retrying elsewhere" if attempt < attempts else "")
        raise ServingError(
            f"'{model_name}' failed on {', '.join(tried)} ({self.protocol}): {last}",
            hint="the replicas were ejected; the health check re-admits them when they answer ready again",
        ) from last

    # -- inspection and shutdown -------------------------------------------------------------
    def replicas(self) -> list[ReplicaStatus]:
        """A snapshot of every endpoint in the set, sorted by address."""
        with self._lock:
            return [self._replicas[a].status() for a in sorted(self._replicas)]

    def healthy(self) -> list[str]:
        """The admitted endpoints, sorted."""
        return [r.address for r in self.replicas() if r.healthy]

    def outstanding(self, address: str) -> int:
        """Requests from this router in flight at ``address`` now (0 for an unknown endpoint)."""
        with self._lock:
            replica = self._replicas.get(address)
            return 0 if replica is None else replica.outstanding

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the background threads and close the clients this thread and the checks made. Idempotent."""
        self._stop.set()
        if isinstance(self.source, WatchedEndpointSource):
            self.source.close()  # wakes the refresh thread
        for thread in self._threads:
            thread.join(timeout=max(self.health_every_s, self.refresh_every_s) + 5 * self.health_timeout_s)
        self._threads.clear()
        with self._lock:
            clients = [r.grpc for r in self._replicas.values() if r.grpc is not None] + self._retired
            for replica in self._replicas.values():
                replica.grpc = None
            self._retired = []
            checkers, self._checkers = self._checkers, []
        for held in checkers:  # http ones may belong to a stopped thread: best effort
            clients += list(held.values())
            held.clear()
        clients += [c for _, c in self._local.__dict__.pop("clients", {}).values()]
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class RoutedInferenceClient(InferenceClient):
    """:class:`~toolkit.serving.client.InferenceClient` whose requests go through a :class:`Router`.

    Reads the model's metadata from the first healthy replica, checks every request with
    :func:`~toolkit.serving.client.prepare_inputs` as the single-server client does, and sends it
    with :meth:`Router.infer` (so ``infer_batched`` and ``measure_latency`` work unchanged).
    ``url`` names the replicas (comma-separated).

    Args:
        router: the router (closed with this client).
        model_name, model_version: the model to call.

    Raises:
        ServingError: no replica is healthy, or the model cannot be read from it.
    """

    def __init__(self, router: Router, *, model_name: str, model_version: str = "") -> None:  # noqa: D107
        self.router = router
        self.url = ",".join(r.address for r in router.replicas())
        self.protocol = router.protocol
        self.model_name, self.model_version = model_name, model_version
        self._module = httpclient if router.protocol == "http" else grpcclient
        healthy = router.healthy()
        if not healthy:
            reasons = "; ".join(f"{r.address}: {r.last_error or 'not checked yet'}" for r in router.replicas())
            router.close()
            raise ServingError(
                f"no healthy Triton endpoint for model '{model_name}' ({reasons or router.source.describe()})",
                hint="are the servers running and their models ready?",
            )
        self._client = self._module.InferenceServerClient(healthy[0])
        try:
            self.max_batch_size, self.input_specs, self.output_specs = model_metadata(
                self._client, healthy[0], router.protocol, model_name, model_version
            )
        except BaseException:
            router.close()
            raise
        finally:
            with contextlib.suppress(Exception):
                self._client.close()
        self._last = threading.local()

    @property
    def last_address(self) -> str:
        """The replica that answered this thread's last request through this client (``""`` before the first)."""
        return getattr(self._last, "address", "")

    def infer(self, inputs: Mapping[str, Any], *, connection: Hashable | None = None) -> dict[str, np.ndarray]:
        """Run one request on a replica the router picks (see :meth:`InferenceClient.infer` and :meth:`Router.infer`).

        Args:
            inputs: input name -> array, checked by :func:`~toolkit.serving.client.prepare_inputs`.
            connection: the client this request belongs to (what ``pinned`` pins; default: the thread).

        Raises:
            InferenceError: the request does not match the model, or a replica rejected it.
            ServingError: no healthy replica, or the replicas tried failed (see :meth:`Router.infer`).
        """
        prepared = prepare_inputs(inputs, self.input_specs, self.max_batch_size)
        request, outputs = request_tensors(self._module, prepared, self.output_specs)
        routed = self.router.infer(self.model_name, request, connection=connection, model_version=self.model_version, outputs=outputs)
        self._last.address = routed.address
        return {s.name: routed.result.as_numpy(s.name) for s in self.output_specs}

    def close(self) -> None:
        """Close the router."""
        self.router.close()

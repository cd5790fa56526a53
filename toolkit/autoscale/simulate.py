"""A model of a Triton Deployment under a load trace, driven by any :class:`~toolkit.autoscale.signals.Autoscaler`.

The simulator steps time in ``step_s`` increments (20 ms by default) and models each replica with
what a committed ``tritonrec perf`` report measured for one server:

**One replica** (:class:`ReplicaModel`). perf_analyzer's concurrency sweep gives, for ``c``
requests kept outstanding, the throughput ``X(c)`` and the latency percentiles. A replica is taken
to be the *flow-equivalent server* of that measurement (Chandy, Herzog and Woo, "Parametric analysis
of queuing networks", IBM J. Res. Dev. 19(1), 1975): with ``n`` requests outstanding it completes
``X(n)`` requests per second (linear between the measured concurrencies, ``X(n) = X(c_max)`` beyond
the largest one: the excess waits in Triton's queue, served at the saturated rate ``mu = X(c_max)``).
Under Poisson arrivals at rate ``lambda < mu`` that is a birth-death chain with stationary
distribution ``pi(n) ~ prod_{k<=n} lambda / X(k)``. A request that finds ``n`` outstanding (PASTA)
waits ``max(0, n + 1 - c_max) / mu`` in the queue and is then served with the latency distribution
measured at concurrency ``min(n + 1, c_max)``: log-normal with that point's p50 as median and its
p99 as 99th percentile. Mixing over ``pi`` gives each load level's latency distribution, tabulated
once on a grid of utilizations ``rho = lambda / mu`` up to 0.995.

**Overload and time** (pointwise stationary fluid approximation: Green and Kolesar, "The pointwise
stationary approximation for queues with nonstationary arrivals", Management Science 37(1), 1991;
Wang, Chen, Chang and Tang, "A fluid-based approximation for nonstationary queues", 1996). Within
a step a replica whose queue is empty is in the stationary state of its arrival rate in that step.
When arrivals exceed ``mu * step_s``, the excess is a fluid backlog ``B`` carried to the next
steps and served at ``mu`` first-come first-served: a request arriving then waits ``B / mu`` (the
step's mean) plus the saturated service latency.

**Queue timeout** (optional, ``queue_timeout_s``): Triton's ``dynamic_batching.default_queue_policy``
with ``timeout_action: REJECT``: a request that would wait longer than the timeout in a pod's queue
is rejected unserved, so a queue never holds more than ``mu * timeout``; rejected requests count as
out of the SLO (never within, whatever the timeout: a rejection is an error, not an answer).
Without it (Triton's default) queues are unbounded and clients wait.

**The Deployment** (:class:`SimulatedDeployment`). Pods are ``starting`` for ``start_delay_s``
(scheduling, image, Triton start and model load) and then ``ready``; each ready pod has its own
queue. Arrivals are routed by least outstanding requests (the router's rule,
``toolkit.serving.router.pick_least_outstanding`` with a full scan): in a fluid step that is
:func:`water_fill` -- the limit of picking the least loaded replica for each of many small requests.
A scale-down first deletes starting pods (the ReplicaSet controller deletes not-ready pods first),
then takes the ready pods with the shortest queue out of the routing set; each drains its queue and
leaves only then (graceful, as the controller does). Requests that arrive while no pod is ready fail
(counted as out of the SLO).

**Signals**. Every replica keeps Triton's counters (requests, queue and compute microseconds, busy
time, requests rejected by the queue timeout); every sync period the policy gets a
:class:`~toolkit.autoscale.signals.DeploymentSignals` whose per-pod signals come from the counters'
increases since the previous decision through the controller's scraper arithmetic
(``toolkit.autoscale.scrape.signals_from_increases``: a pod's first scrape has no rates, an idle pod's
queue time is 0), its ``pending_requests`` the gauge at that
moment and ``cpu_utilization`` the busy fraction (served / ``mu``; metrics-server's view of a pod
whose CPU request is what it needs at saturation). Then :meth:`Autoscaler.step` decides.

Assumptions that bound what the numbers mean: latencies are perf_analyzer's client-side latencies
(server queue + compute plus the client and loopback, slightly more than Triton's own); the
per-replica curve is one machine's; arrivals are Poisson around the trace's rate, drawn per second
(:meth:`~toolkit.autoscale.traces.Trace.arrivals` with a seed) and spread evenly over the steps of
that second, so the per-step counts do not add noise that the stationary model already contains.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from toolkit.autoscale.scrape import ScrapeTarget, signals_from_increases
from toolkit.autoscale.signals import Autoscaler, DeploymentSignals, PodSignals, ScaleDecision
from toolkit.autoscale.traces import Trace
from toolkit.errors import AutoscaleError

__all__ = [
    "ServiceCurve",
    "load_service_curve",
    "ReplicaModel",
    "allen_cunneen_scale",
    "least_outstanding",
    "water_fill",
    "StaticReplicas",
    "SimulatedDeployment",
    "SimulationResult",
    "simulate",
]

#: z of the 99th percentile of the standard normal (for the log-normal fit p50 -> p99).
_Z99 = 2.3263478740408408
#: Highest utilization tabulated; a step above it without a backlog uses this row (conservative
#: below, the fluid backlog takes over above 1).
_RHO_MAX = 0.995
_RHO_STEP = 0.005
#: States beyond c_max kept in the stationary distribution: at rho 0.995 the mass beyond is < 1e-6.
_TAIL_STATES = 3000


# ---------------------------------------------------------------------------------------------------------------------
# One replica, from a perf report


@dataclass(frozen=True)
class ServiceCurve:
    """One replica's measured throughput and latency against the requests kept outstanding.

    Attributes:
        concurrency: (K,) float64, perf_analyzer's concurrency levels, increasing.
        throughput_rps: (K,) requests per second at each level (inferences / client batch size).
        p50_ms, p99_ms: (K,) client-side latency percentiles in milliseconds.
        queue_ms, compute_ms: (K,) Triton's mean queue time and compute time (input + infer + output)
            per request in milliseconds, as perf_analyzer reports them.
        source: which file, model, protocol and client batch size the points come from.
    """

    concurrency: np.ndarray
    throughput_rps: np.ndarray
    p50_ms: np.ndarray
    p99_ms: np.ndarray
    queue_ms: np.ndarray
    compute_ms: np.ndarray
    source: str

    def best_within(self, p99_ms: float) -> float | None:
        """Highest measured throughput (req/s) whose p99 is at most ``p99_ms``, or None."""
        ok = self.p99_ms <= p99_ms
        return float(self.throughput_rps[ok].max()) if ok.any() else None


_POINT_FIELDS = (
    "concurrency",
    "throughput_infer_per_s",
    "p50_latency_ms",
    "p99_latency_ms",
    "server_queue_ms",
    "server_compute_input_ms",
    "server_compute_infer_ms",
    "server_compute_output_ms",
)


def load_service_curve(path: Path, *, model: str | None = None, protocol: str = "http", batch_size: int = 1) -> ServiceCurve:
    """Read one model's concurrency sweep from a ``tritonrec perf`` report JSON (``perf/results/triton_*.json``).

    Args:
        path: the report (its ``sweeps`` list: ``{model, protocol, batch_size, points: [...]}``).
        model: the swept model; None takes the report's ``optimized`` model.
        protocol: ``http`` or ``grpc``.
        batch_size: the client batch size of the sweep (1: one request is one inference).

    Raises:
        AutoscaleError: the file is missing or not JSON, has no matching sweep (the message lists
            those it has), a point lacks a field, or the points are not a usable curve (fewer than
            one, non-positive throughput or latency).
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise AutoscaleError(
            f"perf report {path} cannot be read: {exc}", hint="pass a perf/results/triton_*.json written by tritonrec perf"
        ) from exc
    except json.JSONDecodeError as exc:
        raise AutoscaleError(f"perf report {path} is not JSON: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("sweeps"), list):
        raise AutoscaleError(f"perf report {path}: no 'sweeps' list (is it a tritonrec perf report?)")
    model = model or report.get("optimized")
    if not model:
        raise AutoscaleError(f"perf report {path} names no 'optimized' model: pass the model to take")
    sweeps = report["sweeps"]
    match = [
        s
        for s in sweeps
        if isinstance(s, dict) and s.get("model") == model and s.get("protocol") == protocol and s.get("batch_size") == batch_size
    ]
    if not match:
        have = sorted({f"{s.get('model')}/{s.get('protocol')}/batch {s.get('batch_size')}" for s in sweeps if isinstance(s, dict)})
        raise AutoscaleError(f"perf report {path} has no sweep of {model}/{protocol}/batch {batch_size}", hint=f"it has: {', '.join(have)}")
    points = [p for p in match[0].get("points", []) if isinstance(p, dict) and p.get("mode", "concurrency") == "concurrency"]
    if not points:
        raise AutoscaleError(f"perf report {path}: the sweep of {model}/{protocol} has no concurrency points")
    for i, p in enumerate(points):
        for name in _POINT_FIELDS:
            if not isinstance(p.get(name), int | float):
                raise AutoscaleError(f"perf report {path}: sweep {model}/{protocol}, point {i}: field {name!r} is missing or not a number")
    points.sort(key=lambda p: p["concurrency"])
    arr = {name: np.array([float(p[name]) for p in points]) for name in _POINT_FIELDS}
    if (
        np.any(arr["throughput_infer_per_s"] <= 0)
        or np.any(arr["p50_latency_ms"] <= 0)
        or np.any(arr["p99_latency_ms"] < arr["p50_latency_ms"])
    ):
        raise AutoscaleError(f"perf report {path}: sweep {model}/{protocol} has a point with throughput <= 0 or p99 < p50 <= 0")
    if np.any(np.diff(arr["concurrency"]) <= 0) or arr["concurrency"][0] < 1:
        raise AutoscaleError(f"perf report {path}: sweep {model}/{protocol}: concurrency levels must be distinct and >= 1")
    return ServiceCurve(
        concurrency=arr["concurrency"],
        throughput_rps=arr["throughput_infer_per_s"] / batch_size,
        p50_ms=arr["p50_latency_ms"],
        p99_ms=arr["p99_latency_ms"],
        queue_ms=arr["server_queue_ms"],
        compute_ms=arr["server_compute_input_ms"] + arr["server_compute_infer_ms"] + arr["server_compute_output_ms"],
        source=f"{path.name}: {model}, {protocol}, client batch {batch_size}",
    )


def _lognormal_cdf(x_ms: np.ndarray, median_ms: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(np.maximum(x_ms, 1e-300)) - np.log(median_ms)) / sigma
    return np.where(x_ms > 0, ndtr(z), 0.0)


def allen_cunneen_scale(curve: ServiceCurve) -> float:
    """``(1 + Cs^2) / 2``: how much of an exponential-service queue a queue with the service-time
    spread of ``curve`` holds (Allen-Cunneen's approximation of the G/G/c wait, with Poisson arrivals;
    A. O. Allen, *Probability, Statistics, and Queueing Theory*, 2nd ed., 1990, section 6.4; for one
    server it is the Pollaczek-Khinchine mean wait of M/G/1 over M/M/1's).

    ``Cs^2``, the squared coefficient of variation of the service time, is that of the log-normal the
    model fits at concurrency 1 (no queue there): ``exp(sigma^2) - 1`` with ``sigma = ln(p99 / p50) / z_0.99``.
    A near-constant service time (a 5 ms sleep: Cs^2 about 0.01) gives about 0.5; an exponential one, 1.

    Checked against a real server in perf/results/sim_check.md.
    """
    sigma = math.log(float(curve.p99_ms[0]) / float(curve.p50_ms[0])) / _Z99
    return (1.0 + math.expm1(sigma * sigma)) / 2.0


@dataclass(frozen=True)
class ReplicaModel:
    """One replica's latency distribution at every load level, tabulated from a :class:`ServiceCurve`
    (the model in the module docstring).

    Attributes:
        curve: the measurement.
        slo_ms: the latency objective the tables are cut at (an edge of ``edges_ms``).
        capacity_rps: ``mu``, the saturated service rate (req/s) = throughput at the largest concurrency.
        rho: (G,) utilizations tabulated, 0 .. 0.995 in steps of 0.005.
        edges_ms: (E,) latency edges in ms (log-spaced 0.01 ms .. 1e7 ms, plus ``slo_ms``).
        cdf: (G, E) P(latency <= edge) for a request arriving at each utilization.
        p99_ms: (G,) the 99th percentile at each utilization.
        pending: (G,) mean requests outstanding (what ``nv_inference_pending_request_count`` shows).
        queue_ms, compute_ms: (G,) mean queue and compute time per request in ms.
        saturated_median_ms, saturated_sigma: the log-normal service latency at ``c_max`` (a request
            behind a backlog gets this after its wait).
        capacity_at_slo_rps: the highest tabulated rate whose p99 is within ``slo_ms``.
        queue_scale: the share of the Markovian chain's queue a request finds (:meth:`from_curve`).
    """

    curve: ServiceCurve
    slo_ms: float
    capacity_rps: float
    rho: np.ndarray
    edges_ms: np.ndarray
    cdf: np.ndarray
    p99_ms: np.ndarray
    pending: np.ndarray
    queue_ms: np.ndarray
    compute_ms: np.ndarray
    saturated_median_ms: float
    saturated_sigma: float
    saturated_queue_ms: float
    saturated_compute_ms: float
    c_max: int
    capacity_at_slo_rps: float
    queue_scale: float = 1.0

    @classmethod
    def from_curve(cls, curve: ServiceCurve, slo_ms: float, *, queue_scale: float = 1.0) -> ReplicaModel:
        """Tabulate the stationary latency distributions of ``curve`` (about 0.3 s).

        Args:
            curve: the measured sweep.
            slo_ms: the latency objective (ms) the tables are cut at.
            queue_scale: the share of the birth-death chain's queue a request is taken to find: one
                that finds ``n`` outstanding is served as at concurrency ``1 + queue_scale * n``
                (interpolated between the measured levels) and waits ``max(0, 1 + queue_scale * n -
                c_max) / mu``. 1 is the Markovian chain of the module docstring (exponential service);
                :func:`allen_cunneen_scale` gives the factor for the service-time spread the sweep shows.

        Raises:
            AutoscaleError: ``slo_ms`` or ``queue_scale`` is not > 0.
        """
        if not slo_ms > 0:
            raise AutoscaleError(f"slo_ms must be > 0, got {slo_ms}")
        if not queue_scale > 0:
            raise AutoscaleError(f"queue_scale must be > 0, got {queue_scale}")
        c = curve.concurrency
        c_max = int(round(c[-1]))
        levels = np.arange(1, c_max + 1, dtype=np.float64)
        x = np.interp(levels, c, curve.throughput_rps)  # X(1..c_max)
        mu = float(x[-1])
        med = np.interp(levels, c, curve.p50_ms)
        sig = np.log(np.interp(levels, c, curve.p99_ms) / med) / _Z99
        sig = np.maximum(sig, 1e-3)
        qms = np.interp(levels, c, curve.queue_ms)
        cms = np.interp(levels, c, curve.compute_ms)

        n_states = c_max + _TAIL_STATES
        n = np.arange(n_states)
        seen = 1.0 + queue_scale * n  # the concurrency a request that finds n outstanding is served at
        at = np.minimum(seen, c_max)
        med_n, sig_n = np.interp(at, levels, med), np.interp(at, levels, sig)
        wait_ms = np.maximum(0.0, seen - c_max) / mu * 1000.0
        edges = np.unique(np.concatenate([np.geomspace(0.01, 1e7, 600), [slo_ms]]))
        # F[n, e]: P(latency <= edge | n found outstanding)
        f = _lognormal_cdf(edges[None, :] - wait_ms[:, None], med_n[:, None], sig_n[:, None])

        rho = np.round(np.arange(0, _RHO_MAX + 1e-9, _RHO_STEP), 6)
        lam = rho * mu
        # log pi(n) = n log(lambda) - sum_{k=1..n} log X(k), X(k) = mu for k > c_max
        log_x = np.log(np.concatenate([x, np.full(n_states - c_max, mu)]))
        cum_log_x = np.concatenate([[0.0], np.cumsum(log_x[: n_states - 1])])
        with np.errstate(divide="ignore"):
            log_pi = n[None, :] * np.log(np.maximum(lam, 1e-300))[:, None] - cum_log_x[None, :]
        log_pi[0, :] = -np.inf
        log_pi[0, 0] = 0.0
        log_pi -= log_pi.max(axis=1, keepdims=True)
        pi = np.exp(log_pi)
        pi /= pi.sum(axis=1, keepdims=True)
        cdf = np.clip(pi @ f, 0.0, 1.0)
        p99 = np.array([_quantile(edges, row, 0.99) for row in cdf])
        pending = pi @ (queue_scale * n)
        queue = pi @ (np.interp(at, levels, qms) + wait_ms)
        compute = pi @ np.interp(at, levels, cms)
        within = p99 <= slo_ms
        cap_slo = float(lam[within].max()) if within.any() else 0.0
        return cls(
            curve=curve,
            slo_ms=float(slo_ms),
            capacity_rps=mu,
            rho=rho,
            edges_ms=edges,
            cdf=cdf,
            p99_ms=p99,
            pending=pending,
            queue_ms=queue,
            compute_ms=compute,
            saturated_median_ms=float(med[-1]),
            saturated_sigma=float(sig[-1]),
            saturated_queue_ms=float(qms[-1]),
            saturated_compute_ms=float(cms[-1]),
            c_max=c_max,
            capacity_at_slo_rps=cap_slo,
            queue_scale=float(queue_scale),
        )

    def row(self, rate_rps: float | np.ndarray) -> np.ndarray:
        """Index into the tables for arrival rate(s) ``rate_rps`` (req/s), rounded up (conservative)."""
        r = np.asarray(rate_rps, dtype=np.float64) / self.capacity_rps
        return np.minimum(np.ceil(r / _RHO_STEP - 1e-9), self.rho.size - 1).astype(np.int64)

    def latency_quantile_ms(self, rate_rps: float, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of the latency, in ms, of a request arriving at a steady
        Poisson ``rate_rps`` (req/s) on one replica (the table row :meth:`row` picks; inf when the
        rate is past the tabulated utilizations' tail).

        Raises:
            AutoscaleError: ``q`` is not in (0, 1) or ``rate_rps`` is negative.
        """
        if not 0 < q < 1:
            raise AutoscaleError(f"q must be in (0, 1), got {q}")
        if not rate_rps >= 0:
            raise AutoscaleError(f"rate_rps must be >= 0, got {rate_rps}")
        return _quantile(self.edges_ms, self.cdf[int(self.row(rate_rps))], q)

    def backlog_cdf(self, wait_ms: np.ndarray) -> np.ndarray:
        """(W, E) P(latency <= edge) for requests that wait ``wait_ms`` behind a backlog, then are served."""
        w = np.asarray(wait_ms, dtype=np.float64)
        return _lognormal_cdf(self.edges_ms[None, :] - w[:, None], self.saturated_median_ms, self.saturated_sigma)

    def replicas_for(self, rate_rps: float) -> int:
        """Replicas that keep the p99 within the SLO at ``rate_rps`` split evenly (>= 1)."""
        if self.capacity_at_slo_rps <= 0:
            raise AutoscaleError(f"no load level of {self.curve.source} meets the {self.slo_ms:g} ms SLO")
        return max(1, int(math.ceil(rate_rps / self.capacity_at_slo_rps - 1e-9)))


def _quantile(edges: np.ndarray, cdf: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a distribution given by its CDF at ``edges`` (interpolated in log latency);
    inf when the CDF never reaches ``q`` (requests that failed)."""
    if cdf[-1] < q:
        return math.inf
    i = int(np.searchsorted(cdf, q, side="left"))
    if i == 0:
        return float(edges[0])
    lo, hi = cdf[i - 1], cdf[i]
    frac = 0.0 if hi <= lo else (q - lo) / (hi - lo)
    return float(np.exp(np.log(edges[i - 1]) + frac * (np.log(edges[i]) - np.log(edges[i - 1]))))


# ---------------------------------------------------------------------------------------------------------------------
# Routing


def least_outstanding(outstanding: Sequence[float]) -> int:
    """Index of the replica with the fewest outstanding requests (the first of equals): the router's
    full-scan rule, ``toolkit.serving.router.pick_least_outstanding(choices=None)``, without its random
    tie-break so that the simulator is deterministic.

    Raises:
        AutoscaleError: ``outstanding`` is empty.
    """
    if len(outstanding) == 0:
        raise AutoscaleError("no replica to route to")
    return int(np.argmin(np.asarray(outstanding, dtype=np.float64)))


def water_fill(levels: np.ndarray, amount: float) -> np.ndarray:
    """Split ``amount`` requests over replicas so that the lowest outstanding levels are raised to one
    common height first: the limit of sending each of many small requests to
    :func:`least_outstanding` in turn.

    Args:
        levels: (R,) outstanding requests per replica, >= 0, R >= 1.
        amount: requests to place (>= 0).

    Returns:
        (R,) float64, the requests each replica gets (sums to ``amount``).
    """
    b = np.asarray(levels, dtype=np.float64)
    if amount <= 0:
        return np.zeros_like(b)
    order = np.argsort(b, kind="stable")
    s = b[order]
    k = np.arange(1, s.size + 1)
    heights = (amount + np.cumsum(s)) / k
    # the number of replicas filled: the largest k whose common height reaches the k-th lowest level
    filled = int(np.nonzero(heights >= s)[0][-1]) + 1
    out = np.zeros_like(b)
    out[order[:filled]] = heights[filled - 1] - s[:filled]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# A fixed replica count


class StaticReplicas:
    """The "provision for the peak" baseline: always ``replicas`` (an :class:`Autoscaler`)."""

    def __init__(self, replicas: int, name: str = "static_peak") -> None:
        if replicas < 1:
            raise AutoscaleError(f"StaticReplicas: replicas must be >= 1, got {replicas}")
        self.replicas, self.name = replicas, name

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        """Always :attr:`replicas`."""
        return ScaleDecision(self.replicas, f"static: {self.replicas} replicas")


# ---------------------------------------------------------------------------------------------------------------------
# The Deployment

_ABSENT, _STARTING, _READY, _TERMINATING = 0, 1, 2, 3
_PHASE = {_STARTING: "starting", _READY: "ready", _TERMINATING: "terminating"}


@dataclass
class _Counters:
    """Triton's counters of every pod, as arrays over pod slots (cumulative since the pod started)."""

    success: np.ndarray
    queue_us: np.ndarray
    compute_us: np.ndarray
    busy_s: np.ndarray
    rejected: np.ndarray


#: The counters' names, in the order of a pod's counter snapshot (:meth:`SimulatedDeployment.signals`).
_COUNTER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(_Counters))


class SimulatedDeployment:
    """The pods of one Deployment and their queues, advanced one step at a time.

    Args:
        model: the replica model.
        step_s: the time step in seconds.
        start_delay_s: seconds from a pod's creation to ready (scheduling + Triton start + model load).
        initial_replicas: pods ready at time 0.
        queue_timeout_s: reject requests that would queue longer than this (None: unbounded queues).
    """

    def __init__(
        self, model: ReplicaModel, *, step_s: float, start_delay_s: float, initial_replicas: int, queue_timeout_s: float | None = None
    ) -> None:
        if not step_s > 0 or start_delay_s < 0 or initial_replicas < 0:
            raise AutoscaleError(
                f"need step_s > 0, start_delay_s >= 0, initial_replicas >= 0; got {step_s}, {start_delay_s}, {initial_replicas}"
            )
        if queue_timeout_s is not None and not queue_timeout_s > 0:
            raise AutoscaleError(f"queue_timeout_s must be > 0 or None, got {queue_timeout_s}")
        self.model, self.step_s, self.start_delay_s = model, step_s, start_delay_s
        self.queue_timeout_s = queue_timeout_s
        #: most requests a pod's queue holds before the oldest would wait longer than the timeout
        self._queue_cap = math.inf if queue_timeout_s is None else model.capacity_rps * queue_timeout_s
        self.timed_out = 0.0
        self._cap = 64
        self.state = np.zeros(self._cap, np.int8)
        self.ready_at = np.zeros(self._cap)
        self.backlog = np.zeros(self._cap)
        self.pending = np.zeros(self._cap)
        self.counters = _Counters(*(np.zeros(self._cap) for _ in _COUNTER_NAMES))
        self.n_pods = 0  # pods ever created (slot i is pod "triton-<i>")
        self.now = 0.0
        self._steps = 0  # steps done: now = steps x step_s (no drift from repeated additions)
        self._dirty = True
        self._ready_idx = self._serving_idx = np.zeros(0, np.int64)
        self._counts = (0, 0, 0)
        self._calm = False
        self._calm_acc = [0.0, 0.0, 0.0, 0.0]
        self._calm_pending = 0.0
        self._calm_steps = 0  # calm steps not yet added to the pods' counters
        self._next_ready = math.inf
        # request accounting: weights per stationary row, and (wait, weight) of backlogged steps
        self.row_weight = np.zeros(model.rho.size)
        self.backlog_waits: list[np.ndarray] = []
        self.backlog_weights: list[np.ndarray] = []
        self.failed = 0.0
        self.arrived = 0.0
        self.add(initial_replicas, ready=True)

    # -- membership --------------------------------------------------------------------------------------------------
    def _grow(self) -> None:
        new = self._cap * 2
        for name in ("state", "ready_at", "backlog", "pending"):
            old = getattr(self, name)
            arr = np.zeros(new, old.dtype)
            arr[: self._cap] = old
            setattr(self, name, arr)
        for name in _COUNTER_NAMES:
            old = getattr(self.counters, name)
            arr = np.zeros(new)
            arr[: self._cap] = old
            setattr(self.counters, name, arr)
        self._cap = new

    def add(self, count: int, *, ready: bool = False) -> None:
        """Create ``count`` pods: ``starting`` until ``now + start_delay_s`` (or ``ready`` at once)."""
        self._flush()
        for _ in range(count):
            if self.n_pods == self._cap:
                self._grow()
            i = self.n_pods
            self.n_pods += 1
            self.state[i] = _READY if ready else _STARTING
            self.ready_at[i] = self.now if ready else self.now + self.start_delay_s
            if not ready:
                self._next_ready = min(self._next_ready, self.ready_at[i])
        self._dirty = True

    def remove(self, count: int) -> None:
        """Scale down by ``count``: starting pods go at once (newest first), then the ready pods with the
        fewest outstanding requests (newest first among equals) stop getting requests and drain."""
        self._flush()
        for _ in range(count):
            starting = np.nonzero(self.state[: self.n_pods] == _STARTING)[0]
            if starting.size:
                self.state[starting[-1]] = _ABSENT
            else:
                ready = np.nonzero(self.state[: self.n_pods] == _READY)[0]
                if ready.size == 0:
                    break
                outstanding = self.backlog[ready] + self.pending[ready]
                newest_first = ready[::-1]
                victim = newest_first[least_outstanding(outstanding[::-1])]
                self.state[victim] = _TERMINATING
        self._next_ready = float(self.ready_at[: self.n_pods][self.state[: self.n_pods] == _STARTING].min(initial=math.inf))
        self._dirty = True

    @property
    def spec_replicas(self) -> int:
        """Pods starting or ready (the Deployment's ``spec.replicas``; draining pods are leaving)."""
        if self._dirty:
            self._flush()
            self._refresh()
        return self._counts[2]

    @property
    def pods_alive(self) -> int:
        """Pods that exist and cost (starting, ready and draining)."""
        if self._dirty:
            self._flush()
            self._refresh()
        return self._counts[1]

    @property
    def ready_count(self) -> int:
        """Pods ready (in the routing set)."""
        if self._dirty:
            self._flush()
            self._refresh()
        return self._counts[0]

    def _refresh(self) -> None:
        s = self.state[: self.n_pods]
        self._ready_idx = np.nonzero(s == _READY)[0]
        self._serving_idx = np.nonzero((s == _READY) | (s == _TERMINATING))[0]
        self._counts = (self._ready_idx.size, int(np.count_nonzero(s)), int(np.count_nonzero((s == _STARTING) | (s == _READY))))
        self._calm = self._serving_idx.size == self._ready_idx.size > 0 and not self.backlog[self._serving_idx].any()
        self._dirty = False

    # -- one step ----------------------------------------------------------------------------------------------------
    def advance(self, arrivals: float) -> float:
        """Route ``arrivals`` requests over ready pods, serve one step, move the clock by ``step_s``.

        Returns:
            A latency summary of the step for plots: the highest p99 (ms) over the pods that got
            requests (inf when requests failed for want of a ready pod, 0 when there were none).
        """
        m, dt = self.model, self.step_s
        if self.now + 1e-9 >= self._next_ready:
            self._flush()
            starting = np.nonzero(self.state[: self.n_pods] == _STARTING)[0]
            due = starting[self.ready_at[starting] <= self.now + 1e-9]
            self.state[due] = _READY
            rest = starting[self.ready_at[starting] > self.now + 1e-9]
            self._next_ready = float(self.ready_at[rest].min()) if rest.size else math.inf
            self._dirty = True
        self.arrived += arrivals
        if self._calm and not self._dirty:
            # every pod ready, no queue anywhere: all get the same share, tracked as scalars (see _flush)
            x = arrivals / self._ready_idx.size
            if x <= m.capacity_rps * dt:
                g = min(math.ceil(x / dt / m.capacity_rps / _RHO_STEP - 1e-9), m.rho.size - 1)
                self.row_weight[g] += arrivals
                acc = self._calm_acc
                acc[0] += x
                acc[1] += x * m.queue_ms[g] * 1000.0
                acc[2] += x * m.compute_ms[g] * 1000.0
                acc[3] += x / m.capacity_rps
                self._calm_pending = m.pending[g]
                self._calm_steps += 1
                self._steps += 1
                self.now = self._steps * dt
                return float(m.p99_ms[g]) if arrivals > 0 else 0.0
        self._flush()
        if self._dirty:
            self._refresh()
        ready, serving = self._ready_idx, self._serving_idx
        worst = 0.0
        if ready.size == 0:
            if arrivals > 0:
                self.failed += arrivals
                worst = math.inf
        if serving.size:
            b0 = self.backlog[serving]
            per_step = m.capacity_rps * dt
            if ready.size and not b0.any() and serving.size == ready.size:
                x = np.full(serving.size, arrivals / ready.size)
            else:
                x = np.zeros(serving.size)
                if ready.size:
                    is_ready = self.state[serving] == _READY
                    x[is_ready] = water_fill(b0[is_ready], arrivals)
            total = b0 + x
            served = np.minimum(total, per_step)
            b1 = total - served
            kept = x  # this step's arrivals that are served (all, unless the queue timeout rejects some)
            c = self.counters
            if self.queue_timeout_s is not None:
                over = np.maximum(b1 - self._queue_cap, 0.0)
                if over.any():  # rejected at the timeout, never computed (Triton's queue policy, REJECT)
                    self.timed_out += float(over.sum())
                    c.rejected[serving] += over  # nv_inference_request_failure{reason="REJECTED"}
                    b1 = b1 - over
                    kept = np.maximum(x - over, 0.0)
            self.backlog[serving] = b1
            c.success[serving] += served
            c.busy_s[serving] += served / m.capacity_rps
            queued = (b0 > 0) | (b1 > 0)
            if not queued.any():
                rows = m.row(x / dt)
                if arrivals > 0 and ready.size and serving.size == ready.size:
                    self.row_weight[rows[0]] += arrivals  # all ready pods at the same rate
                else:
                    np.add.at(self.row_weight, rows, x)
                c.queue_us[serving] += served * m.queue_ms[rows] * 1000.0
                c.compute_us[serving] += served * m.compute_ms[rows] * 1000.0
                self.pending[serving] = m.pending[rows]
                if arrivals > 0:
                    worst = max(worst, float(m.p99_ms[rows[x > 0]].max()) if (x > 0).any() else 0.0)
            else:
                calm = ~queued
                rows = m.row(x / dt)
                if calm.any():
                    np.add.at(self.row_weight, rows[calm], x[calm])
                wait_ms = np.where(queued, (b0 + b1) / 2.0 / m.capacity_rps * 1000.0, 0.0)
                q = np.where(queued, wait_ms + m.saturated_queue_ms, m.queue_ms[rows])
                comp = np.where(queued, m.saturated_compute_ms, m.compute_ms[rows])
                c.queue_us[serving] += served * q * 1000.0
                c.compute_us[serving] += served * comp * 1000.0
                self.pending[serving] = np.where(queued, m.c_max + b1, m.pending[rows])
                got = queued & (kept > 0)
                if got.any():
                    self.backlog_waits.append(wait_ms[got])
                    self.backlog_weights.append(kept[got])
                sat_p99 = m.saturated_median_ms * math.exp(_Z99 * m.saturated_sigma)
                step_p99 = np.where(queued, wait_ms + sat_p99, m.p99_ms[rows])
                if (x > 0).any():
                    worst = max(worst, float(step_p99[x > 0].max()))
            drained = serving[(self.state[serving] == _TERMINATING) & (b1 <= 1e-9)]
            if drained.size:
                self.state[drained] = _ABSENT
                self.backlog[drained] = 0.0
                self._dirty = True
            self._calm = serving.size == ready.size and ready.size > 0 and not (b1 > 0).any()
        self._steps += 1
        self.now = self._steps * dt
        return worst

    def _flush(self) -> None:
        """Add the scalar per-pod increments of the calm steps to every ready pod's counters."""
        acc = self._calm_acc
        if self._calm_steps:
            self._calm_steps = 0
            ready, c = self._ready_idx, self.counters
            c.success[ready] += acc[0]
            c.queue_us[ready] += acc[1]
            c.compute_us[ready] += acc[2]
            c.busy_s[ready] += acc[3]
            self.pending[ready] = self._calm_pending
            acc[:] = [0.0, 0.0, 0.0, 0.0]

    # -- what the policy sees -----------------------------------------------------------------------------------------
    def signals(self, previous: dict[int, tuple[float, np.ndarray]]) -> DeploymentSignals:
        """The :class:`DeploymentSignals` at :attr:`now`, with rates over the counters since ``previous``
        (pod slot -> (time, counters) of the last scrape of that pod; updated in place: this is a scrape).
        """
        self._flush()
        pods = []
        c = self.counters
        for i in np.nonzero(self.state[: self.n_pods])[0]:
            phase = _PHASE[int(self.state[i])]
            name = f"triton-{i}"
            if phase == "starting":
                pods.append(PodSignals(pod=name, phase="starting"))
                continue
            snap = np.array([getattr(c, name)[i] for name in _COUNTER_NAMES])  # success, queue_us, compute_us, busy_s, rejected
            last = previous.get(int(i))
            previous[int(i)] = (self.now, snap)
            since = max(self.ready_at[i], last[0]) if last else self.ready_at[i]
            busy_window = self.now - since
            cpu = None
            if busy_window > 0:
                base_busy = last[1][3] if last else 0.0
                cpu = float((snap[3] - base_busy) / busy_window)
            d = snap - last[1] if last is not None else np.zeros(len(_COUNTER_NAMES))
            # Triton's counters over the interval (client batch 1: one inference per request; the compute
            # time is all booked as compute_infer), turned into signals by the scraper's own arithmetic
            increases = {
                "nv_inference_request_success": float(d[0]),
                "nv_inference_count": float(d[0]),
                "nv_inference_queue_duration_us": float(d[1]),
                "nv_inference_compute_infer_duration_us": float(d[2]),
                "nv_inference_request_failure": float(d[4]),  # its REJECTED series: the queue timeout's
            }
            pod = signals_from_increases(
                ScrapeTarget(pod=name, address=f"10.0.{i // 250}.{i % 250 + 1}:8002", phase=phase),
                increases,
                elapsed_s=None if last is None else self.now - last[0],
                pending_requests=float(self.pending[i]),  # includes its queue (c_max + backlog) when it has one
                missing=(),
                scraped_at=self.now,
            )
            pods.append(replace(pod, cpu_utilization=cpu))
        return DeploymentSignals(now=self.now, current_replicas=self.spec_replicas, pods=tuple(pods))

    # -- results ------------------------------------------------------------------------------------------------------
    def latency_cdf(self) -> np.ndarray:
        """(E,) P(latency <= edge) over every request that arrived: failed and timed-out (rejected) ones never within."""
        m = self.model
        if self.arrived <= 0:
            return np.ones(m.edges_ms.size)
        cdf = self.row_weight @ m.cdf
        if self.backlog_waits:
            w = np.concatenate(self.backlog_waits)
            x = np.concatenate(self.backlog_weights)
            # bin the waits on a log grid (about 1% apart) so the (W, E) matrix stays small
            grid = np.geomspace(1e-3, 1e8, 2500)
            idx = np.clip(np.searchsorted(grid, w), 0, grid.size - 1)
            weights = np.bincount(idx, weights=x, minlength=grid.size)
            used = np.nonzero(weights)[0]
            cdf = cdf + weights[used] @ m.backlog_cdf(grid[used])
        # timed-out (rejected) requests are never within: the client gets an error, not an answer, even
        # when the timeout is shorter than the SLO (counting them at the timeout would call a shed
        # request a fast one)
        return np.clip(cdf / self.arrived, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# One run


@dataclass
class SimulationResult:
    """The outcome of one policy on one trace.

    Attributes:
        name: the policy's name.
        slo_ms: the latency objective.
        slo_attainment: share of requests with latency <= ``slo_ms`` (failed requests count as out).
        p99_ms: 99th percentile latency over all requests (inf when more than 1% failed).
        replica_seconds: sum over time of the pods that existed (starting, ready or draining), pod-seconds.
        scaling_actions: decisions that changed the replica count.
        requests: requests that arrived; failed: those that found no ready pod; timed_out: those
            rejected by the queue timeout.
        timeline: per second: ``t_s``, ``arrival_rps``, ``ready``, ``pods``, ``desired``, ``p99_ms``
            (the highest p99 over the pods that got requests in that second), each (T,) float64.
        decisions: (time, desired replicas, reason) of every decision that changed the count.
    """

    name: str
    slo_ms: float
    slo_attainment: float
    p99_ms: float
    replica_seconds: float
    scaling_actions: int
    requests: float
    failed: float
    timeline: dict[str, np.ndarray] = field(repr=False)
    timed_out: float = 0.0
    decisions: list[tuple[float, int, str]] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The report's entry: ``name``, ``slo_attainment``, ``p99_ms``, ``replica_seconds``, ``scaling_actions``."""
        return {
            "name": self.name,
            "slo_attainment": round(self.slo_attainment, 6),
            "p99_ms": round(self.p99_ms, 3) if math.isfinite(self.p99_ms) else None,
            "replica_seconds": round(self.replica_seconds, 1),
            "scaling_actions": self.scaling_actions,
        }


def simulate(
    trace: Trace,
    policy: Autoscaler,
    model: ReplicaModel,
    *,
    sync_period_s: float,
    initial_replicas: int,
    start_delay_s: float = 30.0,
    step_s: float = 0.02,
    seed: int = 0,
    max_replicas: int = 1000,
    queue_timeout_s: float | None = None,
    arrivals: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> SimulationResult:
    """Replay ``trace`` against a :class:`SimulatedDeployment` scaled by ``policy``.

    Args:
        trace: the offered load.
        policy: called every ``sync_period_s`` from ``t = sync_period_s`` on with the signals then.
        model: the replica model (its ``slo_ms`` is the objective reported).
        sync_period_s: seconds between decisions (15 for the HPA, 30 for KEDA's polling).
        initial_replicas: pods ready at time 0.
        start_delay_s: pod start plus model load, seconds.
        step_s: time step, seconds.
        seed: seed of the arrivals (:meth:`Trace.arrivals`); ignored when ``arrivals`` is given.
        max_replicas: a decision above this is cut to it (a safety bound of the simulation).
        queue_timeout_s: see :class:`SimulatedDeployment` (None: unbounded queues, Triton's default).
        arrivals: per-step arrival counts to use instead of drawing them ((ceil(duration / step_s),)).
        progress: called with the fraction done, about every 2% of the steps.

    Returns:
        The :class:`SimulationResult`. Deterministic for a given trace, policy, model and seed.

    Raises:
        AutoscaleError: bad parameters, or ``arrivals`` of the wrong length.
    """
    if not sync_period_s > 0:
        raise AutoscaleError(f"sync_period_s must be > 0, got {sync_period_s}")
    counts = trace.arrivals(step_s, seed) if arrivals is None else np.asarray(arrivals, dtype=np.float64)
    n_steps = int(math.ceil(trace.duration_s / step_s - 1e-9))
    if counts.shape != (n_steps,):
        raise AutoscaleError(f"arrivals must have one count per step: shape ({n_steps},), got {counts.shape}")
    dep = SimulatedDeployment(
        model, step_s=step_s, start_delay_s=start_delay_s, initial_replicas=initial_replicas, queue_timeout_s=queue_timeout_s
    )
    counts_f = counts.astype(np.float64)
    per_second = max(1, int(round(1.0 / step_s)))
    ready_ts, pods_ts, desired_ts, worst_ts = (np.zeros(n_steps) for _ in range(4))
    scrapes: dict[int, tuple[float, np.ndarray]] = {}
    next_sync = sync_period_s
    replica_steps = 0
    actions, decisions = 0, []
    desired = initial_replicas
    report_every = max(1, n_steps // 50)
    for k in range(n_steps):
        if dep.now + 1e-9 >= next_sync:
            next_sync += sync_period_s
            decision = policy.step(dep.signals(scrapes))
            want = max(0, min(int(decision.desired_replicas), max_replicas))
            have = dep.spec_replicas
            if want != have:
                actions += 1
                decisions.append((round(dep.now, 3), want, decision.reason))
                dep.add(want - have) if want > have else dep.remove(have - want)
            desired = want
        worst_ts[k] = dep.advance(counts_f[k])
        alive = dep.pods_alive
        replica_steps += alive
        ready_ts[k], pods_ts[k], desired_ts[k] = dep.ready_count, alive, desired
        if progress is not None and k % report_every == 0:
            progress(k / n_steps)
    if progress is not None:
        progress(1.0)
    cdf = dep.latency_cdf()
    slo_i = int(np.searchsorted(model.edges_ms, model.slo_ms))
    n_sec = int(math.ceil(n_steps / per_second))
    pad = n_sec * per_second - n_steps

    def by_second(a: np.ndarray, how: str) -> np.ndarray:
        fill = 0.0 if how == "sum" else np.nan
        b = np.concatenate([a, np.full(pad, fill)]).reshape(n_sec, per_second)
        return {"sum": np.nansum, "mean": np.nanmean, "max": np.nanmax}[how](b, axis=1)

    timeline = {
        "t_s": np.arange(n_sec) * per_second * step_s,
        "arrival_rps": by_second(counts_f, "sum") / (per_second * step_s),
        "ready": by_second(ready_ts, "mean"),
        "pods": by_second(pods_ts, "mean"),
        "desired": by_second(desired_ts, "max"),
        "p99_ms": by_second(worst_ts, "max"),
    }
    return SimulationResult(
        name=getattr(policy, "name", type(policy).__name__),
        slo_ms=model.slo_ms,
        slo_attainment=float(cdf[slo_i]),
        p99_ms=_quantile(model.edges_ms, cdf, 0.99),
        replica_seconds=replica_steps * step_s,
        scaling_actions=actions,
        requests=dep.arrived,
        failed=dep.failed,
        timed_out=dep.timed_out,
        timeline=timeline,
        decisions=decisions,
    )

"""Bounded load generators for tests and benchmarks: open loop at a fixed rate, or closed loop.

Both call ``send(i, connection)`` -- a function that runs request ``i`` on behalf of client
``connection`` and returns the replica that answered (e.g. ``Routed.address``) -- from a pool of
threads, and stop at ``n_requests`` requests or ``max_duration_s`` seconds, whichever comes
first; nothing runs on after they return.

* :func:`open_loop` sends at a fixed offered rate whatever the latency (Poisson or evenly spaced
  arrivals) and times each request from its *scheduled* arrival, so time spent waiting for a free
  worker counts: the load does not back off when the servers slow down, which avoids the
  "coordinated omission" of closed-loop tools (G. Tene, "How NOT to Measure Latency", 2015;
  wrk2's constant-throughput mode does the same). Request ``i`` belongs to client
  ``i % connections``, so each client offers ``rate / connections`` -- the clients a ``pinned``
  router pins.
* :func:`closed_loop` runs ``concurrency`` clients, each sending its next request when the last
  one answered (perf_analyzer's concurrency mode).

Both run with the garbage collector's existing objects frozen (:func:`gc.freeze`, Python 3.7+,
undone when the run ends): a full collection stops every thread for as long as it takes to walk
the heap, 160-260 ms measured here in a process that has imported torch and onnxruntime (300k
tracked objects). In an open loop such a pause delays every request due meanwhile, and showed as
p99s of 100-240 ms against 13-30 ms without it at the same rates (perf/sim_check.py's delay model).
Frozen, a collection walks only the objects the run itself makes.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from toolkit.errors import ServingError

__all__ = ["RequestRecord", "LoadResult", "open_loop", "closed_loop"]

Send = Callable[[int, Hashable], str]


@dataclass(frozen=True)
class RequestRecord:
    """One request of a load run.

    Attributes:
        index: the request's number (0-based, in send order).
        connection: the client that sent it.
        scheduled_s: when it was due, in seconds since the run started.
        latency_ms: from due time (open loop) or send time (closed loop) to the answer, in ms.
        address: the replica that answered (``""`` when it failed).
        error: why it failed (``""`` when it succeeded).
    """

    index: int
    connection: Hashable
    scheduled_s: float
    latency_ms: float
    address: str
    error: str = ""


@dataclass
class LoadResult:
    """The requests of one run and how it was driven.

    Attributes:
        records: one :class:`RequestRecord` per request that finished (answered or failed), by index.
        duration_s: wall time from the first due request to the last answer, in seconds.
        offered_rps: the open loop's rate (``None`` for a closed loop).
        not_sent: requests never sent because ``max_duration_s`` ran out.
    """

    records: list[RequestRecord]
    duration_s: float
    offered_rps: float | None = None
    not_sent: int = 0
    _ok: list[RequestRecord] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.records.sort(key=lambda r: r.index)
        self._ok = [r for r in self.records if not r.error]

    @property
    def errors(self) -> int:
        """Requests that failed."""
        return len(self.records) - len(self._ok)

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the successful requests' latency, in ms (NaN if none).

        Uses numpy's default linear interpolation between order statistics.
        """
        return float(np.percentile([r.latency_ms for r in self._ok], q)) if self._ok else math.nan

    def shares(self) -> dict[str, float]:
        """Replica -> its share of the successful requests (sums to 1), sorted by replica."""
        counts = Counter(r.address for r in self._ok)
        return {a: counts[a] / len(self._ok) for a in sorted(counts)}

    def summary(self) -> dict:
        """JSON-ready: counts, throughput, p50/p90/p99/max in ms, shares and per-replica p50/p99."""
        per_replica = {}
        for address in sorted({r.address for r in self._ok}):
            lat = [r.latency_ms for r in self._ok if r.address == address]
            per_replica[address] = {
                "requests": len(lat),
                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p99_ms": round(float(np.percentile(lat, 99)), 3),
            }
        return {
            "requests": len(self.records),
            "errors": self.errors,
            "not_sent": self.not_sent,
            "duration_s": round(self.duration_s, 3),
            "offered_rps": self.offered_rps,
            "throughput_rps": round(len(self._ok) / self.duration_s, 2) if self.duration_s > 0 else None,
            "p50_ms": round(self.percentile_ms(50), 3),
            "p90_ms": round(self.percentile_ms(90), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "max_ms": round(max((r.latency_ms for r in self._ok), default=math.nan), 3),
            "share": {a: round(s, 4) for a, s in self.shares().items()},
            "per_replica": per_replica,
        }


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Leave the objects that exist now out of every collection until the block ends (see the module docstring)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _check(n_requests: int, max_duration_s: float, workers: int) -> None:
    if n_requests < 1 or not max_duration_s > 0 or workers < 1:
        raise ServingError(
            f"load run: n_requests, max_duration_s and the thread count must be positive, got {n_requests}, {max_duration_s}, {workers}"
        )


def _run(send: Send, index: int, connection: Hashable, due: float, t0: float) -> RequestRecord:
    try:
        address, error = send(index, connection), ""
    except Exception as e:  # noqa: BLE001 -- a failed request is a result of the run, not its end
        address, error = "", f"{type(e).__name__}: {e}"
    return RequestRecord(index, connection, due - t0, (time.perf_counter() - due) * 1e3, address, error)


def open_loop(
    send: Send,
    *,
    rate_rps: float,
    n_requests: int,
    max_duration_s: float,
    connections: int = 1,
    workers: int = 64,
    poisson: bool = True,
    seed: int = 0,
) -> LoadResult:
    """Offer ``rate_rps`` requests per second until ``n_requests`` are sent or ``max_duration_s`` passes.

    Args:
        send: runs request ``i`` for client ``connection``; returns the replica that answered;
            raising marks the request failed (the run goes on).
        rate_rps: offered rate, requests per second (> 0).
        n_requests: requests to send at most.
        max_duration_s: seconds after which no request is sent any more; requests still queued
            for a worker then are dropped (counted in ``not_sent``) and those in flight are awaited.
        connections: clients; request ``i`` is client ``i % connections``'s.
        workers: threads sending (requests queue for a free one, and that wait is latency).
        poisson: exponential inter-arrival times (a Poisson process) with mean ``1 / rate_rps``;
            ``False``: evenly spaced.
        seed: seed of the arrival times.

    Returns:
        :class:`LoadResult` with latency from each request's due time.

    Raises:
        ServingError: a non-positive rate, count, duration, ``connections`` or ``workers``.
    """
    _check(n_requests, max_duration_s, workers)
    if not rate_rps > 0 or connections < 1:
        raise ServingError(f"open loop: rate_rps and connections must be positive, got {rate_rps} and {connections}")
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate_rps) if poisson else 1.0 / rate_rps for _ in range(n_requests)]
    futures: list[Future[RequestRecord]] = []
    with _gc_frozen():
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
        t0 = time.perf_counter()
        due = t0
        try:
            for i, gap in enumerate(gaps):
                due += gap if i else 0.0
                if due - t0 > max_duration_s:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(_run, send, i, i % connections, due, t0))
        finally:
            # past the time limit: drop what still waits for a worker; wait for what is in flight
            deadline = t0 + max_duration_s
            while time.perf_counter() < deadline and not all(f.done() for f in futures):
                time.sleep(0.01)
            pool.shutdown(wait=True, cancel_futures=True)
    records = [f.result() for f in futures if not f.cancelled()]
    end = max((r.scheduled_s + r.latency_ms / 1e3 for r in records), default=0.0)
    return LoadResult(records, end, offered_rps=rate_rps, not_sent=n_requests - len(records))


def closed_loop(send: Send, *, concurrency: int, n_requests: int, max_duration_s: float) -> LoadResult:
    """``concurrency`` clients, each sending its next request when the last answered, until
    ``n_requests`` are sent in all or ``max_duration_s`` passes.

    Args:
        send: as for :func:`open_loop`; client ``c`` of ``range(concurrency)`` is its ``connection``.
        concurrency: clients (threads), >= 1.
        n_requests: requests to send at most, over all clients.
        max_duration_s: seconds after which no client sends again (requests in flight finish).

    Returns:
        :class:`LoadResult` with latency from each request's send time.

    Raises:
        ServingError: a non-positive ``concurrency``, count or duration.
    """
    _check(n_requests, max_duration_s, concurrency)
    lock = threading.Lock()
    counter = iter(range(n_requests))
    records: list[RequestRecord] = []
    t0 = 0.0  # set once the collector is frozen, before the first client starts

    def client(connection: int) -> None:
        while time.perf_counter() - t0 < max_duration_s:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            record = _run(send, index, connection, time.perf_counter(), t0)
            with lock:
                records.append(record)

    threads = [threading.Thread(target=client, args=(c,), name=f"load-{c}", daemon=True) for c in range(concurrency)]
    with _gc_frozen():
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return LoadResult(records, time.perf_counter() - t0, offered_rps=None, not_sent=n_requests - len(records))

"""Per-pod signals from each Triton pod's own Prometheus endpoint (``/metrics``, port 8002).

Three layers, the first two pure (no I/O, no clock: tested on saved texts and a fake clock):

* :func:`parse_metrics`: a ``/metrics`` text -> :class:`MetricsSample` (the families the autoscaler
  reads, one value per series), parsed with prometheus-client's text parser;
* :func:`pod_signals` and :class:`MetricsTracker`: two successive samples of a pod ->
  :class:`~toolkit.autoscale.signals.PodSignals` (rates from counter deltas; counter resets, pods
  replaced under the same name, failed scrapes and missing metrics handled);
* :class:`PodScraper`: fetches the endpoints of many pods at once (urllib3, a small thread pool,
  a deadline per round) and feeds a :class:`MetricsTracker`.

The arithmetic follows Prometheus' own ``rate()``/``increase()`` over two points
(prometheus/promql/functions.go, ``extrapolatedRate``, without its extrapolation): a counter that
went down was reset (the server restarted) and counts from zero, so its increase is its new
value. What is summed before dividing matters: queue time per request is the queue time summed
over all of a pod's models divided by the requests summed over the same models, not the mean of
per-model ratios (the prometheus-adapter rule in NVIDIA's Triton autoscaling example averages per
model and so under-reports queue time by about the number of models).

::

    scraper = PodScraper(timeout_s=2.0)
    signals = scraper.scrape([ScrapeTarget("triton-0", "10.0.0.7:8002", uid="3f1c...")])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from toolkit.autoscale.signals import POLICY_METRICS, PodPhase, PodSignals
from toolkit.errors import MetricsError

__all__ = [
    "COUNTER_METRICS",
    "COUNTER_SERIES",
    "GAUGE_METRICS",
    "SeriesKey",
    "MetricsSample",
    "ScrapeTarget",
    "ScrapeResult",
    "parse_metrics",
    "counter_increase",
    "signals_from_increases",
    "pod_signals",
    "MetricsTracker",
    "PodScraper",
]

#: Triton's cumulative per-model counters that the signals are computed from (Triton
#: docs/user_guide/metrics.md, "Inference Request Metrics" and "Latencies"). Durations are in
#: microseconds, summed over requests: a batch's compute time is added once for each request in it.
COUNTER_METRICS: tuple[str, ...] = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_request_failure",
)
#: Counter families of which only some series are read: family -> the label that must be present and
#: its value. ``nv_inference_request_failure`` is labelled by ``reason`` (``REJECTED``, ``CANCELED``,
#: ``BACKEND``, ``OTHER``); only ``REJECTED`` is load (the queue policy's timeout expired while the
#: request waited, ``timeout_action: REJECT``), the others are errors of the request or the model.
#: Triton 2.51 does not count what a full queue (``max_queue_size``) turns away in any failure
#: counter (``tests/integration/test_scrape_server.py`` checks both), so a queue bounded by size
#: hides its overload from every metric: bound it with a timeout.
#: A server whose failures carry no ``reason`` label cannot tell rejections apart: its family is
#: read as absent (rejections unknown), not as zero.
COUNTER_SERIES: Mapping[str, tuple[str, str]] = MappingProxyType({"nv_inference_request_failure": ("reason", "REJECTED")})
#: Triton's per-model gauges that are read as they are (not as deltas).
GAUGE_METRICS: tuple[str, ...] = ("nv_inference_pending_request_count",)

_READ = frozenset(COUNTER_METRICS + GAUGE_METRICS)
_MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest ``/metrics`` body read (bytes): Triton's is a few KiB per model; a bigger one is not Triton's."""

#: One series of a family: its labels as sorted ``(name, value)`` pairs, e.g.
#: ``(("model", "fast"), ("version", "1"))``.
SeriesKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricsSample:
    """The families the autoscaler reads from one ``/metrics`` text.

    Attributes:
        series: family name -> series labels -> value, for the families in :data:`COUNTER_METRICS`
            and :data:`GAUGE_METRICS` that the text has (a family with a ``# TYPE`` line and no
            sample is present with no series). Counters are cumulative since the server started
            (microseconds for ``*_duration_us``, counts otherwise); gauges are instantaneous.
    """

    series: Mapping[str, Mapping[SeriesKey, float]]

    def has(self, family: str) -> bool:
        """Whether the text had ``family``."""
        return family in self.series

    def total(self, family: str) -> float | None:
        """``family`` summed over all its series (all models and versions), or None when the text lacks it."""
        values = self.series.get(family)
        return None if values is None else float(sum(values.values()))

    @property
    def missing(self) -> tuple[str, ...]:
        """The names of :data:`~toolkit.autoscale.signals.POLICY_METRICS` that the text lacks, in that order."""
        return tuple(name for name in POLICY_METRICS if name not in self.series)


def parse_metrics(text: str, *, source: str = "/metrics") -> MetricsSample:
    """Parse a Prometheus text exposition (format 0.0.4, what Triton's metrics endpoint serves).

    Parsing is prometheus-client's (``prometheus_client.parser.text_string_to_metric_families``);
    this keeps the families in :data:`COUNTER_METRICS` and :data:`GAUGE_METRICS`, one value per
    series. The parser renames a counter's samples ``<family>_total``; both spellings are read,
    and ``_created`` samples are ignored.

    Args:
        text: the body of a ``/metrics`` response.
        source: what the text came from, for the error message (a pod name, an URL, a file).

    Returns:
        the :class:`MetricsSample` of ``text`` (families the text lacks are absent, not zero).

    Raises:
        MetricsError: ``text`` is not in the text format (prometheus-client's message, with
            ``source``), or it repeats a series (Prometheus refuses such a scrape as well).
    """
    series: dict[str, dict[SeriesKey, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name not in _READ:
                continue
            values = series.setdefault(family.name, {})
            accepted = (family.name, family.name + "_total")
            wanted = COUNTER_SERIES.get(family.name)
            labelled = False
            for sample in family.samples:
                if sample.name not in accepted:
                    continue
                if wanted is not None:
                    labelled = labelled or wanted[0] in sample.labels
                    if sample.labels.get(wanted[0]) != wanted[1]:
                        continue
                key: SeriesKey = tuple(sorted(sample.labels.items()))
                if key in values:
                    labels = ",".join(f'{k}="{v}"' for k, v in key)
                    raise MetricsError(
                        f"{source}: the series {family.name}{{{labels}}} appears twice",
                        hint="a Triton server writes each series once: is this endpoint a Triton server's?",
                    )
                values[key] = float(sample.value)
            if wanted is not None and family.samples and not labelled:
                del series[family.name]  # no reason label: which failures were rejections is unknown
    except ValueError as e:
        raise MetricsError(
            f"{source}: not Prometheus' text format ({e})",
            hint="the address should be a Triton server's metrics endpoint (port 8002, path /metrics)",
        ) from e
    return MetricsSample(MappingProxyType({name: MappingProxyType(v) for name, v in series.items()}))


def counter_increase(previous: Mapping[SeriesKey, float], current: Mapping[SeriesKey, float]) -> float:
    """How much a counter family grew between two samples, summed over its series.

    Per series, as Prometheus' ``increase()`` does: ``current - previous``, or ``current`` when
    the value went down (a counter reset: the server restarted and counts from zero again). A
    series that is new in ``current`` (a model loaded since the previous sample) counts from
    zero too; one that disappeared (a model unloaded) adds nothing. As with Prometheus, a server
    that restarted and then counted past its old value between two samples looks like a plain
    increase (an undercount): scraping every few seconds keeps that window short.

    Args:
        previous, current: series -> cumulative value, from :attr:`MetricsSample.series`.

    Returns:
        the increase (same unit as the counter), >= 0.
    """
    total = 0.0
    for key, value in current.items():
        before = previous.get(key, 0.0)
        total += value - before if value >= before else value
    return total


@dataclass(frozen=True)
class ScrapeTarget:
    """One pod of the target Deployment, as the Kubernetes API describes it.

    Attributes:
        pod: the pod's name (``metadata.name``).
        address: ``host:port`` of its metrics endpoint (``status.podIP`` and the metrics port,
            ``"10.0.0.7:8002"``), or None before it has an IP.
        phase: see :data:`~toolkit.autoscale.signals.PodPhase`. Only ``ready`` and ``terminating``
            pods are scraped (a draining pod's pending requests matter); a ``starting`` pod's
            server may not answer yet, and is reported without signals and without a failure.
            A Triton server that got SIGTERM unloads its models and, for about half a second
            before its port closes, serves ``/metrics`` without their families
            (tests/fixtures/metrics/shutting_down.txt): such a scrape names every policy metric
            in ``missing``, which a policy should not hold on for a ``terminating`` pod.
        uid: the pod's ``metadata.uid``: a new pod under a reused name (a StatefulSet's) has a new
            one, and its counters are never compared with the old pod's. None: use ``address``.
    """

    pod: str
    address: str | None
    phase: PodPhase = "ready"
    uid: str | None = None

    @property
    def identity(self) -> str | None:
        """What distinguishes this pod from an earlier one of the same name: its UID, else its address."""
        return self.uid if self.uid is not None else self.address

    @property
    def scraped(self) -> bool:
        """Whether this pod's endpoint is scraped (phase ``ready`` or ``terminating``, and an address)."""
        return self.address is not None and self.phase in ("ready", "terminating")


@dataclass(frozen=True)
class ScrapeResult:
    """What one fetch of one pod's endpoint gave: the text, or why there is none.

    Attributes:
        target: the pod.
        at: when the answer (or the failure) came, seconds on the scraper's clock.
        text: the body of ``/metrics`` (None on failure).
        error: why the fetch failed (None on success): a connection error, a timeout, an HTTP status.
    """

    target: ScrapeTarget
    at: float
    text: str | None = None
    error: str | None = None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def signals_from_increases(
    target: ScrapeTarget,
    increases: Mapping[str, float | None],
    *,
    elapsed_s: float | None,
    pending_requests: float | None,
    missing: tuple[str, ...],
    scraped_at: float | None = None,
) -> PodSignals:
    """A pod's signals from its counters' increases over an interval (a pure function; both
    :func:`pod_signals` and the Prometheus-query source compute through it).

    Args:
        target: the pod (name, phase, address).
        increases: counter family (from :data:`COUNTER_METRICS`) -> its increase over the interval,
            summed over the pod's models (None: unknown). Per-second rates with ``elapsed_s=1``
            work the same.
        elapsed_s: the interval in seconds (None or <= 0: every rate is None, as on a first scrape).
        pending_requests: ``nv_inference_pending_request_count`` summed over the pod's models, now.
        missing: the names of :data:`~toolkit.autoscale.signals.POLICY_METRICS` the pod lacks now.
        scraped_at: when the pod's data was taken (seconds, caller's clock).

    Returns:
        the pod's :class:`~toolkit.autoscale.signals.PodSignals` (``failed_scrapes`` 0):
        ``request_rate`` (requests/s: Δ ``nv_inference_request_success`` / ``elapsed_s``),
        ``inference_rate`` (inferences/s, Δ ``nv_inference_count``), ``queue_us_per_request`` (µs:
        Δ queue duration / Δ successful requests, both already summed over all of the pod's models;
        0.0 when no request completed and none is pending, since then nothing waited; None when none
        completed while some are pending, since their wait is not counted until they finish),
        ``compute_us_per_inference`` (µs: Δ (compute input + infer + output) / Δ inferences, None when
        there was no inference; compute input or output unknown counts as 0, compute infer unknown
        makes it None), ``rejected_rate`` (requests/s the queue policy rejected: Δ
        ``nv_inference_request_failure{reason="REJECTED"}``, see :data:`COUNTER_SERIES`). Anything
        computed from an unknown increase is None.
    """
    first = PodSignals(
        pod=target.pod,
        phase=target.phase,
        address=target.address,
        scraped_at=scraped_at,
        pending_requests=pending_requests,
        missing=missing,
    )
    if elapsed_s is None or elapsed_s <= 0:
        return first
    requests = increases.get("nv_inference_request_success")
    inferences = increases.get("nv_inference_count")
    queue_us = increases.get("nv_inference_queue_duration_us")
    compute_infer_us = increases.get("nv_inference_compute_infer_duration_us")
    compute_us = None
    if compute_infer_us is not None:
        compute_us = compute_infer_us + sum(
            increases.get(f) or 0.0 for f in ("nv_inference_compute_input_duration_us", "nv_inference_compute_output_duration_us")
        )
    queue_per_request = _ratio(queue_us, requests)
    if queue_us is not None and requests == 0 and pending_requests == 0:
        queue_per_request = 0.0
    rejected = increases.get("nv_inference_request_failure")
    return replace(
        first,
        request_rate=None if requests is None else requests / elapsed_s,
        rejected_rate=None if rejected is None else rejected / elapsed_s,
        inference_rate=None if inferences is None else inferences / elapsed_s,
        queue_us_per_request=queue_per_request,
        compute_us_per_inference=_ratio(compute_us, inferences),
    )


def pod_signals(
    target: ScrapeTarget,
    previous: MetricsSample | None,
    current: MetricsSample,
    *,
    elapsed_s: float | None,
    scraped_at: float | None = None,
) -> PodSignals:
    """The signals of one pod from two of its samples (a pure function).

    Each counter's increase is :func:`counter_increase` of the two samples (resets count from
    zero), summed over the pod's models; the signals are then :func:`signals_from_increases`'.

    Args:
        target: the pod (name, phase, address).
        previous: the previous successful sample of the same pod (same :attr:`ScrapeTarget.identity`),
            or None (first scrape): the rates are then None (unknown, not zero).
        current: its latest sample.
        elapsed_s: seconds between the two samples (None or <= 0: the rates are None).
        scraped_at: when ``current`` was taken (seconds, caller's clock), copied to the result.

    Returns:
        the pod's :class:`~toolkit.autoscale.signals.PodSignals` (``failed_scrapes`` 0), with
        ``pending_requests`` and ``missing`` from ``current``. A counter that either sample lacks
        has no increase, so what depends on it is None; ``missing`` names only what ``current``
        lacks (as :attr:`~toolkit.autoscale.signals.PodSignals.missing` says), so the scrape after
        one that lacked a metric names nothing and still has None where that metric is needed.
    """
    increases = {
        family: counter_increase(previous.series[family], current.series[family])
        if previous is not None and previous.has(family) and current.has(family)
        else None
        for family in COUNTER_METRICS
    }
    return signals_from_increases(
        target,
        increases,
        elapsed_s=None if previous is None else elapsed_s,
        pending_requests=current.total("nv_inference_pending_request_count"),
        missing=current.missing,
        scraped_at=scraped_at,
    )


@dataclass
class _PodState:
    identity: str | None
    sample: MetricsSample | None = None
    sample_at: float | None = None
    signals: PodSignals | None = None
    failed_scrapes: int = 0
    last_error: str | None = None


@dataclass
class MetricsTracker:
    """The per-pod memory between scrapes: last successful sample, consecutive failures, last signals.

    No I/O and no clock: callers pass each scrape's text (or failure) and its time. Not
    thread-safe: one caller (the controller's loop, :class:`PodScraper`) feeds it.

    A pod is known by its name; when the same name comes back with another
    :attr:`ScrapeTarget.identity` (a new pod under a reused name), its history is dropped and its
    next scrape is a first one. Pods no longer listed are dropped by :meth:`retain`.
    """

    _pods: dict[str, _PodState] = field(default_factory=dict)

    def _state(self, target: ScrapeTarget) -> _PodState:
        state = self._pods.get(target.pod)
        if state is None or state.identity != target.identity:
            state = self._pods[target.pod] = _PodState(identity=target.identity)
        return state

    def observe(self, result: ScrapeResult) -> PodSignals:
        """Take one scrape of one pod and return its signals now.

        On success, the rates are computed against the pod's previous successful sample (over
        the time between the two, however many failures lay between) and ``failed_scrapes`` is 0.
        On failure (``result.error``, or a text that does not parse), ``failed_scrapes`` grows by
        one and the previous signals are kept as they were (``scraped_at`` stays at the last
        success: they are stale, and a policy can tell by how old they are).

        Args:
            result: the fetch, from :class:`PodScraper` or a test.

        Returns:
            the pod's :class:`~toolkit.autoscale.signals.PodSignals`.
        """
        target = result.target
        state = self._state(target)
        sample = None
        error = result.error
        if error is None:
            try:
                sample = parse_metrics(result.text or "", source=f"pod {target.pod} ({target.address})")
            except MetricsError as e:
                error = str(e)
        if sample is None:
            state.failed_scrapes += 1
            state.last_error = error or "no answer"
            base = state.signals or PodSignals(pod=target.pod, phase=target.phase, address=target.address)
            state.signals = replace(base, phase=target.phase, address=target.address, failed_scrapes=state.failed_scrapes)
            return state.signals
        elapsed = None if state.sample_at is None else result.at - state.sample_at
        state.signals = pod_signals(target, state.sample, sample, elapsed_s=elapsed, scraped_at=result.at)
        state.sample, state.sample_at = sample, result.at
        state.failed_scrapes, state.last_error = 0, None
        return state.signals

    def unscraped(self, target: ScrapeTarget) -> PodSignals:
        """Signals of a pod that is not scraped (``starting``, or no address yet): phase and address only.

        Its history (if it was ready before, e.g. a readiness probe that failed for a while) is kept.
        """
        self._state(target)
        return PodSignals(pod=target.pod, phase=target.phase, address=target.address)

    def last_error(self, pod: str) -> str | None:
        """Why the pod's last scrape failed (None when it succeeded or the pod is unknown)."""
        state = self._pods.get(pod)
        return None if state is None else state.last_error

    def retain(self, pods: Iterable[str]) -> None:
        """Forget every pod not in ``pods`` (those deleted from the Deployment)."""
        keep = set(pods)
        for name in [p for p in self._pods if p not in keep]:
            del self._pods[name]


class PodScraper:
    """Fetches the ``/metrics`` endpoint of every pod at once and turns the answers into signals.

    One round (:meth:`scrape`) sends a GET to each scraped pod from a small thread pool (urllib3,
    one connection pool per pod address, no retries: the next round is the retry) and waits at most
    ``timeout_s`` in all, so one slow or dead pod never delays the others' signals: a pod that has
    not answered by then counts as a failed scrape (its request is left to finish in the
    background and its answer is dropped).

    Args:
        timeout_s: seconds a round waits for the answers (also the connect and read timeout of
            each request). Default 2 s: well under the controller's sync period (15 s, as the HPA's).
        max_workers: threads fetching at once (pods beyond that wait for a free thread within
            the same deadline).
        clock: the time source for ``scraped_at`` (seconds); default ``time.monotonic``.
        path: the endpoint's path; ``/metrics`` is Triton's.
        tracker: the per-pod memory; default a new :class:`MetricsTracker`.

    Raises:
        ValueError: ``timeout_s`` <= 0 or ``max_workers`` < 1.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        max_workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        path: str = "/metrics",
        tracker: MetricsTracker | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        import urllib3  # the [k8s] extra (the kubernetes client depends on it)

        self.timeout_s = timeout_s
        self.clock = clock
        self.path = path
        self.tracker = tracker or MetricsTracker()
        self._urllib3 = urllib3
        self._http = urllib3.PoolManager(
            num_pools=64, maxsize=1, block=False, retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s)
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tritonrec-scrape")
        self._lock = threading.Lock()

    def fetch(self, target: ScrapeTarget) -> ScrapeResult:
        """GET one pod's endpoint (blocking, at most about ``timeout_s`` per connect and per read)."""
        url = f"http://{target.address}{self.path}"
        try:
            response = self._http.request("GET", url, preload_content=False)
            try:
                body = response.read(_MAX_BODY_BYTES + 1)
            finally:
                response.release_conn()
        except self._urllib3.exceptions.HTTPError as e:
            return ScrapeResult(target, self.clock(), error=f"GET {url}: {type(e).__name__}: {e}")
        if response.status != 200:
            return ScrapeResult(target, self.clock(), error=f"GET {url}: HTTP {response.status}")
        if len(body) > _MAX_BODY_BYTES:
            return ScrapeResult(target, self.clock(), error=f"GET {url}: body larger than {_MAX_BODY_BYTES} bytes")
        return ScrapeResult(target, self.clock(), text=body.decode("utf-8", errors="replace"))

    def scrape(self, targets: Sequence[ScrapeTarget]) -> tuple[PodSignals, ...]:
        """One round: fetch every scraped target at once, update the tracker, return every target's signals.

        Args:
            targets: the Deployment's pods now (pods not listed are forgotten).

        Returns:
            one :class:`~toolkit.autoscale.signals.PodSignals` per target, in the order given.

        Raises:
            ValueError: two targets have the same pod name.
        """
        names = [t.pod for t in targets]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"pod names must be unique in one scrape, got {', '.join(duplicates)} more than once")
        with self._lock:  # one round at a time: the tracker is not thread-safe
            futures: dict[str, Future[ScrapeResult]] = {t.pod: self._pool.submit(self.fetch, t) for t in targets if t.scraped}
            wait(futures.values(), timeout=self.timeout_s)
            now = self.clock()
            signals = []
            for target in targets:
                future = futures.get(target.pod)
                if future is None:
                    signals.append(self.tracker.unscraped(target))
                    continue
                if future.done() and future.exception() is None:
                    result = future.result()
                elif future.done():
                    result = ScrapeResult(target, now, error=f"{type(future.exception()).__name__}: {future.exception()}")
                else:
                    future.cancel()
                    result = ScrapeResult(target, now, error=f"no answer from {target.address} within {self.timeout_s:g} s")
                signals.append(self.tracker.observe(result))
            self.tracker.retain(names)
            return tuple(signals)

    def close(self) -> None:
        """Stop the thread pool (without waiting for requests in flight) and close the connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.clear()

    def __enter__(self) -> PodScraper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

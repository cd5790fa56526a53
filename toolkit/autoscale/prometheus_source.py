"""Per-pod signals from a Prometheus server's HTTP API, for clusters where Prometheus already
scrapes the Triton pods: the same :class:`~toolkit.autoscale.signals.PodSignals` as
:class:`~toolkit.autoscale.scrape.PodScraper` gives, through the same arithmetic
(:func:`~toolkit.autoscale.scrape.signals_from_increases`).

A round is one instant query (Prometheus' ``/api/v1/query`` through prometheus-api-client's
``PrometheusConnect.custom_query``) whose parts are joined with ``or`` (see
:meth:`PrometheusSource.query` for why one). Its parts, per pod (the label ``pod_label``, as
Prometheus' Kubernetes service discovery is usually relabelled: ``__meta_kubernetes_pod_name`` ->
``pod``):

* ``max by (pod) (up{S})``: whether Prometheus' last scrape of the pod worked;
* ``count by (pod, __name__) ({__name__=~"nv_inference_...", S})``: which Triton families the pod
  exposes, so that a family it lacks is named in ``missing`` (KEDA's Prometheus scaler reads an
  empty result as zero load; here it is a missing metric, and the policy holds);
* ``max by (pod) (timestamp(up{S}))``: when Prometheus last scraped it (``scraped_at``);
* ``sum by (pod) (rate(F{S}[W]))`` for every counter family F: per-second increases summed over
  the pod's models before any division (resets are handled by ``rate()`` itself); for
  ``nv_inference_request_failure`` only its ``reason="REJECTED"`` series (``COUNTER_SERIES``);
* ``sum by (pod) (nv_inference_pending_request_count{S})``.

``S`` is the caller's label selector (``namespace="prod",job="triton"``) and ``W`` the rate window.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from toolkit.autoscale.scrape import COUNTER_METRICS, COUNTER_SERIES, GAUGE_METRICS, ScrapeTarget, signals_from_increases
from toolkit.autoscale.signals import POLICY_METRICS, PodSignals
from toolkit.errors import MetricsError

__all__ = ["PrometheusSource", "PrometheusRound", "signals_from_round"]

_FAMILIES = COUNTER_METRICS + GAUGE_METRICS
_STATUS = re.compile(r"HTTP Status Code (\d+)")  # prometheus-api-client's message for a non-200 answer
_SELECTOR = re.compile(r"""^\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*(?:,\s*|$))*$""")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PART = "tritonrec_part"  # label that tags each part of the one query of a round
_FAMILY = "tritonrec_family"  # label that carries a family's name in the "present" part


@dataclass(frozen=True)
class PrometheusRound:
    """One round's answers, each a mapping pod name -> value.

    Attributes:
        evaluated_ts: the instant every query was evaluated at (Unix seconds).
        up: ``up`` (1: Prometheus' last scrape of the pod worked, 0: it failed).
        scraped_ts: Unix seconds of the pod's newest ``up`` sample (its last scrape).
        present: family -> the pods that expose it (the number of their series).
        rates: counter family -> per-second increase summed over the pod's models (a pod is
            absent where Prometheus has fewer than two samples in the window).
        pending: ``nv_inference_pending_request_count`` summed over the pod's models.
    """

    evaluated_ts: float
    up: Mapping[str, float] = field(default_factory=dict)
    scraped_ts: Mapping[str, float] = field(default_factory=dict)
    present: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    pending: Mapping[str, float] = field(default_factory=dict)


def signals_from_round(target: ScrapeTarget, answers: PrometheusRound, *, now: float) -> PodSignals | None:
    """One pod's signals from one round of queries (a pure function), or None when Prometheus
    has no working scrape of the pod (``up`` absent or 0: the caller counts a failed scrape).

    Args:
        target: the pod.
        answers: the round.
        now: the caller's clock at the round (seconds); ``scraped_at`` is ``now`` minus the age of
            the pod's last scrape (Prometheus' timestamps are Unix seconds, another clock).

    Returns:
        the pod's :class:`~toolkit.autoscale.signals.PodSignals` with the rates over the round's
        window (None where Prometheus had fewer than two samples in it), or None.
    """
    pod = target.pod
    if not answers.up.get(pod):
        return None

    def exposes(family: str) -> bool:
        return pod in answers.present.get(family, {})

    missing = tuple(name for name in POLICY_METRICS if not exposes(name))
    increases = {family: answers.rates.get(family, {}).get(pod) if exposes(family) else None for family in COUNTER_METRICS}
    pending = answers.pending.get(pod) if exposes("nv_inference_pending_request_count") else None
    newest = answers.scraped_ts.get(pod)
    scraped_at = None if newest is None else now - max(0.0, answers.evaluated_ts - newest)
    return signals_from_increases(target, increases, elapsed_s=1.0, pending_requests=pending, missing=missing, scraped_at=scraped_at)


class PrometheusSource:
    """Signals of the Deployment's pods from Prometheus, one round of instant queries per call.

    Args:
        url: Prometheus' base URL (``http://prometheus.monitoring:9090``).
        selector: label matchers that pick the Triton pods' series, without braces
            (``namespace="prod",job="triton"``); ``""``: every series with ``pod_label``.
        pod_label: the label that holds the pod's name.
        window_s: the range of ``rate()`` in seconds: at least two of Prometheus' scrape intervals
            (``rate()`` needs two samples in its range; about four intervals survive a missed
            scrape). ``rate()`` extrapolates from the first and last samples in its range towards the
            range's edges (promql/functions.go, ``extrapolatedRate``): for a series that covers only
            part of the window (a new pod) the rates are approximate until it covers all of it.
        timeout_s: seconds each query may take (one attempt: the next round is the retry).
        clock: the caller's clock for ``scraped_at`` (seconds); default ``time.monotonic``.
        wall_clock: Unix time (seconds) at which the queries are evaluated; default ``time.time``.

    Raises:
        ValueError: ``selector`` is not a list of label matchers, ``pod_label`` is not a label name,
            or ``window_s``/``timeout_s`` are not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        selector: str = "",
        pod_label: str = "pod",
        window_s: float = 30.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not _SELECTOR.match(selector):
            raise ValueError(f'selector must be label matchers such as namespace="prod",job="triton" (no braces), got {selector!r}')
        if not _LABEL.match(pod_label):
            raise ValueError(f"pod_label must be a Prometheus label name, got {pod_label!r}")
        if window_s <= 0 or timeout_s <= 0:
            raise ValueError(f"window_s and timeout_s must be > 0 seconds, got {window_s} and {timeout_s}")
        from prometheus_api_client.prometheus_connect import PrometheusConnect  # the [k8s] extra
        from urllib3.util import Retry

        self.url = url.rstrip("/")
        self.pod_label = pod_label
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.clock, self.wall_clock = clock, wall_clock
        self._selector = selector.strip().rstrip(",")
        self._client = PrometheusConnect(self.url, retry=Retry(total=0), timeout=timeout_s)
        self._failed: dict[str, int] = {}
        self._last: dict[str, PodSignals] = {}

    def _matchers(self, *extra: str) -> str:
        return "{" + ",".join(m for m in (self._selector, *extra) if m) + "}"

    def queries(self) -> dict[str, str]:
        """The parts of one round: name -> PromQL (``rate:<family>`` for each counter family)."""
        by = f"by ({self.pod_label})"
        families = self._matchers(f'__name__=~"{"|".join(_FAMILIES)}"')
        parts = {
            "up": f"max {by} (up{self._matchers()})",
            "scraped_ts": f"max {by} (timestamp(up{self._matchers()}))",
            "present": f'label_replace(count by ({self.pod_label}, __name__) ({families}), "{_FAMILY}", "$1", "__name__", "(.+)")',
            "pending": f"sum {by} (nv_inference_pending_request_count{self._matchers()})",
        }
        for family in COUNTER_METRICS:
            only = [f'{COUNTER_SERIES[family][0]}="{COUNTER_SERIES[family][1]}"'] if family in COUNTER_SERIES else []
            parts[f"rate:{family}"] = f"sum {by} (rate({family}{self._matchers(*only)}[{self.window_s:g}s]))"
        return parts

    def query(self) -> str:
        """The round as one PromQL query: the parts of :meth:`queries`, each tagged with its name in
        the label ``tritonrec_part`` (``label_replace``) and joined with ``or``.

        One query, because Prometheus evaluates it on one snapshot in which a scrape is either
        wholly in or wholly out (TSDB isolation, since Prometheus 2.17); separate queries could mix
        answers from before and after a scrape that lands between them (``up`` from one scrape,
        the families from the next).

        A Triton server that is shutting down (SIGTERM) serves ``/metrics`` without its models'
        families for about half a second before its port closes
        (``tests/fixtures/metrics/shutting_down.txt``): a scrape in that window has ``up`` 1 and
        every policy metric missing, which is what this source then reports.
        """
        return " or ".join(f'label_replace({q}, "{_PART}", "{name}", "", "")' for name, q in self.queries().items())

    def fetch_round(self) -> PrometheusRound:
        """Run :meth:`query` at one instant and sort its answer by part and pod.

        Raises:
            OSError: Prometheus could not be reached or answered with an error status (a failed round).
            MetricsError: Prometheus refused the query (HTTP 400/422: a bad selector or label).
        """
        from prometheus_api_client.exceptions import PrometheusApiClientException

        at = self.wall_clock()
        query = self.query()
        try:
            result = self._client.custom_query(query, params={"time": f"{at:.3f}"})
        except PrometheusApiClientException as e:
            status = _STATUS.search(str(e))
            if status and status.group(1) in ("400", "422"):  # Prometheus refuses the query itself: retrying is useless
                raise MetricsError(
                    f"Prometheus at {self.url} refused the query for selector {self._selector!r} and pod label {self.pod_label!r}: {e}",
                    hint="check the selector and the pod label of the Prometheus source (PrometheusSource.query() shows the query)",
                ) from e
            raise OSError(f"Prometheus at {self.url}: {e}") from e
        parts: dict[str, dict[str, float]] = {name: {} for name in self.queries()}
        present: dict[str, dict[str, float]] = {}
        for item in result:
            labels, (_, value) = item["metric"], item["value"]
            pod, part = labels.get(self.pod_label), labels.get(_PART)
            if pod is None or part not in parts:
                continue
            if part == "present":
                present.setdefault(labels.get(_FAMILY, ""), {})[pod] = float(value)
            else:
                parts[part][pod] = float(value)
        return PrometheusRound(
            evaluated_ts=at,
            up=parts["up"],
            scraped_ts=parts["scraped_ts"],
            present=present,
            rates={f: parts[f"rate:{f}"] for f in COUNTER_METRICS},
            pending=parts["pending"],
        )

    def signals(self, targets: Sequence[ScrapeTarget]) -> tuple[PodSignals, ...]:
        """One round: every target's signals, in the order given.

        A pod Prometheus has no working scrape of (or the whole round, when Prometheus cannot be
        reached) counts a failed scrape and keeps its last signals, stale, as
        :class:`~toolkit.autoscale.scrape.MetricsTracker` does. ``starting`` pods are not looked up.

        Raises:
            MetricsError: Prometheus refused a query (see :meth:`fetch_round`).
        """
        try:
            answers: PrometheusRound | None = self.fetch_round()
        except OSError:
            answers = None
        now = self.clock()
        out = []
        for target in targets:
            if not target.scraped:
                out.append(PodSignals(pod=target.pod, phase=target.phase, address=target.address))
                continue
            fresh = None if answers is None else signals_from_round(target, answers, now=now)
            if fresh is None:
                self._failed[target.pod] = self._failed.get(target.pod, 0) + 1
                last = self._last.get(target.pod) or PodSignals(pod=target.pod, phase=target.phase, address=target.address)
                fresh = replace(last, phase=target.phase, address=target.address, failed_scrapes=self._failed[target.pod])
            else:
                self._failed[target.pod] = 0
            self._last[target.pod] = fresh
            out.append(fresh)
        keep = {t.pod for t in targets}
        self._failed = {p: n for p, n in self._failed.items() if p in keep}
        self._last = {p: s for p, s in self._last.items() if p in keep}
        return tuple(out)

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

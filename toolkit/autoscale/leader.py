"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

The Python client ships only a ConfigMap lock (``kubernetes.leaderelection``); this is a port of
client-go's ``tools/leaderelection/leaderelection.go`` (``LeaderElector``: ``acquire``, ``renew``,
``tryAcquireOrRenew``, ``release``) over the Lease lock of ``tools/leaderelection/resourcelock/
leaselock.go`` (the record is the Lease's ``spec``: ``holderIdentity``, ``leaseDurationSeconds``,
``acquireTime``, ``renewTime``, ``leaseTransitions``):

- **acquire**: try every ``retry_period_s`` (jittered by up to 1.2x, client-go's ``JitterFactor``)
  until the Lease is ours: created when absent, taken over when its holder is empty or has not
  renewed within ``leaseDurationSeconds`` *as observed on our own clock* (client-go's
  ``observedTime``: the local time we last saw the record change, so clock skew between
  controllers does not matter).
- **renew**: every ``retry_period_s`` the leader writes a new ``renewTime``; when no renewal has
  succeeded for ``renew_deadline_s`` it steps down (stops acting) — before ``lease_duration_s``
  has passed, so it has stopped before anyone else may take over.
- **release** (on a clean stop): the Lease is handed back (empty holder, ``leaseDurationSeconds: 1``)
  so a follower takes over at its next try instead of after a whole lease.

Writes carry the ``resourceVersion`` last read (optimistic concurrency): an API server refuses with
409 the write of a controller that raced another one, which then re-reads, as client-go's Update.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.autoscale.kube import ApiCallError, KubeClient, RetryPolicy, rfc3339
from toolkit.errors import AutoscaleError

__all__ = ["JITTER_FACTOR", "LeaderElectionConfig", "LeaderElector"]

log = logging.getLogger(__name__)

#: client-go's ``JitterFactor`` (leaderelection.go): a retry waits ``retry_period * (1 + rand * 1.2)``.
JITTER_FACTOR = 1.2


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Where and how to elect (client-go's ``LeaderElectionConfig``).

    Attributes:
        namespace: namespace of the Lease.
        lease_name: name of the Lease (one per set of namespaces the controllers watch).
        identity: this controller's identity (``holderIdentity``), unique per process: the pod
            name plus a random suffix is usual.
        lease_duration_s: seconds a follower waits, after the last change of the Lease it saw,
            before taking over. client-go's default: 15 s. Written (rounded up) as
            ``leaseDurationSeconds``.
        renew_deadline_s: seconds the leader keeps trying to renew before stepping down; must be
            below ``lease_duration_s``. Default 10 s (client-go).
        retry_period_s: seconds between tries (acquire and renew). Default 2 s (client-go).
        release_on_cancel: hand the Lease back on a clean stop (client-go's ``ReleaseOnCancel``).

    Raises:
        AutoscaleError: not ``lease_duration_s > renew_deadline_s > JITTER_FACTOR * retry_period_s > 0``,
            or an empty identity (client-go's ``NewLeaderElector`` checks the same).
    """

    namespace: str
    lease_name: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.identity:
            raise AutoscaleError("leader election: the identity must not be empty", hint="pass --identity, e.g. the pod's name")
        if not self.lease_name or not self.namespace:
            raise AutoscaleError("leader election: the Lease's name and namespace must not be empty")
        if self.retry_period_s <= 0:
            raise AutoscaleError(f"leader election: retry period must be > 0 s, got {self.retry_period_s}")
        if not self.lease_duration_s > self.renew_deadline_s:
            raise AutoscaleError(
                f"leader election: lease duration ({self.lease_duration_s} s) must be greater than the renew deadline "
                f"({self.renew_deadline_s} s)"
            )
        if not self.renew_deadline_s > JITTER_FACTOR * self.retry_period_s:
            raise AutoscaleError(
                f"leader election: renew deadline ({self.renew_deadline_s} s) must be greater than "
                f"{JITTER_FACTOR} x the retry period ({self.retry_period_s} s)"
            )

    @property
    def lease_duration_seconds(self) -> int:
        """``leaseDurationSeconds`` as written (an integer, rounded up, at least 1)."""
        return max(1, int(-(-self.lease_duration_s // 1)))


class LeaderElector:
    """One candidate in the election; :meth:`run` blocks while it acquires, leads and renews.

    Args:
        kube: the API access; the elector makes its own client on the same connection with one
            attempt per call, bounded by half the renew deadline (it retries itself, every retry
            period, as client-go does).
        config: see :class:`LeaderElectionConfig`.
        clock: monotonic seconds (``observedTime`` and the deadlines); tests may pass a fake one.
        wall: the wall clock written into ``acquireTime``/``renewTime``.
    """

    def __init__(
        self,
        kube: KubeClient,
        config: LeaderElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        # client-go bounds each try by the renew deadline's context; half of it leaves time for a second try
        timeout = max(0.2, config.renew_deadline_s / 2)
        self.kube = KubeClient(kube.api_client, RetryPolicy(attempts=1, request_timeout_s=timeout))
        self.config = config
        self.clock = clock
        self.wall = wall
        self._observed: dict[str, Any] = {}
        self._observed_raw: str | None = None
        self._observed_time: float = float("-inf")
        self._resource_version: str | None = None
        self._lock = threading.Lock()

    # -- state -------------------------------------------------------------------------------
    @property
    def observed_record(self) -> Mapping[str, Any]:
        """The Lease spec last seen or written (camelCase keys)."""
        with self._lock:
            return dict(self._observed)

    @property
    def leader(self) -> str | None:
        """The holder last seen (None or ``""`` when nobody holds the Lease)."""
        return self.observed_record.get("holderIdentity")

    def is_leader(self) -> bool:
        """True when the record last seen names us as holder (client-go's ``IsLeader``)."""
        return self.leader == self.config.identity

    def _lease_valid(self, now: float) -> bool:
        # client-go isLeaseValid: observedTime + leaseDurationSeconds after now.
        with self._lock:
            duration = float(self._observed.get("leaseDurationSeconds") or 0)
            return self._observed_time + duration > now

    def _set_observed(self, record: Mapping[str, Any], raw: str | None = None) -> None:
        with self._lock:
            self._observed = dict(record)
            self._observed_raw = raw if raw is not None else json.dumps(record, sort_keys=True)
            self._observed_time = self.clock()

    # -- one try (client-go tryAcquireOrRenew) ------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """Acquire the Lease or renew it, once; True when we hold it afterwards.

        API failures are logged and count as a failed try (never raised), as in client-go.
        """
        cfg = self.config
        now_wall = rfc3339(self.wall())
        record: dict[str, Any] = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": cfg.lease_duration_seconds,
            "acquireTime": now_wall,
            "renewTime": now_wall,
        }
        # 1. The leader's fast path: update optimistically from the record observed last time.
        if self.is_leader() and self._lease_valid(self.clock()):
            old = self.observed_record
            record["acquireTime"] = old.get("acquireTime", now_wall)
            record["leaseTransitions"] = old.get("leaseTransitions", 0)
            try:
                self._resource_version = self.kube.update_lease(cfg.namespace, cfg.lease_name, record, self._resource_version)
                self._set_observed(record)
                return True
            except AutoscaleError as exc:
                log.warning("failed to renew Lease %s/%s optimistically (%s); falling back to a read", cfg.namespace, cfg.lease_name, exc)

        # 2. Obtain or create the record.
        try:
            lease = self.kube.read_lease(cfg.namespace, cfg.lease_name)
        except AutoscaleError as exc:
            log.warning("error retrieving Lease %s/%s: %s", cfg.namespace, cfg.lease_name, exc)
            return False
        if lease is None:
            record["leaseTransitions"] = 0
            try:
                self._resource_version = self.kube.create_lease(cfg.namespace, cfg.lease_name, record)
            except AutoscaleError as exc:
                log.info("could not create Lease %s/%s (%s)", cfg.namespace, cfg.lease_name, exc)
                return False
            self._set_observed(record)
            log.info("%s acquired Lease %s/%s (created it)", cfg.identity, cfg.namespace, cfg.lease_name)
            return True

        # 3. Record obtained: note when it last changed, on our clock; respect a valid holder.
        old = dict(lease.get("spec") or {})
        self._resource_version = (lease.get("metadata") or {}).get("resourceVersion")
        raw = json.dumps(old, sort_keys=True)
        if raw != self._observed_raw:
            self._set_observed(old, raw)
        if old.get("holderIdentity") and self._lease_valid(self.clock()) and not self.is_leader():
            return False

        # 4. Take it over (or renew after a failed fast path).
        if self.is_leader():
            record["acquireTime"] = old.get("acquireTime", now_wall)
            record["leaseTransitions"] = int(old.get("leaseTransitions") or 0)
        else:
            record["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
        try:
            self._resource_version = self.kube.update_lease(cfg.namespace, cfg.lease_name, record, self._resource_version)
        except AutoscaleError as exc:
            log.warning("failed to update Lease %s/%s: %s", cfg.namespace, cfg.lease_name, exc)
            return False
        if old.get("holderIdentity") != cfg.identity:
            log.info("%s acquired Lease %s/%s (from %r)", cfg.identity, cfg.namespace, cfg.lease_name, old.get("holderIdentity"))
        self._set_observed(record)
        return True

    def release(self) -> bool:
        """Hand the Lease back if we hold it (client-go ``release``): empty holder, ``leaseDurationSeconds: 1``."""
        if not self.is_leader():
            return True
        cfg = self.config
        now_wall = rfc3339(self.wall())
        record = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now_wall,
            "renewTime": now_wall,
            "leaseTransitions": self.observed_record.get("leaseTransitions", 0),
        }
        try:
            self._resource_version = self.kube.update_lease(cfg.namespace, cfg.lease_name, record, self._resource_version)
        except (ApiCallError, AutoscaleError) as exc:
            log.warning("failed to release Lease %s/%s: %s", cfg.namespace, cfg.lease_name, exc)
            return False
        self._set_observed(record)
        log.info("%s released Lease %s/%s", cfg.identity, cfg.namespace, cfg.lease_name)
        return True

    # -- the loop (client-go Run: acquire, then renew until it fails) -------------------------
    def _jittered(self, period: float) -> float:
        return period * (1.0 + random.random() * JITTER_FACTOR)  # client-go wait.Jitter(period, JitterFactor)

    def run(self, stop: threading.Event, lead: Callable[[threading.Event], None]) -> bool:
        """Campaign until ``stop`` is set; while leading, run ``lead(lost)`` in a thread.

        ``lead`` receives an event that is set the moment leadership ends (renewal failed past the
        renew deadline, or ``stop``); it must check it before every write and return soon after.
        ``run`` returns when ``stop`` is set or leadership is lost (as client-go's ``Run``: a new
        campaign is a new call), after ``lead`` returned (joined for up to ``lease_duration_s``)
        and, on a clean stop with ``release_on_cancel``, after the Lease is released.

        Returns:
            True if this candidate led at some point during the call.
        """
        cfg = self.config
        while not stop.is_set():
            if self.try_acquire_or_renew():
                break
            stop.wait(self._jittered(cfg.retry_period_s))
        else:
            return False

        lost = threading.Event()
        worker = threading.Thread(target=lead, args=(lost,), name=f"lead-{cfg.identity}", daemon=True)
        worker.start()
        try:
            while not stop.is_set():
                deadline = self.clock() + cfg.renew_deadline_s
                renewed = False
                while not stop.is_set() and self.clock() < deadline:  # client-go: PollImmediateUntil(RetryPeriod, ..., RenewDeadline)
                    if self.try_acquire_or_renew():
                        renewed = True
                        break
                    stop.wait(max(0.0, min(cfg.retry_period_s, deadline - self.clock())))
                if stop.is_set():
                    break
                if not renewed:
                    log.warning(
                        "%s failed to renew Lease %s/%s within %.1f s: stepping down",
                        cfg.identity,
                        cfg.namespace,
                        cfg.lease_name,
                        cfg.renew_deadline_s,
                    )
                    break
                stop.wait(cfg.retry_period_s)
        finally:
            lost.set()
            worker.join(timeout=cfg.lease_duration_s)
            if stop.is_set() and cfg.release_on_cancel:
                self.release()
        return True

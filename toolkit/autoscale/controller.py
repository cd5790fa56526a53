"""The controller behind ``tritonrec autoscale run``: a reconcile loop over the ``TritonAutoscaler``
resources of the watched namespaces (or of all namespaces), run by the leader of a Lease.

Each sync of one resource (HPA's ``horizontal.go`` ``reconcileAutoscaler`` is the model):

1. parse its spec (:func:`toolkit.autoscale.spec.parse_spec`); a bad one (``minReplicas`` >
   ``maxReplicas``, a negative SLO, an unknown target) is refused: a ``ScalingActive=False``
   condition and a Warning Event that name the field, nothing scaled;
2. read the target's ``scale`` subresource and list its pods (pod IP, Ready, deletionTimestamp,
   the draining annotation) and scrape each ready pod's Triton ``/metrics`` endpoint
   (:class:`toolkit.autoscale.scrape.PodScraper`, one per resource, kept across syncs for the
   counter deltas); a target scaled to zero by hand is left alone (``ScalingActive=False``,
   ``ScalingDisabled``, as the HPA);
3. run the policy (one :class:`~toolkit.autoscale.signals.Autoscaler` per resource, kept across
   syncs: it holds the history) on the :class:`~toolkit.autoscale.signals.DeploymentSignals`;
4. unless paused (annotation ``tritonrec.io/paused: "true"``) or in shadow mode, change the
   replicas: up at once; down gracefully — the pods to go are annotated
   ``tritonrec.io/draining: "true"`` (the router's endpoint discovery drops them) and
   ``controller.kubernetes.io/pod-deletion-cost`` at its lowest (the ReplicaSet deletes them
   first), and the scale is patched once their ``nv_inference_pending_request_count`` is 0 (after
   a grace period for the router to notice) or a bounded wait has passed; every change emits an
   Event (``SuccessfulRescale``, as the HPA's);
5. write the status: current and desired replicas, last scale time, the decision's reason and
   signals, the HPA-style conditions, and in shadow mode what an HPA with Triton's queue-time
   rule would do (``shadowRecommendations``).

**A plain loop, not kopf.** kopf needs a live watch stream per resource and CRD discovery
through the API, and runs handlers on events; this controller's work is periodic (scrape and
decide every few seconds whatever happened), so it lists the resources each period with the
official client, which also keeps it runnable against kmock's emulator in the tests. A
missed event cannot leave it stale: the next period lists again.

One controller acts at a time: :func:`run` campaigns for a ``coordination.k8s.io/v1`` Lease
(:mod:`toolkit.autoscale.leader`) and syncs only while leading, checking before every write.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.autoscale.kube import (
    DELETION_COST_ANNOTATION,
    DRAINING_ANNOTATION,
    LOWEST_DELETION_COST,
    PAUSE_ANNOTATION,
    ApiCallError,
    KubeClient,
    PodInfo,
    TargetInfo,
    rfc3339,
)
from toolkit.autoscale.leader import LeaderElectionConfig, LeaderElector
from toolkit.autoscale.signals import Autoscaler, Condition, DeploymentSignals, PodSignals, ScaleDecision
from toolkit.errors import AutoscaleError, InvalidAutoscalerSpecError, ToolkitError

__all__ = ["ControllerConfig", "Controller", "run"]

log = logging.getLogger(__name__)

PolicyFactory = Callable[[Any], Autoscaler]


def _default_policy(spec: Any) -> Autoscaler:
    from toolkit.autoscale.policy import TritonrecAutoscaler

    return TritonrecAutoscaler(spec)


def _default_shadow(spec: Any) -> Autoscaler:
    from toolkit.autoscale.hpa import HpaQueueTime

    return HpaQueueTime(spec)


@dataclass(frozen=True)
class ControllerConfig:
    """What the controller watches and how it paces itself.

    Attributes:
        namespaces: the namespaces whose ``TritonAutoscaler`` resources it reconciles.
        all_namespaces: reconcile the ``TritonAutoscaler`` resources of every namespace, listed
            with one cluster-wide LIST (``/apis/tritonrec.io/v1alpha1/tritonautoscalers``; needs a
            ClusterRole); ``namespaces`` must then be empty.
        sync_period_s: seconds between syncs of a resource whose spec does not set
            ``syncPeriodSeconds`` (the HPA's ``--horizontal-pod-autoscaler-sync-period`` is 15 s;
            Triton's counters move enough in 5 s), and between lists of the resources (a new one
            is found within this).
        tick_s: how often the loop wakes to see which resources are due (seconds).
        drain_grace_s: seconds a draining pod stays in the Deployment at least, so the router's
            endpoint discovery (which re-reads within a couple of seconds) has dropped it before its
            pending count is trusted.
        drain_timeout_s: longest wait for a draining pod's pending requests to reach 0 before
            the scale-down goes ahead anyway (seconds; Kubernetes' default grace period is 30 s).
        scrape_timeout_s: deadline of one round of ``/metrics`` scrapes (seconds).
    """

    namespaces: tuple[str, ...] = ()
    sync_period_s: float = 5.0
    tick_s: float = 0.5
    drain_grace_s: float = 3.0
    drain_timeout_s: float = 30.0
    scrape_timeout_s: float = 2.0
    all_namespaces: bool = False

    def __post_init__(self) -> None:
        if self.all_namespaces and self.namespaces:
            raise AutoscaleError(
                f"the controller watches either all namespaces or the ones named ({', '.join(self.namespaces)}), not both",
                hint="pass either --all-namespaces or --namespace NS, not both",
            )
        if not self.namespaces and not self.all_namespaces:
            raise AutoscaleError(
                "the controller needs at least one namespace to watch", hint="pass --namespace NS (repeatable) or --all-namespaces"
            )
        for name, value in (("sync period", self.sync_period_s), ("tick", self.tick_s), ("scrape timeout", self.scrape_timeout_s)):
            if not value > 0:
                raise AutoscaleError(f"controller {name} must be > 0 s, got {value}")
        if self.drain_grace_s < 0 or self.drain_timeout_s < self.drain_grace_s:
            raise AutoscaleError(
                f"controller drain timeout ({self.drain_timeout_s} s) must be >= the drain grace ({self.drain_grace_s} s) >= 0"
            )


@dataclass
class _Drain:
    """A scale-down waiting for its pods to finish their in-flight requests."""

    pods: tuple[str, ...]
    target_replicas: int
    started_at: float
    reason: str


@dataclass
class _State:
    """What the controller keeps per resource between syncs."""

    uid: str | None
    spec_key: str
    spec: Any
    autoscaler: Autoscaler
    shadow: Autoscaler | None
    scraper: Any
    drain: _Drain | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, lastTransitionTime)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _finite_signals(signals: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in signals.items() if isinstance(v, int | float) and math.isfinite(float(v))}


class Controller:
    """The reconcile loop (see the module docstring).

    Args:
        kube: the API access.
        config: see :class:`ControllerConfig`.
        policy: ``spec -> Autoscaler``; default ``toolkit.autoscale.policy.TritonrecAutoscaler``.
        shadow_policy: ``spec -> Autoscaler`` for shadow mode's comparison; default
            ``toolkit.autoscale.hpa.HpaQueueTime`` (an HPA on Triton's published queue-time rule).
        clock: monotonic seconds for the policy's ``now``, the sync schedule and the drain waits.
    """

    def __init__(
        self,
        kube: KubeClient,
        config: ControllerConfig,
        *,
        policy: PolicyFactory = _default_policy,
        shadow_policy: PolicyFactory = _default_shadow,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.config = config
        self.policy = policy
        self.shadow_policy = shadow_policy
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._refused: dict[str, str] = {}  # resource -> the message last refused with (one Event per new message)
        self._known: dict[str | None, dict[str, dict[str, Any]]] = {}  # namespace (None: all) -> resource -> last read
        self._listed_at: dict[str | None, float] = {}  # namespace (None: all) -> when its resources were last listed
        self._next_sync: dict[str, float] = {}  # resource -> when it is next due

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event, lost: threading.Event | None = None) -> None:
        """Sync every due resource each tick until ``stop`` or ``lost`` is set (never raises on API errors)."""
        lost = lost or threading.Event()
        while not stop.is_set() and not lost.is_set():
            try:
                self.sync_due(lost)
            except Exception:  # a bug or an API outage must not kill the leader's loop; the next tick retries
                log.exception("sync failed")
            stop.wait(self.config.tick_s)
            if lost.is_set():
                log.info("leadership lost: the controller stops acting")

    def sync_due(self, lost: threading.Event | None = None) -> list[str]:
        """One pass: sync each resource whose period has come.

        The resources of a namespace (of the cluster, with ``all_namespaces``) are listed every
        ``sync_period_s`` (new ones are found and deleted ones forgotten then); between lists, a
        resource due for a sync is read afresh with a GET in its own namespace, so its annotations
        (pause) and status are current.

        Returns:
            the ``namespace/name`` of each resource synced.
        """
        synced = []
        scopes: tuple[str | None, ...] = (None,) if self.config.all_namespaces else self.config.namespaces
        for scope in scopes:
            listed = self._relist(scope)
            for key, obj in list(self._known.get(scope, {}).items()):
                if self.clock() < self._next_sync.get(key, 0.0):
                    continue
                if lost is not None and lost.is_set():
                    return synced
                if not listed:
                    meta = obj.get("metadata", {})
                    try:
                        fresh = self.kube.get_autoscaler(meta.get("namespace") or scope, meta.get("name"))
                    except AutoscaleError as exc:
                        log.warning("cannot read %s: %s", key, exc)
                        continue
                    if fresh is None:  # deleted since the last list
                        self._known[scope].pop(key, None)
                        self._forget(key)
                        continue
                    obj = self._known[scope][key] = fresh
                self.sync(obj, lost)
                synced.append(key)
        return synced

    def _relist(self, scope: str | None) -> bool:
        """List the resources of the namespace ``scope`` (None: of all namespaces) if ``sync_period_s``
        has passed since its last list; True if it did."""
        if self.clock() < self._listed_at.get(scope, float("-inf")) + self.config.sync_period_s:
            return False
        try:
            objects = self.kube.list_autoscalers(scope)
        except AutoscaleError as exc:
            log.warning("cannot list TritonAutoscalers in %s: %s", scope or "all namespaces", exc)
            return False
        self._listed_at[scope] = self.clock()
        known = {_key(obj): obj for obj in objects}
        for key in [k for k in self._known.get(scope, {}) if k not in known]:  # deleted resources
            self._forget(key)
        self._known[scope] = known
        return True

    def _forget(self, key: str) -> None:
        state = self._states.pop(key, None)
        self._refused.pop(key, None)
        self._next_sync.pop(key, None)
        if state is not None and state.scraper is not None:
            state.scraper.close()

    def close(self) -> None:
        """Close every scraper."""
        for key in list(self._states):
            self._forget(key)

    # -- one resource ------------------------------------------------------------------------
    def _state_for(self, obj: Mapping[str, Any]) -> _State:
        """The resource's state, made anew when the resource or its spec changed.

        Raises:
            InvalidAutoscalerSpecError: the spec is invalid.
        """
        from toolkit.autoscale.scrape import PodScraper
        from toolkit.autoscale.spec import parse_spec

        key = _key(obj)
        uid = obj.get("metadata", {}).get("uid")
        raw = obj.get("spec")
        spec_key = json.dumps(raw, sort_keys=True, default=str)
        state = self._states.get(key)
        if state is not None and state.uid == uid and state.spec_key == spec_key:
            return state
        spec = parse_spec(raw if raw is not None else {})
        if state is not None:
            self._forget(key)
        state = _State(
            uid=uid,
            spec_key=spec_key,
            spec=spec,
            autoscaler=self.policy(spec),
            shadow=self.shadow_policy(spec) if spec.shadow else None,
            scraper=PodScraper(timeout_s=self.config.scrape_timeout_s, clock=self.clock),
        )
        self._states[key] = state
        return state

    def sync(self, obj: Mapping[str, Any], lost: threading.Event | None = None) -> ScaleDecision | None:
        """Reconcile one ``TritonAutoscaler`` (a dict as the API returns it) once.

        Returns:
            the policy's decision, or None when the resource was refused or its target unreadable.
        """
        key = _key(obj)
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace"), meta.get("name")
        self._next_sync[key] = self.clock() + _sync_period(obj, self.config.sync_period_s)
        try:
            state = self._state_for(obj)
        except InvalidAutoscalerSpecError as exc:
            self._refuse(obj, "InvalidSpec", str(exc))
            return None
        except ToolkitError as exc:  # the policy refused the spec (e.g. an unreadable spec.capacity.fromPerfReport)
            self._refuse(obj, "InvalidSpec", f"the policy cannot start from this spec: {exc}")
            return None
        spec = state.spec

        ref = spec.scale_target_ref
        try:
            target = self.kube.read_target(namespace, ref.name, ref.kind)
        except ApiCallError as exc:
            if exc.status == 404:
                self._refuse(
                    obj, "FailedGetScale", f"`spec.scaleTargetRef.name`: {ref.kind} {ref.name!r} not found in namespace {namespace}"
                )
            else:
                self._write_condition_only(obj, state, "AbleToScale", "False", "FailedGetScale", f"cannot read the target's scale: {exc}")
            return None
        if self._refused.pop(key, None) is not None:
            log.info("%s: accepted after being refused", key)
        if target.replicas == 0:  # as the HPA (horizontal.go): a target scaled to zero by hand is left alone
            message = "scaling is disabled since the replica count of the target is zero"
            self._write_condition_only(obj, state, "ScalingActive", "False", "ScalingDisabled", message)
            return None

        try:
            pods = self.kube.list_pods(namespace, target)
        except AutoscaleError as exc:
            self._write_condition_only(obj, state, "ScalingActive", "False", "FailedGetPods", f"cannot list the target's pods: {exc}")
            return None
        signals = self._signals(state, spec, target, pods)
        decision = state.autoscaler.step(signals)
        shadow_recs: dict[str, int] = {}
        if state.shadow is not None:
            other = state.shadow.step(signals)
            shadow_recs = {
                getattr(state.autoscaler, "name", "tritonrec"): decision.desired_replicas,
                state.shadow.name: other.desired_replicas,
            }

        if lost is not None and lost.is_set():
            return decision
        paused = meta.get("annotations", {}).get(PAUSE_ANNOTATION) == "true" if meta.get("annotations") else False
        conditions = list(decision.conditions)
        last_scale_time = (obj.get("status") or {}).get("lastScaleTime")
        reason = decision.reason
        current = target.replicas
        desired = decision.desired_replicas
        self._stale_drains(obj, state, pods, current, desired, reason, acting=not (paused or spec.shadow))

        if paused or spec.shadow:
            if state.drain is not None:
                self._cancel_drain(namespace, state, pods)
            why = f"annotation {PAUSE_ANNOTATION}=true" if paused else "spec.shadow is true"
            conditions = _override(
                conditions,
                Condition(
                    "AbleToScale",
                    "False",
                    "ScalingPaused" if paused else "ShadowMode",
                    f"{why}: would scale to {desired}, changing nothing",
                ),
            )
        else:
            # A drain in progress is cancelled when the policy wants more replicas, and only paused
            # when it wants to keep the count (a hold, or a rise it sees in the arrivals): the drained
            # pod's absence from the routers must not flip the decision back and forth every sync.
            # A pause longer than the drain timeout cancels it too.
            drain = state.drain
            drain_paused = drain is not None and (desired >= current or decision.hold)
            if drain_paused:
                if desired > current or self.clock() - drain.started_at >= self.config.drain_timeout_s:
                    self._cancel_drain(namespace, state, pods)
                    message = f"scale-down to {drain.target_replicas} cancelled: {reason}"
                    log.info("%s: %s", key, message)
                    self.kube.emit_event(obj, reason="DrainCancelled", message=message)
                    drain_paused = False
                else:
                    message = f"drain of {', '.join(drain.pods)} paused: the policy asks for {desired} now ({reason})"
                    conditions = _override(conditions, Condition("AbleToScale", "True", "Draining", message))
            if not drain_paused and desired > current:
                last_scale_time, conditions = self._rescale(obj, state, target, desired, reason, conditions, last_scale_time, lost)
            elif not drain_paused and desired < current:
                last_scale_time, conditions, reason = self._scale_down(
                    obj, state, target, pods, signals, desired, reason, conditions, last_scale_time, lost
                )

        status = {
            "observedGeneration": meta.get("generation"),
            "currentReplicas": current,
            "desiredReplicas": desired,
            "lastScaleTime": last_scale_time,
            "reason": reason,
            "signals": _replace_map((obj.get("status") or {}).get("signals"), _finite_signals(decision.signals)),
            "conditions": self._conditions(state, conditions),
        }
        if spec.shadow:
            status["shadowRecommendations"] = _replace_map((obj.get("status") or {}).get("shadowRecommendations"), shadow_recs)
        if lost is None or not lost.is_set():
            try:
                self.kube.patch_autoscaler_status(
                    namespace, name, {k: v for k, v in status.items() if v is not None or k == "lastScaleTime"}
                )
            except AutoscaleError as exc:
                log.warning("%s: cannot write status: %s", key, exc)
        return decision

    # -- pieces of a sync --------------------------------------------------------------------
    def _signals(self, state: _State, spec: Any, target: TargetInfo, pods: Sequence[PodInfo]) -> DeploymentSignals:
        from toolkit.autoscale.scrape import ScrapeTarget

        targets = []
        for pod in pods:
            phase = "terminating" if pod.deleting or pod.draining else ("ready" if pod.ready else "starting")
            address = f"{pod.ip}:{spec.metrics_port}" if pod.ip else None
            targets.append(ScrapeTarget(pod=pod.name, address=address, phase=phase, uid=pod.uid))
        pod_signals: tuple[PodSignals, ...] = state.scraper.scrape(targets)
        return DeploymentSignals(now=self.clock(), current_replicas=target.replicas, pods=pod_signals)

    def _rescale(
        self,
        obj: Mapping[str, Any],
        state: _State,
        target: TargetInfo,
        replicas: int,
        reason: str,
        conditions: list[Condition],
        last_scale_time: str | None,
        lost: threading.Event | None,
    ) -> tuple[str | None, list[Condition]]:
        """Patch the scale to ``replicas``; the Event and the AbleToScale condition say how it went."""
        meta = obj.get("metadata", {})
        if lost is not None and lost.is_set():
            return last_scale_time, conditions
        kind = state.spec.scale_target_ref.kind
        try:
            self.kube.patch_scale(meta.get("namespace"), target.name, replicas, kind)
        except AutoscaleError as exc:
            message = f"New size: {replicas}; reason: {reason}; error: {exc}"
            self.kube.emit_event(obj, reason="FailedRescale", message=message, type="Warning")
            return last_scale_time, _override(conditions, Condition("AbleToScale", "False", "FailedUpdateScale", str(exc)))
        log.info("%s: %s %s %d -> %d (%s)", _key(obj), kind, target.name, target.replicas, replicas, reason)
        self.kube.emit_event(obj, reason="SuccessfulRescale", message=f"New size: {replicas}; reason: {reason}")
        return rfc3339(), _override(
            conditions, Condition("AbleToScale", "True", "SucceededRescale", f"the {kind} was scaled to {replicas}")
        )

    def _scale_down(
        self,
        obj: Mapping[str, Any],
        state: _State,
        target: TargetInfo,
        pods: Sequence[PodInfo],
        signals: DeploymentSignals,
        desired: int,
        reason: str,
        conditions: list[Condition],
        last_scale_time: str | None,
        lost: threading.Event | None,
    ) -> tuple[str | None, list[Condition], str]:
        """Drain, then shrink (see the module docstring); returns the last scale time, conditions and reason."""
        namespace = obj.get("metadata", {}).get("namespace")
        now = self.clock()
        live = [p for p in pods if not p.deleting]
        if state.drain is None:
            # The ReplicaSet removes not-ready pods before ready ones (controller.go ActivePods
            # ordering), then the lowest pod-deletion-cost: only ready pods beyond those need draining.
            not_ready = [p for p in live if not p.ready and not p.draining]
            ready = [p for p in live if p.ready and not p.draining]
            leaving = [p for p in live if p.draining]  # drained before, on their way out
            if state.spec.scale_target_ref.kind == "StatefulSet":
                # a StatefulSet removes its highest ordinals, whatever their deletion cost: drain those
                staying = [p for p in live if not p.draining]
                going = sorted(staying, key=_ordinal, reverse=True)[: max(0, len(staying) - desired)]
                chosen = [p for p in going if p.ready]
            else:
                to_drain = max(0, len(live) - len(leaving) - desired - len(not_ready))
                pending = {p.pod: p.pending_requests for p in signals.pods}
                # the least busy first; among equals the newest (the ReplicaSet's own tie-break)
                chosen = sorted(ready, key=lambda p: (pending.get(p.name) or 0.0, -_created_order(p)))[:to_drain]
            if not chosen:
                return (*self._rescale(obj, state, target, desired, reason, conditions, last_scale_time, lost), reason)
            if lost is not None and lost.is_set():
                return last_scale_time, conditions, reason
            for pod in chosen:
                self.kube.annotate_pod(
                    namespace, pod.name, {DRAINING_ANNOTATION: "true", DELETION_COST_ANNOTATION: str(LOWEST_DELETION_COST)}
                )
            state.drain = _Drain(pods=tuple(p.name for p in chosen), target_replicas=desired, started_at=now, reason=reason)
            names = ", ".join(p.name for p in chosen)
            log.info("%s: draining %s before scaling to %d", _key(obj), names, desired)
            self.kube.emit_event(obj, reason="Draining", message=f"draining {names} before scaling to {desired}: {reason}")
            return (
                last_scale_time,
                _override(conditions, Condition("AbleToScale", "True", "Draining", f"waiting for {names} to finish in-flight requests")),
                reason,
            )

        drain = state.drain
        by_name = {p.pod: p for p in signals.pods}
        waiting = []
        for pod_name in drain.pods:
            pod_signals = by_name.get(pod_name)
            if pod_signals is None:
                continue  # already gone
            if pod_signals.pending_requests is None or pod_signals.pending_requests > 0 or pod_signals.scraped_at is None:
                waiting.append(
                    f"{pod_name} ({'unknown' if pod_signals.pending_requests is None else int(pod_signals.pending_requests)} pending)"
                )
        elapsed = now - drain.started_at
        timed_out = elapsed >= self.config.drain_timeout_s
        if (waiting or elapsed < self.config.drain_grace_s) and not timed_out:
            message = (
                f"waiting for {', '.join(waiting) or ', '.join(drain.pods)} ({elapsed:.1f} s of at most {self.config.drain_timeout_s:g} s)"
            )
            return last_scale_time, _override(conditions, Condition("AbleToScale", "True", "Draining", message)), reason
        replicas = max(drain.target_replicas, desired)
        note = f"drained {', '.join(drain.pods)}" + (
            f" (timed out after {elapsed:.1f} s: {', '.join(waiting)})" if waiting else ": 0 pending requests"
        )
        state.drain = None
        why = f"{reason}; {note}"
        return (*self._rescale(obj, state, target, replicas, why, conditions, last_scale_time, lost), why)

    def _stale_drains(
        self, obj: Mapping[str, Any], state: _State, pods: Sequence[PodInfo], current: int, desired: int, reason: str, *, acting: bool
    ) -> None:
        """Pods annotated as draining that no drain of ours covers (a previous leader's, or one whose
        pod the ReplicaSet did not take): adopted when a scale-down is still wanted, else put back.

        A draining pod beyond ``spec.replicas`` (more live pods than replicas) is on its way out
        after a finished drain, and is left alone.
        """
        live = [p for p in pods if not p.deleting]
        ours = set(state.drain.pods) if state.drain else set()
        stale = [p.name for p in live if p.draining and p.name not in ours]
        if not stale or len(live) > current or state.drain is not None:
            return
        namespace = obj.get("metadata", {}).get("namespace")
        if acting and desired < current:
            state.drain = _Drain(
                pods=tuple(stale), target_replicas=max(desired, current - len(stale)), started_at=self.clock(), reason=reason
            )
            log.info("%s: adopted the drain of %s", _key(obj), ", ".join(stale))
            return
        for pod_name in stale:
            try:
                self.kube.annotate_pod(namespace, pod_name, {DRAINING_ANNOTATION: None, DELETION_COST_ANNOTATION: None})
            except AutoscaleError as exc:
                log.warning("cannot un-drain pod %s/%s: %s", namespace, pod_name, exc)
        log.info("%s: %s no longer draining (no scale-down wanted)", _key(obj), ", ".join(stale))

    def _cancel_drain(self, namespace: str, state: _State, pods: Sequence[PodInfo]) -> None:
        names = {p.name for p in pods}
        for pod_name in state.drain.pods if state.drain else ():
            if pod_name in names:
                try:
                    self.kube.annotate_pod(namespace, pod_name, {DRAINING_ANNOTATION: None, DELETION_COST_ANNOTATION: None})
                except AutoscaleError as exc:
                    log.warning("cannot un-drain pod %s/%s: %s", namespace, pod_name, exc)
        state.drain = None

    def _refuse(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """Refuse a resource: ScalingActive=False with the message, one Warning Event per new message, nothing scaled."""
        key = _key(obj)
        meta = obj.get("metadata", {})
        if self._refused.get(key) != message:
            self._refused[key] = message
            log.warning("%s refused: %s", key, message)
            self.kube.emit_event(obj, reason=reason, message=message, type="Warning")
        if key in self._states:
            next_sync = self._next_sync.get(key)
            self._forget(key)
            self._refused[key] = message
            if next_sync is not None:
                self._next_sync[key] = next_sync
        condition = {"type": "ScalingActive", "status": "False", "reason": reason, "message": message, "lastTransitionTime": rfc3339()}
        previous = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "ScalingActive"]
        if previous and previous[0].get("status") == "False" and previous[0].get("message") == message:
            condition["lastTransitionTime"] = previous[0].get("lastTransitionTime")
        try:
            self.kube.patch_autoscaler_status(
                meta.get("namespace"), meta.get("name"), {"observedGeneration": meta.get("generation"), "conditions": [condition]}
            )
        except AutoscaleError as exc:
            log.warning("%s: cannot write status: %s", key, exc)

    def _write_condition_only(self, obj: Mapping[str, Any], state: _State, type_: str, status: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        conditions = self._conditions(state, [Condition(type_, status, reason, message)])  # type: ignore[arg-type]
        try:
            self.kube.patch_autoscaler_status(meta.get("namespace"), meta.get("name"), {"conditions": conditions})
        except AutoscaleError as exc:
            log.warning("%s: cannot write status: %s", _key(obj), exc)

    def _conditions(self, state: _State, conditions: Sequence[Condition]) -> list[dict[str, str]]:
        """The conditions as the API writes them, ``lastTransitionTime`` kept while a status holds."""
        out = []
        now = rfc3339()
        for c in conditions:
            previous = state.transitions.get(c.type)
            since = previous[1] if previous is not None and previous[0] == c.status else now
            state.transitions[c.type] = (c.status, since)
            out.append({"type": c.type, "status": c.status, "reason": c.reason, "message": c.message, "lastTransitionTime": since})
        return out


def _sync_period(obj: Mapping[str, Any], default: float) -> float:
    """Seconds between syncs of ``obj``: its ``spec.syncPeriodSeconds`` when set and positive, else ``default``."""
    value = (obj.get("spec") or {}).get("syncPeriodSeconds") if isinstance(obj.get("spec"), Mapping) else None
    try:
        period = float(value) if value is not None else default
    except (TypeError, ValueError):
        return default
    return period if math.isfinite(period) and period > 0 else default


def _ordinal(pod: PodInfo) -> int:
    """A StatefulSet pod's ordinal (``web-3`` -> 3; -1 when the name has none)."""
    tail = pod.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _created_order(pod: PodInfo) -> float:
    """A sortable number for the pod's creation time (0 when unknown)."""
    import datetime as dt

    if not pod.created:
        return 0.0
    try:
        return dt.datetime.fromisoformat(pod.created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _override(conditions: Sequence[Condition], condition: Condition) -> list[Condition]:
    """``conditions`` with the one of ``condition``'s type replaced by it (or added)."""
    return [c for c in conditions if c.type != condition.type] + [condition]


def _replace_map(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that turns the map ``previous`` into ``new`` (keys no longer there set to None)."""
    out: dict[str, Any] = {k: None for k in (previous or {}) if k not in new}
    out.update(new)
    return out


def run(
    kube: KubeClient,
    config: ControllerConfig,
    election: LeaderElectionConfig,
    stop: threading.Event,
    *,
    controller: Controller | None = None,
) -> None:
    """Campaign for the Lease and reconcile while leading, until ``stop`` is set.

    Leadership lost (renewals failing past the renew deadline) stops the controller's writes at
    once; the candidate then campaigns again, as a follower, until ``stop``.

    Args:
        kube: the API access.
        config: see :class:`ControllerConfig`.
        election: see :class:`~toolkit.autoscale.leader.LeaderElectionConfig`.
        stop: set it to stop (the Lease is released when ``election.release_on_cancel``).
        controller: the controller to run (default: a new one for ``kube`` and ``config``).
    """
    controller = controller or Controller(kube, config)
    elector = LeaderElector(kube, election)
    try:
        while not stop.is_set():
            elector.run(stop, lambda lost: controller.run(stop, lost))
    finally:
        controller.close()

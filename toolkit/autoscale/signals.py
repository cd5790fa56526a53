"""The types every part of the autoscaler shares: what is known about each pod at one moment
(:class:`PodSignals`, :class:`DeploymentSignals`), what a policy decides (:class:`ScaleDecision`
with HPA-style :class:`Condition`\\ s), and the :class:`Autoscaler` protocol that the controller and
the simulator drive, whatever the policy behind it (ours, the HPA's rules, KEDA's).

Producers: ``toolkit.autoscale.scrape`` (a pod's Triton ``/metrics`` endpoint, scraped every few
seconds) in the controller, and the simulator's model of a Deployment. Consumers: the policies.
All times are seconds on the caller's clock (``time.monotonic()`` in the controller, simulated time
in the simulator, a fake clock in the tests); nothing here reads a clock itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "POLICY_METRICS",
    "Condition",
    "ConditionType",
    "PodPhase",
    "PodSignals",
    "DeploymentSignals",
    "ScaleDecision",
    "Autoscaler",
]

#: Triton metrics the policy uses (names as Triton 2.x's ``/metrics`` endpoint writes them; see
#: Triton's docs/user_guide/metrics.md). A pod whose scrape lacks one of them is listed in
#: :attr:`PodSignals.missing`, and the policy holds instead of scaling down.
POLICY_METRICS: tuple[str, ...] = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
)

ConditionType = Literal["AbleToScale", "ScalingActive", "ScalingLimited"]

#: ``ready``: the pod's Ready condition is True (Triton's ``/v2/health/ready`` answered);
#: ``starting``: the pod exists but is not ready yet (scheduled, pulling, starting, loading models):
#: capacity on the way, neither idle nor overloaded; ``terminating``: being deleted or drained.
PodPhase = Literal["ready", "starting", "terminating"]


@dataclass(frozen=True)
class Condition:
    """One HPA-style status condition (``autoscaling/v2`` HorizontalPodAutoscalerCondition).

    Attributes:
        type: ``AbleToScale``, ``ScalingActive`` or ``ScalingLimited``.
        status: ``"True"``, ``"False"`` or ``"Unknown"`` (strings, as in the Kubernetes API).
        reason: CamelCase machine-readable reason (``"ScaleDownStabilized"``, ``"MetricsMissing"``).
        message: one human-readable line that names the pod and metric where it applies.
    """

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclass(frozen=True)
class PodSignals:
    """What is known about one pod of the target Deployment at :attr:`DeploymentSignals.now`.

    Rates are over the interval between the pod's last two successful scrapes, from counter
    deltas (a counter that went down — a restarted server — counts from zero). ``None`` means
    unknown (never scraped, the first scrape of a pod, or the metric missing), never zero.

    Attributes:
        pod: the pod's name.
        phase: see :data:`PodPhase`.
        address: where its metrics endpoint is (``"10.0.0.7:8002"``, ``"127.0.0.3:8002"``), or None.
        scraped_at: time of the last successful scrape (seconds, caller's clock), or None.
        failed_scrapes: consecutive failed scrapes since the last success (0 when the last succeeded).
        request_rate: successful inference requests per second, summed over the pod's models
            (Δ ``nv_inference_request_success``).
        inference_rate: inferences per second (Δ ``nv_inference_count``; a batch of 8 is 8).
        rejected_rate: requests per second that Triton's queue policy rejected unserved (Δ
            ``nv_inference_request_failure{reason="REJECTED"}``: their queue timeout expired), summed
            over the pod's models: arrivals that ``request_rate`` does not count. None where the
            server does not label failures by reason. (Requests a full queue turns away are in no
            counter of Triton 2.51: see ``toolkit.autoscale.scrape.COUNTER_SERIES``.)
        queue_us_per_request: queue time per request in microseconds: Δ ``nv_inference_queue_duration_us``
            summed over the pod's models, divided by Δ ``nv_inference_request_success`` summed over
            the same models (summed before dividing, not averaged per model).
        compute_us_per_inference: compute time per inference in microseconds (Δ
            ``nv_inference_compute_infer_duration_us`` + input + output, over Δ ``nv_inference_count``).
        pending_requests: ``nv_inference_pending_request_count`` summed over the pod's models (a gauge:
            requests received and not yet finished).
        cpu_utilization: CPU used over CPU requested, 0..1+ (what the HPA's CPU rule reads), or None.
        missing: names from :data:`POLICY_METRICS` that the last scrape lacked.
    """

    pod: str
    phase: PodPhase
    address: str | None = None
    scraped_at: float | None = None
    failed_scrapes: int = 0
    request_rate: float | None = None
    inference_rate: float | None = None
    rejected_rate: float | None = None
    queue_us_per_request: float | None = None
    compute_us_per_inference: float | None = None
    pending_requests: float | None = None
    cpu_utilization: float | None = None
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentSignals:
    """Everything a policy sees at one decision.

    Attributes:
        now: decision time (seconds, caller's clock).
        current_replicas: the Deployment's ``spec.replicas`` as read from its ``scale`` subresource.
        pods: one entry per pod of the Deployment (ready, starting and terminating alike).
    """

    now: float
    current_replicas: int
    pods: tuple[PodSignals, ...] = ()

    @property
    def ready_pods(self) -> tuple[PodSignals, ...]:
        """The pods whose phase is ``ready``."""
        return tuple(p for p in self.pods if p.phase == "ready")

    @property
    def starting_pods(self) -> tuple[PodSignals, ...]:
        """The pods whose phase is ``starting`` (capacity on the way)."""
        return tuple(p for p in self.pods if p.phase == "starting")


@dataclass(frozen=True)
class ScaleDecision:
    """What a policy recommends at one decision.

    Attributes:
        desired_replicas: the replica count to set (already within min/max and the rate limits).
        reason: one line for the scaling Event and the status (``"arrival 410 req/s over 120 req/s per
            replica at the SLO: 4 replicas"``).
        conditions: the HPA-style conditions after this decision.
        signals: the numbers behind it (name -> value, units in the names: ``arrival_rate_rps``,
            ``queue_p99_ms``), written to the status.
        hold: True when the policy kept the current count because its inputs were incomplete
            (missing, stale or partial metrics); the conditions say which pod and metric.
    """

    desired_replicas: int
    reason: str
    conditions: tuple[Condition, ...] = ()
    signals: Mapping[str, float] = field(default_factory=dict)
    hold: bool = False


class Autoscaler(Protocol):
    """A scaling policy with its history, as the controller and the simulator drive it.

    Implementations keep their history (past recommendations, learned capacity) themselves and
    call a pure decision function with it, so that the same policy runs unchanged in the
    controller (real clock), the simulator (simulated time) and the tests (fake clock).
    """

    name: str

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        """Decide the replica count for ``signals`` (called once per sync period)."""
        ...

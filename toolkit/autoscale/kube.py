"""The controller's access to the Kubernetes API, through the official ``kubernetes`` client: the
target Deployment and its ``scale`` subresource, its pods, the ``TritonAutoscaler`` custom objects
and their ``status``, Events on them, Leases, and pod annotations; every call bounded in time and
retried with backoff (tenacity) on 409 conflicts, 429, 5xx and timeouts.

This is the only module of ``toolkit.autoscale`` that talks to the API server; the controller and
the leader election call it and see plain dataclasses and dicts, never the client's models.

Annotations the controller reads and writes (the ``tritonrec.io/`` ones are ours):

- :data:`PAUSE_ANNOTATION` (``tritonrec.io/paused: "true"`` on a ``TritonAutoscaler``): decide and
  record, but never change the target's replicas.
- :data:`DRAINING_ANNOTATION` (``tritonrec.io/draining: "true"`` on a pod): the pod chosen to go in a
  scale-down; the router's endpoint discovery skips it, so it finishes its in-flight requests.
- :data:`DELETION_COST_ANNOTATION` (``controller.kubernetes.io/pod-deletion-cost``, Kubernetes' own,
  beta since 1.22): the ReplicaSet controller deletes the pods with the lowest cost first when it
  shrinks, so the drained pod is the one that goes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from toolkit.errors import AutoscaleError

__all__ = [
    "GROUP",
    "VERSION",
    "PLURAL",
    "KIND",
    "PAUSE_ANNOTATION",
    "DRAINING_ANNOTATION",
    "DELETION_COST_ANNOTATION",
    "LOWEST_DELETION_COST",
    "RetryPolicy",
    "PodInfo",
    "TargetInfo",
    "KubeClient",
    "ApiCallError",
    "is_retryable",
    "pod_namespace",
    "rfc3339",
]

log = logging.getLogger(__name__)

GROUP = "tritonrec.io"
VERSION = "v1alpha1"
PLURAL = "tritonautoscalers"
KIND = "TritonAutoscaler"

PAUSE_ANNOTATION = "tritonrec.io/paused"
DRAINING_ANNOTATION = "tritonrec.io/draining"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
#: The lowest value the annotation takes (an int32; Kubernetes' ``pkg/controller/controller_utils.go``
#: parses it with ``strconv.ParseInt(s, 10, 32)``).
LOWEST_DELETION_COST = -(2**31)

#: HTTP statuses worth a retry: 409 (a conflicting write; re-sent as is, since the controller's
#: merge patches carry no resourceVersion, except the Lease's, which is never retried on 409),
#: 429 (throttled) and the 5xx of an API server that is restarting or overloaded.
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})

T = TypeVar("T")

#: Where a pod's service account token mounts its namespace (Kubernetes docs, "Accessing the
#: Kubernetes API from a Pod": ``/var/run/secrets/kubernetes.io/serviceaccount/namespace``).
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace(namespace_file: Path | None = None) -> str | None:
    """The namespace of the pod this process runs in, as client-go finds it for an in-cluster
    client (``k8s.io/client-go/tools/clientcmd/client_config.go``, ``inClusterClientConfig.Namespace``):
    ``$POD_NAMESPACE`` (the chart sets it from the downward API), else the service account's
    namespace file (``namespace_file``, default :data:`SERVICE_ACCOUNT_NAMESPACE_FILE`); None outside
    a pod (neither is there, or the file is empty or unreadable), where client-go would say ``default``.
    """
    from_env = os.environ.get("POD_NAMESPACE", "").strip()
    if from_env:
        return from_env
    try:
        return (namespace_file or SERVICE_ACCOUNT_NAMESPACE_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """How each API call is bounded and retried.

    Attributes:
        attempts: calls at most (the first one included) before the error is raised. 5: with the
            default backoff, about 3 s of retrying, well inside a 15 s sync period.
        initial_backoff_s: wait before the second attempt, in seconds; doubles each attempt
            (tenacity's ``wait_exponential``, plus up to ``initial_backoff_s`` of random jitter).
        max_backoff_s: longest single wait, in seconds.
        request_timeout_s: (connect, read) timeout of one HTTP request, in seconds (the client's
            ``_request_timeout``); a request that runs past it counts as a retryable failure.
    """

    attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    request_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise AutoscaleError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.request_timeout_s <= 0:
            raise AutoscaleError(
                "RetryPolicy backoffs must be >= 0 s and the request timeout > 0 s, got "
                f"{self.initial_backoff_s}, {self.max_backoff_s}, {self.request_timeout_s}"
            )


@dataclass(frozen=True)
class PodInfo:
    """One pod of the target, as the controller needs it.

    Attributes:
        name: the pod's name.
        ip: ``status.podIP``, or None before the pod has one.
        ready: the pod's ``Ready`` condition is ``True``.
        deleting: ``metadata.deletionTimestamp`` is set (the pod is terminating).
        annotations: ``metadata.annotations`` (empty when none).
        created: ``metadata.creationTimestamp`` as an RFC 3339 string, or None.
        uid: ``metadata.uid``, or None (a new pod under a reused name has a new one).
    """

    name: str
    ip: str | None
    ready: bool
    deleting: bool
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: str | None = None
    uid: str | None = None

    @property
    def draining(self) -> bool:
        """True when the controller chose this pod to go (:data:`DRAINING_ANNOTATION` is ``"true"``)."""
        return self.annotations.get(DRAINING_ANNOTATION) == "true"


@dataclass(frozen=True)
class TargetInfo:
    """The scale target (a Deployment) as the controller needs it.

    Attributes:
        name: the workload's name.
        replicas: ``spec.replicas`` (what its ``scale`` subresource reports).
        selector: the label selector of its pods, as a string (``"app=ranker"``; the scale
            subresource's ``status.selector``).
    """

    name: str
    replicas: int
    selector: str

    @property
    def match_labels(self) -> dict[str, str] | None:
        """The selector as ``{label: value}`` when it is only ``k=v`` terms (None for set-based ones)."""
        labels = {}
        for term in filter(None, (t.strip() for t in self.selector.split(","))):
            if "!" in term or "(" in term or "=" not in term:  # !=, in (...), notin (...), exists
                return None
            key, _, value = term.partition("=")
            labels[key.strip()] = value.lstrip("=").strip()  # k=v or k==v
        return labels


def rfc3339(moment: dt.datetime | None = None) -> str:
    """``moment`` (default: now, UTC) as the API's MicroTime, ``2026-12-02T14:25:00.123456Z``."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_retryable(exc: BaseException) -> bool:
    """Whether an API call that raised ``exc`` is worth another attempt.

    True for an :class:`kubernetes.client.ApiException` with a status in
    :data:`RETRYABLE_STATUSES`, and for the transport's timeouts and dropped connections
    (urllib3's ``TimeoutError``/``ProtocolError``/``NewConnectionError``/``MaxRetryError``, and
    Python's ``TimeoutError``/``ConnectionError``). False for everything else (404, 403, 422, bad
    input), which no retry fixes.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3 import exceptions as u3

    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUSES
    return isinstance(exc, (u3.TimeoutError, u3.ProtocolError, u3.NewConnectionError, u3.MaxRetryError, TimeoutError, ConnectionError))


def _status_of(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {exc}"


class ApiCallError(AutoscaleError):
    """An API call failed for good (see :meth:`KubeClient.call`); ``status`` is its HTTP status, or None for a transport failure."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class KubeClient:
    """Thin, retrying helpers over the official client for the objects the controller touches.

    Args:
        api_client: a configured :class:`kubernetes.client.ApiClient` (see :meth:`from_config`).
        retry: how calls are bounded and retried.
        sleep: the backoff's sleep (seconds -> None); tests may pass a recorder.

    Every method raises :class:`~toolkit.errors.AutoscaleError` (the client's exception as its
    ``__cause__``) when the call fails for good: a non-retryable status (404, 403, 422), or the
    last of :attr:`RetryPolicy.attempts` retryable failures. The message names the call, the
    object and the final HTTP status.
    """

    def __init__(self, api_client: Any, retry: RetryPolicy | None = None, *, sleep: Callable[[float], None] | None = None) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, *, kubeconfig: Path | str | None = None, in_cluster: bool | None = None, retry: RetryPolicy | None = None
    ) -> KubeClient:
        """Build a client from a kubeconfig file or the pod's service account.

        Args:
            kubeconfig: path of a kubeconfig file; default: ``$KUBECONFIG`` or ``~/.kube/config``.
            in_cluster: True: the service account mounted in the pod
                (``/var/run/secrets/kubernetes.io/serviceaccount``); None: in-cluster when
                ``KUBERNETES_SERVICE_HOST`` is set and no ``kubeconfig`` is given, else the kubeconfig.
            retry: see :class:`RetryPolicy`.

        Raises:
            AutoscaleError: the kubeconfig is missing or unreadable, or the in-cluster
                configuration is incomplete (names the path or variable).
        """
        from kubernetes import client, config

        if in_cluster is None:
            in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        configuration = client.Configuration()
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            where = "the in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '$KUBECONFIG or ~/.kube/config'}"
            raise AutoscaleError(
                f"cannot configure the Kubernetes client from {where}: {exc}",
                hint="pass --kubeconfig PATH, or run inside a pod with a service account",
            ) from exc
        configuration.retries = False  # one retry layer: ours (urllib3 would retry 3 times per attempt)
        return cls(client.ApiClient(configuration), retry)

    @classmethod
    def for_url(cls, url: str, retry: RetryPolicy | None = None) -> KubeClient:
        """A client for an API server at ``url`` without authentication (kmock in the tests, ``kubectl proxy``)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = url.rstrip("/")
        configuration.retries = False  # one retry layer: ours (urllib3 would retry 3 times per attempt)
        return cls(client.ApiClient(configuration), retry)

    def close(self) -> None:
        """Close the client's connection pool."""
        self.api_client.close()

    # -- the retry ---------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any, retry_conflicts: bool = True, **kwargs: Any) -> T:
        """Call ``fn(*args, _request_timeout=..., **kwargs)`` with bounded retries and backoff.

        Args:
            what: the call and object for messages (``"PATCH deployments/web/scale in recs"``).
            fn: a method of the generated API classes.
            retry_conflicts: False to raise a 409 at once (an optimistic-concurrency write that
                lost a race, such as the Lease's, must re-read instead of re-sending).

        Raises:
            AutoscaleError: see the class docstring.
        """
        import tenacity
        from kubernetes.client.exceptions import ApiException

        def worth_retrying(exc: BaseException) -> bool:
            if not retry_conflicts and isinstance(exc, ApiException) and exc.status == 409:
                return False
            return is_retryable(exc)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s failed (%s), attempt %d of %d; retrying",
                what,
                _status_of(exc) if exc else "?",
                state.attempt_number,
                self.retry.attempts,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=tenacity.wait_exponential(multiplier=self.retry.initial_backoff_s, max=self.retry.max_backoff_s)
            + tenacity.wait_random(0, self.retry.initial_backoff_s),
            retry=tenacity.retry_if_exception(worth_retrying),
            before_sleep=before_sleep,
            reraise=True,
            **({"sleep": self._sleep} if self._sleep is not None else {}),
        )
        timeout = self.retry.request_timeout_s
        try:
            return retrying(fn, *args, _request_timeout=(timeout, timeout), **kwargs)
        except Exception as exc:
            if isinstance(exc, ApiException) or is_retryable(exc):
                tries = retrying.statistics.get("attempt_number", 1)
                raise ApiCallError(
                    f"{what} failed: {_status_of(exc)} (after {tries} attempt(s))", status=getattr(exc, "status", None)
                ) from exc
            raise

    # -- the target --------------------------------------------------------------------------
    def _workload_calls(self, kind: str) -> tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        if kind == "Deployment":
            return (
                "deployments",
                self.apps.read_namespaced_deployment,
                self.apps.read_namespaced_deployment_scale,
                self.apps.patch_namespaced_deployment_scale,
            )
        if kind == "StatefulSet":
            return (
                "statefulsets",
                self.apps.read_namespaced_stateful_set,
                self.apps.read_namespaced_stateful_set_scale,
                self.apps.patch_namespaced_stateful_set_scale,
            )
        raise AutoscaleError(f"`spec.scaleTargetRef.kind` {kind!r} is not supported; expected Deployment or StatefulSet")

    def read_target(self, namespace: str, name: str, kind: str = "Deployment") -> TargetInfo:
        """The workload ``name`` (a Deployment or StatefulSet) in ``namespace``: its replicas and pod
        selector, from its ``scale`` subresource (``spec.replicas``, ``status.selector``), as the HPA
        reads them; only the ``scale`` subresource needs RBAC (``get``).

        A scale without ``status.selector`` (kmock serves the whole object there) falls back to the
        workload's own ``spec.selector.matchLabels`` (``get`` on the workload).

        Raises:
            ApiCallError: as :meth:`call`; ``status`` 404 when there is no such workload.
            AutoscaleError: ``kind`` is neither Deployment nor StatefulSet.
        """
        plural, read, read_scale, _ = self._workload_calls(kind)
        scale = self.call(f"GET {plural}/{name}/scale in {namespace}", read_scale, name, namespace)
        replicas = scale.spec.replicas if scale.spec and scale.spec.replicas is not None else 0
        selector = scale.status.selector if scale.status is not None and scale.status.selector else None
        if selector is None:
            workload = self.call(f"GET {plural}/{name} in {namespace}", read, name, namespace)
            labels = (workload.spec.selector.match_labels or {}) if workload.spec and workload.spec.selector else {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return TargetInfo(name=name, replicas=int(replicas), selector=selector)

    def patch_scale(self, namespace: str, name: str, replicas: int, kind: str = "Deployment") -> int:
        """Set the workload's ``spec.replicas`` through its ``scale`` subresource; returns what the server took.

        Raises:
            ApiCallError: as :meth:`call` (409s are retried: the patch carries no resourceVersion).
        """
        plural, _, _, patch = self._workload_calls(kind)
        body = {"spec": {"replicas": int(replicas)}}
        scale = self.call(f"PATCH {plural}/{name}/scale in {namespace}", patch, name, namespace, body)
        return int(scale.spec.replicas) if scale.spec and scale.spec.replicas is not None else int(replicas)

    # -- pods --------------------------------------------------------------------------------
    def list_pods(self, namespace: str, target: TargetInfo) -> list[PodInfo]:
        """The pods of ``target`` in ``namespace`` (its label selector), sorted by name.

        The selector goes to the server, and ``k=v`` selectors are applied here again (an API
        server applies them; the emulator in the tests does not).
        """
        selector, labels = target.selector, target.match_labels or {}
        pods = self.call(
            f"LIST pods -l {selector or '<all>'} in {namespace}", self.core.list_namespaced_pod, namespace, label_selector=selector or None
        )
        out = []
        for pod in pods.items:
            meta = pod.metadata
            if any((meta.labels or {}).get(k) != v for k, v in labels.items()):
                continue
            status = pod.status
            ready = any(c.type == "Ready" and c.status == "True" for c in ((status.conditions if status else None) or []))
            created = meta.creation_timestamp
            out.append(
                PodInfo(
                    name=meta.name,
                    ip=status.pod_ip if status else None,
                    ready=ready,
                    deleting=meta.deletion_timestamp is not None,
                    annotations=dict(meta.annotations or {}),
                    created=rfc3339(created) if isinstance(created, dt.datetime) else created,
                    uid=meta.uid,
                )
            )
        return sorted(out, key=lambda p: p.name)

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) annotations on a pod."""
        body = {"metadata": {"annotations": dict(annotations)}}
        self.call(f"PATCH pods/{name} in {namespace}", self.core.patch_namespaced_pod, name, namespace, body)

    # -- the custom resource -----------------------------------------------------------------
    def list_autoscalers(self, namespace: str | None) -> list[dict[str, Any]]:
        """The ``TritonAutoscaler`` objects in ``namespace`` (plain dicts, as the API returns them);
        with None, those of every namespace (one cluster-wide LIST, which a ClusterRole grants)."""
        if namespace is None:
            got = self.call(f"LIST {PLURAL}.{GROUP} in all namespaces", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            got = self.call(
                f"LIST {PLURAL}.{GROUP} in {namespace}", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        return list(got.get("items", []))

    def get_autoscaler(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ``TritonAutoscaler`` ``name`` (a plain dict), or None when it no longer exists."""
        try:
            return self.call(
                f"GET {PLURAL}.{GROUP}/{name} in {namespace}",
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except ApiCallError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_autoscaler_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge ``status`` into the ``status`` subresource of the ``TritonAutoscaler`` ``name``."""
        self.call(
            f"PATCH {PLURAL}.{GROUP}/{name}/status in {namespace}",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
        )

    def emit_event(
        self, obj: Mapping[str, Any], *, reason: str, message: str, type: str = "Normal", component: str = "tritonrec-autoscaler"
    ) -> None:
        """Record a core/v1 Event about ``obj`` (a custom object as a dict), as ``kubectl describe`` shows them.

        The name is ``<object>.<random hex>``, as client-go's event recorder makes it
        (``tools/record/event.go``: ``fmt.Sprintf("%v.%x", ref.Name, t.UnixNano())``). A failure
        to record is logged, never raised: an Event is informational.

        Args:
            obj: the involved object (``apiVersion``, ``kind``, ``metadata.name/namespace/uid``).
            reason: CamelCase reason (``SuccessfulRescale``, ``FailedRescale``, ``InvalidSpec``).
            message: one line for people.
            type: ``Normal`` or ``Warning``.
        """
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": obj.get("kind", KIND),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.call(f"POST events in {namespace}", self.core.create_namespaced_event, namespace, body)
        except AutoscaleError as exc:
            log.warning("could not record Event %s on %s/%s: %s", reason, namespace, meta.get("name"), exc)

    # -- leases ------------------------------------------------------------------------------
    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease ``name`` as a dict (``metadata``, ``spec`` camelCase), or None when there is none."""
        try:
            lease = self.call(f"GET leases/{name} in {namespace}", self.coordination.read_namespaced_lease, name, namespace)
        except ApiCallError as exc:
            if exc.status == 404:
                return None
            raise
        return self.api_client.sanitize_for_serialization(lease)

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> str | None:
        """Create the Lease ``name`` with ``spec``; returns its resourceVersion (None when the server gives none).

        A 409 (someone created it first) is raised at once.
        """
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        what = f"POST leases/{name} in {namespace}"
        lease = self.call(what, self.coordination.create_namespaced_lease, namespace, body, retry_conflicts=False)
        return lease.metadata.resource_version if lease.metadata else None

    def update_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None) -> str | None:
        """Replace the Lease ``name`` with one holding ``spec`` (a PUT: client-go's ``Update``, the verb
        the chart's Role grants), guarded by ``resource_version``; returns the new resourceVersion
        (None when the server gives none).

        The API server refuses with 409 a PUT whose ``metadata.resourceVersion`` is not the stored
        one (optimistic concurrency): a writer that read an older Lease cannot overwrite a newer
        holder. The 409 is raised at once, never retried.
        """
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": dict(spec)}
        what = f"PUT leases/{name} in {namespace}"
        lease = self.call(what, self.coordination.replace_namespaced_lease, name, namespace, body, retry_conflicts=False)
        return lease.metadata.resource_version if lease.metadata else None

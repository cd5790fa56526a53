"""Where a :class:`~toolkit.serving.router.Router` finds its replicas: endpoint sources.

* :class:`StaticEndpoints` -- a fixed (or test-updated) list of ``host:port``;
* :class:`DnsEndpoints` -- the A/AAAA records of a headless Service (``socket.getaddrinfo``),
  re-resolved every few seconds;
* :class:`EndpointSliceEndpoints` -- the ``discovery.k8s.io/v1`` EndpointSlices of a Service,
  read with the official ``kubernetes`` client (the ``[k8s]`` extra); endpoints that are not
  ready, or whose pod is annotated ``tritonrec.io/draining: "true"`` (a replica chosen to go
  during a scale-down), are left out.

Each is an :class:`EndpointSource`: ``endpoints()`` gives the current ``host:port`` list and raises
:class:`~toolkit.errors.ServingError` when the source cannot be read (the router then keeps its
last list).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from toolkit.errors import ServingError, optional_dependencies

log = logging.getLogger(__name__)

__all__ = ["DRAINING_ANNOTATION", "EndpointSource", "WatchedEndpointSource", "StaticEndpoints", "DnsEndpoints", "EndpointSliceEndpoints"]

DRAINING_ANNOTATION = "tritonrec.io/draining"
"""Pod annotation (value ``"true"``) that takes a replica out of the routers' endpoint sets before it is deleted."""


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_address(address: str, where: str) -> str:
    address = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServingError(f"{where}: {address!r} is not host:port", hint="write each endpoint as host:port, e.g. 127.0.0.2:8001")
    return address


class EndpointSource(Protocol):
    """Where a router's endpoints come from."""

    def endpoints(self) -> list[str]:
        """The current endpoints, as ``host:port`` strings (order does not matter).

        Raises:
            ServingError: the source cannot be read now (the router keeps its last list).
        """
        ...

    def describe(self) -> str:
        """One line naming the source, for messages."""
        ...


@runtime_checkable
class WatchedEndpointSource(EndpointSource, Protocol):
    """An :class:`EndpointSource` that learns of changes itself (a watch on the API) and can wake the
    router at once instead of at its next periodic read."""

    def wait_changed(self, timeout_s: float) -> bool:
        """Block until the endpoints may have changed since the last call, or ``timeout_s`` seconds
        passed, or the source was closed; True when a change woke it."""
        ...

    def close(self) -> None:
        """Stop watching (idempotent); :meth:`wait_changed` then returns at once."""
        ...


class StaticEndpoints:
    """A fixed list of ``host:port`` endpoints; :meth:`set` replaces it (a scale event in tests).

    Raises:
        ServingError: an entry is not ``host:port`` (names it), or the list is empty.
    """

    def __init__(self, addresses: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._addresses: list[str] = []
        self.set(addresses)

    def set(self, addresses: Iterable[str]) -> None:
        """Replace the list (thread-safe); routers pick the change up at their next refresh."""
        checked = list(dict.fromkeys(_check_address(a, "endpoint list") for a in addresses))
        if not checked:
            raise ServingError("the endpoint list is empty", hint="give at least one host:port")
        with self._lock:
            self._addresses = checked

    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._addresses)

    def describe(self) -> str:
        return f"static list {', '.join(self.endpoints())}"


class DnsEndpoints:
    """The addresses a DNS name resolves to, each with ``port``: a headless Service's ready pods.

    A headless Service (``clusterIP: None``) publishes one A/AAAA record per ready pod under
    ``<service>.<namespace>.svc.cluster.local`` (Kubernetes docs, "DNS for Services and Pods");
    the router resolves it again at every refresh, so pods that come and go are seen within a
    refresh period plus the resolver's cache time.

    Args:
        name: the DNS name, e.g. ``triton-headless.default.svc.cluster.local``.
        port: the TCP port every address serves (8000 HTTP, 8001 gRPC).
        resolver: ``socket.getaddrinfo``-compatible function (the default is the system's).
    """

    def __init__(self, name: str, port: int, *, resolver: Callable[..., list] = socket.getaddrinfo) -> None:
        if not name or not 0 < int(port) < 65536:
            raise ServingError(f"DNS endpoint source: need a name and a port in 1..65535, got {name!r}:{port!r}")
        self.name, self.port, self._resolve = name, int(port), resolver

    def endpoints(self) -> list[str]:
        try:
            infos = self._resolve(self.name, self.port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ServingError(
                f"cannot resolve {self.name}: {e}", hint="is the headless Service's name right, and are its pods ready?"
            ) from e
        hosts = dict.fromkeys(str(info[4][0]) for info in infos)
        return [_address(h, self.port) for h in hosts]

    def describe(self) -> str:
        return f"DNS {self.name}:{self.port}"


class EndpointSliceEndpoints:
    """The ready endpoints of a Service, from its ``discovery.k8s.io/v1`` EndpointSlices.

    Reads the slices labelled ``kubernetes.io/service-name=<service>`` (the label the
    EndpointSlice controller sets, Kubernetes docs "EndpointSlices"), keeps each endpoint whose
    ``conditions.ready`` is not false, and drops those whose ``targetRef`` pod carries
    ``tritonrec.io/draining: "true"`` (:data:`DRAINING_ANNOTATION`; the pods are listed with the
    Service's selector, or all pods of the namespace when there is no Service object or it has no
    selector). Each refresh reads the Service, its slices and its pods once (RBAC: ``get``
    services, ``list`` endpointslices and pods). The port is taken from the
    slice's ``ports`` by name when ``port`` is a string (e.g. ``"grpc"``), or used as given when
    it is a number.

    With ``watch=True`` the source also keeps two watches open (``watch`` on endpointslices and
    on pods, the ``kubernetes`` client's ``watch.Watch``; RBAC: ``watch`` on both): every event marks
    the list stale, a background thread re-reads it (the three reads above, at most once per
    ``min_relist_interval_s`` however many events come) and :meth:`wait_changed` wakes the
    router, so a scale event reaches the router within one re-read instead of one refresh period,
    and :meth:`endpoints` answers from that list without calling the API (a router with a
    2 s refresh period otherwise reads the API 1.5 times a second, forever). The list is also
    re-read every ``resync_every_s`` seconds, whatever the watches say (an event lost while a
    watch reconnects is caught up then). A watch that ends (the API's ``timeoutSeconds``, a
    dropped connection) is reopened after a backoff (tenacity's exponential wait with jitter,
    0.5 s doubling to 30 s); the events are only a trigger, never merged into the list, so
    nothing depends on their order or on ``resourceVersion``.

    Args:
        service: the Service's name.
        namespace: its namespace.
        port: the slice port's name, or a port number.
        api_client: a ``kubernetes.client.ApiClient``; default: from the kubeconfig
            (``KUBECONFIG`` or ``~/.kube/config``), else the in-cluster service account.
        request_timeout_s: timeout of each API call, in seconds.
        watch: keep watches open and answer from the list they keep fresh (above); the threads
            start at the first :meth:`endpoints` call and stop at :meth:`close`.
        resync_every_s: with ``watch``, seconds between re-reads that no event asked for.
        watch_timeout_s: with ``watch``, the ``timeoutSeconds`` of each watch request (the API
            server ends the watch then and it is reopened); the client's read timeout is 5 s more.
        min_relist_interval_s: with ``watch``, the shortest time between two re-reads, in seconds.

    Raises:
        MissingDependencyError: the ``kubernetes`` package (``pip install 'tritonrec[k8s]'``) is missing.
    """

    def __init__(
        self,
        service: str,
        namespace: str = "default",
        *,
        port: int | str,
        api_client: Any = None,
        request_timeout_s: float = 5.0,
        watch: bool = False,
        resync_every_s: float = 60.0,
        watch_timeout_s: float = 300.0,
        min_relist_interval_s: float = 0.1,
    ) -> None:
        with optional_dependencies("reading a Service's EndpointSlices"):
            import kubernetes  # noqa: F401  (the [k8s] extra)
            import tenacity  # noqa: F401  (the [k8s] extra: the watches' reconnect backoff)
        if watch and not (resync_every_s > 0 and watch_timeout_s >= 1 and min_relist_interval_s >= 0):
            raise ServingError(
                f"EndpointSlice watch of {namespace}/{service}: need resync_every_s > 0, watch_timeout_s >= 1 and "
                f"min_relist_interval_s >= 0, got {resync_every_s}, {watch_timeout_s}, {min_relist_interval_s}"
            )
        self.service, self.namespace, self.port, self.request_timeout_s = service, namespace, port, request_timeout_s
        self._api_client = api_client
        self.watch, self.resync_every_s, self.watch_timeout_s = watch, resync_every_s, watch_timeout_s
        self.min_relist_interval_s = min_relist_interval_s
        self._cached: list[str] | None = None
        self._error: ServingError | None = None
        self._pod_label_selector: str | None = None
        self._stale = threading.Event()  # an event came: re-read
        self._changed = threading.Event()  # the list changed (or the source closed): wake the router
        self._closed = threading.Event()
        self._state_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._watches: list[Any] = []
        self.relists = 0
        """How many times the list was read (with ``watch``: the first read, events' and resyncs' re-reads)."""

    def _client(self) -> Any:
        if self._api_client is None:
            import kubernetes

            try:
                kubernetes.config.load_kube_config()
            except Exception:  # noqa: BLE001 -- no kubeconfig: try the pod's service account
                kubernetes.config.load_incluster_config()
            self._api_client = kubernetes.client.ApiClient()
        return self._api_client

    def endpoints(self) -> list[str]:
        if not self.watch:
            return self._read()
        if not self._threads and not self._closed.is_set():
            self._relist()
            self._start()
        with self._state_lock:
            if self._error is not None:
                raise self._error
            return list(self._cached or [])

    def _read(self) -> list[str]:
        """Read the Service, its slices and its pods once; the endpoints they give."""
        import kubernetes

        client = self._client()
        discovery, core = kubernetes.client.DiscoveryV1Api(client), kubernetes.client.CoreV1Api(client)
        selector = f"kubernetes.io/service-name={self.service}"
        try:
            slices = discovery.list_namespaced_endpoint_slice(
                self.namespace, label_selector=selector, _request_timeout=self.request_timeout_s
            )
            pod_selector = self._pod_selector(core)
            pods = core.list_namespaced_pod(self.namespace, label_selector=pod_selector, _request_timeout=self.request_timeout_s)
        except Exception as e:  # kubernetes' ApiException, urllib3's errors
            raise ServingError(
                f"cannot read the EndpointSlices of Service {self.namespace}/{self.service}: {e}",
                hint="check the API server address and that the account may get services and list endpointslices and pods",
            ) from e
        self._pod_label_selector = pod_selector
        draining = {p.metadata.name for p in pods.items if (p.metadata.annotations or {}).get(DRAINING_ANNOTATION, "").lower() == "true"}
        found: dict[str, None] = {}
        for eps in slices.items:
            # the same label check the API applied: an API (or emulator) that ignores the selector changes nothing
            if (eps.metadata.labels or {}).get("kubernetes.io/service-name") != self.service:
                continue
            port = self._port(eps)
            if port is None:
                continue
            for ep in eps.endpoints or []:
                if ep.conditions is not None and ep.conditions.ready is False:
                    continue
                if ep.target_ref is not None and ep.target_ref.kind == "Pod" and ep.target_ref.name in draining:
                    continue
                for host in ep.addresses or []:
                    found[_address(host, port)] = None
        return list(found)

    def _pod_selector(self, core: Any) -> str | None:
        """The Service's pod selector as a label selector (only its pods are listed for the draining
        annotation), or ``None`` (every pod of the namespace) for a Service without one or not found."""
        import kubernetes

        try:
            service = core.read_namespaced_service(self.service, self.namespace, _request_timeout=self.request_timeout_s)
        except kubernetes.client.ApiException as e:
            if e.status == 404:  # slices without a Service object (hand-made, or an emulator)
                return None
            raise
        selector = (service.spec.selector if service.spec is not None else None) or {}
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or None

    def _port(self, eps: Any) -> int | None:
        if isinstance(self.port, int):
            return self.port
        for p in eps.ports or []:
            if p.name == self.port and p.port is not None:
                return int(p.port)
        return None

    # -- watch (watch=True) ------------------------------------------------------------------
    def _relist(self) -> None:
        """Re-read the list; wake :meth:`wait_changed` when it differs (or the read starts or stops failing)."""
        self.relists += 1
        try:
            found, error = self._read(), None
        except ServingError as e:
            found, error = None, e
        with self._state_lock:
            before = (self._cached, None if self._error is None else str(self._error))
            if found is not None:
                self._cached = found
            self._error = error
            after = (self._cached, None if error is None else str(error))
        if before != after:
            self._changed.set()

    def _start(self) -> None:
        import kubernetes

        discovery, core = kubernetes.client.DiscoveryV1Api(self._client()), kubernetes.client.CoreV1Api(self._client())
        slice_selector = f"kubernetes.io/service-name={self.service}"
        watches = (
            ("endpointslices", lambda: (discovery.list_namespaced_endpoint_slice, slice_selector)),
            ("pods", lambda: (core.list_namespaced_pod, self._pod_label_selector)),
        )
        for name, target in watches:
            thread = threading.Thread(target=self._watch_loop, args=(name, target), name=f"endpointslice-watch-{name}", daemon=True)
            self._threads.append(thread)
        self._threads.append(threading.Thread(target=self._relist_loop, name="endpointslice-relist", daemon=True))
        for thread in self._threads:
            thread.start()

    def _watch_loop(self, name: str, target: Callable[[], tuple[Callable[..., Any], str | None]]) -> None:
        """Keep one watch open until :meth:`close`; each event marks the list stale."""
        import tenacity

        def one_watch() -> None:
            import kubernetes

            list_fn, selector = target()
            w = kubernetes.watch.Watch()
            self._watches.append(w)
            try:
                for _ in w.stream(
                    list_fn,
                    self.namespace,
                    label_selector=selector,
                    timeout_seconds=int(self.watch_timeout_s),
                    _request_timeout=self.watch_timeout_s + 5,
                ):
                    self._stale.set()
                    if self._closed.is_set():
                        return
            finally:
                self._watches.remove(w)
            # the server ended the watch (its timeoutSeconds): events may have been missed in between
            self._stale.set()

        def log_retry(state: tenacity.RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            error = state.outcome.exception() if state.outcome is not None else None
            where = f"{self.namespace}/{self.service} ({name})"
            log.warning("EndpointSlice watch of %s failed (%s); reopening in %.1f s", where, error, wait)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_when_event_set(self._closed),
            wait=tenacity.wait_exponential(multiplier=0.5, max=30.0) + tenacity.wait_random(0, 0.5),
            sleep=self._closed.wait,
            before_sleep=log_retry,
            retry_error_callback=lambda state: None,
        )
        while not self._closed.is_set():
            retrying(one_watch)  # returns when the watch ends normally; backs off and reopens when it fails
            self._stale.set()

    def _relist_loop(self) -> None:
        """Re-read when a watch says so, and every ``resync_every_s`` seconds."""
        last = time.monotonic()
        while not self._closed.is_set():
            self._stale.wait(max(0.0, last + self.resync_every_s - time.monotonic()))
            if self._closed.is_set():
                return
            self._closed.wait(max(0.0, last + self.min_relist_interval_s - time.monotonic()))  # events come in bursts: one read for a burst
            self._stale.clear()
            last = time.monotonic()
            self._relist()

    def wait_changed(self, timeout_s: float) -> bool:
        """Block until the list changed since the last call, ``timeout_s`` seconds passed, or the
        source was closed (returns at once then); True when a change woke it. Without ``watch``
        it only waits (the router then reads the API at every refresh)."""
        if self._closed.is_set():
            return False
        woke = self._changed.wait(timeout_s)
        self._changed.clear()
        return woke and not self._closed.is_set()

    def close(self) -> None:
        """Stop the watches and the re-read thread (idempotent); the threads are daemons and end
        within the current API call."""
        self._closed.set()
        self._changed.set()
        self._stale.set()
        for w in list(self._watches):
            w.stop()
        for thread in self._threads:
            thread.join(timeout=0.5)

    def describe(self) -> str:
        return f"EndpointSlices of Service {self.namespace}/{self.service} (port {self.port})"

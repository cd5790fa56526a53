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

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from toolkit.errors import ServingError, optional_dependencies

__all__ = ["DRAINING_ANNOTATION", "EndpointSource", "StaticEndpoints", "DnsEndpoints", "EndpointSliceEndpoints"]

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

    Args:
        service: the Service's name.
        namespace: its namespace.
        port: the slice port's name, or a port number.
        api_client: a ``kubernetes.client.ApiClient``; default: from the kubeconfig
            (``KUBECONFIG`` or ``~/.kube/config``), else the in-cluster service account.
        request_timeout_s: timeout of each API call, in seconds.

    Raises:
        MissingDependencyError: the ``kubernetes`` package (``pip install 'tritonrec[k8s]'``) is missing.
    """

    def __init__(
        self, service: str, namespace: str = "default", *, port: int | str, api_client: Any = None, request_timeout_s: float = 5.0
    ) -> None:
        with optional_dependencies("reading a Service's EndpointSlices"):
            import kubernetes  # noqa: F401  (the [k8s] extra)
        self.service, self.namespace, self.port, self.request_timeout_s = service, namespace, port, request_timeout_s
        self._api_client = api_client

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
        import kubernetes

        client = self._client()
        discovery, core = kubernetes.client.DiscoveryV1Api(client), kubernetes.client.CoreV1Api(client)
        selector = f"kubernetes.io/service-name={self.service}"
        try:
            slices = discovery.list_namespaced_endpoint_slice(
                self.namespace, label_selector=selector, _request_timeout=self.request_timeout_s
            )
            pods = core.list_namespaced_pod(
                self.namespace, label_selector=self._pod_selector(core), _request_timeout=self.request_timeout_s
            )
        except Exception as e:  # kubernetes' ApiException, urllib3's errors
            raise ServingError(
                f"cannot read the EndpointSlices of Service {self.namespace}/{self.service}: {e}",
                hint="check the API server address and that the account may get services and list endpointslices and pods",
            ) from e
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

    def describe(self) -> str:
        return f"EndpointSlices of Service {self.namespace}/{self.service} (port {self.port})"

"""kmock's Kubernetes API emulator on loopback, for the autoscaler's tests (the ``kube_api`` fixture
of tests/conftest.py starts one :class:`KubeApi` per test).

``kmock.KubernetesEmulator`` behind a ``kmock.Server`` runs in its own thread and event loop; the
code under test talks to it over HTTP with the official ``kubernetes`` client, as to an API
server. It stores what it is sent (Deployments, Pods, Leases, Events, custom objects of resources
never declared, their ``status``), serves list and watch, and merges patches; it has no
controllers, applies no label selectors and never answers 409 on its own, so faults are injected
on a request's method and path (:meth:`KubeApi.fail`, :meth:`KubeApi.delay`).

kmock keeps every request and re-scans that log for each new request to match its reactions
(O(n) per request): :class:`_Emulator` keeps only the last few hundred, and looks faults up in
its own table, so a test of a minute with thousands of requests stays fast.

kmock's own pytest plugin (async, needs pytest-asyncio) is disabled in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp.web
import kmock

T = TypeVar("T")

#: The resources the autoscaler reads and writes, with their kinds.
RESOURCES = {
    "v1/pods": "Pod",
    "v1/events": "Event",
    "discovery.k8s.io/v1/endpointslices": "EndpointSlice",
    "apps/v1/deployments": "Deployment",
    "coordination.k8s.io/v1/leases": "Lease",
    "tritonrec.io/v1alpha1/tritonautoscalers": "TritonAutoscaler",
}


@dataclass
class Fault:
    """An injected fault: the next ``times`` requests ``method path`` get ``status`` (or wait ``delay_s`` first)."""

    method: str
    path: str
    times: int
    status: int | None = None
    delay_s: float = 0.0
    hits: int = 0


class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with a bounded request log, a per-(method, path) request count, and faults."""

    KEEP_REQUESTS = 200

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.faults: list[Fault] = []
        self.counts: Counter[tuple[str, str]] = Counter()

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        method, path = request.method.value.upper(), request.url.path
        self.counts[(method, path)] += 1
        del self._requests[: -self.KEEP_REQUESTS]
        fault = next((f for f in self.faults if f.method == method and f.path == path and f.hits < f.times), None)
        if fault is not None:
            fault.hits += 1
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:  # refused before anything is stored, as an API server does
                body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": fault.status, "reason": "Injected"}
                return aiohttp.web.json_response({**body, "message": "injected by the test"}, status=fault.status)
        if method == "PUT" and request.resource is not None and request.name is not None:
            return await self._replace(request)
        return await super()._handle(request)

    async def _replace(self, request: Any) -> aiohttp.web.StreamResponse:
        """A PUT (kmock 0.8 serves only PATCH): the stored object becomes the body, as a merge
        patch that also removes every key the body lacks."""
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return aiohttp.web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
            self._objects[key].patch(_replacing(self._objects[key].raw, request.data))
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)


def _replacing(old: Any, new: Any) -> Any:
    """The merge patch that turns ``old`` into ``new`` (keys of ``old`` missing from ``new`` set to None)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {k: None for k in old if k not in new}
    patch.update({k: _replacing(old.get(k), v) for k, v in new.items()})
    return patch


class KubeApi:
    """A running emulator: its ``url``, and helpers that act on it from the test's thread."""

    def __init__(self) -> None:
        self._ready: Future[None] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.emulator: kmock.KubernetesEmulator | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def start(self) -> KubeApi:
        self._thread.start()
        self._ready.result(timeout=10)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surface start-up failures to start()
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with _Emulator() as emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            # Declared, so that listing one with no objects yet answers an empty list, as an API
            # server does (kmock answers 404 for a resource it has never seen).
            for key, kind in RESOURCES.items():
                emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True)
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set_result(None)
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def react(self, fn: Callable[[kmock.KubernetesEmulator], T]) -> T:
        """Run ``fn(emulator)`` in the emulator's loop (the DSL is not thread-safe) and return its result."""
        assert self._loop is not None

        async def call() -> T:
            return fn(self.emulator)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def fail(self, method: str, path: str, status: int, times: int = 1) -> Fault:
        """Answer the next ``times`` requests ``method path`` with HTTP ``status`` (a Kubernetes Status body).

        The write is not stored (an API server refuses before it writes). Returns the fault;
        ``api.count(fault)`` is how many requests it answered.
        """
        fault = Fault(method.upper(), path, times, status=status)
        self.react(lambda e: e.faults.append(fault))
        return fault

    def delay(self, method: str, path: str, seconds: float, times: int = 1) -> Fault:
        """Hold the next ``times`` requests ``method path`` for ``seconds`` before answering them normally."""
        fault = Fault(method.upper(), path, times, delay_s=seconds)
        self.react(lambda e: e.faults.append(fault))
        return fault

    def count(self, fault: Fault) -> int:
        """How many requests ``fault`` has answered."""
        return self.react(lambda e: fault.hits)

    def requests(self, method: str, path: str) -> int:
        """How many ``method path`` requests the emulator has received."""
        return self.react(lambda e: e.counts[(method.upper(), path)])

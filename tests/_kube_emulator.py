"""The Kubernetes side of the operator's tests and benchmarks: a stateful API emulator (kmock with a few gaps
closed), an indexed variant for load benchmarks, fake agents serving hand-written expositions, and object builders.

Tests get these through fixtures (``tests/controller/conftest.py``); ``bench/`` imports them directly.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock

AGENT_NAMESPACE = "jouleledger"
RESOURCES: Mapping[str, tuple[str, bool]] = {
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
    "v1/events": ("Event", True),
    "batch/v1/jobs": ("Job", True),
    "apps/v1/replicasets": ("ReplicaSet", True),
    "jouleledger.io/v1alpha1/workloadfootprints": ("WorkloadFootprint", True),
    # Only discovered, never listed (kopf runs cluster-wide with scanning disabled), but kopf waits for both.
    "v1/namespaces": ("Namespace", False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
}


@dataclass
class Fault:
    """Answer the next ``count`` requests matching ``method`` and ``path`` (a regex) with ``status``."""

    method: str
    path: str
    status: int
    count: int = 1
    retry_after: str = ""


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what the operator relies on: UIDs and increasing resourceVersions on every write,
    optimistic concurrency (a stale ``metadata.resourceVersion`` in a patch is 409), injected faults, and
    ``410 Gone`` in live watch streams."""

    faults: list[Fault] = attrs.field(factory=list)
    chaos: Callable[[str, str], Fault | None] | None = None
    """Called with ``(method, path)`` of every request: a Fault to answer it with (its count is ignored), or None."""
    _versions: Any = attrs.field(factory=lambda: itertools.count(1000))
    _served: list[kmock.Request] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock matches each request against its reactions by walking every request it has recorded (once per
        # reaction): quadratic, and most of a long test's time. Its own record holds only the requests in flight
        # (the one being matched must be there); the full history is kept here, for :attr:`requests`.
        self._served.append(request)
        try:
            return await self._answer(request)
        finally:
            self._requests[:] = [pending for pending in self._requests if pending is not request]

    async def _answer(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        chaotic = None if self.chaos is None else self.chaos(request.method.value, request.url.path)
        for fault in [chaotic] if chaotic is not None else self.faults:
            if fault.count > 0 and request.method.value == fault.method and re.search(fault.path, request.url.path):
                fault.count -= 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return aiohttp.web.json_response(
                    {"kind": "Status", "code": fault.status, "reason": "Injected", "message": "injected fault"},
                    status=fault.status,
                    headers=headers,
                )
        if request.resource is not None and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata["resourceVersion"] = str(next(self._versions))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    current = self.objects[key].get("metadata", {}).get("resourceVersion")
                    wanted = metadata.get("resourceVersion")
                    if wanted is not None and wanted != current:
                        return aiohttp.web.json_response(
                            {"kind": "Status", "code": 409, "reason": "Conflict", "message": "stale resourceVersion"},
                            status=409,
                        )
                metadata["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)

    @property
    def requests(self) -> list[kmock.Request]:
        """Every request served so far, oldest first."""
        return list(self._served)

    async def gone(self, resource: str) -> None:
        """Send ``410 Gone`` to every watch of ``resource`` (kopf then lists again and re-watches)."""
        await self._buses[kmock.resource(resource)].put(
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
        )


E = TypeVar("E", bound=kmock.KubernetesEmulator)


@contextlib.asynccontextmanager
async def served(emulator: E) -> AsyncIterator[E]:
    """``emulator`` entered, listening on a local port, with the operator's resources registered."""
    async with emulator, kmock.Server(emulator):
        register_resources(emulator)
        yield emulator


def register_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Declare the resources the operator uses (kmock serves only what it was told exists)."""
    for name, (kind, namespaced) in RESOURCES.items():
        emulator.resources[name] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "patch", "delete"},
            subresources={"status"} if name.endswith(("jobs", "workloadfootprints")) else set(),
        )


@attrs.define(kw_only=True)
class IndexedEmulator(kmock.KubernetesEmulator):
    """kmock with O(1) lookups of named objects (its own lookup scans every object), a hook on Job patches, and
    watches that resume from a ``resourceVersion`` as a real API server's do: every write through :meth:`_fast`
    stamps an increasing ``metadata.resourceVersion``, a list answers the current one, and a watch from version
    ``v`` replays only the objects written after ``v`` (kmock replays every object as ADDED on every watch, so
    each reconnection, every 300 s, made the operator process the whole cluster again: not what a cluster does)."""

    annotated_at: dict[str, float] = attrs.field(factory=dict)
    writes: dict[str, int] = attrs.field(factory=dict)
    watch_events: dict[str, int] = attrs.field(factory=dict)
    resource_version: int = 1
    """The latest ``resourceVersion`` stamped (objects seeded directly into :attr:`objects` carry "1" or none)."""
    _watch_since: dict[int, int] = attrs.field(factory=dict)  # id(watch request) -> the version it resumes from
    # (resourceVersion stamped, object key) of every write through _fast, in order: a resumed watch replays the
    # objects written after its version from here, not by scanning every object (at 100,000 pods and their
    # footprints, each of kopf's reconnections stalled the emulator, and the fake agents beside it, for seconds).
    _changes: list[tuple[int, Any]] = attrs.field(factory=list)

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        if request.name is not None and request.resource is not None:
            key = (request.resource, request.namespace, request.name)
            return [self.objects[key]] if key in self.objects else []
        since = self._watch_since.get(id(request))
        if since is None:
            return [
                obj
                for (resource, namespace, _), obj in self.objects.items()
                if resource == request.resource and (request.namespace is None or namespace == request.namespace)
            ]
        later = self._changes[bisect.bisect_right(self._changes, since, key=lambda change: change[0]) :]
        keys = list(dict.fromkeys(key for _, key in reversed(later)))[::-1]  # each once, by its latest write
        return [
            self.objects[key]
            for key in keys
            if key[0] == request.resource
            and (request.namespace is None or key[1] == request.namespace)
            and key in self.objects
            and not self.objects[key].deleted
        ]

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        method = request.method.value
        if method in ("POST", "PATCH") and request.resource is not None:
            key = f"{method} {request.resource.plural}{'/' + request.subresource if request.subresource else ''}"
            self.writes[key] = self.writes.get(key, 0) + 1
            if request.resource.plural == "jobs" and request.subresource is None and method == "PATCH":
                annotations = ((request.data or {}).get("metadata") or {}).get("annotations") or {}
                if "jouleledger.io/footprint-version" in annotations:
                    self.annotated_at.setdefault(request.name, time.time())
        fast = await self._fast(request)
        return fast if fast is not None else await super()._handle(request)

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        since = str(request.params.get("resourceVersion") or "")
        if since.isdigit() and int(since) > 0:
            self._watch_since[id(request)] = int(since)
        try:
            async for event in super()._serve_watch(request):
                if (
                    not isinstance(event, dict)
                    or event.get("type") == "BOOKMARK"
                    or _selected(event.get("object") or {}, request.params)
                ):
                    if isinstance(event, dict):
                        key = f"{request.resource.plural} {event.get('type')}"
                        self.watch_events[key] = self.watch_events.get(key, 0) + 1
                    yield event
        finally:
            self._watch_since.pop(id(request), None)

    def _stamp(self, data: dict[str, Any]) -> None:
        self.resource_version += 1
        data.setdefault("metadata", {})["resourceVersion"] = str(self.resource_version)

    async def _fast(self, request: Any) -> aiohttp.web.StreamResponse | None:
        """Serve get/create/patch/list straight from the object store (kmock's request matching costs ~20 ms per
        request, which would dominate the benchmark); watches still take kmock's own path and see every change."""
        action, resource = request.action, request.resource
        if (
            resource is None
            or not resource.plural
            or request.params.get("watch") == "true"
            or action not in (kmock.action.FETCH, kmock.action.CREATE, kmock.action.UPDATE, kmock.action.LIST)
        ):
            return None
        if action == kmock.action.LIST:
            items = [
                obj.raw
                for (res, namespace, _), obj in self.objects.items()
                if res == resource
                and (request.namespace is None or namespace == request.namespace)
                and not obj.deleted
                and _selected(obj.raw, request.params)
            ]
            return aiohttp.web.json_response(
                {"metadata": {"resourceVersion": str(self.resource_version)}, "items": items}
            )
        data = request.data if isinstance(request.data, dict) else {}
        name = request.name or (data.get("metadata") or {}).get("name")
        namespace = request.namespace or (data.get("metadata") or {}).get("namespace")
        key = (resource, namespace, name)
        exists = key in self.objects and not self.objects[key].deleted
        if action == kmock.action.FETCH:
            if not exists:
                return aiohttp.web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
            return aiohttp.web.json_response(self.objects[key].raw)
        async with self._lock:
            if action == kmock.action.CREATE:
                if exists:
                    return aiohttp.web.json_response(
                        {"kind": "Status", "code": 409, "reason": "AlreadyExists"}, status=409
                    )
                self._stamp(data)
                self.objects[key] = data
                self._changes.append((self.resource_version, key))
                event = "ADDED"
            else:
                if not exists:
                    return aiohttp.web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
                self._stamp(data)
                self.objects[key].patch(data)
                self._changes.append((self.resource_version, key))
                event = "MODIFIED"
            raw = self.objects[key].raw
            await self._buses[resource].put({"type": event, "object": raw})
        return aiohttp.web.json_response(raw)


async def send_bookmarks(api: IndexedEmulator, stop: asyncio.Event, every_s: float = 30.0) -> None:
    """BOOKMARK events on every watch, as a real API server sends them (about every minute): without them kopf
    reconnects after 70 s of silence. Each carries the latest ``resourceVersion``, where a reconnection resumes."""
    while not stop.is_set():
        await asyncio.sleep(every_s)
        for name, (kind, _) in RESOURCES.items():
            version = str(api.resource_version)
            bookmark = {"kind": kind, "apiVersion": name.rsplit("/", 1)[0], "metadata": {"resourceVersion": version}}
            await api._buses[kmock.resource(name)].put({"type": "BOOKMARK", "object": bookmark})


def _selected(obj: dict[str, Any], params: dict[str, str]) -> bool:
    """Equality label selectors and the ``metadata.namespace`` field selector, as the API server applies them."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    for term in filter(None, params.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, params.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.namespace" and metadata.get("namespace") != value:
            return False
    return True


# --- fake agents -------------------------------------------------------------------------------------------------


@dataclass
class FakeAgents:
    """Agents on 127.0.0.N:port, one per node, serving ``texts[node]`` (``delay_s``/``status`` per node).

    Like real agents they honour ``?folded_until=T``: a pod whose finish time (its
    ``jouleledger_pod_finished_timestamp_seconds`` line) is at or before ``T`` is left out, every line of it, unless
    ``T`` is later than the agent's last tick. ``folded_until[node]`` lists the value of every request (None: none).
    """

    port: int
    texts: dict[str, str] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    folded_until: dict[str, list[float | None]] = field(default_factory=dict)


_FINISHED_LINE = re.compile(
    r'^jouleledger_pod_finished_timestamp_seconds\{namespace="([^"]*)",node="[^"]*",pod="([^"]*)"\} (\S+)$', re.M
)
_LAST_TICK_LINE = re.compile(r"^jouleledger_agent_last_tick_timestamp_seconds\{[^}]*\} (\S+)$", re.M)
_POD_LABELS = re.compile(r'namespace="([^"]*)".*?pod="([^"]*)"')


def without_folded(text: str, folded_until_s: float) -> str:
    """An agent's exposition without the pods finished at or before ``folded_until_s`` (as a real agent answers
    ``?folded_until=``; the whole text when the value is later than its last tick)."""
    tick = _LAST_TICK_LINE.search(text)
    if tick is None or folded_until_s > float(tick.group(1)):
        return text
    folded = {(ns, pod) for ns, pod, value in _FINISHED_LINE.findall(text) if float(value) <= folded_until_s}
    if not folded:
        return text
    kept = []
    for line in text.splitlines():
        labels = _POD_LABELS.search(line) if line.startswith("jouleledger_pod_") else None
        if labels is None or (labels.group(1), labels.group(2)) not in folded:
            kept.append(line)
    return "\n".join(kept) + "\n"


@contextlib.asynccontextmanager
async def serve_fake_agents() -> AsyncIterator[FakeAgents]:
    """Start the fake agents on 127.0.0.1, .2 and .3 (one port); stopped on exit."""
    app = aiohttp.web.Application()
    fake = FakeAgents(port=0)

    async def metrics(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        host = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        node = next((node for node, ip in fake.ips.items() if ip == host), "")
        fake.hits[node] = fake.hits.get(node, 0) + 1
        delay = fake.delay_s.get(node, 0.0)
        if delay:
            await asyncio.sleep(delay)
        status = fake.status.get(node, 200)
        if status != 200:
            return aiohttp.web.Response(status=status, text="broken")
        raw = request.query.get("folded_until")
        until = None if raw is None else float(raw)
        fake.folded_until.setdefault(node, []).append(until)
        text = fake.texts.get(node, "")
        body = text if until is None else without_folded(text, until)
        return aiohttp.web.Response(text=body, content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    first = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await first.start()
    fake.port = runner.addresses[0][1]
    for index in (2, 3):
        await aiohttp.web.TCPSite(runner, f"127.0.0.{index}", fake.port).start()
    try:
        yield fake
    finally:
        await runner.cleanup()


# --- objects -----------------------------------------------------------------------------------------------------


def node_object(name: str, zone: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"node-{name}", "labels": {"topology.kubernetes.io/zone": zone}}}


def agent_pod(node: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"agent-{node}",
            "namespace": AGENT_NAMESPACE,
            "uid": f"agent-{node}",
            "labels": {"app.kubernetes.io/component": "agent"},
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "podIP": ip},
    }


def job_object(namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "1"}, "status": {}}


def pod_object(
    namespace: str, name: str, uid: str, node: str, *, owner_kind: str, owner_name: str, owner_uid: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": {"team": "vision"},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": owner_kind, "name": owner_name, "uid": owner_uid, "controller": True}
            ],
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running"},
    }


def completed(when: str, kind: str = "Complete") -> dict[str, Any]:
    return {"status": {"conditions": [{"type": kind, "status": "True", "lastTransitionTime": when}]}}


def rfc3339(unix_s: float) -> str:
    """A Kubernetes timestamp (UTC, ``Z``)."""
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def place_job(api: kmock.KubernetesEmulator, index: int, node: str, *, completed_at: float | None = None) -> None:
    """Job ``ml/train-<index>`` (uid ``job-<index>``), complete at ``completed_at`` (None: running), and its one pod
    ``train-<index>-x`` (uid ``pod-<index>``) on ``node``."""
    name = f"train-{index}"
    job = job_object("ml", name, f"job-{index}")
    api.objects["batch/v1/jobs", "ml", name] = (
        job if completed_at is None else {**job, **completed(rfc3339(completed_at))}
    )
    api.objects["v1/pods", "ml", f"{name}-x"] = pod_object(
        "ml", f"{name}-x", f"pod-{index}", node, owner_kind="Job", owner_name=name, owner_uid=f"job-{index}"
    )


def place_agents(api: kmock.KubernetesEmulator, agents: FakeAgents, nodes: Mapping[str, str]) -> None:
    """Each node of ``nodes`` (name -> agent IP) in zone ``z1``, ``z2``..., with its agent pod, served by ``agents``."""
    for index, (node, ip) in enumerate(nodes.items()):
        agents.ips[node] = ip
        api.objects["v1/nodes", None, node] = node_object(node, f"z{index + 1}")
        api.objects["v1/pods", AGENT_NAMESPACE, f"agent-{node}"] = agent_pod(node, ip)


# --- crash and watch faults (kill -9 of the operator mid-write, dropped and hung watch streams) -------------------

WRITE_METHODS: frozenset[str] = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DROP: Any = {"type": "JOULELEDGER-TEST-DROP", "object": {}}
"""A marker put on a resource's bus: every watch stream of that resource open when it was put ends."""

WriteHook = Callable[[kmock.Request, str], Awaitable[bool]]


@attrs.define(kw_only=True)
class FaultyEmulator(Emulator):
    """:class:`Emulator` with hooks around writes and watch streams that can be dropped or hung.

    ``on_write(request, phase)`` is awaited for every write (POST/PUT/PATCH/DELETE of a resource) with ``phase``
    ``"before"`` (True: the write is not applied; a 503 answers it) and, once it succeeded, ``"after"`` (applied,
    the answer not sent yet): a test kills its client there. A watch stream takes its snapshot and its place on the
    event bus under one lock (kmock subscribes after sending the snapshot, so a write in between is lost for that
    stream)."""

    on_write: WriteHook | None = None
    watches_started: dict[str, int] = attrs.field(factory=dict)
    drops: int = 0
    dropped_streams: int = 0
    hangs: int = 0
    swallowed: int = 0
    held: int = 0
    abandoned: int = 0
    live: dict[str, int] = attrs.field(factory=dict)
    _hung: dict[str, int] = attrs.field(factory=dict)
    _gates: dict[str, asyncio.Event] = attrs.field(factory=dict)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.on_write is None or request.resource is None or request.method.value not in WRITE_METHODS:
            return await super()._handle(request)
        if await self.on_write(request, "before"):
            return aiohttp.web.json_response({"kind": "Status", "code": 503, "reason": "Killed"}, status=503)
        response = await super()._handle(request)
        if response.status < 400:
            await self.on_write(request, "after")
        return response

    async def drop(self, resource: str) -> None:
        """End every watch stream of ``resource`` open now (the connection closes; the client watches again)."""
        self.drops += 1
        await self._buses[kmock.resource(resource)].put(_DROP)

    def hang(self, resource: str) -> int:
        """Every watch stream of ``resource`` open now stays open but delivers nothing more, ever (until its client
        gives up: counted in ``abandoned``); streams started afterwards are served normally. Returns how many."""
        self.hangs += 1
        self._hung[resource] = self._hung.get(resource, 0) + 1
        return self.live.get(resource, 0)

    def hold(self, resource: str) -> None:
        """Watch streams of ``resource`` started from now on wait (sending nothing) until :meth:`release`."""
        self._gates.setdefault(resource, asyncio.Event())

    def release(self, resource: str) -> None:
        self._gates.pop(resource).set()

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        assert request.resource is not None
        name = f"{request.resource.group}/{request.resource.version}/{request.resource.plural}".lstrip("/")
        bus = self._buses[request.resource]
        yield b""
        gate = self._gates.get(name)
        if gate is not None:
            self.held += 1
            await gate.wait()
        hung_at = self._hung.get(name, 0)  # with the gate check, no await between: held, or hung by a hang() now
        self.live[name] = self.live.get(name, 0) + 1
        try:
            async with self._lock:
                marker = await bus.mark()
                objs = [obj for obj in self._KubernetesEmulator__get_objs(request, strict=False) if not obj.deleted]
                snapshot = [{"type": "ADDED", "object": obj.raw} for obj in objs]
            self.watches_started[name] = self.watches_started.get(name, 0) + 1
            try:
                for event in snapshot:
                    yield event
                async for event in bus.stream(since=marker):
                    if self._hung.get(name, 0) != hung_at:
                        self.swallowed += 1  # a hung stream sends nothing and is never closed by the server
                        continue
                    if event is _DROP:
                        self.dropped_streams += 1
                        return
                    metadata = (event.get("object") or {}).get("metadata") or {}
                    if event.get("type") == "ERROR" or self._KubernetesEmulator__check(
                        request, request.resource, metadata.get("namespace"), metadata.get("name"), strict=False
                    ):
                        yield event
            finally:
                await bus.unmark(marker)
        finally:
            self.live[name] -= 1
            if self._hung.get(name, 0) != hung_at:
                self.abandoned += 1  # only its client can have ended a hung stream (it timed out)

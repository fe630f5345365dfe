"""Fixtures for the operator's integration tests: a stateful Kubernetes API (kmock 0.8 with a few gaps closed), fake
agents serving hand-written expositions, a scripted intensity provider, and the operator (kopf) in-process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock
import kopf
import pytest
import pytest_asyncio

from jouleledger.controller.app import OperatorApp, OperatorOptions
from jouleledger.controller.config import OperatorConfig, parse_config
from jouleledger.intensity import FallbackKey, IntensityReading

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

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
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
        return list(self._requests)

    async def gone(self, resource: str) -> None:
        """Send ``410 Gone`` to every watch of ``resource`` (kopf then lists again and re-watches)."""
        await self._buses[kmock.resource(resource)].put(
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
        )


def register_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Declare the resources the operator uses (kmock serves only what it was told exists)."""
    for name, (kind, namespaced) in RESOURCES.items():
        emulator.resources[name] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "patch", "delete"},
            subresources={"status"} if name.endswith(("jobs", "workloadfootprints")) else set(),
        )


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        register_resources(emulator)
        yield emulator


# --- fake agents -------------------------------------------------------------------------------------------------


@dataclass
class FakeAgents:
    """Agents on 127.0.0.N:port, one per node, serving ``texts[node]`` (``delay_s``/``status`` per node)."""

    port: int
    texts: dict[str, str] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)


@pytest_asyncio.fixture()
async def agents() -> AsyncIterator[FakeAgents]:
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
        return aiohttp.web.Response(text=fake.texts.get(node, ""), content_type="text/plain")

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


# --- intensity ---------------------------------------------------------------------------------------------------


@dataclass
class ScriptedIntensity:
    """Readings per zone set by the test; ``fallback`` makes them static-fallback readings with that reason."""

    g_per_kwh: dict[str, float] = field(default_factory=dict)
    fallback: str | None = None
    calls: int = 0
    counts: dict[FallbackKey, int] = field(default_factory=dict)

    async def intensity(self, zone: str, now_unix_s: float) -> IntensityReading:
        self.calls += 1
        if self.fallback is not None:
            key = ("electricitymaps", self.fallback)
            self.counts[key] = self.counts.get(key, 0) + 1
            return IntensityReading(self.g_per_kwh.get(zone, 400.0), zone, "static-fallback", now_unix_s, self.fallback)
        return IntensityReading(self.g_per_kwh.get(zone, 400.0), zone, "static", now_unix_s)

    async def aclose(self) -> None:
        return None

    @property
    def fallbacks(self) -> Mapping[FallbackKey, int]:
        return dict(self.counts)


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


# --- the operator ------------------------------------------------------------------------------------------------


def test_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.watching.reconnect_backoff = 0.05
    settings.networking.error_backoffs = [0.05, 0.1, 0.2, 0.4]
    settings.queueing.idle_timeout = 1.0
    settings.queueing.exit_timeout = 1.0
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Running:
    app: OperatorApp
    task: asyncio.Task[None]

    @property
    def accountant(self) -> Any:
        assert self.app.accountant is not None
        return self.app.accountant


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it is true (the operator works asynchronously: events, passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        await asyncio.sleep(0.02)


StartOperator = Callable[..., Awaitable[Running]]


@pytest_asyncio.fixture()
async def start_operator(api: Emulator, agents: FakeAgents) -> AsyncIterator[StartOperator]:
    """Start the operator in-process (kopf as an asyncio task); every one started is cancelled at teardown."""
    running: list[Running] = []

    async def start(
        provider: ScriptedIntensity,
        *,
        config: OperatorConfig | None = None,
        scrape_interval_s: float = 3600.0,
        dry_run: bool = False,
        clock: Callable[[], float] | None = None,
        finalize_deadline_s: float | None = None,
        write_interval_s: float | None = None,
    ) -> Running:
        options = OperatorOptions(
            listen_address="127.0.0.1",
            port=0,
            agent_namespace=AGENT_NAMESPACE,
            agent_port=agents.port,
            scrape_interval_s=scrape_interval_s,
            standalone=True,
            dry_run=dry_run,
        )
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        app = OperatorApp(
            options,
            config or FIXTURE_CONFIG,
            provider,
            connection=kopf.ConnectionInfo(server=str(api.url).rstrip("/")),
            finalize_deadline_s=finalize_deadline_s,
            write_interval_s=write_interval_s,
            clock_skew_s=0.0,  # the fake agents stamp their ticks with this process's own clock
            **extra,
        )
        task = asyncio.create_task(app.operate(settings=test_settings()))
        handle = Running(app, task)
        running.append(handle)
        await eventually(lambda: app.accountant is not None and app.accountant.passes >= 1, what="first pass")
        await eventually(lambda: len(app.cluster.agent_targets()) == len(agents.ips), what="agents discovered")
        return handle

    yield start
    for handle in running:
        await stop(handle)


async def stop(handle: Running) -> None:
    """Stop an in-process operator: cancel kopf's task, then make sure the accounting task is gone."""
    handle.task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await handle.task
    await handle.app.stop_accounting()


FIXTURE_CONFIG = parse_config({"maxGpuPowerW": 10_000})
"""The defaults, but a GPU bound above the round numbers of the hand-written expositions (3600 J in a GPU-second)."""


@pytest.fixture
def pue_config() -> OperatorConfig:
    return parse_config(
        {
            "pue": 1.5,
            "price": {"currency": "USD", "defaultPerKwh": 0.10},
            "embodied": {"models": {"NVIDIA H100 80GB HBM3": 20.0}},
        }
    )

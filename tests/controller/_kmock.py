"""The operator tests' Kubernetes API and agents: kmock 0.8 as a stateful emulator with the gaps the operator
needs closed, the resources it serves, and fake agents serving hand-written expositions. Imported by the
operator's fixtures (conftest.py), the chart's Prometheus end-to-end stack and ``bench.operator_load``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock

__all__ = [
    "AGENT_NAMESPACE",
    "RESOURCES",
    "Emulator",
    "FakeAgents",
    "Fault",
    "agent_pod",
    "node_object",
    "register_resources",
    "serve_agents",
]

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
    _versions: Any = attrs.field(factory=lambda: itertools.count(1000))

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        for fault in self.faults:
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


@dataclass
class FakeAgents:
    """Agents on 127.0.0.N:port, one per node, serving ``texts[node]`` (``delay_s``/``status`` per node)."""

    port: int
    texts: dict[str, str] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def serve_agents() -> AsyncIterator[FakeAgents]:
    """Serve :class:`FakeAgents` on 127.0.0.1-3 (one ephemeral port) until the block ends."""
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

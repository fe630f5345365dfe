"""Fixtures for the operator's integration tests: the kmock API and the fake agents (from ``_kmock``), a scripted
intensity provider, and the operator (kopf) in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio

from jouleledger.controller.app import OperatorApp, OperatorOptions
from jouleledger.controller.config import OperatorConfig, parse_config
from jouleledger.intensity import FallbackKey, IntensityReading
from tests.controller._kmock import (
    AGENT_NAMESPACE,
    Emulator,
    FakeAgents,
    Fault,
    agent_pod,
    node_object,
    register_resources,
    serve_agents,
)

# The operator tests import these from here as well as the fixtures' own helpers.
__all__ = [
    "AGENT_NAMESPACE",
    "FIXTURE_CONFIG",
    "Emulator",
    "FakeAgents",
    "Fault",
    "Running",
    "ScriptedIntensity",
    "StartOperator",
    "agent_pod",
    "completed",
    "eventually",
    "job_object",
    "node_object",
    "pod_object",
    "stop",
    "test_settings",
]


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        register_resources(emulator)
        yield emulator


# --- fake agents -------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture()
async def agents() -> AsyncIterator[FakeAgents]:
    async with serve_agents() as fake:
        yield fake


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

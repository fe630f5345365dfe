"""Fixtures for the operator's integration tests: the API emulator, fake agents and the operator in-process (the
parts themselves live in ``tests/_kube_emulator.py`` and ``tests/controller/_operator.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kopf
import pytest
import pytest_asyncio

from jouleledger.controller.app import OperatorApp, OperatorOptions
from jouleledger.controller.config import OperatorConfig, parse_config
from tests._kube_emulator import AGENT_NAMESPACE, Emulator, FakeAgents, serve_fake_agents, served
from tests.controller._operator import (
    FIXTURE_CONFIG,
    Running,
    ScriptedIntensity,
    StartOperator,
    eventually,
    stop,
    test_settings,
)


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[Emulator]:
    async with served(Emulator()) as emulator:
        yield emulator


@pytest_asyncio.fixture()
async def agents() -> AsyncIterator[FakeAgents]:
    async with serve_fake_agents() as fake:
        yield fake


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
        api_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        settings: kopf.OperatorSettings | None = None,
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
            api_sleep=api_sleep,
            **extra,
        )
        task = asyncio.create_task(app.operate(settings=settings or test_settings()))
        handle = Running(app, task)
        running.append(handle)
        await eventually(lambda: app.accountant is not None and app.accountant.passes >= 1, what="first pass")
        await eventually(lambda: len(app.cluster.agent_targets()) == len(agents.ips), what="agents discovered")
        return handle

    yield start
    for handle in running:
        await stop(handle)


@pytest.fixture
def pue_config() -> OperatorConfig:
    return parse_config(
        {
            "pue": 1.5,
            "price": {"currency": "USD", "defaultPerKwh": 0.10},
            "embodied": {"models": {"NVIDIA H100 80GB HBM3": 20.0}},
        }
    )

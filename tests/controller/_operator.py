"""Running the operator in-process against the emulator: kopf settings for tests, a scripted intensity provider,
the handle of a running operator, and polling until the asynchronous operator has done something."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from jouleledger.controller.accountant import Accountant
from jouleledger.controller.agent_http import AgentHttpClient
from jouleledger.controller.app import OperatorApp
from jouleledger.controller.cluster import ClusterState
from jouleledger.controller.config import parse_config
from jouleledger.controller.promsource import AccountingSource
from jouleledger.controller.scrape import AgentClientConfig, AgentScraper, build_agent_client
from jouleledger.intensity import FallbackKey, IntensityReading
from jouleledger.kube.api import KubeApi, build_api_client
from tests._kube_emulator import AGENT_NAMESPACE, Emulator, FakeAgents, agent_pod, job_object, node_object, pod_object

# --- intensity ---------------------------------------------------------------------------------------------------


@dataclass
class ScriptedIntensity:
    """Readings per zone set by the test; ``fallback`` makes them static-fallback readings with that reason;
    ``raises`` makes :meth:`intensity` raise (a provider bug: providers must not raise)."""

    g_per_kwh: dict[str, float] = field(default_factory=dict)
    fallback: str | None = None
    calls: int = 0
    counts: dict[FallbackKey, int] = field(default_factory=dict)
    raises: bool = False

    async def intensity(self, zone: str, now_unix_s: float) -> IntensityReading:
        self.calls += 1
        if self.raises:
            raise RuntimeError("provider bug")
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


# --- the operator ------------------------------------------------------------------------------------------------


def test_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.watching.reconnect_backoff = 0.05
    settings.networking.error_backoffs = [0.05, 0.1, 0.2, 0.4]
    settings.queueing.idle_timeout = 1.0
    settings.queueing.exit_timeout = 1.0
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]


def one_node_cluster(agents: FakeAgents, node: str = "n1", ip: str = "127.0.0.1") -> ClusterState:
    """The operator's cluster view of one node (zone ``z1``) and its agent at ``ip``, served by ``agents``."""
    agents.ips[node] = ip
    cluster = ClusterState(
        team_label="team",
        agent_namespace=AGENT_NAMESPACE,
        agent_selector={"app.kubernetes.io/component": "agent"},
        agent_port=agents.port,
        zone_of=FIXTURE_CONFIG.zone_of,
    )
    cluster.apply("nodes", None, node_object(node, "z1"))
    cluster.apply("pods", None, agent_pod(node, ip))
    return cluster


def one_job_cluster(api: Emulator, agents: FakeAgents) -> ClusterState:
    """:func:`one_node_cluster` running Job ``ml/train`` (UID ``job-1``, in ``api`` too) with its pod ``train-x``
    (UID ``pod-1``) on ``n1``."""
    cluster = one_node_cluster(agents)
    job = job_object("ml", "train", "job-1")
    api.objects["batch/v1/jobs", "ml", "train"] = job
    cluster.apply("jobs", None, job)
    cluster.apply(
        "pods",
        None,
        pod_object("ml", "train-x", "pod-1", "n1", owner_kind="Job", owner_name="train", owner_uid="job-1"),
    )
    return cluster


def test_accountant(
    kube: KubeApi,
    scraper: AccountingSource,
    cluster: ClusterState,
    clock: Callable[[], float],
    monotonic: Callable[[], float],
) -> Accountant:
    """An accountant as these tests drive it: the fixture config and intensity, a 15 s interval, every changed
    footprint written at every pass, a one-hour finalization deadline, no clock-skew allowance."""
    return Accountant(
        config=FIXTURE_CONFIG,
        provider=ScriptedIntensity(),
        api=kube,
        scraper=scraper,
        cluster=cluster,
        scrape_interval_s=15.0,
        clock=clock,
        monotonic=monotonic,
        write_interval_s=0.0,
        finalize_deadline_s=3600.0,
        clock_skew_s=0.0,
    )


test_accountant.__test__ = False  # type: ignore[attr-defined]


def one_job_accountant(
    api: Emulator, agents: FakeAgents, kube: KubeApi, client: AgentHttpClient, clock: Mapping[str, float]
) -> Accountant:
    """:func:`test_accountant` on :func:`one_job_cluster`, scraping the agents directly (one at a time, no backoff),
    its clock ``clock["now"]`` and its monotonic clock ``clock["monotonic"]`` (``time.monotonic`` when absent)."""
    scraper = AgentScraper(client, timeout_s=5, concurrency=1, backoff_base_s=0.0, backoff_max_s=0.0)
    monotonic = (lambda: clock["monotonic"]) if "monotonic" in clock else time.monotonic
    return test_accountant(kube, scraper, one_job_cluster(api, agents), lambda: clock["now"], monotonic)


@contextlib.asynccontextmanager
async def api_and_agent_clients(api: Emulator) -> AsyncIterator[tuple[KubeApi, AgentHttpClient]]:
    """The operator's API client on ``api`` (two attempts, no backoff sleep) and a plain agent client."""
    info = kopf.ConnectionInfo(server=str(api.url).rstrip("/"))
    async with (
        KubeApi(build_api_client(info), attempts=2, sleep=no_sleep) as kube,
        build_agent_client(AgentClientConfig()) as client,
    ):
        yield kube, client


async def no_sleep(delay_s: float) -> None:
    """An injected ``sleep`` that returns at once."""


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


async def stop(handle: Running) -> None:
    """Stop an in-process operator: cancel kopf's task, then make sure the accounting task is gone."""
    handle.task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await handle.task
    await handle.app.stop_accounting()


FIXTURE_CONFIG = parse_config({"maxGpuPowerW": 10_000, "relistIntervalSeconds": 0})
"""The defaults, but a GPU bound above the round numbers of the hand-written expositions (3600 J in a GPU-second),
and no periodic relist (tests that build the cluster view by hand would see it pruned; tests/controller/test_relist.py
turns it on)."""

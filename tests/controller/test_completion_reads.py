"""Completion reads: between (and during) passes the operator reads only the agents that finished Jobs with every
pod seen still wait for, folds them, and records those Jobs at once; a Job it may not have seen every pod of waits
for the passes and every answering agent, as before. A pass whose read began before a completion read's leaves that
node's older counters out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from jouleledger.controller.accountant import Accountant, CompletionSummary
from jouleledger.controller.agent_http import AgentHttpClient
from jouleledger.controller.cluster import AgentTarget, ClusterState
from jouleledger.controller.promsource import AccountingSource
from jouleledger.controller.scrape import AgentScraper, ScrapeOutcome
from jouleledger.core.footprints import KEY_ENERGY
from jouleledger.kube.api import KubeApi
from tests._kube_emulator import Emulator, FakeAgents, agent_pod, completed, job_object, node_object, rfc3339
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import api_and_agent_clients, eventually, one_node_cluster, test_accountant

EPOCH = "00000000000000aa"


def _train(energy_j: float) -> Pod:
    return Pod("ml", "train-x", "pod-1", energy_j, energy_j / 100, "Job", "train", "job-1")


def _n1(tick_s: float, energy_j: float) -> str:
    return agent_text("n1", tick_s, [_train(energy_j)], epoch=EPOCH)


def _n2(tick_s: float) -> str:
    return agent_text("n2", tick_s, [], epoch="00000000000000bb")


def _two_node_cluster(api: Emulator, agents: FakeAgents) -> ClusterState:
    """Nodes ``n1`` and ``n2`` with their agents, and the Job ``ml/train`` (UID ``job-1``). As in the operator,
    the view holds agent pods only: the Job's pod on ``n1`` is known from that agent's exposition."""
    cluster = one_node_cluster(agents)
    job = job_object("ml", "train", "job-1")
    api.objects["batch/v1/jobs", "ml", "train"] = job
    cluster.apply("jobs", None, job)
    agents.ips["n2"] = "127.0.0.2"
    cluster.apply("nodes", None, node_object("n2", "z1"))
    cluster.apply("pods", None, agent_pod("n2", "127.0.0.2"))
    return cluster


def _scraper(client: AgentHttpClient) -> AgentScraper:
    return AgentScraper(client, timeout_s=5, concurrency=2, backoff_base_s=0.0, backoff_max_s=0.0)


def _accountant(
    api: Emulator, agents: FakeAgents, kube: KubeApi, client: AgentHttpClient, clock: Mapping[str, float]
) -> Accountant:
    accountant = test_accountant(
        kube, _scraper(client), _two_node_cluster(api, agents), lambda: clock["now"], time.monotonic
    )
    accountant.completion_source = _scraper(client)  # its own memos, as the operator builds it
    return accountant


def _finish(api: Emulator, cluster: ClusterState, when_s: float, **counts: Any) -> None:
    """The Job complete at ``when_s``, its status counting ``counts`` (``succeeded=1``; none: no counts)."""
    job = job_object("ml", "train", "job-1")
    job["status"] = {**completed(rfc3339(when_s))["status"], **counts}
    api.objects["batch/v1/jobs", "ml", "train"] = job
    cluster.apply("jobs", "MODIFIED", job)


def _annotated(api: Emulator) -> dict[str, str]:
    annotations: dict[str, str] = api.objects["batch/v1/jobs", "ml", "train"].raw["metadata"].get("annotations") or {}
    return annotations


@contextlib.asynccontextmanager
async def _accounting(api: Emulator, agents: FakeAgents) -> AsyncIterator[tuple[Accountant, dict[str, float], float]]:
    """The accountant on the two nodes, its clock (``clock["now"]``) and the base time (whole seconds: the finish
    time goes through an RFC 3339 timestamp)."""
    base = float(int(time.time()))
    clock = {"now": base}
    async with api_and_agent_clients(api) as (kube, client):
        yield _accountant(api, agents, kube, client, clock), clock, base


async def _first_pass(
    accountant: Accountant, agents: FakeAgents, clock: dict[str, float], base: float, *, finish: Emulator | None = None
) -> None:
    """A pass at ``base + 1.5`` (the Job's pod on n1 at 0 J); with ``finish``, then the Job complete at ``base + 2``
    with its one pod counted."""
    agents.texts["n1"] = _n1(base + 1, 0.0)
    agents.texts["n2"] = _n2(base + 1)
    clock["now"] = base + 1.5
    assert (await accountant.run_pass()).scraped_ok == 2
    if finish is not None:
        _finish(finish, accountant.cluster, base + 2, succeeded=1)


async def test_a_job_with_every_pod_seen_is_recorded_by_a_read_of_its_own_node_only(
    api: Emulator, agents: FakeAgents
) -> None:
    async with _accounting(api, agents) as (accountant, clock, base):
        await _first_pass(accountant, agents, clock, base)
        assert await accountant.run_completion_read() == CompletionSummary(0, 0, 0, 0)  # nothing finished

        _finish(api, accountant.cluster, base + 2, succeeded=1)
        # n1's agent has not reported since the Job finished: the read asks it and finds it behind.
        hits = dict(agents.hits)
        assert await accountant.run_completion_read() == CompletionSummary(1, 1, 0, 0)
        assert agents.hits["n1"] == hits["n1"] + 1
        assert agents.hits["n2"] == hits["n2"]

        agents.texts["n1"] = _n1(base + 3, 3600.0)  # n2's agent stays behind: its tick is older than the finish
        clock["now"] = base + 3.5
        assert await accountant.run_completion_read() == CompletionSummary(1, 1, 1, 1)
        assert agents.hits["n2"] == hits["n2"]  # never read: the Job did not run there
        assert _annotated(api)[KEY_ENERGY] == "0.001000"  # 3600 J, without waiting for a pass or for n2
        assert accountant.passes == 1
        assert accountant.stats.completion_reads == 2
        assert accountant.stats.delays_s == [1.5]
        assert await accountant.run_completion_read() == CompletionSummary(0, 0, 0, 0)  # nothing waits any more


async def test_a_pass_also_records_a_job_with_every_pod_seen_without_waiting_for_other_agents(
    api: Emulator, agents: FakeAgents
) -> None:
    async with _accounting(api, agents) as (accountant, clock, base):
        await _first_pass(accountant, agents, clock, base, finish=api)
        agents.texts["n1"] = _n1(base + 3, 3600.0)
        clock["now"] = base + 3.5
        summary = await accountant.run_pass()  # n2 answers, its tick still before the finish
        assert (summary.finalized, summary.annotated) == (1, 1)


async def test_a_job_the_operator_may_not_have_seen_every_pod_of_waits_for_every_answering_agent(
    api: Emulator, agents: FakeAgents
) -> None:
    for counts in ({}, {"succeeded": 2}, {"succeeded": 1, "active": 1}):
        api.objects.clear()
        async with _accounting(api, agents) as (accountant, clock, base):
            await _first_pass(accountant, agents, clock, base)
            # No counts; two pods counted and one seen; a pod still active: another pod may be unseen.
            _finish(api, accountant.cluster, base + 2, **counts)
            agents.texts["n1"] = _n1(base + 3, 3600.0)
            clock["now"] = base + 3.5
            assert await accountant.run_completion_read() == CompletionSummary(0, 0, 0, 0), counts
            assert (await accountant.run_pass()).finalized == 0, counts  # n2 is behind the finish
            agents.texts["n2"] = _n2(base + 4)
            clock["now"] = base + 4.5
            assert (await accountant.run_pass()).annotated == 1, counts
            assert _annotated(api)[KEY_ENERGY] == "0.001000"


async def test_a_job_finished_before_its_pod_was_folded_waits_for_a_pass(api: Emulator, agents: FakeAgents) -> None:
    async with _accounting(api, agents) as (accountant, clock, base):
        agents.texts["n1"] = agent_text("n1", base + 1, [], epoch=EPOCH)  # the pod not reported yet
        agents.texts["n2"] = _n2(base + 1)
        clock["now"] = base + 1.5
        await accountant.run_pass()
        _finish(api, accountant.cluster, base + 2, succeeded=1)  # one pod counted, none seen
        agents.texts["n1"] = _n1(base + 3, 3600.0)
        clock["now"] = base + 3.5
        assert await accountant.run_completion_read() == CompletionSummary(0, 0, 0, 0)  # where it ran is unknown
        # The pass reads every agent: the pod is seen on n1, whose tick is after the finish; n2's is not, but
        # every pod is now seen, so the Job does not wait for it.
        summary = await accountant.run_pass()
        assert (summary.finalized, summary.annotated) == (1, 1)
        assert _annotated(api)[KEY_ENERGY] == "0.001000"


class _HeldSource:
    """A source whose answer is held until ``release`` is set, after ``answered`` (a slow Prometheus query)."""

    def __init__(self, inner: AccountingSource) -> None:
        self.inner = inner
        self.answered = asyncio.Event()
        self.release = asyncio.Event()

    async def scrape_all(
        self, targets: Sequence[AgentTarget], folded_until: Mapping[str, float] | None = None
    ) -> list[ScrapeOutcome]:
        outcomes = await self.inner.scrape_all(targets, folded_until)
        self.answered.set()
        await self.release.wait()
        return outcomes


async def test_a_pass_read_before_a_completion_read_leaves_that_nodes_older_counters_out(
    api: Emulator, agents: FakeAgents
) -> None:
    async with _accounting(api, agents) as (accountant, clock, base):
        await _first_pass(accountant, agents, clock, base, finish=api)
        held = _HeldSource(accountant.scraper)
        accountant.scraper = held

        agents.texts["n1"] = _n1(base + 1.8, 1800.0)  # what the slow pass reads: before the Job's end
        clock["now"] = base + 2.5
        slow = asyncio.create_task(accountant.run_pass())
        await held.answered.wait()
        agents.texts["n1"] = _n1(base + 3, 3600.0)  # the agent moved on; a completion read sees it
        clock["now"] = base + 3.5
        assert await accountant.run_completion_read() == CompletionSummary(1, 1, 1, 1)
        held.release.set()
        summary = await slow
        # The older answer of n1 was not folded: not a counter that went down, nor energy counted twice.
        assert dict(accountant.stats.rejected) == {}
        assert summary.folded_mj == 0
        account = accountant.ledger.accounts["job-1"]
        assert account.totals.energy_mj == 3_600_000
        assert _annotated(api)[KEY_ENERGY] == "0.001000"


async def test_the_loop_runs_completion_reads_between_passes(api: Emulator, agents: FakeAgents) -> None:
    async with _accounting(api, agents) as (accountant, clock, base):
        accountant.interval_s = 3600.0  # one pass only: what records the Job is a completion read
        accountant.completion_poll_s = 0.01
        agents.texts["n1"] = _n1(base + 1, 0.0)
        agents.texts["n2"] = _n2(base + 1)
        clock["now"] = base + 1.5
        stop = asyncio.Event()
        loop = asyncio.create_task(accountant.run_forever(stop))
        await eventually(lambda: accountant.passes == 1, what="the first pass")
        _finish(api, accountant.cluster, base + 2, succeeded=1)
        agents.texts["n1"] = _n1(base + 3, 3600.0)
        clock["now"] = base + 3.5
        await eventually(lambda: KEY_ENERGY in _annotated(api), what="the Job's annotations")
        stop.set()
        await loop
        assert accountant.passes == 1
        assert _annotated(api)[KEY_ENERGY] == "0.001000"


async def test_a_job_is_not_recorded_without_energy_while_an_agent_does_not_answer(
    api: Emulator, agents: FakeAgents
) -> None:
    """A Job that finished while the agent of its node could not be read (an operator starting as the agent does)
    has no account yet: it waits for that agent rather than being recorded as having used no GPU."""
    async with _accounting(api, agents) as (accountant, clock, base):
        agents.status["n1"] = 503
        agents.texts["n2"] = _n2(base + 3)  # the agent that answers is past the finish
        _finish(api, accountant.cluster, base + 2, succeeded=1)
        clock["now"] = base + 3.5
        assert (await accountant.run_pass()).scraped_ok == 1
        assert "job-1" not in accountant.recorder.done
        del agents.status["n1"]
        agents.texts["n1"] = _n1(base + 3, 3600.0)
        agents.texts["n2"] = _n2(base + 4)
        clock["now"] = base + 4.5
        assert (await accountant.run_pass()).annotated == 1
        assert _annotated(api)[KEY_ENERGY] == "0.001000"

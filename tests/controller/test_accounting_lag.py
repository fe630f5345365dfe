"""``jouleledger_operator_oldest_tick_age_seconds``: how far the latest pass's ledger is behind the slowest agent
that answered it, the least a finished Job then waits for its footprint (the ``JouleLedgerAccountingBehind``
alert reads it)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from jouleledger.core.footprints import RollupSnapshot
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.metrics.operator_collector import OperatorCollector
from tests._kube_emulator import Emulator, FakeAgents
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import api_and_agent_clients, one_job_accountant

GAUGE = "jouleledger_operator_oldest_tick_age_seconds"


def _exported(stats: OperatorStats) -> float | None:
    registry = CollectorRegistry()
    registry.register(OperatorCollector(lambda: stats.view(RollupSnapshot({}, {}, {}, "USD"), {})))
    return registry.get_sample_value(GAUGE)


def _text(base: float, tick_s: float, energy_j: float) -> str:
    pod = Pod("ml", "train-x", "pod-1", energy_j, energy_j / 100, "Job", "train", "job-1")
    return agent_text("n1", base + tick_s, [pod], epoch="00000000000000aa")


async def test_the_gauge_is_the_pass_time_less_the_oldest_folded_tick_and_grows_while_an_agent_stalls(
    api: Emulator, agents: FakeAgents
) -> None:
    base = time.time()
    clock = {"now": base}
    async with api_and_agent_clients(api) as (kube, client):
        accountant = one_job_accountant(api, agents, kube, client, clock)
        assert _exported(accountant.stats) is None  # no pass yet: no sample, not a made-up zero

        agents.texts["n1"] = _text(base, 1.0, 0.0)
        clock["now"] = base + 1.5
        assert (await accountant.run_pass()).scraped_ok == 1
        assert _exported(accountant.stats) == 0.5

        clock["now"] = base + 40.0  # the agent answers but its tick did not move (its loop stalled)
        assert (await accountant.run_pass()).scraped_ok == 1
        assert _exported(accountant.stats) == 39.0

        agents.texts["n1"] = _text(base, 41.0, 100.0)
        clock["now"] = base + 43.0
        await accountant.run_pass()
        assert _exported(accountant.stats) == 2.0

        agents.status["n1"] = 503  # nobody answers: no lag is known (the scrape-error alert covers it)
        clock["now"] = base + 60.0
        assert (await accountant.run_pass()).scraped_ok == 0
        assert _exported(accountant.stats) is None


def test_an_agent_that_answered_but_was_never_folded_reads_as_infinitely_behind() -> None:
    stats = OperatorStats()
    stats.oldest_tick_age_s = float("inf")
    assert _exported(stats) == float("inf")

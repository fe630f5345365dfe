"""How far the ledger is behind: ``jouleledger_operator_oldest_tick_age_seconds`` (the latest pass's lag behind the
slowest agent that answered it, the least a finished Job then waits for its footprint; the
``JouleLedgerAccountingBehind`` alert reads it) and the passes' own wall time
(``jouleledger_operator_pass_duration_seconds``, ``jouleledger_operator_last_pass_phase_seconds``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jouleledger.core.footprints import RollupSnapshot
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.metrics.operator_collector import OperatorCollector
from tests._kube_emulator import Emulator, FakeAgents
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import api_and_agent_clients, one_job_accountant

GAUGE = "jouleledger_operator_oldest_tick_age_seconds"


def _registry(stats: OperatorStats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(OperatorCollector(lambda: stats.view(RollupSnapshot({}, {}, {}, "USD"), {})))
    return registry


def _exported(stats: OperatorStats) -> float | None:
    return _registry(stats).get_sample_value(GAUGE)


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


def _advancing(clock: dict[str, float], step_s: float, call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """``call``, after which ``clock["monotonic"]`` has moved on by ``step_s`` (a phase that took that long)."""

    async def stepped(*args: Any, **kwargs: Any) -> Any:
        result = await call(*args, **kwargs)
        clock["monotonic"] += step_s
        return result

    return stepped


async def test_each_pass_is_timed_by_phase_and_counted_in_the_duration_histogram(
    api: Emulator, agents: FakeAgents, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = time.time()
    clock = {"now": base, "monotonic": 1000.0}
    async with api_and_agent_clients(api) as (kube, client):
        accountant = one_job_accountant(api, agents, kube, client, clock)
        registry = _registry(accountant.stats)
        assert registry.get_sample_value("jouleledger_operator_last_pass_phase_seconds", {"phase": "read"}) is None
        assert registry.get_sample_value("jouleledger_operator_pass_duration_seconds_count") == 0
        monkeypatch.setattr(accountant.scraper, "scrape_all", _advancing(clock, 3.0, accountant.scraper.scrape_all))
        monkeypatch.setattr(accountant, "_fold", _advancing(clock, 2.0, accountant._fold))
        monkeypatch.setattr(accountant, "_persist", _advancing(clock, 0.25, accountant._persist))  # twice a pass

        agents.texts["n1"] = _text(base, 1.0, 0.0)
        clock["now"] = base + 1.5
        assert (await accountant.run_pass()).scraped_ok == 1
        registry = _registry(accountant.stats)
        phases = {
            phase: registry.get_sample_value("jouleledger_operator_last_pass_phase_seconds", {"phase": phase})
            for phase in ("read", "fold", "write")
        }
        assert phases == {"read": 3.0, "fold": 2.0, "write": 0.5}
        assert registry.get_sample_value("jouleledger_operator_pass_duration_seconds_count") == 1
        assert registry.get_sample_value("jouleledger_operator_pass_duration_seconds_sum") == 5.5
        bucket = "jouleledger_operator_pass_duration_seconds_bucket"
        assert registry.get_sample_value(bucket, {"le": "5.0"}) == 0
        assert registry.get_sample_value(bucket, {"le": "10.0"}) == 1

        monkeypatch.setattr(accountant, "_fold", _advancing(clock, 40.0, accountant._fold))  # and 2.0 inside
        agents.texts["n1"] = _text(base, 20.0, 50.0)
        clock["now"] = base + 20.5
        await accountant.run_pass()
        registry = _registry(accountant.stats)
        assert registry.get_sample_value("jouleledger_operator_last_pass_phase_seconds", {"phase": "fold"}) == 42.0
        assert registry.get_sample_value("jouleledger_operator_pass_duration_seconds_count") == 2
        assert registry.get_sample_value("jouleledger_operator_pass_duration_seconds_sum") == 5.5 + 45.5
        assert registry.get_sample_value(bucket, {"le": "30.0"}) == 1
        assert registry.get_sample_value(bucket, {"le": "60.0"}) == 2
        assert registry.get_sample_value(bucket, {"le": "+Inf"}) == 2

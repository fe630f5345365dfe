"""The accounting pass runs its scrape and fold with automatic garbage collection paused (collection_paused):
no young collection traverses the pass's scrapes in the middle of it, and the collector runs again afterwards."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from jouleledger.controller.accountant import collection_paused
from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import AgentScraper, ScrapeOutcome
from tests._kube_emulator import Emulator, FakeAgents
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import api_and_agent_clients, one_job_cluster, test_accountant


class _Cycle:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def eager_collector() -> Iterator[list[int]]:
    """A collector that runs a young collection every 10 allocations; yields the generations it collected."""
    collected: list[int] = []

    def record(phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            collected.append(int(info["generation"]))

    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(10, 10, 10)
    gc.enable()
    gc.callbacks.append(record)
    try:
        yield collected
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*thresholds)
        if not enabled:
            gc.disable()


class _WatchingScraper(AgentScraper):
    """Scrapes as usual, then leaves cyclic garbage behind and notes how the collector stood meanwhile."""

    def __init__(self, *args: Any, collected: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collected = collected
        self.enabled_during: list[bool] = []
        self.collections_during: list[int] = []
        self.garbage: list[weakref.ref[_Cycle]] = []

    async def scrape_all(
        self, targets: Sequence[AgentTarget], folded_until: Mapping[str, float] | None = None
    ) -> list[ScrapeOutcome]:
        before = len(self.collected)
        outcomes = await super().scrape_all(targets, folded_until)
        self.garbage = [weakref.ref(_Cycle()) for _ in range(2_000)]  # 200 young thresholds' worth
        self.enabled_during.append(gc.isenabled())
        self.collections_during.append(len(self.collected) - before)
        return outcomes


async def test_a_pass_scrapes_and_folds_without_collections_and_the_collector_runs_after_it(
    api: Emulator, agents: FakeAgents, eager_collector: list[int]
) -> None:
    base = time.time()
    cluster = one_job_cluster(api, agents)
    clock = {"now": base}
    async with api_and_agent_clients(api) as (kube, client):
        scraper = _WatchingScraper(
            client, timeout_s=5, concurrency=1, backoff_base_s=0.0, backoff_max_s=0.0, collected=eager_collector
        )
        accountant = test_accountant(kube, scraper, cluster, lambda: clock["now"])
        for tick, energy_j in ((1, 0.0), (2, 100.0)):
            pod = Pod("ml", "train-x", "pod-1", energy_j, energy_j / 100, "Job", "train", "job-1")
            agents.texts["n1"] = agent_text("n1", base + tick, [pod], epoch="00000000000000aa")
            clock["now"] = base + tick + 0.5
            summary = await accountant.run_pass()
            assert summary.scraped_ok == 1
            assert gc.isenabled()

    assert scraper.enabled_during == [False, False]
    assert scraper.collections_during == [0, 0]  # 2,000 cycles and the scrape, at a threshold of 10
    assert accountant.ledger.accounts["job-1"].totals.energy_mj == 100_000  # the pass itself is unchanged
    gc.collect()
    assert all(ref() is None for ref in scraper.garbage)  # the pass's cyclic garbage is collected after it


def test_collection_paused_collects_the_young_generation_once_after_and_leaves_a_disabled_collector_alone(
    eager_collector: list[int],
) -> None:
    gc.set_threshold(1_000_000, 10, 10)  # no automatic collection in this test: only collection_paused's own
    eager_collector.clear()  # what the fixture's own threshold collected before
    with collection_paused():
        assert not gc.isenabled()
        garbage = weakref.ref(_Cycle())
    assert gc.isenabled()
    assert eager_collector == [0]
    assert garbage() is None

    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    assert eager_collector == [0]

    gc.enable()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("a failing pass")
    assert gc.isenabled()
    assert eager_collector == [0, 0]

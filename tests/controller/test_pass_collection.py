"""The accounting pass runs its scrape and fold with automatic garbage collection paused (collection_paused):
no young collection traverses the pass's scrapes in the middle of it, and the collector runs again afterwards, on
what the pass keeps only (the scrapes and the query's answer are garbage by then)."""

from __future__ import annotations

import gc
import json
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from jouleledger.controller.accountant import collection_paused
from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.promsource import PrometheusSource
from jouleledger.controller.scrape import AgentScraper, ScrapeOutcome
from jouleledger.core.deltas import AgentScrape
from jouleledger.promapi import Connection, PrometheusApi, build_client
from tests._kube_emulator import Emulator, FakeAgents
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import api_and_agent_clients, one_job_cluster, test_accountant
from tests.controller.test_promsource_fuzz import series_of, vector


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


def _job_pod_text(base: float, tick: int, energy_j: float) -> str:
    """Agent ``n1``'s exposition at ``tick`` with the Job pod of :func:`one_job_cluster` at ``energy_j``."""
    pod = Pod("ml", "train-x", "pod-1", energy_j, energy_j / 100, "Job", "train", "job-1")
    return agent_text("n1", base + tick, [pod], epoch="00000000000000aa")


TWO_PASSES = ((1, 0.0), (2, 100.0))
"""(tick, the pod's energy in J) of two passes: 100 J between them."""


async def test_a_pass_scrapes_and_folds_without_collections_and_the_collector_runs_after_it(
    api: Emulator, agents: FakeAgents, eager_collector: list[int], scrapes_at_collection: list[int]
) -> None:
    """The pass's scrapes are dropped before the young collection after the fold, which then traverses only what
    the pass keeps (the asyncio step that resumed the pass held the gathered scrapes until the pass next yielded)."""
    base = time.time()
    cluster = one_job_cluster(api, agents)
    clock = {"now": base}
    async with api_and_agent_clients(api) as (kube, client):
        scraper = _WatchingScraper(
            client, timeout_s=5, concurrency=1, backoff_base_s=0.0, backoff_max_s=0.0, collected=eager_collector
        )
        accountant = test_accountant(kube, scraper, cluster, lambda: clock["now"], time.monotonic)
        for tick, energy_j in TWO_PASSES:
            agents.texts["n1"] = _job_pod_text(base, tick, energy_j)
            clock["now"] = base + tick + 0.5
            summary = await accountant.run_pass()
            assert summary.scraped_ok == 1
            assert gc.isenabled()

    assert scraper.enabled_during == [False, False]
    assert scraper.collections_during == [0, 0]  # 2,000 cycles and the scrape, at a threshold of 10
    assert accountant.ledger.accounts["job-1"].totals.energy_mj == 100_000  # the pass itself is unchanged
    assert scrapes_at_collection == [0, 0]
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


def _alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


def _answer_pairs() -> int:
    """The ``(labels, value)`` series of an instant-query answer still alive."""
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], dict) and "__name__" in obj[0]
    )


@pytest.fixture
def scrapes_at_collection(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The agent scrapes alive when the pass's closing young collection starts, one count per collection."""
    counts: list[int] = []
    collect = gc.collect

    def counting(generation: int = 2) -> int:
        counts.append(_alive(AgentScrape))
        return collect(generation)

    monkeypatch.setattr(gc, "collect", counting)
    return counts


async def test_the_query_answer_is_garbage_once_regrouped_and_the_scrapes_before_the_collection(
    api: Emulator, agents: FakeAgents, scrapes_at_collection: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--source prometheus``: the answer's series live only until they are regrouped by node (not through the
    fold), and the parsed scrapes are garbage when the pass's closing collection starts."""
    base = time.time()
    cluster = one_job_cluster(api, agents)
    body = {"bytes": b""}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body["bytes"])

    prometheus = PrometheusApi(build_client(Connection("http://prom"), transport=httpx.MockTransport(answer)))
    clock = {"now": base}
    source = PrometheusSource(prometheus, clock=lambda: clock["now"])
    pairs_in_fold: list[int] = []
    async with api_and_agent_clients(api) as (kube, _):
        accountant = test_accountant(kube, source, cluster, lambda: clock["now"], time.monotonic)
        fold = accountant.ledger.fold

        def counting_fold(*args: Any, **kwargs: Any) -> Any:
            pairs_in_fold.append(_answer_pairs())
            return fold(*args, **kwargs)

        monkeypatch.setattr(accountant.ledger, "fold", counting_fold)
        try:
            for tick, energy_j in TWO_PASSES:
                series = series_of(_job_pod_text(base, tick, energy_j), "10.0.0.1")
                body["bytes"] = json.dumps(vector(series)).encode()
                clock["now"] = base + tick + 0.5
                assert (await accountant.run_pass()).scraped_ok == 1
        finally:
            prometheus.close()
    assert accountant.ledger.accounts["job-1"].totals.energy_mj == 100_000
    assert pairs_in_fold == [0, 0]
    assert scrapes_at_collection == [0, 0]

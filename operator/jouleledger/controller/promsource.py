"""``--source prometheus``: the agents' counters read from the Prometheus HTTP API instead of scraping the agents.

One instant query per pass (:func:`jouleledger.core.promsource.agent_query`; the target labels Prometheus adds are
dropped here: asking Prometheus to drop them, with ``label_replace``, tripled its time to answer at 360,000 series
and saved the operator nothing once the client decodes each label set once) through the same client, with the same
authentication, ``X-Scope-OrgID`` and CA options as ``jouleledger report`` (:mod:`jouleledger.promapi`); the result
is split by node into the samples a direct scrape of each agent gives, and parsed by the same parser. Each agent pod
the operator sees is one outcome, as in direct mode: ``ok`` when Prometheus holds its node's series, ``error``
otherwise (its node is then not folded this pass, and completion waits for it as for an agent that did not answer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Protocol

from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import ERROR, OK, ScrapeOutcome
from jouleledger.core.deltas import ParseMemo, ScrapeFormatError, parse_agent_samples
from jouleledger.core.promsource import RegroupMemo, agent_query, samples_by_node
from jouleledger.promapi import PrometheusApi, PrometheusError

__all__ = ["AccountingSource", "PrometheusSource"]

log = logging.getLogger(__name__)


class AccountingSource(Protocol):
    """Where a pass reads the agents' counters: the direct scraper, or :class:`PrometheusSource`."""

    async def scrape_all(
        self, targets: Sequence[AgentTarget], folded_until: Mapping[str, float] | None = None
    ) -> list[ScrapeOutcome]: ...


class PrometheusSource:
    """Reads every agent's counters in one instant query per pass (a drop-in for the direct scraper). With
    ``targets_only`` (the source of completion reads) the query asks for the given targets' nodes only; such a
    source needs an API client of its own (the client keeps the label sets of its latest answer)."""

    def __init__(
        self,
        api: PrometheusApi,
        *,
        selector: str = "",
        clock: Callable[[], float] = time.time,
        live_pods: Container[str] = (),
        targets_only: bool = False,
    ) -> None:
        self._api = api
        self._live_pods = live_pods  # UIDs of the pods that exist (the pod watch): see samples_by_node
        self._selector = selector
        self.query = agent_query(selector)  # checks the selector now, not at the first pass
        self._targets_only = targets_only  # a completion read's source: ask for the targets' nodes only
        self._clock = clock
        self._regroup = RegroupMemo()
        self._memos: dict[str, ParseMemo] = {}  # per node (see ParseMemo), kept for the nodes of the last pass

    @property
    def timeout_s(self) -> float | None:
        """How long its query waits for Prometheus (:attr:`PrometheusApi.timeout_s`)."""
        return self._api.timeout_s

    def _query(self, query: str, time_s: float) -> list[tuple[Mapping[str, str], float]]:
        # One agent's NaN must not fail the query of every node: parse_agent_samples rejects and counts it.
        return self._api.query(query, time_s, finite=False)

    async def scrape_all(
        self, targets: Sequence[AgentTarget], folded_until: Mapping[str, float] | None = None
    ) -> list[ScrapeOutcome]:
        """One outcome per agent target, all from one query (``folded_until`` does not apply: Prometheus holds
        what it scraped, finished pods included)."""
        answer: list[list[tuple[Mapping[str, str], float]]] = []
        query = self.query
        if self._targets_only:
            if not targets:
                return []
            try:
                query = agent_query(self._selector, [target.node for target in targets])
            except ValueError as error:
                log.warning("completion read: %s", error)
                return [ScrapeOutcome(target, ERROR, error=str(error)) for target in targets]
        try:
            # The answer is handed over in ``answer``, not as the thread's result: the finished future lives on
            # in the loop's wake-up of this task, and would keep every series of it alive through the pass.
            await asyncio.to_thread(lambda time_s: answer.append(self._query(query, time_s)), self._clock())
        except PrometheusError as error:
            log.warning("%s", error)
            return [ScrapeOutcome(target, ERROR, error=str(error)) for target in targets]
        by_node = samples_by_node(answer.pop(), self._regroup, live_pods=self._live_pods)
        memos, self._memos = self._memos, {}
        outcomes: list[ScrapeOutcome] = []
        for target in targets:
            samples = by_node.get(target.node)
            if not samples:
                outcomes.append(ScrapeOutcome(target, ERROR, error="Prometheus holds no series of this node's agent"))
                continue
            try:
                memo = self._memos[target.node] = memos.get(target.node) or ParseMemo()
                scrape = parse_agent_samples(samples, expected_node=target.node, memo=memo)
            except ScrapeFormatError as error:
                log.warning("agent on %s (through Prometheus): %s", target.node, error)
                outcomes.append(ScrapeOutcome(target, ERROR, error=str(error)))
                continue
            outcomes.append(ScrapeOutcome(target, OK, scrape))
        return outcomes

    async def aclose(self) -> None:
        await asyncio.to_thread(self._api.close)

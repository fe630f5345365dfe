"""Scraping the agents: bounded concurrency, a timeout per request, exponential backoff per agent.

Each agent is scraped at most once per pass. After ``k`` consecutive failures an agent is skipped until
``base_s * (2**(k-1) - 1)`` seconds (capped at ``max_s``) have passed since its last failure: a single failure is
retried at the next pass, a persistent one every 1, 3, 7... intervals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from jouleledger.controller.cluster import AgentTarget
from jouleledger.core.deltas import AgentScrape, ScrapeFormatError, parse_agent_samples
from jouleledger.metrics.operator_collector import ExpositionError, parse_exposition

__all__ = ["AgentScraper", "ScrapeOutcome"]

log = logging.getLogger(__name__)

OK: Final = "ok"
ERROR: Final = "error"
TIMEOUT: Final = "timeout"
BACKOFF: Final = "backoff"
MAX_BODY_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """``result`` is ``ok`` (``scrape`` set), ``error``, ``timeout`` or ``backoff`` (not tried this pass)."""

    target: AgentTarget
    result: str
    scrape: AgentScrape | None = None
    error: str = ""


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    last_failure_s: float = 0.0


class AgentScraper:
    """Scrapes agent ``/metrics`` endpoints through an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        timeout_s: float,
        concurrency: int,
        backoff_base_s: float,
        backoff_max_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._timeout = httpx.Timeout(timeout_s)
        self._semaphore = asyncio.Semaphore(concurrency)
        self._base_s = backoff_base_s
        self._max_s = backoff_max_s
        self._monotonic = monotonic
        self._backoff: dict[str, _Backoff] = {}

    def _due(self, node: str, now_s: float) -> bool:
        state = self._backoff.get(node)
        if state is None or state.failures == 0:
            return True
        wait_s = min(self._max_s, self._base_s * float(2 ** min(state.failures - 1, 30) - 1))
        return now_s - state.last_failure_s >= wait_s

    async def scrape_all(self, targets: Sequence[AgentTarget]) -> list[ScrapeOutcome]:
        """One scrape of every agent that is not backing off, concurrently (bounded)."""
        now_s = self._monotonic()
        due = [target for target in targets if self._due(target.node, now_s)]
        skipped = [ScrapeOutcome(target, BACKOFF) for target in targets if not self._due(target.node, now_s)]
        outcomes = await asyncio.gather(*(self._scrape(target) for target in due))
        for outcome in outcomes:
            state = self._backoff.setdefault(outcome.target.node, _Backoff())
            if outcome.result == OK:
                state.failures = 0
            else:
                state.failures += 1
                state.last_failure_s = self._monotonic()
        live = {target.node for target in targets}
        for node in [node for node in self._backoff if node not in live]:
            del self._backoff[node]
        return [*outcomes, *skipped]

    async def _scrape(self, target: AgentTarget) -> ScrapeOutcome:
        async with self._semaphore:
            try:
                response = await self._client.get(target.url, timeout=self._timeout)
            except httpx.TimeoutException as error:
                log.warning("agent %s on %s: timed out (%s)", target.pod, target.node, type(error).__name__)
                return ScrapeOutcome(target, TIMEOUT, error=type(error).__name__)
            except httpx.HTTPError as error:
                log.warning("agent %s on %s: %s", target.pod, target.node, error)
                return ScrapeOutcome(target, ERROR, error=f"{type(error).__name__}: {error}")
        if response.status_code != 200:
            log.warning("agent %s on %s: HTTP %d", target.pod, target.node, response.status_code)
            return ScrapeOutcome(target, ERROR, error=f"HTTP {response.status_code}")
        if len(response.content) > MAX_BODY_BYTES:
            return ScrapeOutcome(target, ERROR, error=f"exposition larger than {MAX_BODY_BYTES} bytes")
        try:
            scrape = parse_agent_samples(parse_exposition(response.text), expected_node=target.node)
        except (ExpositionError, ScrapeFormatError) as error:
            log.warning("agent %s on %s: %s", target.pod, target.node, error)
            return ScrapeOutcome(target, ERROR, error=str(error))
        return ScrapeOutcome(target, OK, scrape)

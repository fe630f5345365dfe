"""The accounting loop: scrape every agent, fold the deltas into the ledger, persist footprints, annotate Jobs.

One pass restores the persisted footprints (first pass only), scrapes the agents, folds each node's interval,
finalizes finished Jobs, persists changed footprints and annotates Jobs; docs/architecture.md ("One accounting pass")
says why in that order. The rules are in core/ (deltas, footprints), the API shapes in kube/; this module orchestrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from jouleledger.controller.cluster import ClusterState
from jouleledger.controller.config import OperatorConfig
from jouleledger.controller.jobs import JobRecorder
from jouleledger.controller.owners import OwnerVerifier
from jouleledger.controller.promsource import AccountingSource
from jouleledger.controller.relist import Relister, relist_every_passes
from jouleledger.controller.scrape import OK, ScrapeOutcome
from jouleledger.controller.serving import ServingAccounting
from jouleledger.core.contract import sanitize_label
from jouleledger.core.deltas import AgentScrape, DeltaTracker, PodIdentity
from jouleledger.core.folded import FoldedUntil
from jouleledger.core.footprints import (
    CLOCK_SKEW_ALLOWANCE_S,
    AnsweredTicks,
    FootprintBook,
    WorkloadAccount,
    default_finalize_deadline_s,
    default_write_interval_s,
)
from jouleledger.core.operator_stats import NodeIntensity, OperatorStats, OperatorView
from jouleledger.core.sharding import UNSHARDED, ShardSpec, owned_deltas
from jouleledger.core.units import positive
from jouleledger.intensity import IntensityProvider, IntensityReading, read_zones
from jouleledger.kube.api import ApiError, KubeApi
from jouleledger.kube.footprints import FootprintStore
from jouleledger.kube.jobs import JobWriter

__all__ = ["Accountant", "CompletionSummary", "PassSummary", "collection_paused"]

log = logging.getLogger(__name__)

DEFAULT_ZONE_NAME: Final = "default"


@dataclass(frozen=True, slots=True)
class PassSummary:
    """What one pass did."""

    restored: bool
    agents: int
    scraped_ok: int
    folded_mj: int
    finalized: int
    annotated: int
    written: int
    write_errors: int


@dataclass(frozen=True, slots=True)
class CompletionSummary:
    """What one completion read did."""

    agents: int
    scraped_ok: int
    finalized: int
    annotated: int


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic garbage collection inside: the collector runs again on what outlives the block.

    A pass holds every agent's parsed scrape until all are folded; a young collection in the middle traverses all
    of them and moves them to the older generations, where the next collections traverse them again, although
    reference counting frees nearly all of them when the pass ends. Paused for the pass, one young collection at
    its end sees only what the pass kept. A collector that was off stays off (and collects nothing here)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect(0)


class Accountant:
    """Owns the ledger and runs accounting passes (all collaborators injected)."""

    def __init__(
        self,
        *,
        config: OperatorConfig,
        provider: IntensityProvider,
        api: KubeApi,
        scraper: AccountingSource,  # the direct AgentScraper, or controller/promsource.py's PrometheusSource
        cluster: ClusterState,
        scrape_interval_s: float,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        write_interval_s: float | None = None,
        finalize_deadline_s: float | None = None,
        clock_skew_s: float = CLOCK_SKEW_ALLOWANCE_S,
        write_concurrency: int = 16,
        max_writes_per_s: float = 50.0,
        serving: ServingAccounting | None = None,
        shard: ShardSpec = UNSHARDED,
        completion_source: AccountingSource | None = None,
        completion_poll_s: float = 0.0,
    ) -> None:
        positive("scrape_interval_s", scrape_interval_s)
        if not completion_poll_s >= 0:
            raise ValueError(f"completion_poll_s must be 0 (off) or more, not {completion_poll_s!r}")
        self.config = config
        self.provider = provider
        self.api = api
        self.footprints = FootprintStore(api, concurrency=write_concurrency)
        self.scraper = scraper
        self.cluster = cluster
        self.interval_s = scrape_interval_s
        self.dry_run = dry_run
        self._clock = clock
        self._monotonic = monotonic
        self.write_interval_s = (
            default_write_interval_s(scrape_interval_s) if write_interval_s is None else write_interval_s
        )
        self.writes_per_pass = max(1, int(max_writes_per_s * scrape_interval_s))
        self.finalize_deadline_s = (
            default_finalize_deadline_s(scrape_interval_s) if finalize_deadline_s is None else finalize_deadline_s
        )
        self.clock_skew_s = clock_skew_s
        self.ledger = FootprintBook(config.currency)
        self.tracker = DeltaTracker(max_gpu_power_w=config.max_gpu_power_w)
        self.folded = FoldedUntil()  # per node, the finished pods agents may leave out (core/folded.py)
        self.stats = OperatorStats()
        self.relister = Relister(
            cluster, api, self.stats, every_passes=relist_every_passes(config.relist_interval_s, scrape_interval_s)
        )
        self.restored = False
        self._folded_tick: dict[str, float] = {}
        self._scrape_ok: set[str] = set()
        self._last_end: dict[str, float] = {}
        self._last_pass_s: float | None = None
        self.passes = 0
        self.owners = OwnerVerifier(
            cluster, api, monotonic=monotonic, stats=self.stats, team_key=sanitize_label(config.team_label)
        )
        self.recorder = JobRecorder(
            ledger=self.ledger,
            cluster=cluster,
            writer=JobWriter(api, clock=clock),
            stats=self.stats,
            deadline_s=self.finalize_deadline_s,
            clock_skew_s=clock_skew_s,
            dry_run=dry_run,
        )
        self._view = self.stats.view(self.ledger.rollups(), {})
        self.serving = serving  # energy per request/token of annotated serving pods (controller/serving.py)
        self.shard = shard  # the workloads this process accounts and writes (core/sharding.py)
        # Completion reads (run_completion_read): a second source of its own (its memos and connections are not
        # the pass's), every completion_poll_s; 0 or no source: finished Jobs wait for the passes.
        self.completion_source = completion_source
        self.completion_poll_s = completion_poll_s
        self._ledger_lock = asyncio.Lock()  # a pass's fold to its last write, or a completion read's fold to its end
        self._read_started_s: dict[str, float] = {}  # per node: when the read folded last began (monotonic)

    # --- views -------------------------------------------------------------------------------------------------

    def view(self) -> OperatorView:
        """The latest immutable view (safe to call from the metrics server's threads)."""
        return self._view

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy once restored and while passes complete (none older than three intervals)."""
        age = None if self._last_pass_s is None else self._monotonic() - self._last_pass_s
        healthy = self.restored and age is not None and age <= 3 * self.interval_s + 30
        return healthy, {
            "restored": self.restored,
            "passes": self.passes,
            "last_pass_age_s": None if age is None else round(age, 3),
            "agents": self.stats.agents,
            "workloads": len(self.ledger.accounts),
            "rejected_samples": dict(self.stats.rejected),
            "dry_run": self.dry_run,
        }

    # --- restore -----------------------------------------------------------------------------------------------

    async def restore(self) -> int:
        """Load every persisted footprint into the ledger and the tracker's baselines (once)."""
        if self.restored:
            return 0
        accounts, unreadable = await self.footprints.load(currency=self.config.currency, missing_ok=self.dry_run)
        self.stats.count_error("unreadable_footprint", unreadable)
        for account in accounts:
            if self.shard.owns(account.ref.uid):  # another shard's footprints: it restores and writes them
                self.ledger.restore(account)
                self.folded.restored_from(account.folded_until)
        watermarks = self.tracker.restore_all(self.ledger.watermarks())
        self.restored = True
        log.info("restored %d footprints (%d series watermarks)", len(self.ledger.accounts), watermarks)
        return len(self.ledger.accounts)

    # --- one pass ----------------------------------------------------------------------------------------------

    async def run_pass(self) -> PassSummary:
        """One accounting pass (docs/architecture.md, "One accounting pass")."""
        if not self.restored:
            try:
                await self.restore()
            except ApiError as error:
                log.error("cannot restore the ledger from the API (retrying next pass): %s", error)
                self.stats.count_error("restore_failed")
                self._publish()
                return PassSummary(False, 0, 0, 0, 0, 0, 0, 0)
        started = self._monotonic()
        await self.relister.maybe_reconcile()  # forget what was deleted while a watch was down (controller/relist.py)
        targets = self.cluster.agent_targets()
        self.stats.agents = len(targets)
        async with contextlib.AsyncExitStack() as held:
            with collection_paused():  # the allocations of the scrape and the fold: see collection_paused
                read_started = self._monotonic()
                outcomes = await self.scraper.scrape_all(targets, self.folded.values())
                # Let the loop finish the step that resumed this task: its wake-up holds the finished future, and
                # so every agent's answer (or the query's), until the task next yields, and the fold may not yield.
                await asyncio.sleep(0)
                # Held to the pass's last write; a completion read folding meanwhile finishes first.
                await held.enter_async_context(self._ledger_lock)
                scraped = self._monotonic()
                now = self._clock()
                folded_mj, scraped_ok = await self._fold(outcomes, now, read_started)
                del outcomes  # the scrapes are garbage now, not traversed by the collection that ends the block
            return await self._finish_pass(now, started, scraped, agents=len(targets), folded=(folded_mj, scraped_ok))

    async def _finish_pass(
        self, now: float, started: float, scraped: float, *, agents: int, folded: tuple[int, int]
    ) -> PassSummary:
        """A pass after its fold (the ledger lock held): the Jobs, the writes, the stats; ``folded``: the energy
        folded (mJ) and the agents that answered."""
        folded_mj, scraped_ok = folded
        if self.serving is not None:
            await self.serving.run_pass(self.api, now)
        answered = AnsweredTicks(self._scrape_ok, self._folded_tick)
        self.stats.oldest_tick_age_s = answered.lag_s(now)
        finalized = len(self.recorder.finalize(now, self._folded_tick, answered))
        decided = self._monotonic()
        # Final footprints first and their Jobs annotated at once; then the running ones (a Job's annotation never
        # waits behind the periodic writes of thousands of running workloads).
        written, write_errors = await self._persist(now, finals_only=True)
        annotated = await self.recorder.annotate(now)
        more, more_errors = await self._persist(now, budget=self.writes_per_pass - written - write_errors)
        written, write_errors = written + more, write_errors + more_errors
        self.folded.advance(self.ledger.persisted)
        self._collect_garbage(now)
        self.passes += 1
        self._last_pass_s = self._monotonic()
        self.stats.observe_pass(scraped - started, decided - scraped, self._last_pass_s - decided)
        self._publish()
        log.debug(
            "pass %d: %d/%d agents in %.3fs, fold %.3fs, %d footprints written (%d failed), %d Jobs annotated, %.3fs",
            self.passes,
            scraped_ok,
            agents,
            scraped - started,
            decided - scraped,
            written,
            write_errors,
            annotated,
            self._last_pass_s - started,
        )
        return PassSummary(True, agents, scraped_ok, folded_mj, finalized, annotated, written, write_errors)

    async def run_completion_read(self) -> CompletionSummary:
        """Read only the agents that finished Jobs with every pod seen still wait for, fold them, and freeze, write
        and annotate the Jobs that are then ready (docs/architecture.md, "Completion reads"): a Job's footprint
        need not wait for the next pass, nor for the agents of other nodes. Nothing happens before the ledger is
        restored, or without a completion source."""
        source = self.completion_source
        if source is None or not self.restored:
            return CompletionSummary(0, 0, 0, 0)
        nodes = self.recorder.waiting_nodes(self._folded_tick)
        targets = [target for target in self.cluster.agent_targets() if target.node in nodes]
        if not targets:
            return CompletionSummary(0, 0, 0, 0)
        read_started = self._monotonic()
        outcomes = await source.scrape_all(targets, self.folded.values(target.node for target in targets))
        async with self._ledger_lock:
            now = self._clock()
            _, scraped_ok = await self._fold(outcomes, now, read_started, full=False)
            del outcomes
            frozen = self.recorder.finalize(now, self._folded_tick, None, seen_only=True)
            written = annotated = 0
            if frozen:  # their footprints only (a pass writes the others, and picks up a write that failed here)
                written, _ = await self._write_all(frozen, now)
                annotated = await self.recorder.annotate(now)
        self.stats.completion_reads += 1
        log.debug(
            "completion read: %d/%d agents, %d Jobs final, %d written, %d annotated",
            scraped_ok,
            len(targets),
            len(frozen),
            written,
            annotated,
        )
        return CompletionSummary(len(targets), scraped_ok, len(frozen), annotated)

    def _publish(self) -> None:
        self._view = self.stats.view(self.ledger.rollups(), self.provider.fallbacks)

    async def _fold(
        self, outcomes: list[ScrapeOutcome], now: float, read_started_s: float, *, full: bool = True
    ) -> tuple[int, int]:
        """Fold every agent that answered; ``read_started_s``: when the read that got ``outcomes`` began (monotonic).
        A node folded from a read that began later (a completion read while this pass read) keeps that newer state:
        this read's older counters of it are left out. ``full``: a pass (counted as scrapes; the agents it reached
        are the answering agents finished Jobs wait for), not a completion read."""
        ok: list[AgentScrape] = []
        for outcome in outcomes:
            if full:
                self.stats.count_scrape(outcome.result)
            if outcome.result == OK and outcome.scrape is not None:
                ok.append(outcome.scrape)
        if full:
            self._scrape_ok = {scrape.node for scrape in ok}
        read_at = self._read_started_s
        ok = [scrape for scrape in ok if read_at.get(scrape.node, -math.inf) <= read_started_s]
        zones = {scrape.node: self.cluster.zone_of_node(scrape.node) or DEFAULT_ZONE_NAME for scrape in ok}
        readings, failed = await read_zones(self.provider, zones.values(), now)
        self.stats.count_error("intensity_error", failed)
        folded = 0
        for scrape in ok:
            reading = readings.get(zones[scrape.node])
            if reading is None:
                continue
            for bad in scrape.rejected:
                self.stats.count_rejected(bad.reason)
                log.warning("agent on %s: rejected %s %s (%s)", scrape.node, bad.sample, bad.labels, bad.reason)
            identities = [identity for group in scrape.pods.values() for identity in group]
            if not await self.owners.check(identities):
                continue  # the API cannot say who owns its pods yet: the node's counters wait for the next pass
            try:
                folded += self._fold_one(scrape, reading, zones[scrape.node], now)
                read_at[scrape.node] = read_started_s
            except Exception:  # one agent's data must never stop the others being accounted
                log.exception("agent on %s: its scrape could not be folded; rejected", scrape.node)
                self.stats.count_rejected("agent_failed")
        return folded, len(ok)

    def _fold_one(self, scrape: AgentScrape, reading: IntensityReading, zone: str, now: float) -> int:
        deltas = owned_deltas(self.tracker.observe(scrape), self._workload_uid, self.shard)
        self.stats.count_deltas(scrape.node, deltas)
        if deltas.resets:
            log.warning("agent on %s: %d counters reset (agent restarted?)", scrape.node, deltas.resets)
        if deltas.regressions or deltas.implausible:
            log.warning(
                "agent on %s (epoch %s): rejected %d counters that went down and %d above the power limit",
                scrape.node,
                deltas.epoch,
                deltas.regressions,
                deltas.implausible,
            )
        start = self._last_end.get(scrape.node, now)
        rates = self.config.interval_rates(
            start, now, zone, reading, backend=scrape.backend, simulated=scrape.simulated
        )
        summary = self.ledger.fold(deltas, rates, self.owners.attribute, scrape.model_of)
        if self.serving is not None:
            self.serving.add_deltas(deltas, rates)
        self._last_end[scrape.node] = now
        self._folded_tick[scrape.node] = scrape.last_tick_unix_s
        self.folded.folded(scrape)
        known = self.stats.node_intensity.get(scrape.node)
        if known is None or (known.zone, known.source, known.g_per_kwh) != (
            reading.zone,
            reading.source,
            reading.g_per_kwh,
        ):
            self.stats.node_intensity[scrape.node] = NodeIntensity(reading.zone, reading.source, reading.g_per_kwh)
        return summary.energy_mj

    def _workload_uid(self, pod: PodIdentity) -> str:
        return self.owners.attribute(pod).workload.uid

    # --- persistence -------------------------------------------------------------------------------------------

    async def _persist(self, now: float, *, finals_only: bool = False, budget: int | None = None) -> tuple[int, int]:
        # Final ones first, then the least recently written; ``finals_only``: the final ones not written yet.
        limit = self.writes_per_pass if budget is None else max(0, budget)
        due = self.ledger.due_for_write(now, self.write_interval_s, limit)
        if finals_only:
            due = [account for account in due if account.final is not None and not account.final_written]
        return await self._write_all(due, now)

    async def flush(self) -> tuple[int, int]:
        """Persist every changed footprint now, without the per-pass limit (at shutdown)."""
        if not self.restored:
            return 0, 0
        now = self._clock()
        written, errors = await self._write_all(self.ledger.due_for_write(now, 0.0, len(self.ledger.accounts)), now)
        log.info("flushed %d footprints at shutdown (%d failed)", written, errors)
        return written, errors

    async def _write_all(self, due: list[WorkloadAccount], now: float) -> tuple[int, int]:
        results = await asyncio.gather(*(self._write(account, now) for account in due))
        errors = results.count(False)
        return len(results) - errors, errors

    async def _write(self, account: WorkloadAccount, now: float) -> bool:
        ref = account.ref
        if self.dry_run:
            log.debug("dry run: would write footprint %s/%s (%s %s)", ref.namespace, ref.uid, ref.kind, ref.name)
            account.written(now)
            return True
        account.folded_until.update(self.folded.persisted_for(account.nodes))
        try:
            conflicts = await self.footprints.save(account, currency=self.config.currency, merge=self._merge_stored)
        except ApiError as error:
            log.warning("cannot write footprint %s/%s: %s", ref.namespace, ref.uid, error)
            self.stats.count_error("footprint_write")
            return False
        self.stats.count_error("footprint_conflict", conflicts)
        account.written(now)
        return True

    def _merge_stored(self, account: WorkloadAccount, previous: WorkloadAccount) -> None:
        self.ledger.merge_stored(account, previous, self.tracker)

    def _collect_garbage(self, now: float) -> None:
        for uid in self.ledger.collectable(now, self.recorder.done):
            account = self.ledger.accounts[uid]
            self.ledger.forget(uid)
            self.footprints.forget(account.ref.namespace, uid)

    # --- the loop ----------------------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Passes every ``interval_s`` until ``stop`` is set, and completion reads every ``completion_poll_s``
        between and during them; a failing pass or read is logged and the loop goes on."""
        completions = None
        if self.completion_source is not None and self.completion_poll_s > 0:
            completions = asyncio.create_task(
                self._repeat(stop, lambda: self.completion_poll_s, self.run_completion_read, "completion read"),
                name="jouleledger completion reads",
            )
        try:
            await self._repeat(stop, lambda: self.interval_s, self.run_pass, "pass")
        finally:
            if completions is not None:
                completions.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await completions

    async def _repeat(
        self, stop: asyncio.Event, every_s: Callable[[], float], step: Callable[[], Awaitable[object]], what: str
    ) -> None:
        """``step`` every ``every_s()`` seconds (start to start; at once when it took longer) until ``stop``; an
        exception it raises is logged and counted (``pass_failed``, ``completion_read_failed``)."""
        while not stop.is_set():
            started = self._monotonic()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("accounting %s failed", what)
                self.stats.count_error(f"{what.replace(' ', '_')}_failed")
            remaining = every_s() - (self._monotonic() - started)
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), remaining)
            else:
                await asyncio.sleep(0)  # let the other loop and the watches run

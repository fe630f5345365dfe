"""The accounting loop: scrape every agent, fold the deltas into the ledger, persist footprints, annotate Jobs.

One pass (every scrape interval):

1. **Restore** (first pass only, retried until it succeeds): read every ``WorkloadFootprint`` and load its totals
   and watermarks, so that counters folded before a restart are not counted again (see
   :mod:`jouleledger.core.footprint`). Nothing is folded before the restore succeeded.
2. **Scrape** the agents found by the pod watch, concurrently, with a timeout and per-agent backoff.
3. **Fold** each agent's deltas as one interval ``(previous scrape, now]`` with the grid intensity of the node's
   zone at ``now``. A node whose intensity cannot be read is not folded this pass (its counters keep growing, the
   next pass folds the difference: nothing is lost).
4. **Finalize** finished Jobs once the agents of the nodes their pods used, and every agent that answered, have
   reported a tick after the Job finished (or once the deadline passed): the footprint is frozen, written to its
   ``WorkloadFootprint`` (``finalized: true``), and only then the Job is annotated, once: the Job is re-read
   first, and an existing ``jouleledger.io/footprint-version`` annotation means it was done already (a
   re-delivered event, a restart, a relist never writes twice); the values always come from the frozen record,
   so a retry writes the same values. An Event on the Job says whether the footprint was recorded, recorded
   incomplete, or not recorded (and why).
5. **Persist** changed footprints: each at most every ``write_interval_s`` (default: 300 s or four intervals),
   final ones at once, and at most ``max_writes_per_s`` x interval writes per pass (final ones first), so that
   thousands of running workloads do not flood the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jouleledger.controller.cluster import ClusterState, JobInfo
from jouleledger.controller.config import OperatorConfig
from jouleledger.controller.scrape import OK, AgentScraper, ScrapeOutcome
from jouleledger.controller.serving import ServingAccounting
from jouleledger.controller.status import NodeIntensity, OperatorStats, OperatorView
from jouleledger.core.footprint import (
    UNASSIGNED_TEAM,
    Attribution,
    DeltaTracker,
    IntervalRates,
    Ledger,
    WorkloadAccount,
)
from jouleledger.core.footprint_job import (
    CLOCK_SKEW_ALLOWANCE_S,
    KEY_VERSION,
    decide_finalization,
    job_annotations,
    method_of,
)
from jouleledger.core.footprint_record import (
    GROUP,
    PLURAL,
    VERSION,
    RecordError,
    account_from_object,
    footprint_object,
    footprint_status,
    format_time,
)
from jouleledger.core.footprint_scrape import AgentScrape, PodIdentity
from jouleledger.core.units import mj_to_kwh
from jouleledger.core.workload import resolve_workload
from jouleledger.intensity import IntensityProvider
from jouleledger.kube.api import ApiError, ConflictError, KubeApi, NotFoundError

__all__ = ["Accountant", "PassSummary"]

log = logging.getLogger(__name__)

FOOTPRINTS_PATH: Final = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
DEFAULT_ZONE_NAME: Final = "default"
EVENT_COMPONENT: Final = "jouleledger-operator"
REASON_RECORDED: Final = "FootprintRecorded"
REASON_INCOMPLETE: Final = "FootprintIncomplete"
REASON_NOT_RECORDED: Final = "FootprintNotRecorded"
_LABEL_CHARS: Final = re.compile(r"[^A-Za-z0-9_]")


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


def _footprint_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


class Accountant:
    """Owns the ledger and runs accounting passes (all collaborators injected)."""

    def __init__(
        self,
        *,
        config: OperatorConfig,
        provider: IntensityProvider,
        api: KubeApi,
        scraper: AgentScraper,
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
    ) -> None:
        if scrape_interval_s <= 0:
            raise ValueError(f"scrape_interval_s must be positive, got {scrape_interval_s}")
        self.config = config
        self.provider = provider
        self.api = api
        self.scraper = scraper
        self.cluster = cluster
        self.interval_s = scrape_interval_s
        self.dry_run = dry_run
        self._clock = clock
        self._monotonic = monotonic
        self.write_interval_s = max(4 * scrape_interval_s, 300.0) if write_interval_s is None else write_interval_s
        self.writes_per_pass = max(1, int(max_writes_per_s * scrape_interval_s))
        self.finalize_deadline_s = (
            max(10 * scrape_interval_s, 120.0) if finalize_deadline_s is None else finalize_deadline_s
        )
        self.clock_skew_s = clock_skew_s
        self._write_slots = asyncio.Semaphore(write_concurrency)
        self.ledger = Ledger(config.currency)
        self.tracker = DeltaTracker()
        self.stats = OperatorStats()
        self.restored = False
        self._exists: set[str] = set()
        self._folded_tick: dict[str, float] = {}
        self._scrape_ok: set[str] = set()
        self._last_end: dict[str, float] = {}
        self._done_jobs: set[str] = set()
        self._team_key = _LABEL_CHARS.sub("_", config.team_label)
        self._last_pass_s: float | None = None
        self.passes = 0
        self._view = self.stats.view(self.ledger.rollups(), {})
        self.serving = serving  # energy per request/token of annotated serving pods (controller/serving.py)

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
        try:
            objects = await self.api.list(FOOTPRINTS_PATH)
        except NotFoundError:
            if not self.dry_run:
                raise
            log.warning("the WorkloadFootprint CRD is not installed; dry run starts from an empty ledger")
            objects = []
        for obj in objects:
            metadata = obj.get("metadata") or {}
            name = str(metadata.get("name", ""))
            try:
                account = account_from_object(obj, currency=self.config.currency)
            except RecordError as error:
                log.warning("ignoring an unreadable footprint (it will be rewritten): %s", error)
                self.stats.count_error("unreadable_footprint")
                self._exists.add(name)
                continue
            self.ledger.restore(account)
            self._exists.add(name)
        watermarks = self.ledger.restore_into(self.tracker)
        self.restored = True
        log.info("restored %d footprints (%d series watermarks)", len(self.ledger.accounts), watermarks)
        return len(self.ledger.accounts)

    # --- one pass ----------------------------------------------------------------------------------------------

    async def run_pass(self) -> PassSummary:
        """One accounting pass (see the module docstring)."""
        if not self.restored:
            try:
                await self.restore()
            except ApiError as error:
                log.error("cannot restore the ledger from the API (retrying next pass): %s", error)
                self.stats.count_error("restore_failed")
                self._publish()
                return PassSummary(False, 0, 0, 0, 0, 0, 0, 0)
        started = self._monotonic()
        targets = self.cluster.agent_targets()
        self.stats.agents = len(targets)
        outcomes = await self.scraper.scrape_all(targets)
        scraped = self._monotonic()
        now = self._clock()
        folded_mj, scraped_ok = await self._fold(outcomes, now)
        if self.serving is not None:
            await self.serving.run_pass(self.api, now)
        finalized = self._finalize_jobs(now)
        folded = self._monotonic()
        written, write_errors = await self._persist(now)
        annotated = await self._annotate_jobs(now)
        self._collect_garbage(now)
        self.passes += 1
        self._last_pass_s = self._monotonic()
        self._publish()
        log.debug(
            "pass %d: %d/%d agents in %.3fs, fold %.3fs, %d footprints written (%d failed), %d Jobs annotated, %.3fs",
            self.passes,
            scraped_ok,
            len(targets),
            scraped - started,
            folded - scraped,
            written,
            write_errors,
            annotated,
            self._last_pass_s - started,
        )
        return PassSummary(True, len(targets), scraped_ok, folded_mj, finalized, annotated, written, write_errors)

    def _publish(self) -> None:
        self._view = self.stats.view(self.ledger.rollups(), self.provider.fallbacks)

    async def _fold(self, outcomes: list[ScrapeOutcome], now: float) -> tuple[int, int]:
        ok: list[AgentScrape] = []
        for outcome in outcomes:
            if outcome.result in self.stats.scrapes:
                self.stats.scrapes[outcome.result] += 1
            if outcome.result == OK and outcome.scrape is not None:
                ok.append(outcome.scrape)
        zones = {scrape.node: self.cluster.zone_of_node(scrape.node) or DEFAULT_ZONE_NAME for scrape in ok}
        readings: dict[str, Any] = {}
        for zone in sorted(set(zones.values())):
            try:
                readings[zone] = await self.provider.intensity(zone, now)
            except Exception:  # a provider must not raise; if one does, that zone waits for the next pass
                log.exception("intensity provider failed for zone %s; not folding its nodes this pass", zone)
                self.stats.count_error("intensity_error")
        self._scrape_ok = {scrape.node for scrape in ok}
        folded = 0
        for scrape in ok:
            reading = readings.get(zones[scrape.node])
            if reading is None:
                continue
            for rejection in scrape.rejected:
                self.stats.rejected[rejection.reason] = self.stats.rejected.get(rejection.reason, 0) + 1
                log.warning(
                    "agent on %s: rejected %s %s (%s)",
                    scrape.node,
                    rejection.sample,
                    rejection.labels,
                    rejection.reason,
                )
            deltas = self.tracker.observe(scrape)
            if deltas.resets:
                self.stats.counter_resets[scrape.node] = self.stats.counter_resets.get(scrape.node, 0) + deltas.resets
                log.warning("agent on %s: %d counters went down (agent restarted?)", scrape.node, deltas.resets)
            rates = IntervalRates(
                start_unix_s=self._last_end.get(scrape.node, now),
                end_unix_s=now,
                zone=reading.zone,
                intensity_g_per_kwh=reading.g_per_kwh,
                intensity_source=reading.source,
                pue=self.config.pue,
                price_per_kwh=self.config.price_of(zones[scrape.node]),
                currency=self.config.currency,
                method=method_of(scrape.backend, scrape.simulated),
                embodied_g_per_gpu_hour=self.config.embodied_g_per_gpu_hour,
                default_embodied_g_per_gpu_hour=self.config.default_embodied_g_per_gpu_hour,
            )
            summary = self.ledger.fold(deltas, rates, self._attribute, scrape.model_of)
            if self.serving is not None:
                self.serving.add_deltas(deltas, rates)
            folded += summary.energy_mj
            self._last_end[scrape.node] = now
            self._folded_tick[scrape.node] = scrape.last_tick_unix_s
            self.stats.node_intensity[scrape.node] = NodeIntensity(reading.zone, reading.source, reading.g_per_kwh)
        return folded, len(ok)

    def _attribute(self, pod: PodIdentity) -> Attribution:
        workload = resolve_workload(pod.namespace, pod.name, pod.uid, pod.owner, self.cluster.owners)
        team = pod.labels.get(self._team_key) or self.cluster.team_of(pod.uid) or UNASSIGNED_TEAM
        return Attribution(workload, team)

    # --- Jobs --------------------------------------------------------------------------------------------------

    def _finalize_jobs(self, now: float) -> int:
        """Freeze the footprints of finished Jobs that are ready (annotating happens after they are persisted)."""
        finalized = 0
        agent_nodes = {target.node for target in self.cluster.agent_targets()}
        for job in list(self.cluster.jobs.values()):
            if job.uid in self._done_jobs:
                continue
            state = job.state
            account = self.ledger.accounts.get(job.uid)
            if state.annotated:
                self._done_jobs.add(job.uid)
                continue
            if not state.finished or state.completion_unix_s is None:
                continue
            if account is not None and account.final is not None:
                continue  # waiting for its footprint to be written, then annotated
            if not self.cluster.is_top_level_job(job):
                self._done_jobs.add(job.uid)
                continue  # charged to its owner (a JobSet...): that workload's footprint holds it
            # Every agent that answered the latest pass must have a reading after the completion (a pod that ran
            # briefly may not have shown up yet), and so must the agents of the nodes the Job is known to have used.
            nodes = (self.cluster.job_nodes(job.uid) & agent_nodes) | (account.nodes if account else set())
            nodes |= self._scrape_ok
            decision = decide_finalization(
                state.completion_unix_s,
                nodes,
                self._folded_tick,
                now,
                self.finalize_deadline_s,
                clock_skew_s=self.clock_skew_s,
            )
            if not decision.ready:
                continue
            if account is None:
                log.debug("Job %s/%s finished without GPU energy: nothing to record", job.namespace, job.name)
                self._done_jobs.add(job.uid)
                continue
            final = self.ledger.finalize(job.uid, state.completion_unix_s, now, missing_nodes=decision.missing_nodes)
            finalized += 1
            if decision.timed_out:
                log.warning(
                    "Job %s/%s: agents on %s did not report after it finished; recording what was folded",
                    job.namespace,
                    job.name,
                    ", ".join(decision.missing_nodes),
                )
            log.info(
                "Job %s/%s footprint final: %.6f kWh, %.3f g CO2e",
                job.namespace,
                job.name,
                mj_to_kwh(final.energy_mj),
                final.carbon_g,
            )
        return finalized

    async def _annotate_jobs(self, now: float) -> int:
        annotated = 0
        for job in list(self.cluster.jobs.values()):
            if job.uid in self._done_jobs:
                continue
            account = self.ledger.accounts.get(job.uid)
            if account is None or account.final is None or not account.final_written:
                continue  # not final, or its final footprint is not written yet
            if await self._annotate(job, account, now):
                annotated += 1
        return annotated

    async def _annotate(self, job: JobInfo, account: WorkloadAccount, now: float) -> bool:
        final = account.final
        assert final is not None
        annotations = job_annotations(final)
        if self.dry_run:
            log.info("dry run: would annotate Job %s/%s with %s", job.namespace, job.name, annotations)
            self._done_jobs.add(job.uid)
            return False
        path = f"/apis/batch/v1/namespaces/{job.namespace}/jobs/{job.name}"
        try:
            current = await self.api.get(path)
            if current is None or (current.get("metadata") or {}).get("uid") != job.uid:
                self._done_jobs.add(job.uid)
                self.stats.count_error("job_gone")
                return False
            metadata = current.get("metadata") or {}
            if KEY_VERSION in (metadata.get("annotations") or {}):
                self._done_jobs.add(job.uid)
                return False
            patch: dict[str, Any] = {"annotations": annotations}
            if metadata.get("resourceVersion"):
                patch["resourceVersion"] = metadata["resourceVersion"]
            await self.api.merge_patch(path, {"metadata": patch})
        except ConflictError:
            log.info("Job %s/%s changed while annotating; retrying next pass", job.namespace, job.name)
            return False
        except ApiError as error:
            if error.status in (0, 429) or error.status >= 500:
                self.stats.count_error("api_unavailable")
                log.warning("cannot annotate Job %s/%s yet: %s", job.namespace, job.name, error)
                return False
            self.stats.count_error(f"http_{error.status}")
            self._done_jobs.add(job.uid)
            await self._event(job, "Warning", REASON_NOT_RECORDED, f"annotations not written: {error.reason}")
            return False
        self._done_jobs.add(job.uid)
        self.stats.footprints_written += 1
        self.stats.observe_delay(now - final.completion_unix_s)
        summary = (
            f"{annotations['jouleledger.io/energy-kwh']} kWh, {annotations['jouleledger.io/gpu-hours']} GPU-hours, "
            f"{annotations['jouleledger.io/co2e-grams']} g CO2e, {annotations['jouleledger.io/cost']}"
        )
        if final.complete:
            await self._event(job, "Normal", REASON_RECORDED, f"footprint recorded: {summary}")
        else:
            await self._event(
                job,
                "Warning",
                REASON_INCOMPLETE,
                f"footprint recorded without a final reading from the agents on {', '.join(final.missing_nodes)}: "
                f"{summary}",
            )
        return True

    async def _event(self, job: JobInfo, kind: str, reason: str, message: str) -> None:
        """Post an Event on the Job; its name is derived from the Job and reason, so a repeat is a no-op."""
        name = f"{job.name[:200]}.jouleledger.{reason.lower()}.{job.uid[:8]}"
        stamp = format_time(self._clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": job.namespace},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.name,
                "namespace": job.namespace,
                "uid": job.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": "jouleledger.io/operator",
            "reportingInstance": EVENT_COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.api.create(f"/api/v1/namespaces/{job.namespace}/events", body)
        except ConflictError:
            pass
        except ApiError as error:
            log.warning("cannot post event %s on Job %s/%s: %s", reason, job.namespace, job.name, error)

    # --- persistence -------------------------------------------------------------------------------------------

    async def _persist(self, now: float) -> tuple[int, int]:
        due = [
            account
            for account in self.ledger.accounts.values()
            if account.dirty
            and (
                (account.final is not None and not account.final_written)
                or now - account.written_unix_s >= self.write_interval_s
            )
        ]
        if not due:
            return 0, 0
        # Final footprints first (a Job waits for its annotation), then the least recently written; the rest waits
        # for the next pass. Restarts lose nothing by writing less often: the watermarks make recounting exact.
        due.sort(key=lambda account: (account.final is None, account.written_unix_s))
        due = due[: self.writes_per_pass]
        results = await asyncio.gather(*(self._write(account, now) for account in due))
        errors = results.count(False)
        return len(results) - errors, errors

    async def _write(self, account: WorkloadAccount, now: float) -> bool:
        ref = account.ref
        if self.dry_run:
            log.debug("dry run: would write footprint %s/%s (%s %s)", ref.namespace, ref.uid, ref.kind, ref.name)
            account.dirty, account.written_unix_s = False, now
            account.final_written = account.final is not None
            return True
        async with self._write_slots:
            try:
                if ref.uid not in self._exists:
                    try:
                        await self.api.create(_footprint_path(ref.namespace), footprint_object(account))
                    except ConflictError:
                        existing = await self.api.get(_footprint_path(ref.namespace, ref.uid))
                        if existing is not None:
                            self._merge_existing(account, existing)
                    self._exists.add(ref.uid)
                await self.api.merge_patch(
                    _footprint_path(ref.namespace, ref.uid) + "/status", {"status": footprint_status(account)}
                )
            except NotFoundError:
                self._exists.discard(ref.uid)  # deleted meanwhile (its workload was): create it again next time
                self.stats.count_error("footprint_write")
                return False
            except ApiError as error:
                log.warning("cannot write footprint %s/%s: %s", ref.namespace, ref.uid, error)
                self.stats.count_error("footprint_write")
                return False
        account.dirty, account.written_unix_s = False, now
        account.final_written = account.final is not None
        return True

    def _merge_existing(self, account: WorkloadAccount, existing: Mapping[str, Any]) -> None:
        """A footprint this process did not know exists (forgotten, or written by another instance): add it."""
        try:
            previous = account_from_object(existing, currency=self.config.currency)
        except RecordError as error:
            log.warning("overwriting an unreadable footprint: %s", error)
            return
        if previous.final is not None:
            account.late_energy_mj += account.totals.energy_mj + previous.late_energy_mj
            account.totals = previous.totals
            account.final = previous.final
        else:
            current = account.totals
            current.add(
                previous.totals.energy_mj,
                previous.totals.gpu_seconds,
                previous.totals.operational_g,
                previous.totals.embodied_g,
                previous.totals.cost,
            )
        for watermark, value in previous.watermarks.items():
            account.watermarks.setdefault(watermark, value)
        account.pods_before += previous.pods_counted
        account.nodes |= previous.nodes
        account.sources |= previous.sources
        account.methods |= previous.methods
        if previous.first_seen_unix_s:
            account.first_seen_unix_s = min(account.first_seen_unix_s, previous.first_seen_unix_s)

    def _collect_garbage(self, now: float) -> None:
        """Forget written accounts that no longer hold any series: final ones at once, others after an hour.

        A forgotten account that sees energy again is merged with its footprint when written (see ``_write``)."""
        for uid in [
            uid
            for uid, account in self.ledger.accounts.items()
            if not account.dirty
            and not account.watermarks
            and (account.final is not None or now - account.last_seen_unix_s > 3600)
            and (account.final is None or uid in self._done_jobs)
        ]:
            self.ledger.forget(uid)
            self._exists.discard(uid)

    # --- the loop ----------------------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Passes every ``interval_s`` until ``stop`` is set; a failing pass is logged and the loop goes on."""
        while not stop.is_set():
            started = self._monotonic()
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("accounting pass failed")
                self.stats.count_error("pass_failed")
            remaining = self.interval_s - (self._monotonic() - started)
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), remaining)

"""Finished Jobs: freezing their footprints once final, and annotating each Job exactly once.

A finished top-level Job (no controller owner, or a CronJob) is finalized once every agent of the nodes its pods
used, and every agent that answered the latest pass, reported a tick after the Job finished, or once the deadline
passed (:func:`~jouleledger.core.footprints.decide_finalization`). Its frozen footprint is written first (by the
accountant), and only then the Job is annotated: the Job is re-read, an existing
``jouleledger.io/footprint-version`` means it was done already, and the values always come from the frozen record,
so a retry writes the same values. An Event on the Job says whether the footprint was recorded, recorded
incomplete, or not recorded (and why).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from typing import Final

from jouleledger.controller.cluster import ClusterState, JobInfo
from jouleledger.core.footprints import (
    KEY_CO2E,
    KEY_COST,
    KEY_ENERGY,
    KEY_GPU_HOURS,
    KEY_VERSION,
    FootprintBook,
    WorkloadAccount,
    decide_finalization,
    job_annotations,
)
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.core.units import mj_to_kwh
from jouleledger.kube.api import ApiError, ConflictError
from jouleledger.kube.jobs import JobWriter

__all__ = ["JobRecorder"]

log = logging.getLogger(__name__)

REASON_RECORDED: Final = "FootprintRecorded"
REASON_INCOMPLETE: Final = "FootprintIncomplete"
REASON_NOT_RECORDED: Final = "FootprintNotRecorded"


class JobRecorder:
    """Finalizes and annotates Jobs; ``done`` holds the UIDs of Jobs that need nothing more."""

    def __init__(
        self,
        *,
        ledger: FootprintBook,
        cluster: ClusterState,
        writer: JobWriter,
        stats: OperatorStats,
        deadline_s: float,
        clock_skew_s: float,
        dry_run: bool = False,
    ) -> None:
        self.ledger = ledger
        self.cluster = cluster
        self.jobs = writer
        self.stats = stats
        self.deadline_s = deadline_s
        self.clock_skew_s = clock_skew_s
        self.dry_run = dry_run
        self.done: set[str] = set()

    # --- Jobs --------------------------------------------------------------------------------------------------

    def finalize(self, now: float, folded_tick: Mapping[str, float], answered: Set[str]) -> int:
        """Freeze the footprints of finished Jobs that are ready (annotating happens after they are persisted)."""
        finalized = 0
        agent_nodes = {target.node for target in self.cluster.agent_targets()}
        for job in list(self.cluster.jobs.values()):
            if job.uid in self.done:
                continue
            state = job.state
            account = self.ledger.accounts.get(job.uid)
            if state.annotated:
                self.done.add(job.uid)
                continue
            if not state.finished or state.completion_unix_s is None:
                continue
            if account is not None and account.final is not None:
                continue  # waiting for its footprint to be written, then annotated
            if not self.cluster.is_top_level_job(job):
                self.done.add(job.uid)
                continue  # charged to its owner (a JobSet...): that workload's footprint holds it
            # Every agent that answered the latest pass must have a reading after the completion (a pod that ran
            # briefly may not have shown up yet), and so must the agents of the nodes the Job is known to have used.
            nodes = (self.cluster.job_nodes(job.uid) & agent_nodes) | (account.nodes if account else set())
            nodes |= answered
            decision = decide_finalization(
                state.completion_unix_s,
                nodes,
                folded_tick,
                now,
                self.deadline_s,
                clock_skew_s=self.clock_skew_s,
            )
            if not decision.ready:
                continue
            if account is None:
                log.debug("Job %s/%s finished without GPU energy: nothing to record", job.namespace, job.name)
                self.done.add(job.uid)
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
                mj_to_kwh(final.totals.energy_mj),
                final.totals.carbon_g,
            )
        return finalized

    async def annotate(self, now: float) -> int:
        annotated = 0
        for job in list(self.cluster.jobs.values()):
            if job.uid in self.done:
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
            self.done.add(job.uid)
            return False
        try:
            current = await self.jobs.read(job.namespace, job.name, job.uid)
            if current is None:
                self.done.add(job.uid)
                self.stats.count_error("job_gone")
                return False
            if KEY_VERSION in ((current.get("metadata") or {}).get("annotations") or {}):
                self.done.add(job.uid)
                return False
            await self.jobs.annotate(current, annotations)
        except ConflictError:
            log.info("Job %s/%s changed while annotating; retrying next pass", job.namespace, job.name)
            return False
        except ApiError as error:
            if error.transient:
                self.stats.count_error("api_unavailable")
                log.warning("cannot annotate Job %s/%s yet: %s", job.namespace, job.name, error)
                return False
            self.stats.count_error(f"http_{error.status}")
            self.done.add(job.uid)
            await self._event(job, "Warning", REASON_NOT_RECORDED, f"annotations not written: {error.reason}")
            return False
        self.done.add(job.uid)
        self.stats.footprints_written += 1
        self.stats.observe_delay(now - final.completion_unix_s)
        summary = (
            f"{annotations[KEY_ENERGY]} kWh, {annotations[KEY_GPU_HOURS]} GPU-hours, "
            f"{annotations[KEY_CO2E]} g CO2e, {annotations[KEY_COST]}"
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
        try:
            await self.jobs.event(job, kind, reason, message)
        except ApiError as error:
            log.warning("cannot post event %s on Job %s/%s: %s", reason, job.namespace, job.name, error)

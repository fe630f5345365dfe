"""Finished Jobs: freezing their footprints once final, and annotating each Job exactly once.

A finished top-level Job (no controller owner, or a CronJob) is finalized once every agent of the nodes its pods
used, and every agent that answered the latest pass, reported a tick after the Job finished, or once the deadline
passed (:func:`~jouleledger.core.footprints.decide_finalization`). A node its pods used whose agent is gone (deleted,
or removed from the view by the periodic relist, ``controller/relist.py``) is waited for until that deadline, as
a replacement agent may still report; then the footprint is recorded incomplete, that node in ``missingNodes``, with
the energy folded from it before. Its frozen footprint is written first (by the accountant), and only then the Job is
annotated. The ``WorkloadFootprint`` is the source of truth: the Job is
re-read and written unless its ``jouleledger.io/`` annotations already are exactly the footprint's (so a re-delivered
event, a restart or a relist never writes twice, and annotations a user set beforehand never block it); the values
always come from the frozen record, so a retry writes the same values. Annotations edited afterwards are seen in the
Job's watch events, restored, counted (``jouleledger_operator_annotation_tampering_total``) and reported in a
``FootprintTampered`` Event. An Event on the Job says whether the footprint was recorded, recorded incomplete, or
not recorded (and why); the recorded one is posted just before the annotations are written (its name is fixed, so
posting it again is a no-op), so that an operator killed between the two writes loses neither.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Final

from jouleledger.controller.cluster import ClusterState, JobInfo
from jouleledger.core.footprints import (
    KEY_CO2E,
    KEY_COST,
    KEY_ENERGY,
    KEY_GPU_HOURS,
    AnsweredTicks,
    FinalRecord,
    FootprintBook,
    WorkloadAccount,
    decide_finalization,
    job_annotations,
    nodes_behind,
)
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.core.units import mj_to_kwh
from jouleledger.kube.api import ApiError, ConflictError
from jouleledger.kube.jobs import JobWriter, footprint_annotations

__all__ = ["JobRecorder"]

log = logging.getLogger(__name__)

REASON_RECORDED: Final = "FootprintRecorded"
REASON_INCOMPLETE: Final = "FootprintIncomplete"
REASON_NOT_RECORDED: Final = "FootprintNotRecorded"
REASON_TAMPERED: Final = "FootprintTampered"
ANNOTATE_CONCURRENCY: Final = 16
"""Jobs annotated at once in a pass (a Job waits for its annotation, not for the other Jobs')."""


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
        self.expected: dict[str, dict[str, str]] = {}  # Job uid -> the annotations it carries (verified)
        # Job uid -> the Job (as the watch last delivered it) and the annotations found on it: an object the watch
        # has not replaced since is not compared again (an edit arrives as a new object).
        self._verified: dict[str, tuple[JobInfo, dict[str, str]]] = {}

    # --- Jobs --------------------------------------------------------------------------------------------------

    def _waiting(
        self, agent_nodes: frozenset[str]
    ) -> Iterator[tuple[JobInfo, float, WorkloadAccount | None, set[str]]]:
        """The finished top-level Jobs whose footprint is not final yet: each with its completion time, its account
        (None: no energy folded for it so far) and the nodes with an agent its pods are known to have used."""
        for job in list(self.cluster.jobs.values()):
            if job.uid in self.done:
                continue
            state = job.state
            account = self.ledger.accounts.get(job.uid)
            if not state.finished or state.completion_unix_s is None:
                continue
            if account is not None and account.final is not None:
                continue  # waiting for its footprint to be written, then annotated
            if not self.cluster.is_top_level_job(job):
                self.done.add(job.uid)
                continue  # charged to its owner (a JobSet...): that workload's footprint holds it
            nodes = (self.cluster.job_nodes(job.uid) & agent_nodes) | (account.nodes if account else set())
            yield job, state.completion_unix_s, account, nodes

    def all_pods_seen(self, job: JobInfo, account: WorkloadAccount | None) -> bool:
        """True when the Job's status counts every pod it ran (:func:`~jouleledger.kube.jobs.counted_pods`) and
        the operator has seen at least that many distinct pods of it: in its account (the pods the agents reported
        energy for, those counted before a restart included) or in the cluster view. No pod of it can then be
        missing, so the agents of the nodes it was seen on are all its footprint waits for."""
        counted = job.state.counted_pods
        if counted is None:
            return False
        seen = self.cluster.job_pods(job.uid)
        if account is not None:
            return len(seen | account.pods) + account.pods_before >= counted
        return len(seen) >= counted

    def waiting_nodes(self, folded_tick: Mapping[str, float]) -> set[str]:
        """The nodes whose agents have not yet reported a tick after the finish of a Job with every pod seen: what a
        completion read (``Accountant.run_completion_read``) reads."""
        behind: set[str] = set()
        for job, completion_s, account, nodes in self._waiting(self.cluster.agent_nodes()):
            if self.all_pods_seen(job, account):
                behind.update(nodes_behind(nodes, folded_tick, completion_s + self.clock_skew_s))
        return behind

    def finalize(
        self, now: float, folded_tick: Mapping[str, float], every: AnsweredTicks | None, *, seen_only: bool = False
    ) -> list[WorkloadAccount]:
        """Freeze the footprints of finished Jobs that are ready (annotating happens after they are persisted).
        ``every``: the agents that answered the latest pass and their oldest folded tick; a Job waits for them too
        unless all its pods are seen (:meth:`all_pods_seen`). ``seen_only``: decide only the Jobs with all pods
        seen, and never by the deadline (a completion read between passes; the passes apply the deadline). Returns
        the accounts frozen."""
        finalized: list[WorkloadAccount] = []
        agent_nodes = self.cluster.agent_nodes()
        for job, completion_s, account, nodes in self._waiting(agent_nodes):
            # A Job with a pod the view may not hold yet (one that ran briefly) waits until every agent that
            # answered the latest pass has a reading after its completion, besides the agents of its known nodes.
            seen = self.all_pods_seen(job, account)
            if seen_only and not seen:
                continue
            decision = decide_finalization(
                completion_s,
                nodes,
                folded_tick,
                now,
                math.inf if seen_only else self.deadline_s,
                clock_skew_s=self.clock_skew_s,
                answered=None if seen else every,
            )
            if not decision.ready:
                continue
            if account is None:
                if every is not None and not decision.timed_out and not agent_nodes <= every.nodes:
                    continue  # an agent that did not answer may still report its pods: none is known to have none
                log.debug("Job %s/%s finished without GPU energy: nothing to record", job.namespace, job.name)
                self.done.add(job.uid)
                continue
            final = self.ledger.finalize(job.uid, completion_s, now, missing_nodes=decision.missing_nodes)
            finalized.append(account)
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
        """Annotate the Jobs whose final footprint is written, and restore any annotation edited since; up to
        ``ANNOTATE_CONCURRENCY`` Jobs at once (each Job's requests stay in order)."""
        for uid in [uid for uid in self.expected if uid not in self.cluster.jobs]:
            del self.expected[uid]  # the Job is gone
            self._verified.pop(uid, None)
        work: list[tuple[JobInfo, dict[str, str], FinalRecord | None]] = []
        for job in list(self.cluster.jobs.values()):
            expected = self.expected.get(job.uid)
            if expected is not None:
                verified = self._verified.get(job.uid)
                if verified is not None and verified[0] is job and verified[1] is expected:
                    continue  # found intact, and not changed since
                if footprint_annotations(job.state.annotations) != expected:  # edited after it was written: restore it
                    work.append((job, expected, None))
                else:
                    self._verified[job.uid] = (job, expected)
                continue
            if job.uid in self.done:
                continue
            account = self.ledger.accounts.get(job.uid)
            if account is None or account.final is None or not account.final_written:
                continue  # not final, or its final footprint is not written yet
            work.append((job, job_annotations(account.final), account.final))
        if not work:
            return 0
        slots = asyncio.Semaphore(ANNOTATE_CONCURRENCY)

        async def one(job: JobInfo, annotations: dict[str, str], final: FinalRecord | None) -> bool:
            async with slots:
                return await self._annotate(job, annotations, final, now)

        results = await asyncio.gather(*(one(*item) for item in work))
        return sum(1 for first in results if first)

    async def _annotate(self, job: JobInfo, annotations: dict[str, str], final: FinalRecord | None, now: float) -> bool:
        """Make the Job's ``jouleledger.io/`` annotations exactly ``annotations`` (the footprint's, the source of
        truth); True when this wrote them for the first time. Anything else found there is tampering: restored,
        counted and reported in an Event."""
        if footprint_annotations(job.state.annotations) == annotations:
            self._settle(job, annotations)
            return False
        if self.dry_run:
            log.info("dry run: would annotate Job %s/%s with %s", job.namespace, job.name, annotations)
            self.done.add(job.uid)
            return False
        try:
            current = await self.jobs.read(job.namespace, job.name, job.uid)
            if current is None:
                self.done.add(job.uid)
                self.expected.pop(job.uid, None)
                self._verified.pop(job.uid, None)
                self.stats.count_error("job_gone")
                return False
            found = footprint_annotations((current.get("metadata") or {}).get("annotations"))
            if found == annotations:
                self._settle(job, annotations)
                return False
            patch: dict[str, str | None] = {key: None for key in found if key not in annotations}
            if final is not None and job.uid not in self.expected:
                # The Event first: its name is fixed, so posting it again after a crash is a no-op, while a crash
                # between the PATCH and the Event would lose it (the next process finds the annotations written).
                await self._recorded(job, annotations, final)
            await self.jobs.annotate(current, {**patch, **annotations})
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
        first = job.uid not in self.expected
        self._settle(job, annotations)
        if found:
            changed = sorted(key for key in {*found, *annotations} if found.get(key) != annotations.get(key))
            self.stats.tampering += 1
            log.warning("Job %s/%s: footprint annotations %s were edited; restored", job.namespace, job.name, changed)
            await self._event(
                job,
                "Warning",
                REASON_TAMPERED,
                f"footprint annotations {', '.join(changed)} did not match the WorkloadFootprint; restored",
            )
        if not first or final is None:
            return False
        self.stats.footprints_written += 1
        self.stats.observe_delay(now - final.completion_unix_s)
        return True

    async def _recorded(self, job: JobInfo, annotations: dict[str, str], final: FinalRecord) -> None:
        """The Event that says the footprint was recorded (complete or not)."""
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

    def _settle(self, job: JobInfo, annotations: dict[str, str]) -> None:
        self.done.add(job.uid)
        self.expected[job.uid] = annotations

    async def _event(self, job: JobInfo, kind: str, reason: str, message: str) -> None:
        try:
            await self.jobs.event(job, kind, reason, message)
        except ApiError as error:
            log.warning("cannot post event %s on Job %s/%s: %s", reason, job.namespace, job.name, error)

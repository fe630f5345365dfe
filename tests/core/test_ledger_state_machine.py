"""A model-based test of the operator's ledger (tracker, book and footprint codec together) against an ideal observer.

Hypothesis drives one agent and the operator through random sequences of: pods drawing energy, new pods (churn),
scrapes, agent restarts that restore their checkpoint (same epoch) and that lose it (new epoch, counters from zero),
a power loss that restores a checkpoint slightly behind (same epoch, lower counters), operator restarts at any
point (graceful: flush then restore from the persisted footprints; crash: restore from what was persisted), and Job
completion with finalisation. The ideal observer counts, for every series, what each scrape shows beyond the
previous scrape of the same epoch. After every step each workload's total must equal the observer's to the
millijoule, and a final record, once persisted, never changes.

A crash right after an agent lost its counters (or went back behind what it exported), before the operator scraped
again, loses what was folded but not persisted of the old values: neither process holds them any more. That is a
property of the write interval, not a defect; the machine does not crash the operator in that window
(``precondition``); a graceful restart (SIGTERM: flush first) may happen anywhere.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from jouleledger.core.deltas import DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import FootprintBook
from jouleledger.kube.footprints import account_from_object, footprint_object
from jouleledger.metrics.operator_collector import parse_exposition
from tests._figures import figure
from tests.controller._exposition import Pod, agent_text
from tests.core._footprints import by_owner, rates

JOBS = ("job-a", "job-b")
RUNS: dict[str, int] = {"steps": 0, "scrapes": 0, "resets": 0, "restarts": 0, "crashes": 0, "finalized": 0}


class OperatorLedger(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.tick = 0.0
        self.epochs = (f"{n:016x}" for n in itertools.count(1))
        self.epoch = next(self.epochs)
        self.counters: dict[str, list[float]] = {}  # pod name -> [energy J, GPU-s] exported
        self.durable: dict[str, list[float]] = {}  # what the checkpoint holds
        self.pod_job: dict[str, str] = {}
        self.uids = itertools.count(1)
        self.pod_uid: dict[str, str] = {}
        self.finished: set[str] = set()
        self.seen: dict[str, tuple[str, float]] = {}  # pod -> (epoch, last scraped energy J) for the observer
        self.expected: dict[str, int] = dict.fromkeys(JOBS, 0)
        self.scraped_epoch = self.epoch
        self.regressed = False
        self.persisted: dict[str, dict[str, Any]] = {}
        self.frozen: dict[str, dict[str, Any]] = {}
        self.book, self.tracker = FootprintBook("USD"), DeltaTracker()
        for job in JOBS:
            self.new_pod(job)
        self.scrape()

    # --- the agent --------------------------------------------------------------------------------------------

    @rule(job=st.sampled_from(JOBS))
    def new_pod(self, job: str) -> None:
        if job in self.finished:
            return
        name = f"{job}-{len(self.pod_job)}"
        self.pod_job[name] = job
        self.pod_uid[name] = f"uid-{next(self.uids)}"
        self.counters[name] = [0.0, 0.0]

    @rule(joules=st.integers(min_value=1, max_value=5000), durable=st.booleans())
    def draw(self, joules: int, durable: bool) -> None:
        """Every running pod draws (the first ``joules``, the next half as much...); ``durable``: checkpointed."""
        for name, job in sorted(self.pod_job.items()):
            if job not in self.finished:
                self.counters[name][0] += joules
                self.counters[name][1] += joules / 500  # 500 W
                joules = joules // 2 + 1
        if durable:
            self.checkpoint()

    def checkpoint(self) -> None:
        self.durable = {name: list(value) for name, value in self.counters.items()}

    @rule()
    def agent_restart_with_checkpoint(self) -> None:
        """The agent exports only what is durable, so a restart that restores its checkpoint continues exactly."""
        RUNS["resets"] += 1

    @rule()
    def power_loss_behind_what_was_exported(self) -> None:
        """An agent that breaks that promise: the same epoch, counters back to an older checkpoint."""
        if not self.durable:
            return
        for name, value in self.counters.items():
            restored = self.durable.get(name, [0.0, 0.0])
            if restored[0] < value[0]:
                self.regressed = True
            self.counters[name] = list(restored)
        RUNS["resets"] += 1

    @rule()
    def agent_restart_without_checkpoint(self) -> None:
        self.epoch = next(self.epochs)
        self.counters = {name: [0.0, 0.0] for name in self.counters}
        self.durable = {}
        RUNS["resets"] += 1

    # --- the operator -----------------------------------------------------------------------------------------

    @rule()
    def scrape(self) -> None:
        self.tick += 1.0
        pods = [
            Pod("ml", name, self.pod_uid[name], energy, seconds, "Job", job, job)
            for name, (energy, seconds) in sorted(self.counters.items())
            for job in [self.pod_job[name]]
        ]
        text = agent_text("n1", self.tick, pods, epoch=self.epoch)
        scrape = parse_agent_samples(parse_exposition(text))
        self.book.fold(self.tracker.observe(scrape), rates(self.tick - 1, self.tick, 100.0), by_owner, scrape.model_of)
        self.scraped_epoch = self.epoch
        self.regressed = False
        for name, (energy, _) in self.counters.items():  # the ideal observer
            epoch, last = self.seen.get(name, (self.epoch, 0.0))
            if epoch != self.epoch:
                last = 0.0
            if energy >= last:
                if self.pod_job[name] not in self.frozen:
                    self.expected[self.pod_job[name]] += round((energy - last) * 1000)
                self.seen[name] = (self.epoch, energy)
        for uid, account in self.book.accounts.items():  # what a pass persists at once: resets and finals
            if account.urgent or (account.final is not None and not account.final_written):
                self.write(uid)
        RUNS["scrapes"] += 1

    def write(self, uid: str) -> None:
        account = self.book.accounts[uid]
        self.persisted[uid] = footprint_object(account)
        account.written(self.tick)

    @rule()
    def persist_all(self) -> None:
        for uid, account in self.book.accounts.items():
            if account.dirty:
                self.write(uid)

    def restore(self) -> None:
        self.book, self.tracker = FootprintBook("USD"), DeltaTracker()
        for obj in self.persisted.values():
            self.book.restore(account_from_object(obj, currency="USD"))
        for key, pod_uid, value in self.book.watermarks():
            self.tracker.restore(key, pod_uid, value)
        RUNS["restarts"] += 1

    @rule()
    def graceful_restart(self) -> None:
        self.persist_all()
        self.restore()
        self.scrape()

    @precondition(lambda self: self.epoch == self.scraped_epoch and not self.regressed)
    @rule()
    def crash(self) -> None:
        self.restore()
        self.scrape()
        RUNS["crashes"] += 1

    @precondition(lambda self: self.tick > 12)
    @rule(job=st.sampled_from(JOBS))
    def finish(self, job: str) -> None:
        if job in self.finished or job not in self.book.accounts:
            return
        self.finished.add(job)
        self.scrape()  # a reading after the end of its pods
        self.book.finalize(job, self.tick - 0.5, self.tick)
        self.frozen[job] = {}
        self.write(job)
        self.frozen[job] = self.persisted[job]["status"]["final"]
        RUNS["finalized"] += 1

    # --- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def nothing_lost_nothing_doubled(self) -> None:
        RUNS["steps"] += 1
        for job in JOBS:
            account = self.book.accounts.get(job)
            got = account.totals.energy_mj if account is not None else 0
            assert got == self.expected[job], (job, got, self.expected[job])

    @invariant()
    def finals_never_change(self) -> None:
        for job, final in self.frozen.items():
            if final:
                assert self.persisted[job]["status"]["final"] == final


TestOperatorLedger = OperatorLedger.TestCase
TestOperatorLedger.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def teardown_module() -> None:
    figure(
        f"ledger state machine: {RUNS['steps']} steps, {RUNS['scrapes']} scrapes, {RUNS['resets']} agent restarts, "
        f"{RUNS['restarts']} operator restarts ({RUNS['crashes']} crashes), {RUNS['finalized']} Jobs finalized, "
        "0 mJ difference from the model"
    )

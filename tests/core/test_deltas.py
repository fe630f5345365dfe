"""Counter identity across agent resets, power losses and operator restarts (the agent's ``epoch``).

Each test folds hand-written scrapes through the real tracker and book, persists the footprint through the real
codec where a restart happens, and compares with the energy the agent actually measured (computed by hand).
"""

from __future__ import annotations

from jouleledger.core.deltas import CONTINUED, RESET, DeltaTracker, ScrapeDeltas, parse_agent_samples
from jouleledger.core.footprints import FootprintBook
from jouleledger.kube.footprints import account_from_object, footprint_object
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import agent_text
from tests.core._footprints import by_owner, job_pod, rates

A = "00000000000000aa"
B = "00000000000000bb"


def fold(book: FootprintBook, tracker: DeltaTracker, tick: float, energy_j: float, epoch: str | None) -> ScrapeDeltas:
    scrape = parse_agent_samples(parse_exposition(agent_text("n1", tick, [job_pod(energy_j, tick)], epoch=epoch)))
    deltas = tracker.observe(scrape)
    book.fold(deltas, rates(tick - 1, tick, 100.0), by_owner, scrape.model_of)
    return deltas


def restarted(book: FootprintBook) -> tuple[FootprintBook, DeltaTracker]:
    """A new operator process restored from what ``book`` persisted."""
    after, tracker = FootprintBook("USD"), DeltaTracker()
    after.restore(account_from_object(footprint_object(book.accounts["job-1"]), currency="USD"))
    for key, pod_uid, value in after.watermarks():
        tracker.restore(key, pod_uid, value)
    return after, tracker


def test_agent_reset_then_operator_restart_from_an_older_watermark_loses_nothing() -> None:
    # Epoch A: the pod reached 5 J and that was persisted. The agent then restarted without its checkpoint (epoch
    # B) and the pod drew 7 J since; the operator restarted before it saw the reset. Measured: 5 J + 7 J.
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, A)
    fold(book, tracker, 2.0, 5.0, A)
    after, tracker = restarted(book)
    deltas = fold(after, tracker, 3.0, 7.0, B)
    assert [(d.origin, d.energy_mj) for d in deltas.pods] == [(RESET, 7000)]
    assert after.accounts["job-1"].totals.energy_mj == 12_000
    # ... and the next restart continues from epoch B's watermark.
    again, tracker = restarted(after)
    fold(again, tracker, 4.0, 8.0, B)
    assert again.accounts["job-1"].totals.energy_mj == 13_000


def test_a_lower_counter_under_the_same_epoch_is_rejected_not_counted_again() -> None:
    # Power loss: the agent restored its checkpoint (same epoch) a little behind what it exported (5 J -> 4 J),
    # then the pod drew on to 6 J. Measured: 6 J, never 5 + 4 + 2.
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, A)
    fold(book, tracker, 2.0, 5.0, A)
    regressed = fold(book, tracker, 3.0, 4.0, A)
    assert (regressed.regressions, regressed.resets) == (1, 0)
    assert regressed.pods == ()
    deltas = fold(book, tracker, 4.0, 6.0, A)
    assert [(d.origin, d.energy_mj) for d in deltas.pods] == [(CONTINUED, 1000)]
    assert book.accounts["job-1"].totals.energy_mj == 6_000


def test_the_same_epoch_after_an_operator_restart_continues_and_regressions_stay_rejected() -> None:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, A)
    fold(book, tracker, 2.0, 5.0, A)
    after, tracker = restarted(book)
    assert fold(after, tracker, 3.0, 4.5, A).regressions == 1
    fold(after, tracker, 4.0, 9.0, A)
    assert after.accounts["job-1"].totals.energy_mj == 9_000


def test_an_agent_without_an_epoch_keeps_the_old_rule_value_down_is_a_reset() -> None:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, None)
    fold(book, tracker, 2.0, 5.0, None)
    deltas = fold(book, tracker, 3.0, 1.0, None)
    assert deltas.resets == 1
    assert book.accounts["job-1"].totals.energy_mj == 6_000


def test_a_folded_reset_makes_its_footprint_due_for_writing_at_once() -> None:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, A)
    fold(book, tracker, 2.0, 5.0, A)
    account = book.accounts["job-1"]
    account.written(2.0)
    fold(book, tracker, 3.0, 6.0, A)  # ordinary growth waits for the write interval
    assert book.due_for_write(3.0, write_interval_s=300.0, limit=10) == []
    fold(book, tracker, 4.0, 1.0, B)  # a reset: persisted now, so a restart cannot lose the pre-reset energy
    assert book.due_for_write(4.0, write_interval_s=300.0, limit=10) == [account]


def test_a_rejected_regression_makes_its_footprint_due_for_writing_at_once() -> None:
    # Found by the state machine: the agent went back (same epoch) below what was folded but not yet persisted;
    # only the operator's memory holds the difference, so it is persisted before a crash can lose it.
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, A)
    account = book.accounts["job-1"]
    account.written(1.0)
    fold(book, tracker, 2.0, 5.0, A)
    assert book.due_for_write(2.0, write_interval_s=300.0, limit=10) == []
    fold(book, tracker, 3.0, 4.0, A)
    assert book.due_for_write(3.0, write_interval_s=300.0, limit=10) == [account]


def test_an_upgraded_agent_restoring_a_pre_epoch_checkpoint_continues_its_counters() -> None:
    # The agent before epochs reached 5 J (persisted by the operator, no epoch); after the upgrade it restored its
    # checkpoint a little behind (4 J) under a new epoch, then drew on to 6 J. The same counters: 6 J, not 5 + 4 + 2.
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, None)
    fold(book, tracker, 2.0, 5.0, None)
    after, tracker = restarted(book)
    behind = fold(after, tracker, 3.0, 4.0, A)
    assert (behind.regressions, behind.resets) == (1, 0)
    deltas = fold(after, tracker, 4.0, 6.0, A)
    assert [(d.origin, d.energy_mj) for d in deltas.pods] == [(CONTINUED, 1000)]
    assert after.accounts["job-1"].totals.energy_mj == 6_000


def test_an_agent_upgraded_under_a_running_operator_continues_its_counters() -> None:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    fold(book, tracker, 1.0, 0.0, None)
    fold(book, tracker, 2.0, 5.0, None)
    assert fold(book, tracker, 3.0, 4.0, A).regressions == 1
    fold(book, tracker, 4.0, 7.0, A)
    fold(book, tracker, 5.0, 1.0, B)  # a real reset after the upgrade is still one
    assert book.accounts["job-1"].totals.energy_mj == 8_000

"""Merging a persisted footprint into an account (after a 409): by the series watermarks, energy counted once.

Two operators that saw the same counters, a footprint written meanwhile by another writer, an account forgotten
and seen again: each is folded through the real tracker and book and persisted through the real codec.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.core.deltas import DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import FootprintBook, WorkloadAccount
from jouleledger.kube.footprints import account_from_object, footprint_object
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod, agent_text
from tests.core._footprints import by_owner, job_pod, rates

EPOCH = "00000000000000aa"


def fold(book: FootprintBook, tracker: DeltaTracker, tick: float, pods: list[Pod], epoch: str = EPOCH) -> None:
    scrape = parse_agent_samples(parse_exposition(agent_text("n1", tick, pods, epoch=epoch)))
    book.fold(tracker.observe(scrape), rates(tick - 1, tick, 100.0), by_owner, scrape.model_of)


def persisted(account: WorkloadAccount) -> WorkloadAccount:
    """The account as another process reads it back from its footprint."""
    return account_from_object(footprint_object(account), currency="USD")


def operator() -> tuple[FootprintBook, DeltaTracker]:
    return FootprintBook("USD"), DeltaTracker()


def test_two_operators_that_saw_the_same_counters_count_them_once() -> None:
    (first, first_tracker), (second, second_tracker) = operator(), operator()
    for book, tracker in ((first, first_tracker), (second, second_tracker)):
        fold(book, tracker, 1.0, [job_pod(0.0, 0.0)])
        fold(book, tracker, 2.0, [job_pod(5.0, 5.0)])
    fold(second, second_tracker, 3.0, [job_pod(7.0, 7.0)])  # the second one scraped once more
    account = first.accounts["job-1"]
    account.merge(persisted(second.accounts["job-1"]))
    assert account.totals.energy_mj == 7_000
    assert account.totals.gpu_seconds == 7.0
    assert account.totals.operational_g > 0
    assert account.late_energy_mj == 0
    assert account.pods_counted == 1


def test_a_final_footprint_of_another_operator_is_kept_and_nothing_is_late() -> None:
    (first, first_tracker), (second, second_tracker) = operator(), operator()
    for book, tracker in ((first, first_tracker), (second, second_tracker)):
        fold(book, tracker, 1.0, [job_pod(0.0, 0.0)])
        fold(book, tracker, 2.0, [job_pod(5.0, 5.0)])
        book.finalize("job-1", 1.5, 2.0)
    account = first.accounts["job-1"]
    theirs = persisted(second.accounts["job-1"])
    account.merge(theirs)
    assert account.final == theirs.final
    assert (account.totals.energy_mj, account.late_energy_mj) == (5_000, 0)


def test_a_forgotten_account_seen_again_adds_its_persisted_footprint() -> None:
    # Its pod's series was pruned (so the footprint holds no watermark), the account written and forgotten; a new
    # pod of the workload then draws 2 J: the footprint's 5 J are history the new account does not hold.
    book, tracker = FootprintBook("USD"), DeltaTracker(prune_after_misses=1)
    fold(book, tracker, 1.0, [job_pod(0.0, 0.0)])
    fold(book, tracker, 2.0, [job_pod(5.0, 5.0)])
    fold(book, tracker, 3.0, [])
    footprint = persisted(book.accounts["job-1"])
    assert footprint.watermarks == {}
    book.forget("job-1")
    fold(book, tracker, 4.0, [job_pod(0.0, 0.0, uid="pod-2", name="train-y")])
    fold(book, tracker, 5.0, [job_pod(2.0, 2.0, uid="pod-2", name="train-y")])
    account = book.accounts["job-1"]
    account.merge(footprint)
    assert account.totals.energy_mj == 7_000


def test_a_second_writers_late_energy_is_kept_on_a_final_account() -> None:
    book, tracker = operator()
    fold(book, tracker, 1.0, [job_pod(0.0, 0.0)])
    fold(book, tracker, 2.0, [job_pod(5.0, 5.0)])
    book.finalize("job-1", 1.5, 2.0)
    account = book.accounts["job-1"]
    other = persisted(account)
    other.late_energy_mj = 1234
    account.merge(other)
    assert (account.totals.energy_mj, account.late_energy_mj) == (5_000, 1234)


# Each step: the two pods' counter increments in J (None: the pod is absent from that scrape), and whether the
# agent restarted without its checkpoint (a new epoch, counters from zero) before it.
STEPS = st.lists(
    st.tuples(
        st.none() | st.integers(0, 50),
        st.none() | st.integers(0, 50),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None, database=None)
@given(steps=STEPS, cut=st.integers(0, 12), final=st.booleans())
def test_merging_an_account_with_itself_or_an_older_copy_of_itself_changes_nothing(
    steps: list[tuple[int | None, int | None, bool]], cut: int, final: bool
) -> None:
    book, tracker = FootprintBook("USD"), DeltaTracker(prune_after_misses=1)  # absent once: forgotten
    counters, epoch, older = [0, 0], 0, None
    fold(book, tracker, 1.0, [job_pod(0.0, 0.0)], epoch=f"{epoch:016x}")
    for index, (first, second, restarted) in enumerate(steps):
        if index == min(cut, len(steps) - 1):
            older = persisted(book.accounts["job-1"])
        if restarted:
            counters, epoch = [0, 0], epoch + 1
        pods = []
        for slot, (increment, name) in enumerate(((first, "train-x"), (second, "train-y"))):
            if increment is not None:
                counters[slot] += increment
                pods.append(job_pod(counters[slot], counters[slot], uid=f"pod-{slot}", name=name))
        fold(book, tracker, 2.0 + index, pods, epoch=f"{epoch:016x}")
    if final:
        book.finalize("job-1", 1.5, 20.0)
    account = book.accounts["job-1"]
    assert older is not None
    before = persisted(account)
    for copy in (persisted(account), older):
        account.merge(copy)
        assert account.totals == before.totals
        assert account.late_energy_mj == before.late_energy_mj
        assert account.watermarks == before.watermarks
        assert account.final == before.final
        assert account.pods_counted == before.pods_counted


def test_merge_stored_continues_the_tracker_from_what_is_now_counted() -> None:
    # This operator counted the pod to 5 J; another writer stored 8 J for the same series. After the merge the
    # footprint holds 8 J and this tracker continues from 8 J: the next 9 J adds 1 J, not 4 J.
    (mine, my_tracker), (theirs, their_tracker) = operator(), operator()
    for book, tracker, energy_j in ((mine, my_tracker, 5.0), (theirs, their_tracker, 8.0)):
        fold(book, tracker, 1.0, [job_pod(0.0, 0.0)])
        fold(book, tracker, 2.0, [job_pod(energy_j, energy_j)])
    account = mine.accounts["job-1"]
    mine.merge_stored(account, persisted(theirs.accounts["job-1"]), my_tracker)
    assert account.totals.energy_mj == 8000
    fold(mine, my_tracker, 3.0, [job_pod(9.0, 9.0)])
    assert mine.accounts["job-1"].totals.energy_mj == 9000


def test_merge_stored_adopts_the_series_of_a_node_this_tracker_never_scraped() -> None:
    # The other writer scraped n2, which this operator never did: its watermark is adopted and becomes the
    # tracker's baseline, so n2's next scrape counts only what is new.
    mine, my_tracker = operator()
    fold(mine, my_tracker, 1.0, [job_pod(0.0, 0.0)])
    theirs, their_tracker = operator()
    for tick, energy_j in ((1.0, 0.0), (2.0, 4.0)):
        scrape = parse_agent_samples(parse_exposition(agent_text("n2", tick, [job_pod(energy_j, energy_j)])))
        theirs.fold(their_tracker.observe(scrape), rates(tick - 1, tick, 100.0), by_owner, scrape.model_of)
    account = mine.accounts["job-1"]
    mine.merge_stored(account, persisted(theirs.accounts["job-1"]), my_tracker)
    assert account.totals.energy_mj == 4000
    n2 = next(key for key in account.watermarks if key[0].node == "n2")
    assert my_tracker.baseline(n2[0]) is not None
    assert my_tracker.baseline(n2[0]).energy_mj == 4000  # type: ignore[union-attr]

"""The delta tracker: adoption, new series, resets, recreated pods, pruning, restarts from watermarks.

Expected values are computed by hand in the comments next to them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.core.deltas import ADOPTED, CONTINUED, NEW, RESET, DeltaTracker, SeriesKey
from jouleledger.core.footprints import FootprintBook
from jouleledger.kube.footprints import account_from_object, footprint_object
from tests.controller._exposition import Pod, agent_text
from tests.core._footprints import by_owner, job_pod, rates, scrape_of


def test_first_scrape_adopts_later_series_are_new_and_resets_count_the_new_value() -> None:
    tracker = DeltaTracker()
    first = tracker.observe(scrape_of(agent_text("n1", 1.0, [job_pod(1.0, 1.0)])))
    assert first.first
    assert [(d.origin, d.energy_mj) for d in first.pods] == [(ADOPTED, 1000)]
    two = [job_pod(3.0, 2.0), job_pod(0.5, 0.5, uid="pod-2", name="other")]
    second = tracker.observe(scrape_of(agent_text("n1", 2.0, two)))
    assert not second.first
    assert {d.key.pod: (d.origin, d.energy_mj) for d in second.pods} == {
        "train-x": (CONTINUED, 2000),
        "other": (NEW, 500),
    }
    # The agent restarted without its checkpoint: 3 J -> 0.25 J counts 0.25 J, never a negative delta.
    third = tracker.observe(scrape_of(agent_text("n1", 3.0, [job_pod(0.25, 0.1), two[1]])))
    assert {d.key.pod: (d.origin, d.energy_mj) for d in third.pods} == {
        "train-x": (RESET, 250),
        "other": (CONTINUED, 0),
    }
    assert third.resets == 1


def test_recreated_pod_of_the_same_name_gets_new_energy_and_expiry_is_not_a_reset() -> None:
    old = Pod("db", "web-0", "old", 10.0, 10.0, "StatefulSet", "web", "sts-1")
    tracker = DeltaTracker()
    tracker.observe(scrape_of(agent_text("n1", 1.0, [old])))
    # The pod is re-created: the agent sums both records (10 J old + 4 J new) in one series.
    new = Pod("db", "web-0", "new", 14.0, 12.0, "StatefulSet", "web", "sts-1")
    second = tracker.observe(scrape_of(agent_text("n1", 2.0, [new], extra_info=[old])))
    assert [(d.pod.uid, d.energy_mj, d.share.energy_mj) for d in second.pods] == [("new", 4000, 4000)]
    # The old record expires: the series drops to the new pod's 4 J + 1 J more. Not a reset: +1 J.
    expired = Pod("db", "web-0", "new", 5.0, 3.0, "StatefulSet", "web", "sts-1")
    third = tracker.observe(scrape_of(agent_text("n1", 3.0, [expired])))
    assert third.resets == 0
    assert [(d.origin, d.energy_mj, d.share.energy_mj) for d in third.pods] == [(CONTINUED, 1000, 5000)]
    assert third.expired == ((SeriesKey("n1", "db", "web-0", "main", "GPU-a"), "old"),)


def test_unallocated_baselines_at_first_scrape_and_series_are_pruned_after_misses() -> None:
    tracker = DeltaTracker(prune_after_misses=2)
    assert tracker.observe(scrape_of(agent_text("n1", 1.0, [job_pod(1.0, 1.0)], unallocated_j=50))).unallocated_mj == {
        "GPU-a": 0
    }
    assert tracker.observe(scrape_of(agent_text("n1", 2.0, unallocated_j=52))).unallocated_mj == {"GPU-a": 2000}
    pruned = tracker.observe(scrape_of(agent_text("n1", 3.0, unallocated_j=1)))
    assert pruned.unallocated_mj == {"GPU-a": 1000}  # went down: an agent restart, counts the new value
    assert pruned.pruned == (SeriesKey("n1", "ml", "train-x", "main", "GPU-a"),)
    assert len(tracker) == 0


runs_strategy = st.lists(
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=6), min_size=1, max_size=5
)


def _counter_values(runs: list[list[int]]) -> list[int]:
    """Monotone runs; each run after the first starts below where the previous ended (a detectable reset)."""
    values: list[int] = []
    for raw in runs:
        run = sorted(raw)
        if values and run[0] >= values[-1]:
            if values[-1] == 0:
                continue
            run = [value - run[0] for value in run]
        values.extend(run)
    return values


@settings(max_examples=200, deadline=None)
@given(runs_strategy)
def test_deltas_sum_to_every_run_and_are_never_negative(runs: list[list[int]]) -> None:
    values = _counter_values(runs)
    tracker = DeltaTracker()
    tracker.observe(scrape_of(agent_text("n1", 0.0)))  # tracking starts before the pod appears
    total = 0
    for tick, value in enumerate(values, start=1):
        deltas = tracker.observe(scrape_of(agent_text("n1", float(tick), [job_pod(value / 1000, value / 1e6)])))
        assert all(delta.energy_mj >= 0 for delta in deltas.pods)
        total += sum(delta.energy_mj for delta in deltas.pods)
    expected = sum(values[i] for i in range(len(values)) if i == len(values) - 1 or values[i + 1] < values[i])
    assert total == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10**8), min_size=2, max_size=8).map(sorted),
    st.data(),
)
def test_restart_from_a_persisted_watermark_counts_everything_exactly_once(
    values: list[int], data: st.DataObject
) -> None:
    persisted_at = data.draw(st.integers(min_value=0, max_value=len(values) - 2))
    restart_at = data.draw(st.integers(min_value=persisted_at + 1, max_value=len(values) - 1))
    texts = [agent_text("n1", float(i), [job_pod(value / 1000, value / 1e6)]) for i, value in enumerate(values)]

    def run(ledger: FootprintBook, tracker: DeltaTracker, indexes: range) -> None:
        for index in indexes:
            scrape = scrape_of(texts[index])
            ledger.fold(tracker.observe(scrape), rates(index, index + 1, 100.0), by_owner, scrape.model_of)

    whole = FootprintBook("USD")
    run(whole, DeltaTracker(), range(len(values)))
    before = FootprintBook("USD")
    run(before, DeltaTracker(), range(persisted_at + 1))
    record = footprint_object(before.accounts["job-1"])
    run(before, DeltaTracker(), range(0))  # folds after the write are lost with the process
    after = FootprintBook("USD")
    after.restore(account_from_object(record, currency="USD"))
    tracker = DeltaTracker()
    for key, pod_uid, value in after.watermarks():
        tracker.restore(key, pod_uid, value)
    run(after, tracker, range(restart_at, len(values)))
    assert after.accounts["job-1"].totals.energy_mj == whole.accounts["job-1"].totals.energy_mj == values[-1]

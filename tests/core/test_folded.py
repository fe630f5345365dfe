"""Which ``folded_until`` the operator may send each agent: only finished pods whose final totals are in a written
footprint may be left out of its exposition (core/folded.py), and the book says which shares are written."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from jouleledger.core.deltas import NEW, AgentScrape, PodDelta, PodIdentity, ScrapeDeltas, SeriesKey, SeriesValue
from jouleledger.core.folded import FoldedUntil
from jouleledger.core.footprints import Attribution, FootprintBook, IntervalRates
from jouleledger.core.workload import WorkloadRef

NODE = "n1"


def key(pod: str) -> SeriesKey:
    return SeriesKey(NODE, "ml", pod, "main", "GPU-0")


def scrape(
    pods: dict[str, list[str]],
    finished: dict[str, float],
    *,
    epoch: str = "e1",
    tick_s: float = 1000.0,
) -> AgentScrape:
    """An agent's scrape: pod name -> the uids of its records (oldest first), each name with one series."""
    return AgentScrape(
        node=NODE,
        backend="nvml",
        simulated=False,
        last_tick_unix_s=tick_s,
        ticks=tick_s,
        series={key(name): SeriesValue(1000, 1.0) for name in pods},
        pods={("ml", name): tuple(PodIdentity("ml", name, uid) for uid in uids) for name, uids in pods.items()},
        unallocated_mj={},
        gpu_models={},
        finished_unix_s={("ml", name): at for name, at in finished.items()},
        epoch=epoch,
    )


def written(*uids: str) -> Callable[[SeriesKey, str], bool]:
    def persisted(series: SeriesKey, pod_uid: str) -> bool:
        return pod_uid in uids

    return persisted


def test_nothing_is_left_out_until_the_final_totals_are_written() -> None:
    folded = FoldedUntil()
    folded.folded(scrape({"a": ["ua"], "run": ["ur"]}, {"a": 100.0}))
    folded.advance(written())
    assert folded.value(NODE) is None
    assert folded.values() == {}
    folded.advance(written("ua"))
    assert folded.value(NODE) == 100.0
    assert folded.values() == {NODE: 100.0}


def test_an_unwritten_finished_pod_holds_the_value_below_its_finish_time() -> None:
    folded = FoldedUntil()
    folded.folded(scrape({"a": ["ua"], "c": ["uc"], "d": ["ud"]}, {"a": 100.0, "c": 120.0, "d": 130.0}))
    folded.advance(written("ua", "ud"))
    assert folded.value(NODE) == 100.0  # d is written, but leaving out up to 130 would leave out c too
    # The agent leaves out a; the next scrape still shows c and d.
    folded.folded(scrape({"c": ["uc"], "d": ["ud"]}, {"c": 120.0, "d": 130.0}))
    folded.advance(written("ud"))
    assert folded.value(NODE) == 100.0
    folded.advance(written("ud", "uc"))
    assert folded.value(NODE) == 130.0


def test_a_pod_without_series_has_nothing_to_write() -> None:
    folded = FoldedUntil()
    folded.folded(dataclasses.replace(scrape({"a": ["ua"]}, {"a": 100.0}), series={}))
    folded.advance(written())
    assert folded.value(NODE) == 100.0


def test_the_older_record_of_a_recreated_name_holds_everything_until_written() -> None:
    # x was re-created under the same name: its old record finished at a time the exposition does not say.
    folded = FoldedUntil()
    folded.folded(scrape({"x": ["old", "new"], "y": ["uy"]}, {"y": 100.0}))
    folded.advance(written("uy", "new"))
    assert folded.value(NODE) is None
    folded.advance(written("uy", "old"))
    assert folded.value(NODE) == 100.0


def test_records_of_a_name_that_all_finished_hold_it_until_each_is_written() -> None:
    folded = FoldedUntil()
    folded.folded(scrape({"x": ["old", "new"], "y": ["uy"]}, {"x": 90.0, "y": 100.0}))
    folded.advance(written("uy", "new"))
    assert folded.value(NODE) is None  # the old record finished at or before 90, when exactly is unknown
    folded.advance(written("uy", "new", "old"))
    assert folded.value(NODE) == 100.0


def test_written_stays_written_when_the_account_changes_again() -> None:
    folded = FoldedUntil()
    folded.folded(scrape({"a": ["ua"], "c": ["uc"]}, {"a": 100.0, "c": 120.0}))
    folded.advance(written("ua"))
    assert folded.value(NODE) == 100.0
    folded.folded(scrape({"c": ["uc"]}, {"c": 120.0}))
    folded.advance(written("uc"))
    folded.folded(scrape({"c": ["uc"], "e": ["ue"]}, {"c": 120.0, "e": 140.0}))
    folded.advance(written("ue"))  # c's footprint is being changed again (another pod): its final share was written
    assert folded.value(NODE) == 140.0


def test_another_epoch_forgets_the_value_and_a_reset_agent_is_asked_for_everything() -> None:
    folded = FoldedUntil()
    folded.folded(scrape({"a": ["ua"]}, {"a": 100.0}))
    folded.advance(written("ua"))
    assert folded.value(NODE) == 100.0
    folded.folded(scrape({"b": ["ub"]}, {}, epoch="e2"))
    assert folded.value(NODE) is None
    folded.folded(scrape({"b": ["ub"]}, {"b": 200.0}, epoch="e2"))
    folded.advance(written("ub"))
    assert folded.value(NODE) == 200.0
    assert folded.persisted_for([NODE, "n2"]) == {NODE: ("e2", 200.0)}


def test_restore_keeps_the_largest_value_per_node_and_its_epoch_decides_at_the_first_scrape() -> None:
    folded = FoldedUntil()
    folded.restored_from({NODE: ("e1", 50.0)})
    folded.restored_from({NODE: ("e1", 80.0), "n2": ("e9", 7.0)})
    folded.restored_from({NODE: ("e1", 60.0), "n3": ("e1", math.nan)})
    assert folded.values() == {NODE: 80.0, "n2": 7.0}
    assert folded.values(["n2", "n3", "n9"]) == {"n2": 7.0}  # the nodes asked for only (a completion read's)
    # The same run of counters: the restored value holds (the pods it covers are left out, not counted again).
    folded.folded(scrape({"b": ["ub"]}, {}))
    assert folded.value(NODE) == 80.0
    # Another run: nothing of the restored value applies.
    folded.folded(scrape({"b": ["ub"]}, {}, epoch="e2"))
    assert folded.value(NODE) is None


def test_the_value_never_goes_back_within_a_run() -> None:
    folded = FoldedUntil()
    folded.restored_from({NODE: ("e1", 150.0)})
    folded.folded(scrape({"a": ["ua"]}, {"a": 100.0}))  # the agent ignored it (its clock stepped back)
    folded.advance(written("ua"))
    assert folded.value(NODE) == 150.0


# --- the book's side: which shares are written ---------------------------------------------------------------


def test_a_share_is_persisted_once_its_account_is_written_and_until_it_changes() -> None:
    book = FootprintBook("EUR")
    ref = WorkloadRef("ml", "Job", "train", "job-1")
    pod = PodIdentity("ml", "a", "ua")
    rates = IntervalRates(0.0, 1.0, "z", 400.0, "static", 1.0, 0.1, "EUR", "measured-nvml-energy-counter")
    share = SeriesValue(1000, 1.0)
    deltas = ScrapeDeltas(NODE, False, (PodDelta(key("a"), pod, 1000, 1.0, NEW, share),), {}, epoch="e1")
    assert book.persisted(key("a"), "ua")  # no account holds it: nothing to write
    book.fold(deltas, rates, lambda identity: Attribution(ref), lambda device: "")
    assert not book.persisted(key("a"), "ua")
    book.accounts["job-1"].written(2.0)
    assert book.persisted(key("a"), "ua")
    assert book.persisted(key("a"), "another-pod")

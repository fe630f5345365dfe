"""The operator's self-observation counters, and the view they publish."""

from __future__ import annotations

from jouleledger.core.deltas import ScrapeDeltas
from jouleledger.core.footprints import FootprintBook
from jouleledger.core.operator_stats import DELAY_BUCKETS_S, OperatorStats


def test_deltas_count_resets_per_node_and_rejections_by_reason() -> None:
    stats = OperatorStats()
    stats.count_deltas("n1", ScrapeDeltas("n1", False, (), {}, resets=2, regressions=1))
    stats.count_deltas("n1", ScrapeDeltas("n1", False, (), {}, resets=1, implausible=3))
    stats.count_deltas("n2", ScrapeDeltas("n2", False, (), {}))
    assert stats.counter_resets == {"n1": 3}
    assert stats.rejected == {"counter_regression": 1, "implausible_energy": 3}


def test_scrape_results_and_errors_are_counted_and_zero_counts_add_no_key() -> None:
    stats = OperatorStats()
    for result in ("ok", "ok", "timeout", "something-else"):
        stats.count_scrape(result)
    stats.count_error("footprint_conflict", 0)
    stats.count_error("footprint_write")
    stats.count_error("unreadable_footprint", 2)
    assert stats.scrapes == {"ok": 2, "error": 0, "timeout": 1, "too_large": 0}
    assert stats.footprint_errors == {"footprint_write": 1, "unreadable_footprint": 2}


def test_the_view_is_a_copy_with_the_delay_histogram() -> None:
    stats = OperatorStats()
    stats.observe_delay(-1.0)  # a clock step backwards counts as no delay
    stats.observe_delay(DELAY_BUCKETS_S[-1] + 1)
    view = stats.view(FootprintBook("USD").rollups(), {("static", "timeout"): 1})
    stats.count_scrape("ok")
    assert view.scrapes["ok"] == 0
    assert view.delay_bucket_counts[0] == view.delay_bucket_counts[-1] == 1
    assert view.delay_sum_s == DELAY_BUCKETS_S[-1] + 1
    assert view.intensity_fallbacks == {("static", "timeout"): 1}

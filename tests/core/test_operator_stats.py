"""The operator's self-observation counters, and the view they publish."""

from __future__ import annotations

from jouleledger.core.deltas import ScrapeDeltas
from jouleledger.core.footprints import FootprintBook
from jouleledger.core.operator_stats import DELAY_BUCKETS_S, PASS_BUCKETS_S, OperatorStats


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


def test_a_pass_is_counted_by_its_total_and_its_phases_kept_until_the_next() -> None:
    stats = OperatorStats()
    stats.observe_pass(0.5, -0.25, 0.5)  # a phase cannot take negative time (a stepped clock): counted as none
    stats.observe_pass(PASS_BUCKETS_S[-1], 1.0, 0.0)
    view = stats.view(FootprintBook("USD").rollups(), {})
    stats.observe_pass(0.0, 0.0, 0.0)
    assert view.last_pass_phases_s == {"read": PASS_BUCKETS_S[-1], "fold": 1.0, "write": 0.0}
    assert view.pass_bucket_counts[PASS_BUCKETS_S.index(1.0)] == 1  # 1.0 s: the bucket whose bound it is
    assert view.pass_bucket_counts[-1] == 1  # past the last bound: +Inf only
    assert sum(view.pass_bucket_counts) == 2
    assert view.pass_sum_s == 1.0 + PASS_BUCKETS_S[-1] + 1.0

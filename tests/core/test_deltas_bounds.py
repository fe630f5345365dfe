"""Every scraped value is bounded physically before it is counted: a hostile or broken agent is rejected and counted,
never raises, never reaches a total, and never stops the other nodes being accounted."""

from __future__ import annotations

import math

from jouleledger.core.deltas import AgentScrape, DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import FootprintBook
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod, agent_text
from tests.core._footprints import by_owner, job_pod, rates


def scrape(
    energy_j: float, gpu_seconds: float, tick: float, *, unallocated_j: float = 0.0, extra: str = ""
) -> AgentScrape:
    text = agent_text("n1", tick, [job_pod(energy_j, gpu_seconds)], unallocated_j=unallocated_j) + extra
    return parse_agent_samples(parse_exposition(text))


def test_huge_counters_are_rejected_without_overflow_and_the_series_is_held() -> None:
    tracker, book = DeltaTracker(), FootprintBook("USD")
    first = scrape(1.0, 1.0, 1.0)
    book.fold(tracker.observe(first), rates(0, 1, 100.0), by_owner, first.model_of)
    hostile = scrape(1e306, 1e308, 2.0, unallocated_j=1e306)
    reasons = sorted(rejection.reason for rejection in hostile.rejected)
    assert reasons == ["out_of_range", "out_of_range", "out_of_range"]
    deltas = tracker.observe(hostile)
    assert deltas.pods == ()
    assert deltas.unallocated_mj == {}
    # Held, not missing: the series is neither pruned nor reset; the next sane reading continues from 1 J.
    for tick in range(3, 15):
        sane = scrape(1.0 + tick, 1.0 + tick, float(tick))
        book.fold(tracker.observe(sane), rates(tick - 1, tick, 100.0), by_owner, sane.model_of)
    account = book.accounts["job-1"]
    assert account.totals.energy_mj == 15_000
    assert math.isfinite(account.totals.gpu_seconds)


def test_non_finite_gpu_seconds_are_rejected() -> None:
    for value in (math.inf, math.nan):
        parsed = scrape(1.0, value, 1.0)
        assert parsed.series == {}
        assert [r.reason for r in parsed.rejected] == ["not_finite"]


def test_energy_above_the_power_limit_times_gpu_seconds_is_rejected_and_counted() -> None:
    tracker = DeltaTracker(max_gpu_power_w=1500.0)
    tracker.observe(scrape(0.0, 0.0, 0.0))
    # 10 GPU-seconds at 1500 W at most: 15 kJ (+1 %); 20 kJ is impossible, 15 kJ is fine.
    assert tracker.observe(scrape(20_000.0, 10.0, 1.0)).implausible == 1
    deltas = tracker.observe(scrape(15_000.0, 10.0, 2.0))
    assert (deltas.implausible, [d.energy_mj for d in deltas.pods]) == (0, [15_000_000])
    # An agent that exports its GPU's power limit is held to it (never above the configured bound): 70 W x 10 s is
    # 700 J, not 15 kJ; 70 W x 300 s allows 21 kJ.
    limit = (
        '# TYPE jouleledger_gpu_power_limit_watts gauge\njouleledger_gpu_power_limit_watts{gpu="GPU-a",node="n1"} 70\n'
    )
    assert tracker.observe(scrape(15_010.0, 10.0, 3.0, extra=limit)).implausible == 1
    assert tracker.observe(scrape(15_700.0, 300.0, 4.0, extra=limit)).implausible == 0


def test_idle_energy_above_what_the_gpus_can_draw_since_the_last_scrape_is_rejected() -> None:
    tracker = DeltaTracker(max_gpu_power_w=1000.0)
    tracker.observe(scrape(0.0, 0.0, 100.0, unallocated_j=0.0))
    # 10 s at 1000 W: at most 10 kJ (+1 %).
    assert tracker.observe(scrape(0.0, 0.0, 110.0, unallocated_j=20_000.0)).implausible == 1
    deltas = tracker.observe(scrape(0.0, 0.0, 120.0, unallocated_j=20_000.0))
    assert (deltas.implausible, deltas.unallocated_mj) == (0, {"GPU-a": 20_000_000})


def test_a_pod_of_another_node_in_the_exposition_changes_nothing() -> None:
    pod = Pod("ml", "x", "u", 1.0, 1.0)
    text = agent_text("n1", 1.0, [pod]).replace('node="n1",pod="x"', 'node="n2",pod="x"')
    parsed = parse_agent_samples(parse_exposition(text))
    assert parsed.series == {}

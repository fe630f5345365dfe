"""Workload footprints: folding by hand (intensity, PUE, embodied, cost), finality, finalisation, methods.

Expected values are computed by hand in the comments next to them.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouleledger.core.deltas import DeltaTracker, PodIdentity
from jouleledger.core.footprints import (
    KEY_CO2E,
    KEY_COST,
    KEY_ENERGY,
    KEY_GPU_HOURS,
    KEY_METHOD,
    KEY_SOURCE,
    KEY_VERSION,
    UNASSIGNED_TEAM,
    AnsweredTicks,
    FootprintBook,
    attribute,
    decide_finalization,
    default_finalize_deadline_s,
    default_write_interval_s,
    job_annotations,
    method_of,
)
from jouleledger.core.model import Owner
from jouleledger.core.workload import WorkloadRef
from tests.controller._exposition import agent_text
from tests.core._footprints import by_owner, job_pod, rates, scrape_of


def test_job_footprint_by_hand_per_interval_intensity_pue_embodied_and_cost() -> None:
    tracker, ledger = DeltaTracker(), FootprintBook("USD")
    tracker.observe(scrape_of(agent_text("n1", 900.0)))
    # Interval 1: 1.8 MJ = 0.5 kWh, 1800 GPU-s at 400 g/kWh. Interval 2: +1.0 kWh, +3600 GPU-s at 200 g/kWh.
    for end, energy_j, seconds, intensity in (
        (1000.0, 1_800_000.0, 1800.0, 400.0),
        (1015.0, 5_400_000.0, 5400.0, 200.0),
    ):
        scrape = scrape_of(agent_text("n1", end, [job_pod(energy_j, seconds)]))
        ledger.fold(tracker.observe(scrape), rates(end - 15, end, intensity), by_owner, scrape.model_of)
    account = ledger.accounts["job-1"]
    assert account.ref == WorkloadRef("ml", "Job", "train", "job-1", "batch/v1")
    assert account.totals.energy_mj == 5_400_000_000  # 1.5 kWh
    assert account.totals.gpu_seconds == pytest.approx(5400.0)
    assert account.totals.operational_g == pytest.approx(0.5 * 1.5 * 400 + 1.0 * 1.5 * 200)  # 600 g
    assert account.totals.embodied_g == pytest.approx(1.5 * 20)  # 30 g, no PUE
    assert account.totals.cost == pytest.approx(1.5 * 1.5 * 0.10)  # facility kWh x price = 0.225
    assert (account.interval_start_unix_s, account.interval_end_unix_s) == (985.0, 1015.0)
    assert account.team == "vision"
    assert account.pods_counted == 1
    final = ledger.finalize("job-1", completion_unix_s=1010.0, now_unix_s=1016.0)
    assert job_annotations(final) == {
        KEY_ENERGY: "1.500000",
        KEY_GPU_HOURS: "1.500000",
        KEY_CO2E: "630.000",
        KEY_COST: "0.2250 USD",
        KEY_SOURCE: "static",
        KEY_METHOD: "measured-nvml-energy-counter",
        KEY_VERSION: "1",
    }
    rollups = ledger.rollups()
    assert rollups.namespaces["ml"].energy_mj == rollups.teams["vision"].energy_mj == 5_400_000_000
    assert rollups.namespaces["ml"].carbon_g == pytest.approx(630.0)


def test_finalized_footprint_never_changes_and_late_energy_is_kept_apart() -> None:
    tracker, ledger = DeltaTracker(), FootprintBook("USD")
    for end, energy_j in ((1.0, 0.0), (2.0, 3600.0), (3.0, 7200.0)):
        scrape = scrape_of(agent_text("n1", end, [job_pod(energy_j, energy_j / 1000)]))
        ledger.fold(tracker.observe(scrape), rates(end - 1, end, 100.0), by_owner, scrape.model_of)
        if end == 2.0:
            first = ledger.finalize("job-1", 1.5, 2.0)
    assert ledger.finalize("job-1", 9.0, 9.0) is first
    account = ledger.accounts["job-1"]
    assert account.totals.energy_mj == first.totals.energy_mj == 3_600_000
    assert account.late_energy_mj == 3_600_000
    assert ledger.rollups().namespaces["ml"].energy_mj == 7_200_000  # roll-ups include late energy


def test_finalization_waits_for_every_agent_tick_after_completion_until_the_deadline() -> None:
    ticks = {"n1": 100.0, "n2": 99.0}
    assert decide_finalization(99.5, {"n1", "n2"}, ticks, 101.0, 60.0).missing_nodes == ("n2",)
    assert not decide_finalization(99.5, {"n1", "n2"}, ticks, 101.0, 60.0).ready
    assert decide_finalization(99.0, {"n1"}, ticks, 101.0, 60.0).ready
    assert not decide_finalization(100.0, {"n1"}, ticks, 101.0, 60.0).ready  # equal is not later
    late = decide_finalization(99.5, {"n1", "n2"}, ticks, 159.5, 60.0)
    assert (late.ready, late.timed_out, late.missing_nodes) == (True, True, ("n2",))


_NODES = st.sampled_from([f"n{index}" for index in range(6)])


@given(
    ticks=st.dictionaries(_NODES, st.sampled_from([98.0, 99.5, 100.0, 100.5, 103.0])),
    own=st.sets(_NODES, max_size=3),
    answered=st.sets(_NODES),
    now=st.sampled_from([100.5, 159.0, 160.0, 200.0]),
    skew=st.sampled_from([0.0, 2.0]),
)
def test_answering_agents_given_once_per_pass_decide_as_if_they_were_the_jobs_own_nodes(
    ticks: dict[str, float], own: set[str], answered: set[str], now: float, skew: float
) -> None:
    every = AnsweredTicks(answered, ticks)
    decision = decide_finalization(100.0, own, ticks, now, 60.0, clock_skew_s=skew, answered=every)
    joined = decide_finalization(100.0, own | answered, ticks, now, 60.0, clock_skew_s=skew)
    assert (decision.ready, decision.timed_out) == (joined.ready, joined.timed_out)
    if decision.ready:
        assert decision == joined
    else:  # waiting: the Job's own nodes behind are named, not every answering agent
        assert decision.missing_nodes == tuple(sorted(n for n in own if ticks.get(n, 0.0) <= 100.0 + skew))


def test_an_answering_agent_without_a_folded_tick_holds_every_waiting_job() -> None:
    every = AnsweredTicks({"n1", "new"}, {"n1": 105.0})
    assert every.oldest_unix_s == float("-inf")
    assert not decide_finalization(100.0, {"n1"}, {"n1": 105.0}, 101.0, 60.0, answered=every).ready
    assert AnsweredTicks((), {}).oldest_unix_s == float("inf")  # nobody answered: only the Job's nodes count
    assert decide_finalization(100.0, {"n1"}, {"n1": 105.0}, 101.0, 60.0, answered=AnsweredTicks((), {})).ready


def test_the_lag_of_the_answering_agents_is_now_less_their_oldest_folded_tick() -> None:
    assert AnsweredTicks({"n1", "n2"}, {"n1": 105.0, "n2": 98.5, "gone": 50.0}).lag_s(100.0) == 1.5
    assert AnsweredTicks({"n1"}, {"n1": 101.0}).lag_s(100.0) == -1.0  # that node's clock runs ahead
    assert AnsweredTicks({"n1", "new"}, {"n1": 105.0}).lag_s(100.0) == float("inf")  # "new" never folded
    assert AnsweredTicks((), {"n1": 105.0}).lag_s(100.0) is None  # nobody answered: no lag is known


def test_finalization_allows_for_node_clocks_behind_the_api_server() -> None:
    ticks = {"n1": 101.5}
    # A tick 1.5 s after the completion could be a reading from before it on a node whose clock is 2 s behind.
    assert not decide_finalization(100.0, {"n1"}, ticks, 102.0, 60.0, clock_skew_s=2.0).ready
    assert decide_finalization(100.0, {"n1"}, {"n1": 102.5}, 103.0, 60.0, clock_skew_s=2.0).ready
    assert decide_finalization(100.0, {"n1"}, ticks, 102.0, 60.0).ready  # no allowance


def test_method_names() -> None:
    assert method_of("nvml", False) == "measured-nvml-energy-counter"
    assert method_of("nvml", True) == method_of("simulated", True) == "simulated"
    assert method_of("replay", False) == "replayed-trace"
    assert method_of("", False) == "unknown"


def test_attribution_takes_the_pods_team_label_then_the_watched_team_then_unassigned() -> None:
    owners: dict[str, Owner | None] = {"rs-1": Owner("Deployment", "api", "dep-1", "apps/v1")}
    labelled = PodIdentity("a", "p", "u", Owner("ReplicaSet", "api-1", "rs-1"), {"team": "search"})
    owned = attribute(labelled, labelled.owner, owners, team_key="team", watched_team="other")
    assert (owned.workload.kind, owned.workload.uid, owned.team) == ("Deployment", "dep-1", "search")
    bare = PodIdentity("a", "p", "u")
    assert attribute(bare, None, owners, team_key="team", watched_team="ops").team == "ops"
    unverified = attribute(labelled, None, owners, team_key="squad")  # its named owner was not verified
    assert (unverified.workload.kind, unverified.team) == ("Pod", UNASSIGNED_TEAM)


def test_default_write_interval_and_finalize_deadline_follow_the_scrape_interval() -> None:
    assert default_write_interval_s(15.0) == 300.0  # at least 300 s
    assert default_write_interval_s(100.0) == 400.0  # four intervals
    assert default_finalize_deadline_s(5.0) == 120.0  # at least 120 s
    assert default_finalize_deadline_s(30.0) == 300.0  # ten intervals

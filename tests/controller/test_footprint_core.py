"""The operator's pure accounting core: parsing a scrape, deltas and resets, the ledger, records, Job logic.

Expected values are computed by hand in the comments next to them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.core.deltas import (
    ADOPTED,
    CONTINUED,
    NEW,
    RESET,
    AgentScrape,
    DeltaTracker,
    PodIdentity,
    ScrapeFormatError,
    SeriesKey,
    SeriesValue,
    parse_agent_samples,
)
from jouleledger.core.footprints import (
    KEY_CO2E,
    KEY_COST,
    KEY_ENERGY,
    KEY_GPU_HOURS,
    KEY_METHOD,
    KEY_SOURCE,
    KEY_VERSION,
    Attribution,
    FootprintBook,
    IntervalRates,
    decide_finalization,
    job_annotations,
    method_of,
)
from jouleledger.core.model import Owner
from jouleledger.core.workload import WorkloadRef, resolve_workload
from jouleledger.kube.footprints import account_from_object, footprint_object
from jouleledger.kube.jobs import job_state
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod, agent_text

H100 = "NVIDIA H100 80GB HBM3"


def scrape_of(text: str, node: str = "n1") -> AgentScrape:
    return parse_agent_samples(parse_exposition(text), expected_node=node)


def job_pod(energy_j: float, gpu_seconds: float, *, uid: str = "pod-1", name: str = "train-x") -> Pod:
    return Pod("ml", name, uid, energy_j, gpu_seconds, "Job", "train", "job-1", "vision")


def rates(start: float, end: float, intensity: float, **overrides: object) -> IntervalRates:
    values: dict[str, object] = {
        "start_unix_s": start,
        "end_unix_s": end,
        "zone": "z1",
        "intensity_g_per_kwh": intensity,
        "intensity_source": "static",
        "pue": 1.5,
        "price_per_kwh": 0.10,
        "currency": "USD",
        "method": "measured-nvml-energy-counter",
        "embodied_g_per_gpu_hour": {H100: 20.0},
        "default_embodied_g_per_gpu_hour": 0.0,
    }
    values.update(overrides)
    return IntervalRates(**values)  # type: ignore[arg-type]


def by_owner(pod: PodIdentity) -> Attribution:
    return Attribution(resolve_workload(pod.namespace, pod.name, pod.uid, pod.owner, {}), pod.labels.get("team", ""))


# --- parsing ---------------------------------------------------------------------------------------------------


def test_parse_maps_series_to_pod_identity_in_millijoules() -> None:
    scrape = scrape_of(agent_text("n1", 1000.5, [job_pod(12.3456, 7.5)], unallocated_j=2.5))
    key = SeriesKey("n1", "ml", "train-x", "main", "GPU-a")
    assert scrape.series == {key: SeriesValue(12346, 7.5)}  # 12.3456 J -> 12345.6 mJ -> 12346 mJ
    assert scrape.last_tick_unix_s == 1000.5
    assert scrape.backend == "nvml"
    assert scrape.unallocated_mj == {"GPU-a": 2500}
    pod = scrape.newest_pod("ml", "train-x")
    assert pod is not None
    assert (pod.uid, pod.owner, pod.labels["team"]) == ("pod-1", Owner("Job", "train", "job-1"), "vision")
    assert scrape.model_of("GPU-a") == H100
    assert scrape.model_of("MIG-zz") == H100  # a single model on the node
    assert scrape.rejected == ()


def test_parse_rejects_untrusted_values_and_counts_them() -> None:
    text = agent_text("n1", 10.0, [job_pod(5.0, 1.0)])
    text += (
        'jouleledger_pod_gpu_energy_joules_total{container="c",gpu="GPU-a",namespace="ml",node="n1",pod="ghost"} 3\n'
    )
    text = text.replace(
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-a",node="n1"} 0.0',
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-a",node="n1"} NaN\n'
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-b",node="n1"} -4\n'
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-c",node="n2"} 4',
    )
    scrape = scrape_of(text)
    reasons = sorted(rejection.reason for rejection in scrape.rejected)
    assert reasons == ["negative", "no_pod_info", "not_finite", "wrong_node"]
    assert scrape.unallocated_mj == {}
    assert list(scrape.series) == [SeriesKey("n1", "ml", "train-x", "main", "GPU-a")]


def test_parse_refuses_what_is_not_an_agent_of_that_node() -> None:
    with pytest.raises(ScrapeFormatError, match="not a Joule Ledger agent"):
        parse_agent_samples([("up", {}, 1.0)])
    with pytest.raises(ScrapeFormatError, match="runs on node 'n2'"):
        scrape_of(agent_text("n1", 1.0), node="n2")
    text = agent_text("n1", 1.0).replace("last_tick_timestamp_seconds", "other_gauge")
    with pytest.raises(ScrapeFormatError, match="last_tick"):
        scrape_of(text)


# --- deltas ----------------------------------------------------------------------------------------------------


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


# --- the ledger ------------------------------------------------------------------------------------------------


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


def test_record_round_trip_keeps_totals_watermarks_and_final() -> None:
    tracker, ledger = DeltaTracker(), FootprintBook("EUR")
    scrape = scrape_of(agent_text("n1", 5.0, [job_pod(36.0, 2.0)]))
    ledger.fold(tracker.observe(scrape), rates(4.0, 5.0, 123.0), by_owner, scrape.model_of)
    ledger.finalize("job-1", 4.5, 5.5)
    obj = footprint_object(ledger.accounts["job-1"])
    assert obj["metadata"]["name"] == "job-1"
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "job-1"}
    ]
    back = account_from_object(obj, currency="USD")
    original = ledger.accounts["job-1"]
    assert back.totals == original.totals
    assert back.watermarks == original.watermarks
    assert back.final == original.final
    assert back.currency == "EUR"
    assert job_annotations(back.final) == job_annotations(original.final)  # type: ignore[arg-type]


def test_workload_resolution_climbs_known_owners() -> None:
    owners: dict[str, Owner | None] = {
        "rs-1": Owner("Deployment", "api", "dep-1", "apps/v1"),
        "job-1": Owner("CronJob", "nightly", "cj-1", "batch/v1"),
        "job-2": Owner("JobSet", "big", "js-1", "jobset.x-k8s.io/v1alpha2"),
        "js-1": None,
    }
    resolve = resolve_workload
    assert resolve("a", "p", "u", None, owners) == WorkloadRef("a", "Pod", "p", "u", "v1")
    assert resolve("a", "p", "u", Owner("ReplicaSet", "api-1", "rs-1"), owners).kind == "Deployment"
    assert resolve("a", "p", "u", Owner("ReplicaSet", "x", "rs-9"), owners).kind == "ReplicaSet"
    cron = resolve("a", "p", "u", Owner("Job", "nightly-1", "job-1"), owners)
    assert (cron.kind, cron.uid, cron.parent_kind, cron.parent_name) == ("Job", "job-1", "CronJob", "nightly")
    assert resolve("a", "p", "u", Owner("Job", "big-0", "job-2"), owners).uid == "js-1"
    looping = {"x": Owner("Thing", "y", "y"), "y": Owner("Thing", "x", "x")}
    assert resolve("a", "p", "u", Owner("Thing", "x", "x"), looping).kind == "Thing"


# --- Jobs ------------------------------------------------------------------------------------------------------


def test_job_state_reads_conditions_and_the_version_annotation() -> None:
    complete = {
        "metadata": {"annotations": {KEY_VERSION: "1"}},
        "status": {
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:00:10Z"}]
        },
    }
    state = job_state(complete)
    assert (state.finished, state.outcome, state.annotated) == (True, "Complete", True)
    assert state.completion_unix_s == 1704067210.0
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "bad"}]}}
    assert job_state(failed).finished
    assert job_state(failed).completion_unix_s is None
    assert not job_state({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}).finished


def test_finalization_waits_for_every_agent_tick_after_completion_until_the_deadline() -> None:
    ticks = {"n1": 100.0, "n2": 99.0}
    assert decide_finalization(99.5, {"n1", "n2"}, ticks, 101.0, 60.0).missing_nodes == ("n2",)
    assert not decide_finalization(99.5, {"n1", "n2"}, ticks, 101.0, 60.0).ready
    assert decide_finalization(99.0, {"n1"}, ticks, 101.0, 60.0).ready
    assert not decide_finalization(100.0, {"n1"}, ticks, 101.0, 60.0).ready  # equal is not later
    late = decide_finalization(99.5, {"n1", "n2"}, ticks, 159.5, 60.0)
    assert (late.ready, late.timed_out, late.missing_nodes) == (True, True, ("n2",))


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

"""How the energy was measured, per workload: counter, power integration (a GPU without an energy counter), or both.

The agent exports, per pod series, the part of its energy whose intervals were integrated from power; the
operator keeps that part next to the total in the footprint and derives the Job's ``method`` annotation from it.
"""

from __future__ import annotations

from jouleledger.core.deltas import DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import KEY_METHOD, FootprintBook, job_annotations
from jouleledger.kube.footprints import account_from_object, footprint_object
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod, agent_text
from tests.core._footprints import by_owner, rates


def pod(energy_j: float, from_power_j: float) -> Pod:
    return Pod("ml", "train-x", "pod-1", energy_j, energy_j / 100, "Job", "train", "job-1", from_power_j=from_power_j)


def run(readings: list[tuple[float, float]], *, restart_after: int | None = None) -> FootprintBook:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    tracker.observe(parse_agent_samples(parse_exposition(agent_text("n1", 0.0))))
    for tick, (energy_j, from_power_j) in enumerate(readings, start=1):
        scrape = parse_agent_samples(parse_exposition(agent_text("n1", float(tick), [pod(energy_j, from_power_j)])))
        book.fold(tracker.observe(scrape), rates(tick - 1, tick, 100.0), by_owner, scrape.model_of)
        if restart_after == tick:
            restored = FootprintBook("USD")
            restored.restore(account_from_object(footprint_object(book.accounts["job-1"]), currency="USD"))
            tracker = DeltaTracker()
            for key, pod_uid, value in restored.watermarks():
                tracker.restore(key, pod_uid, value)
            book = restored
    return book


def test_a_gpu_without_an_energy_counter_is_annotated_integrated_nvml_power() -> None:
    book = run([(100.0, 100.0), (250.0, 250.0)])
    account = book.accounts["job-1"]
    assert (account.totals.energy_mj, account.totals.energy_from_power_mj) == (250_000, 250_000)
    final = book.finalize("job-1", 2.5, 3.0)
    assert job_annotations(final)[KEY_METHOD] == "integrated-nvml-power"
    status = footprint_object(account)["status"]
    assert (status["energyFromPowerMj"], status["final"]["energyFromPowerMj"]) == (250_000, 250_000)


def test_counter_energy_only_is_annotated_measured_nvml_energy_counter() -> None:
    book = run([(100.0, 0.0), (250.0, 0.0)])
    assert job_annotations(book.finalize("job-1", 2.5, 3.0))[KEY_METHOD] == "measured-nvml-energy-counter"
    assert book.accounts["job-1"].totals.energy_from_power_mj == 0


def test_both_are_mixed_with_the_split_kept_across_an_operator_restart() -> None:
    # 100 J from the counter, then 50 J of a rejected counter delta integrated from power, then 100 J more by counter.
    book = run([(100.0, 0.0), (150.0, 50.0), (250.0, 50.0)], restart_after=2)
    account = book.accounts["job-1"]
    assert (account.totals.energy_mj, account.totals.energy_from_power_mj) == (250_000, 50_000)
    assert job_annotations(book.finalize("job-1", 3.5, 4.0))[KEY_METHOD] == "mixed"

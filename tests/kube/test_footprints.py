"""A restored ``WorkloadFootprint`` is checked before it is trusted: a final record must equal the totals it froze
and render the annotations it says were written; the power part never exceeds the energy."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jouleledger.core.deltas import DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import FootprintBook, job_annotations
from jouleledger.kube.footprints import RecordError, account_from_object, footprint_object
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import agent_text
from tests.core._footprints import by_owner, job_pod, rates, scrape_of


def final_object() -> dict[str, Any]:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    for tick, energy_j in ((1.0, 0.0), (2.0, 3600.0)):
        scrape = parse_agent_samples(parse_exposition(agent_text("n1", tick, [job_pod(energy_j, energy_j / 100)])))
        book.fold(tracker.observe(scrape), rates(tick - 1, tick, 100.0), by_owner, scrape.model_of)
    book.finalize("job-1", 1.5, 2.5)
    return footprint_object(book.accounts["job-1"])


def test_a_consistent_final_footprint_is_restored() -> None:
    account = account_from_object(final_object(), currency="USD")
    assert account.final is not None
    assert account.final.totals == account.totals


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("final", "energyMillijoules"), 1, "final energy"),
        (("energyMillijoules",), 1, "final energy"),
        (("final", "gpuSeconds"), 9999.0, "gpu_seconds"),
        (("final", "annotations", "jouleledger.io/energy-kwh"), "0.000001", "annotations"),
        (("energyFromPowerMj",), 10**12, "energyFromPowerMj exceeds"),
    ],
)
def test_an_inconsistent_footprint_is_not_trusted(where: tuple[str, ...], value: object, message: str) -> None:
    obj = copy.deepcopy(final_object())
    target = obj["status"]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(RecordError, match=message):
        account_from_object(obj, currency="USD")


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

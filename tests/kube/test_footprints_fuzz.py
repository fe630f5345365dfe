"""Fuzzing what the operator reads back from the API as a ``WorkloadFootprint`` (:func:`account_from_object`):
whatever the object (edited by hand, by a tenant, by another version), either an account whose numbers are finite,
non-negative and bounded (so that folding more energy into it can never overflow) or a :class:`RecordError`,
which the operator counts and does not trust; never another exception."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from hypothesis import example, given, settings

from jouleledger.core.deltas import DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import FootprintBook
from jouleledger.core.units import MAX_COUNTER_MJ
from jouleledger.kube.footprints import RecordError, account_from_object, footprint_object
from jouleledger.metrics.operator_collector import parse_exposition
from tests._figures import figure
from tests._fuzz import json_values, mutated
from tests.controller._exposition import agent_text
from tests.core._footprints import by_owner, job_pod, rates

MAX_TOTAL: float = 1e18
"""Any float a restored footprint may hold stays below this (far beyond any real footprint): sums stay finite."""


def _object(*, final: bool) -> dict[str, Any]:
    book, tracker = FootprintBook("USD"), DeltaTracker()
    for tick, energy_j in ((1.0, 0.0), (2.0, 3600.0)):
        scrape = parse_agent_samples(parse_exposition(agent_text("n1", tick, [job_pod(energy_j, energy_j / 100)])))
        book.fold(tracker.observe(scrape), rates(tick - 1, tick, 100.0), by_owner, scrape.model_of)
    if final:
        book.finalize("job-1", 1.5, 2.5)
    return json.loads(json.dumps(footprint_object(book.accounts["job-1"])))


RUNNING, FINAL = _object(final=False), _object(final=True)


def _check(document: Any, outcomes: Counter[str]) -> None:
    try:
        account = account_from_object(document, currency="USD")
    except RecordError:
        outcomes["record_error"] += 1
        return
    outcomes["restored"] += 1
    totals = [account.totals, *([account.final.totals] if account.final else [])]
    for total in totals:
        assert 0 <= total.energy_from_power_mj <= total.energy_mj <= MAX_COUNTER_MJ
        for number in (total.gpu_seconds, total.operational_g, total.embodied_g, total.cost):
            assert math.isfinite(number)
            assert 0 <= number <= MAX_TOTAL
    assert 0 <= account.late_energy_mj <= MAX_COUNTER_MJ
    for watermark in account.watermarks.values():
        assert 0 <= watermark.energy_mj <= MAX_COUNTER_MJ
        assert 0 <= watermark.ticks <= MAX_COUNTER_MJ
        assert math.isfinite(watermark.gpu_seconds)
        assert 0 <= watermark.gpu_seconds <= MAX_TOTAL
    for moment in (account.first_seen_unix_s, account.last_seen_unix_s, account.interval_end_unix_s):
        assert math.isfinite(moment)


def test_any_footprint_object_is_restored_bounded_or_refused() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None)
    @example({**RUNNING, "metadata": ["not", "an", "object"]})  # AttributeError
    @example({**RUNNING, "status": {**RUNNING["status"], "gpuSeconds": 1e308}})  # sums overflow to inf
    @example({**RUNNING, "status": {**RUNNING["status"], "energyMillijoules": 1e300}})  # a 301-digit integer
    @given(mutated(RUNNING) | mutated(FINAL) | json_values)
    def run(document: Any) -> None:
        _check(document, outcomes)

    run()
    figure(f"footprint restore fuzz: {outcomes.total()} objects, {dict(sorted(outcomes.items()))}")
    assert outcomes["restored"]
    assert outcomes["record_error"]

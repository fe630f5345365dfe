"""The operator's roll-ups give idle (unallocated) energy its carbon and cost per node, at the node's rates."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from jouleledger.core.deltas import ScrapeDeltas
from jouleledger.core.footprints import Attribution, FootprintBook, IntervalRates
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.metrics.operator_collector import OperatorCollector

MJ_PER_KWH = 3_600_000_000


def _never(_: object) -> Attribution:
    raise AssertionError("no pod to attribute")


def test_idle_energy_gets_carbon_and_cost_per_node() -> None:
    book = FootprintBook("EUR")
    for intensity, idle_mj in ((400.0, 36_000_000), (100.0, 72_000_000)):  # two intervals of different intensity
        rates = IntervalRates(0.0, 15.0, "z", intensity, "static", 1.25, 0.3, "EUR", "measured-nvml-energy-counter")
        book.fold(ScrapeDeltas("n1", False, (), {"GPU-1": idle_mj}), rates, _never, lambda _: "H100")
    rollups = book.rollups()
    assert rollups.unallocated_mj == {"n1": 108_000_000}
    expected_g = 36_000_000 / MJ_PER_KWH * 1.25 * 400 + 72_000_000 / MJ_PER_KWH * 1.25 * 100
    assert rollups.unallocated_g["n1"] == pytest.approx(expected_g)
    assert rollups.unallocated_cost["n1"] == pytest.approx(108_000_000 / MJ_PER_KWH * 1.25 * 0.3)
    registry = CollectorRegistry()
    view = OperatorStats().view(rollups, {})
    registry.register(OperatorCollector(lambda: view))
    assert registry.get_sample_value("jouleledger_node_unallocated_carbon_grams_total", {"node": "n1"}) == (
        pytest.approx(expected_g)
    )
    cost = registry.get_sample_value("jouleledger_node_unallocated_cost_total", {"node": "n1", "currency": "EUR"})
    assert cost == pytest.approx(0.01125)

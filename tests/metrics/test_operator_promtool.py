"""The operator's exposition passes the real ``promtool check metrics`` (parser and linter)."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from jouleledger.core.footprints import RollupSnapshot, Totals
from jouleledger.core.operator_stats import NodeIntensity, OperatorStats
from jouleledger.metrics.operator_collector import OperatorCollector
from tests._tools import require_tool

pytestmark = pytest.mark.slow


def _exposition(stats: OperatorStats, rollups: RollupSnapshot) -> str:
    registry = CollectorRegistry()
    registry.register(OperatorCollector(lambda: stats.view(rollups, {("electricitymaps", "timeout"): 2})))
    return generate_latest(registry).decode()


def _busy() -> tuple[OperatorStats, RollupSnapshot]:
    stats = OperatorStats()
    stats.scrapes.update(ok=40, error=2, timeout=1)
    stats.agents = 3
    stats.counter_resets["gpu-node-1"] = 1
    stats.footprints_written = 7
    stats.count_error("api_error")
    stats.rejected["wrong_node"] = 4
    stats.oldest_tick_age_s = 17.25
    stats.node_intensity["gpu-node-1"] = NodeIntensity("eu-west-1", "electricitymaps", 212.5)
    for delay_s in (3.0, 14.0, 29.5):
        stats.observe_delay(delay_s)
    rollups = RollupSnapshot(
        namespaces={
            "team-a": Totals(3_600_000_000, 7200.0, 450.0, 25.0, 0.18),
            'odd "ns"\\': Totals(1, 0.5, 0.0, 0.0, 0.0),
        },
        teams={"vision": Totals(3_600_000_000, 7200.0, 450.0, 25.0, 0.18), "équipe": Totals(1, 0.5, 0, 0, 0)},
        unallocated_mj={"gpu-node-1": 5_000_000},
        currency="EUR",
    )
    return stats, rollups


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "fresh"])
def test_promtool_check_metrics_is_clean(busy: bool) -> None:
    promtool = require_tool("promtool")
    stats, rollups = _busy() if busy else (OperatorStats(), RollupSnapshot({}, {}, {}, "USD"))
    text = _exposition(stats, rollups)
    assert ("jouleledger_team_gpu_energy_joules_total{" in text) is busy
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""

"""Fixtures of the chart tests: the real helm binary and rendered objects."""

from __future__ import annotations

from typing import Any

import pytest

from tests._tools import require_tool
from tests.chart._helm import render


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="session")
def default_objects(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="session")
def monitoring_objects(helm: str) -> list[dict[str, Any]]:
    """Everything switched on: both monitors, the PrometheusRule, peering, dashboards."""
    return render(
        helm,
        sets=(
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.podMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            'monitoring.prometheusRule.budgets={"defaultEnergyKwhPerDay": 10, "defaultCarbonKgPerDay": 5,'
            ' "namespaces": {"research": {"energyKwhPerDay": 100}}, "for": "15m"}',
            "operator.peering.enabled=true",
        ),
    )

"""The agent's exposition passes the real ``promtool check metrics`` (parser and linter)."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from jouleledger.core.snapshot import ExportView, PodRecord
from jouleledger.metrics.agent import AgentCollector
from tests._tools import require_tool
from tests.metrics._views import example_view, running_pods_view

pytestmark = pytest.mark.slow


def _check(view: ExportView) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: view))
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry).decode(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _awkward_labels(view: ExportView) -> ExportView:
    """The example view with pod label values that need escaping (quotes, backslash, newline, non-ASCII)."""
    pods: dict[str, PodRecord] = {}
    for key, record in view.ledger.pods.items():
        labels = {**record.labels, "team": 'a "quoted" \\ back\nslash, équipe'}
        pods[key] = dataclasses.replace(record, labels=labels)
    return dataclasses.replace(view, ledger=dataclasses.replace(view.ledger, pods=pods))


@pytest.mark.parametrize(
    "view",
    [example_view(), _awkward_labels(example_view()), running_pods_view(0), running_pods_view(50)],
    ids=["example", "escaping", "empty", "fifty-pods"],
)
def test_promtool_check_metrics_is_clean(view: ExportView) -> None:
    result = _check(view)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_promtool_flags_a_broken_exposition() -> None:
    """The check above can fail: promtool rejects duplicate series."""
    promtool = require_tool("promtool")
    text = '# TYPE x_total counter\nx_total{a="1"} 1\nx_total{a="1"} 2\n'
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0

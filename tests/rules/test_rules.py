"""The chart's PrometheusRule with the real promtool: rules check, unit tests of every recording rule and alert
(``*.test.yaml`` here, each rendered with the ``*.values.yaml`` of the same name), and metric names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._tools import require_tool
from tests.chart._helm import CI_VALUES, by_kind, render
from tests.chart._promql import exported_names, recording_rule_names, undeclared

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
UNIT_TESTS = sorted(HERE.glob("*.test.yaml"))
PROMETHEUS_BUILTINS = {"up"}


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def rule_groups(helm: str, values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """The PrometheusRule's ``spec`` (a Prometheus rule file) rendered with these values."""
    objects = render(helm, values, ("monitoring.prometheusRule.enabled=true", *sets))
    (rule,) = by_kind(objects, "PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


def _rules(groups: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in groups["groups"] for rule in group["rules"]]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False, timeout=120)


VARIANTS = [pytest.param((), id="default"), *(pytest.param((path,), id=path.stem) for path in CI_VALUES)]


@pytest.mark.parametrize("values", VARIANTS)
def test_promtool_check_rules(helm: str, promtool: str, values: tuple[Path, ...], tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(helm, values)))
    result = _promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda path: path.name.removesuffix(".test.yaml"))
def test_promtool_unit_tests(helm: str, promtool: str, unit_test: Path, tmp_path: Path) -> None:
    values = unit_test.with_name(unit_test.name.replace(".test.yaml", ".values.yaml"))
    assert values.exists(), f"{unit_test.name} needs {values.name}"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(helm, (values,))))
    shutil.copy(unit_test, tmp_path / unit_test.name)
    result = _promtool(promtool, "test", "rules", str(tmp_path / unit_test.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_unit_test(helm: str) -> None:
    rules = _rules(rule_groups(helm, (HERE / "budgets.values.yaml",)))
    tests = yaml.safe_load((HERE / "budgets.test.yaml").read_text())["tests"]
    tested_exprs = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}
    tested_alerts = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    records = {rule["record"] for rule in rules if "record" in rule}
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert records == recording_rule_names()
    assert len(alerts) == 8
    assert records - tested_exprs == set(), "recording rules without a unit test"
    assert alerts - tested_alerts == set(), "alerts without a firing unit test"


def test_budget_rules_follow_the_values(helm: str) -> None:
    names = {rule.get("alert") or rule.get("record") for rule in _rules(rule_groups(helm))}
    assert "JouleLedgerNamespaceEnergyOverBudget" not in names
    assert "JouleLedgerNamespaceCarbonOverBudget" not in names
    assert "namespace:jouleledger_energy_budget_kwh:per_day" not in names
    default_only = {rule.get("alert") for rule in _rules(rule_groups(helm, (HERE / "default-only.values.yaml",)))}
    assert "JouleLedgerNamespaceEnergyOverBudget" in default_only
    assert "JouleLedgerNamespaceCarbonOverBudget" not in default_only


def test_agent_down_alert_selects_the_job_the_monitors_set(helm: str) -> None:
    objects = render(
        helm,
        sets=(
            "monitoring.prometheusRule.enabled=true",
            "monitoring.serviceMonitor.enabled=true",
            'monitoring.agentJobLabel="gpu-energy"',
        ),
    )
    (rule,) = by_kind(objects, "PrometheusRule")
    (down,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "JouleLedgerAgentDown"]
    assert down["expr"] == 'up{job="gpu-energy"} == 0'
    (monitor,) = [m for m in by_kind(objects, "ServiceMonitor") if m["metadata"]["name"].endswith("-agent")]
    relabel = {r["targetLabel"]: r for r in monitor["spec"]["endpoints"][0]["relabelings"]}
    assert relabel["job"]["replacement"] == "gpu-energy"


def test_rules_read_only_exported_metrics(helm: str) -> None:
    exprs = [rule["expr"] for rule in _rules(rule_groups(helm, (HERE / "budgets.values.yaml",)))]
    allowed = exported_names() | recording_rule_names() | PROMETHEUS_BUILTINS
    assert undeclared(exprs, allowed) == {}

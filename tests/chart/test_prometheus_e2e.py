"""End to end with a real Prometheus: the agent (simulated backend) is scraped every second with the chart's
recording rules loaded, and every PromQL expression of the dashboards and rules is evaluated through the HTTP
API. Each must parse and run; those that read only agent metrics must return data."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._tools import require_tool
from tests.chart._helm import by_kind, render
from tests.chart._promql import agent_exported_names, metric_names, substitute_grafana_variables
from tests.chart.test_dashboards import all_dashboard_queries

pytestmark = pytest.mark.slow

RULES_VALUES = Path(__file__).resolve().parent.parent / "rules" / "budgets.values.yaml"
AGENT_RULE_GROUP = "jouleledger.agent.rules"
# Agent series that a healthy simulated node legitimately does not have: labelled only once something happens.
MAY_BE_EMPTY = {
    "jouleledger_pod_finished_timestamp_seconds",  # no pod has finished yet
    "jouleledger_agent_rejected_readings_total",  # {reason}: no reading was rejected
    "jouleledger_agent_gpu_read_errors_total",  # {kind}: no read failed
}
STARTUP_TIMEOUT_S = 30.0
DATA_TIMEOUT_S = 40.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            if _get(url, 1.0)[0] == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"{what} did not answer {url} within {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _query(base: str, expr: str) -> dict[str, Any]:
    status, body = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    answer: dict[str, Any] = json.loads(body)
    answer["http_status"] = status
    return answer


@pytest.fixture(scope="module")
def rule_groups() -> dict[str, Any]:
    helm = require_tool("helm")
    objects = render(helm, (RULES_VALUES,))
    (rule,) = by_kind(objects, "PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


@pytest.fixture(scope="module")
def prometheus_url(rule_groups: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    agent_port, prometheus_port = _free_port(), _free_port()
    agent_command = [
        sys.executable, "-m", "jouleledger", "agent", "--backend", "simulated", "--node-name", "sim",
        "--listen-address", "127.0.0.1", "--port", str(agent_port), "--checkpoint-path", str(tmp / "checkpoint.json"),
    ]  # fmt: skip
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "jouleledger-agent",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus_command = [
        prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{prometheus_port}"
    with _process(agent_command, tmp / "agent.log") as agent:
        _wait_http(f"http://127.0.0.1:{agent_port}/healthz", agent, tmp / "agent.log", "the agent")
        with _process(prometheus_command, tmp / "prometheus.log") as server:
            _wait_http(f"{base}/-/ready", server, tmp / "prometheus.log", "prometheus")
            deadline = time.monotonic() + DATA_TIMEOUT_S
            while time.monotonic() < deadline:
                result = _query(base, "count_over_time(jouleledger_agent_ticks_total[1m])")
                if result.get("data", {}).get("result") and float(result["data"]["result"][0]["value"][1]) >= 3:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"no three scrapes of the agent within {DATA_TIMEOUT_S:.0f} s")
            yield base


def _all_expressions(rule_groups: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` for every dashboard query and every rule (Grafana variables substituted); an alert's
    expression is labelled ``alert`` (a condition that a healthy node does not meet returns nothing)."""
    exprs = [("dashboard", substitute_grafana_variables(expr)) for expr in all_dashboard_queries()]
    for group in rule_groups["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            exprs.append((f"{kind} {rule.get('record') or rule.get('alert')}", rule["expr"]))
            if "record" in rule:
                exprs.append((f"recorded by {group['name']}", rule["record"]))
    return exprs


def _agent_level(expr: str, agent_records: set[str]) -> bool:
    names = metric_names(expr)
    return bool(names) and names <= agent_exported_names() | agent_records and not names & MAY_BE_EMPTY


def test_every_expression_evaluates_and_agent_ones_return_data(
    prometheus_url: str, rule_groups: dict[str, Any]
) -> None:
    agent_records = {
        rule["record"]
        for group in rule_groups["groups"]
        if group["name"] == AGENT_RULE_GROUP
        for rule in group["rules"]
        if "record" in rule
    }
    assert agent_records
    expressions = _all_expressions(rule_groups)
    must_have_data = [
        (where, expr)
        for where, expr in expressions
        if not where.startswith("alert ") and _agent_level(expr, agent_records)
    ]
    assert len(must_have_data) >= 25
    failures: list[str] = []
    for where, expr in expressions:
        answer = _query(prometheus_url, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {expr}\n    -> {answer.get('errorType')}: {answer.get('error')}")
    assert not failures, "expressions Prometheus rejected:\n" + "\n".join(failures)
    # Rates need two samples and recorded series one rule evaluation: allow a few seconds more for data.
    pending = list(must_have_data)
    deadline = time.monotonic() + 15.0
    while pending and time.monotonic() < deadline:
        pending = [(w, e) for w, e in pending if not _query(prometheus_url, e)["data"]["result"]]
        if pending:
            time.sleep(1.0)
    assert not pending, "agent expressions without data:\n" + "\n".join(f"{w}: {e}" for w, e in pending)


def test_scraped_series_keep_the_workload_labels(prometheus_url: str) -> None:
    """honor_labels: the per-pod series carry the measured pod's namespace, not the scrape target's."""
    answer = _query(prometheus_url, "count by (namespace) (jouleledger_pod_gpu_energy_joules_total)")
    namespaces = {series["metric"].get("namespace") for series in answer["data"]["result"]}
    assert namespaces
    assert None not in namespaces
    up = _query(prometheus_url, 'up{job="jouleledger-agent"}')["data"]["result"]
    assert [float(series["value"][1]) for series in up] == [1.0]

"""End to end with a real Prometheus: the agent (simulated backend) and the operator (kopf, against a mock
Kubernetes API) are scraped every second with the chart's recording rules loaded, and every PromQL expression of
the dashboards and rules is evaluated through the HTTP API. Each must parse and run; every one that is not an
alert must return data, except those that read a series that only exists once something goes wrong or happens
(``MAY_BE_EMPTY``).

What runs, all on 127.0.0.1: the mock API (kmock, as in the operator's tests) holding a Node with a zone label,
the agent's pod, and the Jobs and ReplicaSets that own the simulated node's pods; ``jouleledger agent --backend
simulated``; ``jouleledger operator --standalone`` with a kubeconfig for the mock API; ``/usr/bin/prometheus``.
One Job that holds a GPU is marked complete once the operator has a footprint for it, so the operator writes its
annotations and the annotation-delay histogram has an observation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests._prometheus import logged_process
from tests._tools import require_tool
from tests.chart._helm import by_kind, render
from tests.chart._operator_stack import AGENT_NAMESPACE, MockKubernetesApi, agent_pod, node_object, write_kubeconfig
from tests.chart._promql import agent_exported_names, exported_names, metric_names, substitute_grafana_variables
from tests.chart.test_dashboards import all_dashboard_queries

pytestmark = pytest.mark.slow

RULES_VALUES = Path(__file__).resolve().parent.parent / "rules" / "budgets.values.yaml"
NODE = "sim-gpu-1"
ZONE = "eu-test-1"
ZONE_G_PER_KWH = 250.0
AGENT_RULE_GROUP = "jouleledger.agent.rules"
AGENT_JOB = "jouleledger-agent"
OPERATOR_JOB = "jouleledger-operator"
OPERATOR_CONFIG = {
    "teamLabel": "team",
    "pue": 1.2,
    "zoneLabels": ["topology.kubernetes.io/zone"],
    "intensity": {"provider": "static", "defaultGramsPerKwh": 400, "zones": {ZONE: ZONE_G_PER_KWH}},
    "embodied": {"defaultGramsPerGpuHour": 20},
    "price": {"currency": "USD", "defaultPerKwh": 0.15},
}
# Series that a healthy system legitimately does not have yet: each is labelled only once its event happens.
MAY_BE_EMPTY = {
    "jouleledger_pod_finished_timestamp_seconds": "no simulated pod need finish within the test (mean life 300 s)",
    "jouleledger_gpu_energy_from_power_joules_total": "every simulated GPU has an energy counter (absent while zero)",
    "jouleledger_pod_gpu_energy_from_power_joules_total": "as above: no pod energy comes from power integration",
    "jouleledger_agent_rejected_readings_total": "{reason}: the simulated GPUs give no implausible reading",
    "jouleledger_agent_gpu_read_errors_total": "{kind}: no GPU read fails",
    "jouleledger_operator_agent_resets_total": "{node}: the agent does not restart",
    "jouleledger_operator_job_footprint_errors_total": "{reason}: the mock API accepts every write",
    "jouleledger_operator_intensity_fallbacks_total": "{provider,reason}: the static table never falls back",
    "jouleledger_operator_rejected_samples_total": "{reason}: the agent's samples are all valid",
    **dict.fromkeys(
        [
            "jouleledger_workload_energy_joules_per_request",
            "jouleledger_workload_energy_joules_per_output_token",
            "jouleledger_workload_energy_joules_per_token",
            "jouleledger_workload_carbon_grams_per_1000_requests",
            "jouleledger_workload_serving_interval_seconds",
            "jouleledger_workload_serving_energy_joules_total",
            "jouleledger_workload_serving_carbon_grams_total",
            "jouleledger_workload_serving_requests_total",
            "jouleledger_workload_serving_prompt_tokens_total",
            "jouleledger_workload_serving_output_tokens_total",
            "jouleledger_operator_serving_reads_total",
        ],
        "no pod in the stack is labelled jouleledger.io/serving",
    ),
}
STARTUP_TIMEOUT_S = 30.0
DATA_TIMEOUT_S = 30.0
POLL_S = 0.2


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


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if _get(url, 1.0)[0] == 200:
                return
        time.sleep(POLL_S)
    pytest.fail(f"{what} did not answer {url} within {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _prometheus_command(prometheus: str, tmp: Path, port: int) -> list[str]:
    """A Prometheus on 127.0.0.1:``port`` with ``tmp/prometheus.yml`` and its data under ``tmp/data``."""
    return [
        prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip


def _query(base: str, expr: str) -> dict[str, Any]:
    status, body = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    answer: dict[str, Any] = json.loads(body)
    answer["http_status"] = status
    return answer


def _vector(base: str, expr: str) -> list[dict[str, Any]]:
    answer = _query(base, expr)
    assert answer.get("status") == "success", f"{expr}: {answer}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _poll(check: Any, timeout_s: float, what: str, logs: tuple[Path, ...] = ()) -> Any:
    """Call ``check`` until it returns something truthy (returned); fail after ``timeout_s`` with the logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            details = "".join(f"\n--- {log.name}:\n{_tail(log)}" for log in logs)
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}{details}")
        time.sleep(POLL_S)


def _samples(url: str, name: str) -> list[dict[str, str]]:
    """The label sets of the samples called ``name`` in the exposition at ``url``."""
    text = _get(url)[1].decode()
    return [dict(s.labels) for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def _rfc3339(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Stack:
    """What runs: Prometheus's URL, the mock API, the agent's /metrics, and the Job that completed (the
    ``jouleledger_pod_info`` labels of its pod) with its completion time."""

    prometheus: str
    api: MockKubernetesApi
    agent_metrics: str
    job: dict[str, str]
    job_completed_unix_s: float


def _mirror_owners(api: MockKubernetesApi, pod_infos: list[dict[str, str]]) -> None:
    """Create the Jobs and ReplicaSets (each controlled by a Deployment) that own the agent's pods."""
    done: set[str] = set()
    for info in pod_infos:
        kind, uid, namespace, name = info["owner_kind"], info["owner_uid"], info["namespace"], info["owner_name"]
        if not uid or uid in done:
            continue
        done.add(uid)
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid}
        if kind == "Job":
            api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", {"metadata": metadata, "status": {}})
        elif kind == "ReplicaSet":
            deployment = name.rsplit("-", 1)[0]
            metadata["ownerReferences"] = [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": f"deploy-{uid}",
                 "controller": True}
            ]  # fmt: skip
            api.create(f"/apis/apps/v1/namespaces/{namespace}/replicasets", {"metadata": metadata})


def _gpu_job(agent_metrics: str) -> dict[str, str] | None:
    """The pod_info labels of a Job's pod that was charged GPU energy on the simulated node (None: none yet)."""
    holders = {(s["namespace"], s["pod"]) for s in _samples(agent_metrics, "jouleledger_pod_gpu_energy_joules_total")}
    for info in _samples(agent_metrics, "jouleledger_pod_info"):
        if info["owner_kind"] == "Job" and (info["namespace"], info["pod"]) in holders:
            return info
    return None


@pytest.fixture(scope="module")
def rule_groups() -> dict[str, Any]:
    helm = require_tool("helm")
    objects = render(helm, (RULES_VALUES,))
    (rule,) = by_kind(objects, "PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


@pytest.fixture(scope="module")
def stack(rule_groups: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    agent_port, operator_port, prometheus_port = _free_port(), _free_port(), _free_port()
    agent_metrics = f"http://127.0.0.1:{agent_port}/metrics"
    base = f"http://127.0.0.1:{prometheus_port}"
    logs = {name: tmp / f"{name}.log" for name in ("agent", "operator", "prometheus")}

    (tmp / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    scrape_configs = [
        {"job_name": job, "honor_labels": True, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        for job, port in ((AGENT_JOB, agent_port), (OPERATOR_JOB, operator_port))
    ]
    prometheus_config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yaml")],
        "scrape_configs": scrape_configs,
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
    (tmp / "operator.yaml").write_text(yaml.safe_dump(OPERATOR_CONFIG))
    jouleledger = [sys.executable, "-m", "jouleledger"]
    agent_command = [
        *jouleledger, "agent", "--backend", "simulated", "--seed", "0", "--node-name", NODE, "--interval-s", "1",
        "--listen-address", "127.0.0.1", "--port", str(agent_port), "--label-allowlist", "team",
        "--checkpoint-path", str(tmp / "checkpoint.json"),
    ]  # fmt: skip
    operator_command = [
        *jouleledger, "operator", "--config", str(tmp / "operator.yaml"), "--listen-address", "127.0.0.1",
        "--port", str(operator_port), "--agent-namespace", AGENT_NAMESPACE,
        "--agent-selector", "app.kubernetes.io/component=agent", "--agent-port", str(agent_port),
        "--scrape-interval-s", "2", "--standalone",
    ]  # fmt: skip
    prometheus_command = _prometheus_command(prometheus, tmp, prometheus_port)

    with contextlib.ExitStack() as stack:
        api = stack.enter_context(MockKubernetesApi())
        api.create("/api/v1/nodes", node_object(NODE, ZONE))
        api.create(f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods", agent_pod(NODE, "127.0.0.1"))
        env = {**os.environ, "KUBECONFIG": str(write_kubeconfig(tmp / "kubeconfig", api.url))}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster login
        # The operator starts once the agent serves, so that the Jobs and ReplicaSets of the agent's pods are in the
        # API from the start (as in a cluster) and its first scrape finds the agent.
        agent = stack.enter_context(logged_process(agent_command, logs["agent"]))
        server = stack.enter_context(logged_process(prometheus_command, logs["prometheus"]))
        _wait_http(f"http://127.0.0.1:{agent_port}/healthz", agent, logs["agent"], "the agent")
        # The first tick only sets the baseline: energy series appear with the second (seed 0 runs GPU Jobs).
        job = _poll(lambda: _gpu_job(agent_metrics), STARTUP_TIMEOUT_S, "a Job's pod with GPU energy", (logs["agent"],))
        _mirror_owners(api, _samples(agent_metrics, "jouleledger_pod_info"))
        operator = stack.enter_context(logged_process(operator_command, logs["operator"], env))
        _wait_http(f"{base}/-/ready", server, logs["prometheus"], "prometheus")
        _wait_http(f"http://127.0.0.1:{operator_port}/healthz", operator, logs["operator"], "the operator")

        # Once the operator keeps a footprint for the Job, the Job completes; the operator then annotates it.
        footprint = f"/apis/jouleledger.io/v1alpha1/namespaces/{job['namespace']}/workloadfootprints/{job['owner_uid']}"
        _poll(
            lambda: api.request("GET", footprint)[0] == 200, DATA_TIMEOUT_S, "the Job's footprint", (logs["operator"],)
        )
        completed_s = float(int(time.time()))
        condition = {"type": "Complete", "status": "True", "lastTransitionTime": _rfc3339(completed_s)}
        status, answer = api.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/{job['namespace']}/jobs/{job['owner_name']}/status",
            {"status": {"conditions": [condition], "completionTime": _rfc3339(completed_s)}},
        )
        assert status == 200, answer

        def scraped_three_times() -> bool:
            counts = _vector(base, "count_over_time(up[1m])")
            return {series["metric"].get("job") for series in counts if float(series["value"][1]) >= 3} == {
                AGENT_JOB,
                OPERATOR_JOB,
            }

        _poll(
            scraped_three_times, DATA_TIMEOUT_S, "three scrapes of the agent and of the operator", (logs["prometheus"],)
        )
        yield Stack(base, api, agent_metrics, job, completed_s)


def _all_expressions(rule_groups: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` for every dashboard query and every rule (Grafana variables substituted); an alert's
    expression is labelled ``alert`` (a condition that a healthy system does not meet returns nothing)."""
    exprs = [("dashboard", substitute_grafana_variables(expr)) for expr in all_dashboard_queries()]
    for group in rule_groups["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            exprs.append((f"{kind} {rule.get('record') or rule.get('alert')}", rule["expr"]))
            if "record" in rule and not metric_names(rule["expr"]) & MAY_BE_EMPTY.keys():  # else it may be empty too
                exprs.append((f"recorded by {group['name']}", rule["record"]))
    return exprs


def test_the_exceptions_are_exported_names() -> None:
    assert MAY_BE_EMPTY.keys() <= exported_names()


def test_every_expression_evaluates_and_returns_data(stack: Stack, rule_groups: dict[str, Any]) -> None:
    expressions = _all_expressions(rule_groups)
    failures: list[str] = []
    for where, expr in expressions:
        answer = _query(stack.prometheus, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {expr}\n    -> {answer.get('errorType')}: {answer.get('error')}")
    assert not failures, "expressions Prometheus rejected:\n" + "\n".join(failures)

    must_have_data = [
        (where, expr)
        for where, expr in expressions
        if not where.startswith("alert ") and not metric_names(expr) & MAY_BE_EMPTY.keys()
    ]
    agent_records = {
        rule["record"]
        for group in rule_groups["groups"]
        if group["name"] == AGENT_RULE_GROUP
        for rule in group["rules"]
        if "record" in rule
    }
    assert agent_records
    # Operator level: reads a roll-up, an operator self-metric, or a rule recorded from them.
    operator_level = [e for _, e in must_have_data if metric_names(e) - agent_exported_names() - agent_records]
    assert len(must_have_data) >= 60
    assert len(operator_level) >= 30
    # Rates need two samples and recorded series one rule evaluation: allow a few seconds more for data.
    pending = list(must_have_data)
    deadline = time.monotonic() + 20.0
    while pending and time.monotonic() < deadline:
        pending = [(w, e) for w, e in pending if not _query(stack.prometheus, e)["data"]["result"]]
        if pending:
            time.sleep(0.5)
    assert not pending, "expressions without data:\n" + "\n".join(f"{w}: {e}" for w, e in pending)


def test_scraped_series_keep_the_workload_labels(stack: Stack) -> None:
    """honor_labels: the per-pod series carry the measured pod's namespace, not the scrape target's."""
    answer = _vector(stack.prometheus, "count by (namespace) (jouleledger_pod_gpu_energy_joules_total)")
    namespaces = {series["metric"].get("namespace") for series in answer}
    assert namespaces
    assert None not in namespaces
    up = _vector(stack.prometheus, 'up{job=~"jouleledger-.*"}')
    assert sorted((series["metric"]["job"], float(series["value"][1])) for series in up) == [
        (AGENT_JOB, 1.0),
        (OPERATOR_JOB, 1.0),
    ]


def test_operator_rolls_up_the_agents_pods(stack: Stack) -> None:
    """Namespaces and teams of the roll-ups are those of the agent's pods (teams from the allow-listed pod label);
    the node's intensity is the configured one of the zone that the Node object carries."""
    pod_infos = _samples(stack.agent_metrics, "jouleledger_pod_info")
    agent_namespaces = {info["namespace"] for info in pod_infos}
    agent_teams = {info["label_team"] for info in pod_infos}
    assert "" not in agent_teams, "--label-allowlist team: every simulated pod has a team label"
    namespaces = {
        s["metric"]["namespace"] for s in _vector(stack.prometheus, "jouleledger_namespace_gpu_energy_joules_total")
    }
    teams = {s["metric"]["team"] for s in _vector(stack.prometheus, "jouleledger_team_gpu_energy_joules_total")}
    assert stack.job["namespace"] in namespaces
    assert namespaces <= agent_namespaces
    assert teams
    assert teams <= agent_teams
    intensity = _vector(stack.prometheus, "jouleledger_node_grid_intensity_grams_per_kwh")
    assert [
        (s["metric"]["node"], s["metric"]["zone"], s["metric"]["source"], float(s["value"][1])) for s in intensity
    ] == [(NODE, ZONE, "static", ZONE_G_PER_KWH)]
    assert [float(s["value"][1]) for s in _vector(stack.prometheus, "jouleledger_operator_agents")] == [1.0]


def test_finished_job_is_annotated_and_its_delay_observed(stack: Stack) -> None:
    """The completed Job's footprint is final and complete, its annotations written once, the delay observed."""
    namespace, name, uid = stack.job["namespace"], stack.job["owner_name"], stack.job["owner_uid"]

    def annotations() -> dict[str, str]:
        status, job = stack.api.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        assert status == 200, job
        found: dict[str, str] = (job.get("metadata") or {}).get("annotations") or {}
        return found

    written = _poll(annotations, DATA_TIMEOUT_S, f"the annotations of Job {namespace}/{name}")
    assert written["jouleledger.io/footprint-version"] == "1"
    assert float(written["jouleledger.io/energy-kwh"]) > 0
    assert float(written["jouleledger.io/gpu-hours"]) > 0
    assert written["jouleledger.io/cost"].endswith(" USD")
    assert written["jouleledger.io/method"] == "simulated"
    status, footprint = stack.api.request(
        "GET", f"/apis/jouleledger.io/v1alpha1/namespaces/{namespace}/workloadfootprints/{uid}"
    )
    assert status == 200, footprint
    assert footprint["status"]["finalized"] is True
    assert footprint["status"]["team"] == stack.job["label_team"]
    assert footprint["status"]["final"]["complete"] is True, "the agent reported after the completion"
    assert footprint["status"]["final"]["completionTime"].startswith(_rfc3339(stack.job_completed_unix_s)[:-1])

    def observed() -> list[dict[str, Any]]:
        return _vector(stack.prometheus, "jouleledger_operator_annotation_delay_seconds_count > 0")

    (series,) = _poll(observed, DATA_TIMEOUT_S, "an annotation delay in Prometheus")
    assert float(series["value"][1]) == 1.0
    (delay,) = _vector(stack.prometheus, "jouleledger_operator_annotation_delay_seconds_sum")
    # Annotated after the completion, and before this test saw the observation.
    assert 0.0 < float(delay["value"][1]) < time.time() - stack.job_completed_unix_s
    (count,) = _vector(stack.prometheus, "jouleledger_operator_job_footprints_written_total")
    assert float(count["value"][1]) == 1.0

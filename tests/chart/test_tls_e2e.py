"""End to end with TLS, client certificates and basic auth everywhere, as real processes: ``jouleledger agent`` and
``jouleledger operator`` each with ``--web-config-file``, the operator scraping the agent with its client
certificate and password (``--agent-scheme https`` ...), and a real Prometheus scraping both with ``tls_config`` and
``basic_auth`` (a second job with a wrong password is refused)."""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests._prometheus import logged_process
from tests._tls import PASSWORD, SERVER_NAME, USER, Pki, make_pki
from tests._tools import require_tool
from tests.chart._operator_stack import AGENT_NAMESPACE, MockKubernetesApi, agent_pod, node_object, write_kubeconfig
from tests.chart.test_prometheus_e2e import _free_port, _poll, _prometheus_command, _tail, _vector

pytestmark = pytest.mark.slow

NODE = "gpu-node-tls"
TIMEOUT_S = 60.0


def _wait_https(url: str, pki: Pki, process: object, log: Path) -> None:
    """/healthz needs no password, but the TLS layer wants a client certificate (as the web config says)."""
    deadline = time.monotonic() + TIMEOUT_S
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with httpx.Client(verify=context, trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if getattr(process, "poll", lambda: None)() is not None:
                pytest.fail(f"{log.stem} exited:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {TIMEOUT_S:.0f} s:\n{_tail(log)}")


@pytest.fixture(scope="module")
def prometheus_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("tls-e2e")
    pki = make_pki(tmp)
    web = pki.web_config(client_auth=True)
    (tmp / "password").write_text(PASSWORD, encoding="utf-8")
    agent_port, operator_port, prometheus_port = _free_port(), _free_port(), _free_port()
    logs = {name: tmp / f"{name}.log" for name in ("agent", "operator", "prometheus")}
    tls = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
        "server_name": SERVER_NAME,
    }

    def job(name: str, port: int, password: str) -> dict[str, object]:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": tls,
            "basic_auth": {"username": USER, "password": password},
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        }

    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            job("agent", agent_port, PASSWORD),
            job("operator", operator_port, PASSWORD),
            job("intruder", agent_port, "guess"),
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    jouleledger = [sys.executable, "-m", "jouleledger"]
    agent_command = [
        *jouleledger, "agent", "--backend", "simulated", "--seed", "0", "--node-name", NODE, "--interval-s", "1",
        "--listen-address", "127.0.0.1", "--port", str(agent_port), "--dry-run", "--web-config-file", str(web),
    ]  # fmt: skip
    operator_command = [
        *jouleledger, "operator", "--listen-address", "127.0.0.1", "--port", str(operator_port),
        "--agent-namespace", AGENT_NAMESPACE, "--agent-selector", "app.kubernetes.io/component=agent",
        "--agent-port", str(agent_port), "--scrape-interval-s", "1", "--standalone", "--dry-run",
        "--web-config-file", str(web), "--agent-scheme", "https", "--agent-ca-file", str(pki.ca),
        "--agent-server-name", SERVER_NAME, "--agent-cert-file", str(pki.client_cert),
        "--agent-key-file", str(pki.client_key), "--agent-basic-auth-username", USER,
        "--agent-basic-auth-password-file", str(tmp / "password"),
    ]  # fmt: skip
    prometheus_command = _prometheus_command(prometheus, tmp, prometheus_port)
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(MockKubernetesApi())
        api.create("/api/v1/nodes", node_object(NODE, "z1"))
        api.create(f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods", agent_pod(NODE, "127.0.0.1"))
        env = {**os.environ, "KUBECONFIG": str(write_kubeconfig(tmp / "kubeconfig", api.url))}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        agent = stack.enter_context(logged_process(agent_command, logs["agent"]))
        _wait_https(f"https://127.0.0.1:{agent_port}/healthz", pki, agent, logs["agent"])
        operator = stack.enter_context(logged_process(operator_command, logs["operator"], env))
        stack.enter_context(logged_process(prometheus_command, logs["prometheus"]))
        _wait_https(f"https://127.0.0.1:{operator_port}/healthz", pki, operator, logs["operator"])
        base = f"http://127.0.0.1:{prometheus_port}"
        _poll(
            lambda: _ready(base),
            TIMEOUT_S,
            "prometheus",
            (logs["prometheus"],),
        )
        yield base
        for process in (agent, operator):
            assert process.poll() is None, _tail(logs["agent"]) + _tail(logs["operator"])


def _ready(base: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/-/ready", trust_env=False, timeout=1.0).status_code == 200
    return False


def _value(base: str, expr: str) -> float | None:
    with contextlib.suppress(AssertionError, httpx.HTTPError, ValueError):
        result = _vector(base, expr)
        if result:
            return float(result[0]["value"][1])
    return None


def test_prometheus_scrapes_both_over_tls_with_basic_auth(prometheus_base: str) -> None:
    _poll(lambda: _value(prometheus_base, 'up{job="agent"}') == 1.0, TIMEOUT_S, "the agent scraped over TLS")
    _poll(lambda: _value(prometheus_base, 'up{job="operator"}') == 1.0, TIMEOUT_S, "the operator scraped over TLS")
    assert _value(prometheus_base, 'count(jouleledger_agent_info{job="agent"})') == 1.0


def test_a_wrong_password_is_refused(prometheus_base: str) -> None:
    _poll(lambda: _value(prometheus_base, 'up{job="intruder"}') == 0.0, TIMEOUT_S, "the intruder job refused")
    assert _value(prometheus_base, 'count(jouleledger_agent_info{job="intruder"})') is None


def test_the_operator_scrapes_the_agent_with_its_client_certificate_and_password(prometheus_base: str) -> None:
    expr = 'jouleledger_operator_scrapes_total{job="operator", result="ok"}'
    _poll(lambda: (_value(prometheus_base, expr) or 0.0) >= 2, TIMEOUT_S, "two good scrapes of the agent")
    failed = 'sum(jouleledger_operator_scrapes_total{job="operator", result!="ok"})'
    assert _value(prometheus_base, failed) == 0.0

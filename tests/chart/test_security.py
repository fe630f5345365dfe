"""The chart's NetworkPolicies and the TLS/authentication of /metrics (metricsSecurity), on rendered objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jouleledger.cli import build_parser
from tests.chart._helm import CHART, NAMESPACE, RELEASE, HelmError, by_kind, render

pytestmark = pytest.mark.slow

SECURED = CHART / "ci" / "secured-values.yaml"
WEB_DIR = "/etc/jouleledger/web"


def _labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "jouleledger",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }


def _policy(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith(f"-{component}")]
    return policy


def _pod_spec(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (workload,) = by_kind(objects, kind)
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def test_no_network_policy_by_default(default_objects: list[Any], monitoring_objects: list[Any]) -> None:
    assert not by_kind(default_objects, "NetworkPolicy")
    assert not by_kind(monitoring_objects, "NetworkPolicy")


def test_agent_metrics_only_from_the_operator_the_test_pod_and_prometheus(helm: str) -> None:
    objects = render(helm, (SECURED,))
    policy = _policy(objects, "agent")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"] == {"matchLabels": _labels("agent")}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": _labels("operator")}},  # same namespace: no namespaceSelector
        {"podSelector": {"matchLabels": _labels("test")}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
    ]
    (test_pod,) = [pod for pod in by_kind(objects, "Pod") if "helm.sh/hook" in pod["metadata"]["annotations"]]
    assert _labels("test").items() <= test_pod["metadata"]["labels"].items()
    operator_pod_labels = by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert _labels("operator").items() <= operator_pod_labels.items()


def test_operator_metrics_only_from_prometheus_with_configurable_selectors(helm: str) -> None:
    objects = render(
        helm,
        sets=(
            "networkPolicy.enabled=true",
            'networkPolicy.prometheus=[{"namespaceSelector": {"matchLabels": {"team": "obs"}},'
            ' "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["prom"]}]}},'
            ' {"ipBlock": {"cidr": "10.0.0.0/8"}}]',
        ),
    )
    prometheus = {
        "namespaceSelector": {"matchLabels": {"team": "obs"}},
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["prom"]}]},
    }
    (rule,) = _policy(objects, "operator")["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [prometheus, {"ipBlock": {"cidr": "10.0.0.0/8"}}]
    (agent_rule,) = _policy(objects, "agent")["spec"]["ingress"]
    assert agent_rule["from"][2:] == [prometheus, {"ipBlock": {"cidr": "10.0.0.0/8"}}]


def test_without_prometheus_peers_the_operator_admits_nobody(helm: str) -> None:
    objects = render(helm, sets=("networkPolicy.enabled=true", "networkPolicy.prometheus=[]"))
    assert _policy(objects, "operator")["spec"]["ingress"] == []
    (agent_rule,) = _policy(objects, "agent")["spec"]["ingress"]
    assert agent_rule["from"] == [
        {"podSelector": {"matchLabels": _labels("operator")}},
        {"podSelector": {"matchLabels": _labels("test")}},
    ]


def test_the_policy_port_is_the_container_port_name(helm: str) -> None:
    objects = render(helm, (SECURED,))
    for kind in ("DaemonSet", "Deployment"):
        (container,) = _pod_spec(objects, kind)["containers"]
        assert [port["name"] for port in container["ports"]] == ["metrics"]


def test_metrics_security_is_off_by_default(default_objects: list[Any]) -> None:
    for kind in ("DaemonSet", "Deployment"):
        spec = _pod_spec(default_objects, kind)
        (container,) = spec["containers"]
        assert "--web-config-file" not in container["args"]
        assert not any(arg.startswith("--agent-scheme") for arg in container["args"])
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert "web" not in {volume["name"] for volume in spec["volumes"]}


def _mounted(spec: dict[str, Any], path: str) -> bool:
    (container,) = spec["containers"]
    return any(path.startswith(mount["mountPath"] + "/") for mount in container["volumeMounts"])


def test_secured_variant_mounts_the_secret_and_passes_every_file_to_the_program(helm: str) -> None:
    objects = render(helm, (SECURED,))
    parsed = {}
    for kind, env in (("DaemonSet", {"NODE_NAME": "n"}), ("Deployment", {"POD_NAMESPACE": NAMESPACE})):
        spec = _pod_spec(objects, kind)
        (container,) = spec["containers"]
        (web,) = [volume for volume in spec["volumes"] if volume["name"] == "web"]
        assert web["secret"] == {"secretName": "jouleledger-web", "defaultMode": 0o440}
        (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == "web"]
        assert mount == {"name": "web", "mountPath": WEB_DIR, "readOnly": True}
        # Client certificates are required: the kubelet has none, so the probes are TCP checks.
        assert container["readinessProbe"]["tcpSocket"] == {"port": "metrics"}
        assert container["livenessProbe"]["tcpSocket"] == {"port": "metrics"}
        args = [arg.replace("$(NODE_NAME)", "n").replace("$(POD_NAMESPACE)", NAMESPACE) for arg in container["args"]]
        parsed[kind] = build_parser(args).parse_args(args)
        assert parsed[kind].web_config_file == Path(WEB_DIR) / "web-config.yml"
        assert env
    operator = parsed["Deployment"]
    assert operator.agent_scheme == "https"
    assert operator.agent_server_name == f"{RELEASE}-jouleledger-agent.{NAMESPACE}.svc"
    assert operator.agent_basic_auth_username == "operator"
    files = {
        operator.agent_ca_file: "ca.crt",
        operator.agent_cert_file: "operator.crt",
        operator.agent_key_file: "operator.key",
        operator.agent_basic_auth_password_file: "scrape-password",
    }
    spec = _pod_spec(objects, "Deployment")
    for path, key in files.items():
        assert path == Path(WEB_DIR) / key
        assert _mounted(spec, str(path))


def test_tls_without_client_certificates_probes_over_https(helm: str) -> None:
    objects = render(
        helm,
        sets=('metricsSecurity={"enabled": true, "secretName": "web", "scrape": {"bearerTokenFile": "token"}}',),
    )
    for kind in ("DaemonSet", "Deployment"):
        (container,) = _pod_spec(objects, kind)["containers"]
        probe = {"path": "/healthz", "port": "metrics", "scheme": "HTTPS"}
        assert container["readinessProbe"]["httpGet"] == probe
        assert container["livenessProbe"]["httpGet"] == probe
    (operator,) = _pod_spec(objects, "Deployment")["containers"]
    args = operator["args"]
    assert args[args.index("--agent-bearer-token-file") + 1] == f"{WEB_DIR}/token"
    assert "--agent-cert-file" not in args
    assert "--agent-basic-auth-username" not in args
    (test_pod,) = by_kind(objects, "Pod")
    assert test_pod["spec"]["containers"][0]["command"][-1].startswith("https://")


def test_monitors_get_the_endpoint_security(helm: str) -> None:
    objects = render(helm, (SECURED,))
    monitors = by_kind(objects, "ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "jouleledger-web", "key": "ca.crt"}
        assert endpoint["basicAuth"]["password"] == {"name": "jouleledger-prometheus", "key": "password"}


def test_enabled_without_a_secret_is_refused(helm: str) -> None:
    with pytest.raises(HelmError, match="secretName"):
        render(helm, sets=("metricsSecurity.enabled=true",))


def test_the_helm_test_pod_verifies_the_agent_as_the_operator_does(helm: str) -> None:
    objects = render(helm, (SECURED,))
    (test_pod,) = by_kind(objects, "Pod")
    spec = test_pod["spec"]
    command = spec["containers"][0]["command"]
    svc = f"{RELEASE}-jouleledger-agent.{NAMESPACE}.svc"
    assert "--insecure" not in command
    assert command[command.index("--cacert") + 1] == f"{WEB_DIR}/ca.crt"
    assert command[command.index("--cert") + 1] == f"{WEB_DIR}/operator.crt"
    assert command[command.index("--key") + 1] == f"{WEB_DIR}/operator.key"
    assert command[command.index("--connect-to") + 1] == f"{svc}:9470:{svc}:9470"
    assert command[-1] == f"https://{svc}:9470/healthz"
    for path in (f"{WEB_DIR}/ca.crt", f"{WEB_DIR}/operator.crt", f"{WEB_DIR}/operator.key"):
        assert _mounted(spec, path)
    assert spec["securityContext"]["fsGroup"] == 65532  # the Secret's files are mode 0440
    named = render(
        helm,
        (SECURED,),
        sets=('metricsSecurity.scrape.serverName="agents.example"',),
    )
    (named_pod,) = by_kind(named, "Pod")
    named_command = named_pod["spec"]["containers"][0]["command"]
    assert named_command[named_command.index("--connect-to") + 1] == f"agents.example:9470:{svc}:9470"
    assert named_command[-1] == "https://agents.example:9470/healthz"

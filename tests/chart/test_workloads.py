"""The agent DaemonSet and the operator Deployment as rendered: placement, mounts, security, probes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart._helm import by_kind, render

pytestmark = pytest.mark.slow


def _pod(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (workload,) = by_kind(objects, kind)
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in container["volumeMounts"]}


def _assert_hardened(container: dict[str, Any]) -> None:
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("privileged", False) is False
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]


def test_agent_runs_on_gpu_nodes_only(default_objects: list[Any]) -> None:
    pod = _pod(default_objects, "DaemonSet")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "runtimeClassName" not in pod


def test_agent_runtime_class_and_affinity_options(helm: str) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
            }
        }
    }
    pod = _pod(
        render(helm, sets=('agent.runtimeClassName="nvidia"', f"agent.affinity={json.dumps(affinity)}")), "DaemonSet"
    )
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["affinity"] == affinity


def test_agent_mounts_and_environment(default_objects: list[Any]) -> None:
    pod = _pod(default_objects, "DaemonSet")
    (container,) = pod["containers"]
    assert pod["hostPID"] is False
    assert not pod.get("hostNetwork", False)
    mounts = _mounts(container)
    assert mounts["/host/proc"]["readOnly"] is True
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    assert not mounts["/var/lib/jouleledger"].get("readOnly", False)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    host_paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in volumes.values() if "hostPath" in v}
    assert host_paths == {
        "/proc": "Directory",
        "/var/lib/kubelet/pod-resources": "Directory",
        "/var/lib/jouleledger": "DirectoryOrCreate",
    }
    env = {item["name"]: item for item in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    args = container["args"]
    assert args[0] == "agent"
    assert args[args.index("--node-name") + 1] == "$(NODE_NAME)"
    assert args[args.index("--checkpoint-path") + 1].startswith("/var/lib/jouleledger/")
    assert args[args.index("--kubelet-socket") + 1] == "unix:///var/lib/kubelet/pod-resources/kubelet.sock"


def test_agent_security_context(default_objects: list[Any]) -> None:
    pod = _pod(default_objects, "DaemonSet")
    (container,) = pod["containers"]
    _assert_hardened(container)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Root only for the kubelet socket; no capabilities, no privileges (documented in values.yaml).
    assert pod["securityContext"]["runAsUser"] == 0


def test_operator_is_a_single_non_root_replica(default_objects: list[Any]) -> None:
    (deployment,) = by_kind(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    _assert_hardened(container)
    assert "--standalone" in container["args"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64


def test_operator_config_change_restarts_the_operator(helm: str, default_objects: list[Any]) -> None:
    (before,) = by_kind(default_objects, "Deployment")
    (after,) = by_kind(render(helm, sets=("operator.config.pue=1.5",)), "Deployment")
    key = "checksum/config"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_credentials_are_mounted_files_not_api_reads(helm: str) -> None:
    objects = render(helm, sets=('operator.credentialsSecret="intensity-tokens"',))
    pod = _pod(objects, "Deployment")
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == "intensity-tokens"
    (container,) = pod["containers"]
    assert _mounts(container)["/etc/jouleledger/credentials"]["readOnly"] is True
    assert not [obj for obj in objects if obj["kind"] == "Secret"]


def test_services(default_objects: list[Any]) -> None:
    services = {svc["metadata"]["name"]: svc for svc in by_kind(default_objects, "Service")}
    agent = services["jl-test-jouleledger-agent"]
    operator = services["jl-test-jouleledger-operator"]
    assert agent["spec"]["clusterIP"] == "None"
    assert agent["spec"]["ports"][0]["port"] == 9470
    assert operator["spec"]["ports"][0]["port"] == 9471
    assert agent["spec"]["selector"]["app.kubernetes.io/component"] == "agent"
    assert operator["spec"]["selector"]["app.kubernetes.io/component"] == "operator"


def test_monitors_are_off_by_default_and_honour_labels(
    default_objects: list[Any], monitoring_objects: list[Any]
) -> None:
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert not by_kind(default_objects, kind)
    monitors = by_kind(monitoring_objects, "ServiceMonitor") + by_kind(monitoring_objects, "PodMonitor")
    assert len(monitors) == 4
    for monitor in monitors:
        endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
        (endpoint,) = endpoints
        # Series carry the measured pod's namespace/pod labels: they must win over the target's.
        assert endpoint["honorLabels"] is True
        assert endpoint["port"] == "metrics"


def test_dashboards_are_labelled_config_maps(default_objects: list[Any]) -> None:
    dashboards = [cm for cm in by_kind(default_objects, "ConfigMap") if "-dashboard-" in cm["metadata"]["name"]]
    assert len(dashboards) == 4
    for config_map in dashboards:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        (content,) = config_map["data"].values()
        assert content.lstrip().startswith("{")


def test_helm_test_pod_curls_agent_healthz(default_objects: list[Any]) -> None:
    tests = [pod for pod in by_kind(default_objects, "Pod") if pod["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    (pod,) = tests
    (container,) = pod["spec"]["containers"]
    assert container["command"][0] == "curl"
    assert container["command"][-1] == "http://jl-test-jouleledger-agent.energy.svc:9470/healthz"
    _assert_hardened(container)

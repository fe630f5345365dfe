"""The chart against a real API server: server-side dry run of every CI variant, install under the Pod Security
levels, upgrade and uninstall."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.chart._helm import CHART, CI_VALUES, render
from tests.realkube._cluster import create_namespace, helm_cli
from tests.realkube._controlplane import ApiCallError, ControlPlane, KubeClient

MONITORING_KINDS = {
    "ServiceMonitor": "servicemonitors",
    "PodMonitor": "podmonitors",
    "PrometheusRule": "prometheusrules",
}


def _minimal_crd(kind: str, plural: str) -> dict[str, Any]:
    """A Prometheus Operator CRD reduced to what the API server needs to accept (and dry-run) objects of it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                        }
                    },
                }
            ],
        },
    }


def _ensure_crds(controlplane: ControlPlane, admin: KubeClient) -> None:
    result = controlplane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    assert result.returncode == 0, result.stderr
    for kind, plural in MONITORING_KINDS.items():
        if not admin.exists(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.monitoring.coreos.com"):
            admin.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", _minimal_crd(kind, plural))
    for name in [f"{p}.monitoring.coreos.com" for p in MONITORING_KINDS.values()] + [
        "workloadfootprints.jouleledger.io"
    ]:
        result = controlplane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def crds(controlplane: ControlPlane, admin: KubeClient) -> None:
    _ensure_crds(controlplane, admin)


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: "default" if v is None else Path(v).stem)
def test_every_rendered_object_is_accepted_by_the_real_api_server(
    controlplane: ControlPlane, admin: KubeClient, helm: str, tmp_path: Path, values: Path | None
) -> None:
    namespace = "dryrun"
    create_namespace(admin, namespace, {"pod-security.kubernetes.io/enforce": "privileged"})
    objects = render(helm, () if values is None else (values,))
    for obj in objects:  # e.g. the dashboards in another namespace
        other = obj["metadata"].get("namespace")
        if other and other != "energy":
            create_namespace(admin, other)
        elif obj["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects") or ():
            subject["namespace"] = namespace
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text("\n---\n".join(json.dumps(o) for o in objects))
    result = controlplane.kubectl("apply", "--dry-run=server", "--server-side", "-f", str(manifest))
    assert result.returncode == 0, f"the API server refused the chart's objects:\n{result.stderr}"
    accepted = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), result.stdout


def test_install_upgrade_uninstall_in_a_privileged_namespace(
    controlplane: ControlPlane, admin: KubeClient, helm: str, crds: None
) -> None:
    namespace = "jl-privileged"
    create_namespace(admin, namespace, {"pod-security.kubernetes.io/enforce": "privileged"})
    release = "jlp"
    result = helm_cli(helm, controlplane, "install", release, str(CHART), "--namespace", namespace)
    assert "STATUS: deployed" in result.stdout
    deployment = admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{release}-jouleledger-operator")
    assert deployment["spec"]["replicas"] == 1
    assert admin.exists(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{release}-jouleledger-agent")

    # The agent's pod, as the DaemonSet controller would create it, is admitted under "privileged".
    daemonset = admin.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{release}-jouleledger-agent")
    pod = _pod_from_template(daemonset, "agent-probe")
    admin.create(f"/api/v1/namespaces/{namespace}/pods", pod, params={"dryRun": "All"})

    # A footprint recorded while installed.
    footprint = _footprint(namespace, "0000-survivor")
    admin.create(f"/apis/jouleledger.io/v1alpha1/namespaces/{namespace}/workloadfootprints", footprint)

    result = helm_cli(
        helm,
        controlplane,
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "operator.scrapeIntervalSeconds=30",
    )
    assert "REVISION: 2" in result.stdout
    deployment = admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{release}-jouleledger-operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--scrape-interval-s") + 1] == "30"

    helm_cli(helm, controlplane, "uninstall", release, "--namespace", namespace)
    assert not admin.exists(f"/apis/apps/v1/namespaces/{namespace}/deployments/{release}-jouleledger-operator")
    assert not admin.exists(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{release}-jouleledger-operator")
    # Helm never deletes what crds/ installed: the CRD, and so every footprint, stays.
    assert admin.exists("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/workloadfootprints.jouleledger.io")
    kept = admin.get(f"/apis/jouleledger.io/v1alpha1/namespaces/{namespace}/workloadfootprints/0000-survivor")
    assert kept["spec"]["workload"]["name"] == "survivor"


def test_install_in_a_restricted_namespace_admits_the_operator_and_refuses_the_agent_clearly(
    controlplane: ControlPlane, admin: KubeClient, helm: str, crds: None
) -> None:
    namespace = "jl-restricted"
    create_namespace(admin, namespace, {"pod-security.kubernetes.io/enforce": "restricted"})
    release = "jlr"
    result = helm_cli(helm, controlplane, "install", release, str(CHART), "--namespace", namespace)
    # The API server admits the DaemonSet and warns at once, naming what the agent's pods would violate.
    warning = result.stderr.replace('\\"', '"')  # helm logs the server's warning with its quotes escaped
    assert 'would violate PodSecurity "restricted:latest"' in warning, warning
    assert 'use restricted volume type "hostPath"' in warning, warning

    daemonset = admin.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{release}-jouleledger-agent")
    with pytest.raises(ApiCallError) as refused:
        admin.create(f"/api/v1/namespaces/{namespace}/pods", _pod_from_template(daemonset, "agent-probe"))
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in refused.value.message
    # The agent needs host access: the refusal names it (hostPath volumes for the kubelet socket and /proc).
    assert "hostPath" in refused.value.message or "privileged" in refused.value.message, refused.value.message

    deployment = admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{release}-jouleledger-operator")
    admitted = admin.create(
        f"/api/v1/namespaces/{namespace}/pods",
        _pod_from_template(deployment, "operator-probe"),
        params={"dryRun": "All"},
    )
    assert admitted["metadata"]["name"] == "operator-probe"
    helm_cli(helm, controlplane, "uninstall", release, "--namespace", namespace)


def _pod_from_template(workload: dict[str, Any], name: str) -> dict[str, Any]:
    template = copy.deepcopy(workload["spec"]["template"])
    metadata = template.get("metadata") or {}
    metadata["name"] = name
    template["spec"].pop("affinity", None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def _footprint(namespace: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "jouleledger.io/v1alpha1",
        "kind": "WorkloadFootprint",
        "metadata": {"name": uid, "namespace": namespace},
        "spec": {"workload": {"apiVersion": "batch/v1", "kind": "Job", "name": "survivor", "uid": uid}},
    }

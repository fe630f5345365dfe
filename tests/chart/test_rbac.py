"""Least privilege: what each ServiceAccount may do, checked on the rendered ClusterRoles."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart._helm import by_kind, render

pytestmark = pytest.mark.slow

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def _role(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    roles = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith(suffix)]
    assert len(roles) == 1, f"expected one ClusterRole ending in {suffix}, got {[r['metadata']['name'] for r in roles]}"
    return roles[0]


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """``{(apiGroup, resource): verbs}`` of a role."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames"), "resourceNames are not expected"
        assert not rule.get("nonResourceURLs"), "non-resource URLs are not expected"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _all_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_kind(objects, "ClusterRole") + by_kind(objects, "Role")


def test_no_wildcards_secrets_proxy_or_pod_writes(default_objects: list[Any], monitoring_objects: list[Any]) -> None:
    for objects in (default_objects, monitoring_objects):
        roles = _all_roles(objects)
        assert len(roles) == 3
        for role in roles:
            name = role["metadata"]["name"]
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], f"{name}: wildcard in {field}"
            for (group, resource), verbs in _grants(role).items():
                assert resource != "secrets", f"{name} may read Secrets"
                assert resource not in {"nodes/proxy", "pods/exec", "pods/attach", "pods/portforward"}, name
                assert not verbs & {"escalate", "bind", "impersonate"}, name
                if group == "" and resource == "pods":
                    assert not verbs & WRITE_VERBS, f"{name} may write pods: {verbs}"
        assert not by_kind(objects, "Role")
        assert not by_kind(objects, "RoleBinding")


# The golden rules: every rule the chart grants, in order, with the code path that needs it. A new API call in
# the code needs a rule here and in the template; a rule no code path needs is a failure here.
AGENT_RULES: list[tuple[str, str, list[str], str]] = [
    # kube/podmeta.py PodMetadataCache.refresh: list_pod_for_all_namespaces(field_selector=spec.nodeName=<node>)
    ("", "pods", ["list"], "labels, UIDs and owners of the pods on this node (all namespaces)"),
]
OPERATOR_RULES: list[tuple[str, str, list[str], str]] = [
    # controller/app.py WATCHED + startup(): kopf watches agent pods at /api/v1/pods (clusterwide kopf,
    # namespace as a field selector); --once lists the same path (LIST_PATHS); controller/serving.py refresh
    # lists serving pods (labelSelector jouleledger.io/serving) in every namespace.
    ("", "pods", ["list", "watch"], "agent pods to scrape, serving pods to read"),
    # controller/app.py WATCHED: ClusterState.zone_of_node reads node labels.
    ("", "nodes", ["list", "watch"], "grid zone of each node"),
    # controller/app.py WATCHED: Pod -> ReplicaSet -> Deployment (the Deployment name from ownerReferences).
    ("apps", "replicasets", ["list", "watch"], "owner chains"),
    # controller/app.py WATCHED (list, watch); kube/jobs.py JobWriter: GET then merge PATCH of annotations.
    ("batch", "jobs", ["get", "list", "watch", "patch"], "Job completion and footprint annotations"),
    # controller/owners.py OwnerVerifier: GET of a pod's owner in the pod's own namespace (Jobs and ReplicaSets
    # are checked against the watches); the other kinds of core/workload.py API_VERSIONS.
    ("apps", "statefulsets", ["get"], "verify a StatefulSet owner"),
    ("apps", "daemonsets", ["get"], "verify a DaemonSet owner"),
    ("jobset.x-k8s.io", "jobsets", ["get"], "verify a JobSet owner"),
    ("kubeflow.org", "pytorchjobs", ["get"], "verify a PyTorchJob owner"),
    ("ray.io", "rayjobs", ["get"], "verify a RayJob owner"),
    ("ray.io", "rayclusters", ["get"], "verify a RayCluster owner"),
    # kube/jobs.py JobWriter: POST /api/v1/namespaces/<ns>/events.
    ("", "events", ["create"], "footprint Events on Jobs"),
    # kube/footprints.py: list_all at restore, create, get after a 409 on create.
    ("jouleledger.io", "workloadfootprints", ["get", "list", "create"], "the persisted ledger"),
    # kube/footprints.py write_status: merge PATCH of <footprint>/status.
    ("jouleledger.io", "workloadfootprints/status", ["patch"], "footprint totals"),
]
PEERING_RULE = ("kopf.dev", "clusterkopfpeerings", ["get", "list", "watch", "patch"], "kopf peering (opt-in)")


def _rules(role: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    rules = []
    for rule in role["rules"]:
        (group,) = rule["apiGroups"]
        (resource,) = rule["resources"]
        rules.append((group, resource, rule["verbs"]))
    return rules


def _golden(rules: list[tuple[str, str, list[str], str]]) -> list[tuple[str, str, list[str]]]:
    return [(group, resource, verbs) for group, resource, verbs, _why in rules]


def test_agent_rules_are_exactly_the_golden_ones(default_objects: list[Any]) -> None:
    assert _rules(_role(default_objects, "-agent")) == _golden(AGENT_RULES)


def test_operator_rules_are_exactly_the_golden_ones(default_objects: list[Any], monitoring_objects: list[Any]) -> None:
    assert _rules(_role(default_objects, "-operator")) == _golden(OPERATOR_RULES)
    assert _rules(_role(monitoring_objects, "-operator")) == _golden([*OPERATOR_RULES, PEERING_RULE])


def test_no_rule_grants_a_delete_update_or_a_deprecated_api(default_objects: list[Any]) -> None:
    for suffix in ("-agent", "-operator"):
        for group, resource, verbs in _rules(_role(default_objects, suffix)):
            assert not {"update", "delete", "deletecollection"} & set(verbs), (suffix, resource)
            assert group != "events.k8s.io"
            assert (group, resource) != ("apps", "deployments")


def test_agent_without_pod_metadata_has_no_rbac_and_no_token(helm: str) -> None:
    objects = render(helm, sets=('agent.podMetadata="none"',))
    assert not [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-agent")]
    assert not [b for b in by_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"].endswith("-agent")]
    (daemonset,) = by_kind(objects, "DaemonSet")
    assert daemonset["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_peering_resources_only_with_peering(default_objects: list[Any], monitoring_objects: list[Any]) -> None:
    assert not [key for key in _grants(_role(default_objects, "-operator")) if key[0] == "kopf.dev"]
    peering = {k: v for k, v in _grants(_role(monitoring_objects, "-operator")).items() if k[0] == "kopf.dev"}
    assert peering == {("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"}}


def test_footprint_viewer_is_read_only_and_aggregates_to_view(default_objects: list[Any], helm: str) -> None:
    viewer = _role(default_objects, "-footprint-viewer")
    assert _grants(viewer) == {("jouleledger.io", "workloadfootprints"): {"get", "list", "watch"}}
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    not_aggregated = _role(render(helm, sets=("footprintViewer.aggregateToView=false",)), "-footprint-viewer")
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in not_aggregated["metadata"]["labels"]


def test_bindings_point_at_the_chart_service_accounts(default_objects: list[Any]) -> None:
    accounts = {sa["metadata"]["name"] for sa in by_kind(default_objects, "ServiceAccount")}
    roles = {r["metadata"]["name"] for r in by_kind(default_objects, "ClusterRole")}
    bindings = by_kind(default_objects, "ClusterRoleBinding")
    assert len(bindings) == 2
    for binding in bindings:
        assert binding["roleRef"]["name"] in roles
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount"
        assert subject["name"] in accounts
        assert subject["namespace"] == "energy"

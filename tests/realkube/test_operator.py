"""The operator as a process with the chart's own ServiceAccount, against a real API server and Job controller."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest

from jouleledger.kube.footprints import account_from_object
from jouleledger.kube.jobs import counted_pods
from tests.realkube._cluster import (
    ENERGY_J,
    FOOTPRINTS,
    OperatorStack,
    events_of,
    finished_job,
    iter_rules,
    job_annotations,
    report_job,
)
from tests.realkube._controlplane import ApiCallError, ControlPlane, KubeClient, wait_for


def test_a_real_job_gets_its_footprint_once_with_the_charts_service_account(
    controlplane: ControlPlane, admin: KubeClient, stack: OperatorStack, workloads: str
) -> None:
    job, pod = finished_job(admin, workloads, "train", stack.node)
    assert job["status"]["succeeded"] == 1  # counted by the real Job controller
    # ... in the shape that tells the operator every pod of it is counted (its own node is all it waits for)
    assert counted_pods(job["status"]) == 1, job["status"]
    report_job(stack, job, pod, admin)

    run = stack.run_once()
    assert run.returncode == 0, run.output
    assert "HTTP 403" not in run.output, run.output
    assert stack.agent.scrapes >= 1  # discovered through the label selector, scraped at the pod's IP

    annotations = job_annotations(admin, workloads, "train")
    assert annotations["jouleledger.io/energy-kwh"] == "0.001000"
    assert annotations["jouleledger.io/gpu-hours"] == "0.016667"
    assert "jouleledger.io/footprint-version" in annotations

    # The footprint the server stored (after its schema validation and pruning) restores the exact account.
    path = FOOTPRINTS.format(namespace=workloads) + "/" + job["metadata"]["uid"]
    stored = admin.get(path)
    assert stored["status"]["finalized"] is True
    account = account_from_object(stored, currency="USD")
    assert account.totals.energy_mj == int(ENERGY_J * 1000)
    assert account.final is not None
    assert account.final.totals.energy_mj == int(ENERGY_J * 1000)
    owners = stored["metadata"].get("ownerReferences") or []
    assert [o["uid"] for o in owners] == [job["metadata"]["uid"]]

    # The CRD's schema is enforced by the server: a wrong type in the status is refused with a clear message.
    broken = copy.deepcopy(stored)
    broken["status"]["finalized"] = "yes"
    with pytest.raises(ApiCallError) as refused:
        admin.call("PUT", path + "/status", broken, params={"dryRun": "All"})
    assert refused.value.status == 422
    assert "status.finalized" in refused.value.message

    # Printer columns, as `kubectl get wfp -A` shows them.
    shown = controlplane.kubectl("get", "wfp", "-A")
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    crd = admin.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/workloadfootprints.jouleledger.io")
    columns = [c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert re.split(r"\s{2,}", header.strip()) == ["NAMESPACE", "NAME", *columns]
    row = next(r for r in rows if job["metadata"]["uid"] in r).split()
    assert row[:5] == [workloads, job["metadata"]["uid"], "Job", "train", "vision"]
    assert row[5] == "0.001"
    assert "true" in row

    # A second run (a restart, a relist) changes nothing: no second annotation, Event or count.
    version = admin.get(f"/apis/batch/v1/namespaces/{workloads}/jobs/train")["metadata"]["resourceVersion"]
    again = stack.run_once()
    assert again.returncode == 0, again.output
    assert admin.get(f"/apis/batch/v1/namespaces/{workloads}/jobs/train")["metadata"]["resourceVersion"] == version
    assert job_annotations(admin, workloads, "train") == annotations
    recorded = [e for e in events_of(admin, workloads, "train") if e["reason"] == "FootprintRecorded"]
    assert len(recorded) == 1
    assert recorded[0].get("count", 1) == 1
    assert account_from_object(admin.get(path), currency="USD").totals.energy_mj == int(ENERGY_J * 1000)


# What one `--once` pass must be allowed to do: each is taken away in turn, and the pass must then fail visibly.
PASS_NEEDS = (
    ("", "pods", "list"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "get"),  # re-read before annotating: an existing annotation means it was done
    ("batch", "jobs", "patch"),
    ("jouleledger.io", "workloadfootprints", "list"),
    ("jouleledger.io", "workloadfootprints", "create"),
    ("jouleledger.io", "workloadfootprints/status", "patch"),
)


@pytest.fixture
def clusterrole(admin: KubeClient, stack: OperatorStack) -> Iterator[dict[str, Any]]:
    """The chart's operator ClusterRole as installed; put back as it was after the test."""
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{stack.release}-jouleledger-operator"
    original = admin.get(path)
    yield original
    current = admin.get(path)
    restored = {
        **original,
        "metadata": {**original["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
    }
    admin.call("PUT", path, restored)
    for needed in PASS_NEEDS:
        _wait_allowed(stack, needed, allowed=True)


def _wait_allowed(stack: OperatorStack, needed: tuple[str, str, str], *, allowed: bool) -> None:
    """Wait until the API server's RBAC authorizer has seen the role change (it watches roles)."""
    group, resource, verb = needed
    plural, _, subresource = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"group": group, "resource": plural, "subresource": subresource, "verb": verb}},
    }
    client = stack.client()
    try:
        wait_for(
            f"RBAC to {'allow' if allowed else 'deny'} {needed}",
            lambda: (
                client.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)["status"]["allowed"]
                is allowed
            ),
            30,
        )
    finally:
        client.close()


def _without(role: dict[str, Any], group: str, resource: str, verb: str) -> dict[str, Any]:
    changed = copy.deepcopy(role)
    rules = []
    for rule in changed["rules"]:
        if group in rule.get("apiGroups", ()) and resource in rule.get("resources", ()) and verb in rule["verbs"]:
            others = [r for r in rule["resources"] if r != resource]
            if others:
                rules.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                rules.append({**rule, "resources": [resource], "verbs": verbs})
        else:
            rules.append(rule)
    changed["rules"] = rules
    return changed


@pytest.mark.parametrize("needed", PASS_NEEDS, ids=lambda n: f"{n[1]}-{n[2]}")
def test_each_permission_the_operator_uses_is_needed(
    admin: KubeClient, stack: OperatorStack, workloads: str, clusterrole: dict[str, Any], needed: tuple[str, str, str]
) -> None:
    _group, resource, verb = needed
    # Derived from the chart: if the chart no longer grants it, the operator cannot do its work (see the test above).
    assert needed in set(iter_rules(clusterrole)), f"the chart's ClusterRole does not grant {needed}"
    reduced = _without(clusterrole, *needed)
    assert needed not in set(iter_rules(reduced))
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{clusterrole['metadata']['name']}"
    admin.call("PUT", path, reduced)
    _wait_allowed(stack, needed, allowed=False)

    name = f"lp-{resource.replace('/', '-')}-{verb}"
    job, pod = finished_job(admin, workloads, name, stack.node)
    report_job(stack, job, pod, admin)
    run = stack.run_once()

    assert job_annotations(admin, workloads, name) == {}, run.output
    forbidden_events = [
        e
        for e in events_of(admin, workloads, name)
        if e["reason"] == "FootprintNotRecorded" and "Forbidden" in e["message"]
    ]
    assert "HTTP 403" in run.output or forbidden_events, run.output
    if "HTTP 403" in run.output:
        assert f'cannot {verb} resource "{resource}"' in run.output, run.output

"""Resolving a pod's workload: climbing the controller owners the operator knows."""

from __future__ import annotations

from jouleledger.core.model import Owner
from jouleledger.core.workload import WorkloadRef, resolve_workload


def test_workload_resolution_climbs_known_owners() -> None:
    owners: dict[str, Owner | None] = {
        "rs-1": Owner("Deployment", "api", "dep-1", "apps/v1"),
        "job-1": Owner("CronJob", "nightly", "cj-1", "batch/v1"),
        "job-2": Owner("JobSet", "big", "js-1", "jobset.x-k8s.io/v1alpha2"),
        "js-1": None,
    }
    resolve = resolve_workload
    assert resolve("a", "p", "u", None, owners) == WorkloadRef("a", "Pod", "p", "u", "v1")
    assert resolve("a", "p", "u", Owner("ReplicaSet", "api-1", "rs-1"), owners).kind == "Deployment"
    assert resolve("a", "p", "u", Owner("ReplicaSet", "x", "rs-9"), owners).kind == "ReplicaSet"
    cron = resolve("a", "p", "u", Owner("Job", "nightly-1", "job-1"), owners)
    assert (cron.kind, cron.uid, cron.parent_kind, cron.parent_name) == ("Job", "job-1", "CronJob", "nightly")
    assert resolve("a", "p", "u", Owner("Job", "big-0", "job-2"), owners).uid == "js-1"
    looping = {"x": Owner("Thing", "y", "y"), "y": Owner("Thing", "x", "x")}
    assert resolve("a", "p", "u", Owner("Thing", "x", "x"), looping).kind == "Thing"

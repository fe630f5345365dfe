"""Which workload a pod's energy is charged to: the pod's top controller owner.

The agent reports each pod's *controller* owner (``kind``/``name``/``uid``). The operator knows the controller owners
of the intermediate objects it watches (ReplicaSets and Jobs) and climbs from the pod to the top:

======================================  =========================================================================
pod owned by                            workload
======================================  =========================================================================
nothing                                 the pod itself (``Pod``)
ReplicaSet owned by a Deployment        the Deployment
ReplicaSet without an owner             the ReplicaSet
Job owned by a CronJob                  the Job (every run is charged on its own; ``parent`` names the CronJob)
Job owned by a JobSet (or another CR)   the JobSet (or that owner), climbing further while owners are known
StatefulSet, DaemonSet, PyTorchJob...   that owner
======================================  =========================================================================

Climbing stops at an owner the operator does not know the owner of (any custom resource it does not watch), at a
CronJob (a schedule, not a workload), and after :data:`MAX_DEPTH` steps (owner cycles cannot loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jouleledger.core.frozen import quick_init
from jouleledger.core.model import Owner

__all__ = ["API_VERSIONS", "MAX_DEPTH", "WorkloadRef", "api_version_of", "controller_owner", "resolve_workload"]

MAX_DEPTH: Final = 8

API_VERSIONS: Final[Mapping[str, str]] = {
    "Pod": "v1",
    "ReplicaSet": "apps/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "JobSet": "jobset.x-k8s.io/v1alpha2",
    "PyTorchJob": "kubeflow.org/v1",
    "RayJob": "ray.io/v1",
    "RayCluster": "ray.io/v1",
}
"""API versions of the owner kinds the operator recognises (the agent reports kinds, not API versions)."""

_STOP_ABOVE: Final = frozenset({"CronJob"})


def api_version_of(kind: str) -> str:
    """The API version of a well-known kind, or ``""`` for a kind the operator does not know."""
    return API_VERSIONS.get(kind, "")


@quick_init
@dataclass(frozen=True, slots=True)
class WorkloadRef:
    """The workload a pod is charged to. ``uid`` names its ``WorkloadFootprint``; ``parent_*`` names the
    CronJob of a Job (empty otherwise)."""

    namespace: str
    kind: str
    name: str
    uid: str
    api_version: str = ""
    parent_kind: str = ""
    parent_name: str = ""

    @property
    def is_job(self) -> bool:
        return self.kind == "Job" and self.api_version in ("", "batch/v1")


def resolve_workload(
    namespace: str,
    pod_name: str,
    pod_uid: str,
    owner: Owner | None,
    owners: Mapping[str, Owner | None],
) -> WorkloadRef:
    """The top controller owner of a pod.

    ``owners`` maps the UID of a watched object to its own controller owner (None: the object has none); a UID
    missing from ``owners`` is an object the operator does not watch, so climbing stops there.
    """
    if owner is None or not owner.uid:
        return WorkloadRef(namespace, "Pod", pod_name, pod_uid, "v1")
    # the current step as plain values: this runs for every pod series of every pass
    kind, name, uid, api_version = owner.kind, owner.name, owner.uid, api_version_of(owner.kind)
    for _ in range(MAX_DEPTH):
        above = owners.get(uid)
        if above is None or not above.uid:
            break
        if above.kind in _STOP_ABOVE:
            return WorkloadRef(namespace, kind, name, uid, api_version, above.kind, above.name)
        kind, name, uid = above.kind, above.name, above.uid
        api_version = above.api_version or api_version_of(kind)
    return WorkloadRef(namespace, kind, name, uid, api_version)


def controller_owner(metadata: Mapping[str, Any]) -> Owner | None:
    """The controller owner in an object's ``metadata.ownerReferences`` (as the API returns it), or None."""
    for reference in metadata.get("ownerReferences") or ():
        if isinstance(reference, Mapping) and reference.get("controller") and reference.get("uid"):
            return Owner(
                str(reference.get("kind", "")),
                str(reference.get("name", "")),
                str(reference["uid"]),
                str(reference.get("apiVersion", "")),
            )
    return None

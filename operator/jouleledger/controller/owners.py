"""Which owner a pod's energy may be charged to: only one that exists in the pod's own namespace with that UID.

The agent reports each pod's controller owner as the pod's ``ownerReferences`` say, and those are written by
whoever created the pod: a tenant can name another namespace's Job. Kubernetes itself resolves owners within the
dependent's namespace, and so does the operator. An owner the operator watches (a Job, a ReplicaSet) is checked
against what the watch saw; any other kind with a known API version is read once from the API (cached). An owner
that is not found there, with that name and UID, is not trusted: the pod is charged as a workload of its own, and
counted (``unverified_owner``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final

from jouleledger.controller.cluster import ClusterState
from jouleledger.core.deltas import PodIdentity
from jouleledger.core.footprints import Attribution, attribute
from jouleledger.core.model import Owner
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.core.workload import api_version_of
from jouleledger.kube.api import ApiError, KubeApi, object_path

__all__ = ["OwnerVerifier"]

log = logging.getLogger(__name__)

NEGATIVE_TTL_S: Final = 300.0
"""How long an owner that was not found stays untrusted before it is looked up again."""


class OwnerVerifier:
    """Verifies the owners the agents report (see the module docstring)."""

    def __init__(
        self,
        cluster: ClusterState,
        api: KubeApi,
        *,
        monotonic: Callable[[], float],
        stats: OperatorStats | None = None,
        team_key: str = "",
    ) -> None:
        self._cluster = cluster
        self._api = api
        self._monotonic = monotonic
        self._stats = stats if stats is not None else OperatorStats()
        self._team_key = team_key
        self._untrusted: set[str] = set()  # pods whose named owner was not verified (counted once)
        self._found: set[tuple[str, str, str, str]] = set()  # (namespace, kind, name, uid)
        self._missing: dict[tuple[str, str, str, str], float] = {}  # -> when it was looked up

    def _key(self, pod: PodIdentity, owner: Owner) -> tuple[str, str, str, str]:
        return (pod.namespace, owner.kind, owner.name, owner.uid)

    async def check(self, pods: Iterable[PodIdentity]) -> bool:
        """Look up the owners not verified yet; False when the API could not answer (try the node later)."""
        now = self._monotonic()
        for pod in pods:
            owner = pod.owner
            if owner is None or not owner.uid or owner.uid in self._cluster.namespaces:
                continue
            key = self._key(pod, owner)
            api_version = api_version_of(owner.kind)
            if key in self._found or not api_version or now - self._missing.get(key, -NEGATIVE_TTL_S) < NEGATIVE_TTL_S:
                continue
            try:
                obj = await self._api.get(object_path(api_version, owner.kind, pod.namespace, owner.name))
            except ApiError as error:
                if error.transient:
                    log.warning(
                        "cannot verify the owner %s of pod %s/%s yet: %s", owner, pod.namespace, pod.name, error
                    )
                    return False
                obj = None  # 403 and the like: not verifiable, so not trusted
            if obj is not None and (obj.get("metadata") or {}).get("uid") == owner.uid:
                self._found.add(key)
                self._missing.pop(key, None)
            else:
                self._missing[key] = now
        return True

    def trusted(self, pod: PodIdentity) -> Owner | None:
        """The pod's owner when it is verified to exist in the pod's namespace, else None."""
        owner = pod.owner
        if owner is None or not owner.uid:
            return None
        namespace = self._cluster.namespaces.get(owner.uid)
        if namespace is not None:
            return owner if namespace == pod.namespace else None
        return owner if self._key(pod, owner) in self._found else None

    def attribute(self, pod: PodIdentity) -> Attribution:
        """The workload and team a pod's energy is charged to, through its owner only when verified (an unverified
        owner is counted once per pod as ``unverified_owner``)."""
        owner = self.trusted(pod)
        if owner is None and pod.owner is not None and pod.uid not in self._untrusted:
            self._untrusted.add(pod.uid)
            self._stats.count_rejected("unverified_owner")
            log.warning("pod %s/%s names an owner %s not found in its namespace", pod.namespace, pod.name, pod.owner)
        return attribute(
            pod,
            owner,
            self._cluster.owners,
            team_key=self._team_key,
            watched_team=self._cluster.team_of(pod.uid),
        )

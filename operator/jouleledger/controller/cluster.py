"""What the operator knows about the cluster, fed by kopf watch events (or by one listing with ``--once``).

Only what accounting needs is kept: each ReplicaSet's and Job's controller owner (to climb from a pod to its
workload), Jobs' completion state, each pod's node, owner and team label (to know which agents ran a Job's pods),
each node's zone, and the agent pods to scrape. Events are applied idempotently: a re-listed object (after a watch
reconnects or ``410 Gone``) replaces its previous state, a deleted one is forgotten.

A watch that reconnects reports what exists, never what was deleted while it was down; so every object carries the
number of the event that last applied it (a generation mark), and :meth:`ClusterState.prune` forgets what a fresh
listing no longer holds, except objects applied after that listing began (a watch ADD racing the list): see
``controller/relist.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any, Final

from jouleledger.core.model import Owner
from jouleledger.core.workload import controller_owner
from jouleledger.kube.jobs import JobState, job_state

__all__ = ["KINDS", "AgentTarget", "ClusterState", "JobInfo", "PodRef", "object_key", "parse_selector"]

PODS: Final = "pods"
JOBS: Final = "jobs"
REPLICASETS: Final = "replicasets"
NODES: Final = "nodes"
KINDS: Final = (PODS, JOBS, REPLICASETS, NODES)


def object_key(plural: str, metadata: Mapping[str, Any]) -> str:
    """How the view names an object of ``plural``: nodes by name, everything else by UID."""
    return str(metadata.get("name" if plural == NODES else "uid", "") or "")


def parse_selector(selector: str) -> dict[str, str]:
    """An equality-based label selector (``a=b,c==d``) as a mapping; ValueError for set-based ones."""
    result: dict[str, str] = {}
    for part in filter(None, (item.strip() for item in selector.split(","))):
        if "!=" in part or "=" not in part:
            raise ValueError(f"agent selector {selector!r}: only key=value terms are supported, got {part!r}")
        key, _, value = part.replace("==", "=").partition("=")
        if not key.strip():
            raise ValueError(f"agent selector {selector!r}: empty key in {part!r}")
        result[key.strip()] = value.strip()
    return result


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """One agent pod to scrape."""

    node: str
    pod: str
    ip: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/metrics"


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A Job: identity, controller owner (a CronJob, a JobSet...) and completion state."""

    namespace: str
    name: str
    uid: str
    owner: Owner | None
    state: JobState


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod: where it runs, who controls it, its team label."""

    namespace: str
    name: str
    uid: str
    node: str
    owner_uid: str
    team: str


class ClusterState:
    """The operator's view of the cluster (single-threaded: mutated from the event loop only)."""

    def __init__(
        self,
        *,
        team_label: str,
        agent_namespace: str,
        agent_selector: Mapping[str, str],
        agent_port: int,
        zone_of: Callable[[Mapping[str, str]], str],
    ) -> None:
        self._team_label = team_label
        self._agent_namespace = agent_namespace
        self._agent_selector = dict(agent_selector)
        self._agent_port = agent_port
        self._zone_of = zone_of
        self.owners: dict[str, Owner | None] = {}
        self.namespaces: dict[str, str] = {}  # uid of a watched Job or ReplicaSet -> its namespace
        self.jobs: dict[str, JobInfo] = {}
        self.pods: dict[str, PodRef] = {}
        self._pods_by_owner: dict[str, set[str]] = {}
        self.node_zones: dict[str, str] = {}
        self._agents: dict[str, AgentTarget] = {}
        self._targets: list[AgentTarget] | None = None  # agent_targets(), until an agent pod changes
        self._agent_nodes: frozenset[str] = frozenset()  # their nodes, computed with them
        self.events = 0  # events applied so far: the generation mark of the latest one
        self._marks: dict[str, dict[str, int]] = {plural: {} for plural in KINDS}  # plural -> key -> mark

    # --- events ------------------------------------------------------------------------------------------------

    def apply(self, plural: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Apply one watch event (``ADDED``/``MODIFIED``/``DELETED``, or None for a listed object)."""
        self.events += 1
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        deleted = event_type == "DELETED"
        marks = self._marks.get(plural)
        key = object_key(plural, metadata)
        if marks is not None and key:
            if deleted:
                marks.pop(key, None)
            else:
                marks[key] = self.events
        if plural == PODS:
            self._apply_pod(uid, metadata, body, deleted)
        elif plural == JOBS:
            if deleted:
                self.jobs.pop(uid, None)
                self.owners.pop(uid, None)
                self.namespaces.pop(uid, None)
            elif uid:
                owner = controller_owner(metadata)
                self.owners[uid] = owner
                self.namespaces[uid] = str(metadata.get("namespace", ""))
                self.jobs[uid] = JobInfo(
                    str(metadata.get("namespace", "")), str(metadata.get("name", "")), uid, owner, job_state(body)
                )
        elif plural == REPLICASETS:
            if deleted:
                self.owners.pop(uid, None)
                self.namespaces.pop(uid, None)
            elif uid:
                self.owners[uid] = controller_owner(metadata)
                self.namespaces[uid] = str(metadata.get("namespace", ""))
        elif plural == NODES:
            name = str(metadata.get("name", ""))
            if deleted:
                self.node_zones.pop(name, None)
            elif name:
                self.node_zones[name] = self._zone_of(metadata.get("labels") or {})

    def agent_selection(self) -> tuple[str, str]:
        """The label selector (``k=v,...``) and the namespace (``""``: every one) agent pods are watched with."""
        return ",".join(f"{key}={value}" for key, value in self._agent_selector.items()), self._agent_namespace

    def mark(self) -> int:
        """The generation mark to take just before listing: objects applied later are newer than that listing."""
        return self.events

    def prune(self, plural: str, listed: Set[str], listed_since: int) -> list[str]:
        """Forget every object of ``plural`` the view holds that a complete listing no longer holds (``listed``: the
        listed objects' :func:`object_key`), unless an event applied it after ``listed_since`` (the :meth:`mark`
        taken before the listing began: it may have been created after the listing read its kind). Returns the
        keys forgotten, in order."""
        marks = self._marks.get(plural)
        if marks is None:
            raise ValueError(f"unknown kind {plural!r}")
        stale = sorted(key for key, mark in marks.items() if mark <= listed_since and key not in listed)
        for key in stale:
            field = "name" if plural == NODES else "uid"
            self.apply(plural, "DELETED", {"metadata": {field: key}})
        return stale

    def _apply_pod(self, uid: str, metadata: Mapping[str, Any], body: Mapping[str, Any], deleted: bool) -> None:
        if not uid:
            return
        previous = self.pods.pop(uid, None)
        if previous is not None and previous.owner_uid:
            siblings = self._pods_by_owner.get(previous.owner_uid)
            if siblings is not None:
                siblings.discard(uid)
                if not siblings:
                    del self._pods_by_owner[previous.owner_uid]
        if self._agents.pop(uid, None) is not None:
            self._targets = None
        if deleted:
            return
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        labels = metadata.get("labels") or {}
        owner = controller_owner(metadata)
        pod = PodRef(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=uid,
            node=str(spec.get("nodeName") or ""),
            owner_uid=owner.uid if owner else "",
            team=str(labels.get(self._team_label, "")),
        )
        self.pods[uid] = pod
        if pod.owner_uid:
            self._pods_by_owner.setdefault(pod.owner_uid, set()).add(uid)
        if self._is_agent(pod, labels) and status.get("phase") == "Running" and pod.node:
            ip = str(status.get("podIP") or "")
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return
            self._agents[uid] = AgentTarget(pod.node, pod.name, ip, self._agent_port)
            self._targets = None

    def _is_agent(self, pod: PodRef, labels: Mapping[str, Any]) -> bool:
        if self._agent_namespace and pod.namespace != self._agent_namespace:
            return False
        return all(labels.get(key) == value for key, value in self._agent_selector.items())

    # --- queries -----------------------------------------------------------------------------------------------

    def agent_targets(self) -> list[AgentTarget]:
        """One agent per node (the newest pod wins when a DaemonSet rollout briefly runs two), by node; computed once
        per change of the agent pods (passes and completion reads ask for it several times)."""
        if self._targets is None:
            by_node: dict[str, AgentTarget] = {}
            for target in self._agents.values():
                by_node[target.node] = target
            self._targets = sorted(by_node.values(), key=lambda target: target.node)
            self._agent_nodes = frozenset(by_node)
        return list(self._targets)

    def agent_nodes(self) -> frozenset[str]:
        """The nodes of :meth:`agent_targets`."""
        self.agent_targets()
        return self._agent_nodes

    def job_nodes(self, job_uid: str) -> set[str]:
        """Nodes the Job's known pods were scheduled on."""
        return {self.pods[uid].node for uid in self._pods_by_owner.get(job_uid, ()) if self.pods[uid].node}

    def job_pods(self, job_uid: str) -> frozenset[str]:
        """UIDs of the Job's pods the view holds (the operator watches agent pods only: for a workload Job, usually
        none; its pods are known from the agents, see ``JobRecorder.all_pods_seen``)."""
        return frozenset(self._pods_by_owner.get(job_uid, ()))

    def team_of(self, pod_uid: str) -> str:
        pod = self.pods.get(pod_uid)
        return pod.team if pod is not None else ""

    def zone_of_node(self, node: str) -> str:
        return self.node_zones.get(node, self._zone_of({}))

    def is_top_level_job(self, job: JobInfo) -> bool:
        """True when the Job is a workload of its own (no controller owner, or a CronJob)."""
        return job.owner is None or job.owner.kind == "CronJob"

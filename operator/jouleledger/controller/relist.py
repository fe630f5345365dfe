"""Periodic reconciliation of the operator's cluster view with the API server.

kopf lists again and re-watches when a watch expires (``410 Gone``) or drops, but it never reports what was deleted
while the watch was down: such a Job, agent pod, node or ReplicaSet would stay in :class:`ClusterState` for ever (a
deleted agent scraped, and failing, every pass; Jobs and ReplicaSets leaking memory). So every
``relistIntervalSeconds`` (in passes: the interval divided by the scrape interval, rounded up, at least one) the
accountant lists each kind the view holds, with the selectors kopf watches it with, page by page (``limit`` and
``continue``, :meth:`KubeApi.list`; a consistent read, never ``resourceVersion=0``, which a stale watch cache could
answer), and forgets what the listing no longer holds. An object an event applied after its kind's listing began is
kept (:meth:`ClusterState.prune` compares generation marks), so a watch ADD racing the listing is never pruned.

A kind whose listing fails is not pruned that time (an incomplete listing proves nothing). Pruning touches only
the view, never the ledger: energy already folded from a pruned agent's node stays in its workloads' footprints,
and a Job still waiting for that node's next tick is finalized at its deadline, recorded incomplete with the node
missing (:func:`~jouleledger.core.footprints.decide_finalization`), unless a new agent on that node reports first.
Every object forgotten is counted in ``jouleledger_operator_stale_objects_pruned_total{kind}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Final

from jouleledger.controller.cluster import JOBS, NODES, PODS, REPLICASETS, ClusterState, object_key
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.kube.api import ApiError, KubeApi

__all__ = ["DEFAULT_RELIST_INTERVAL_S", "LIST_PATHS", "Relister", "list_params", "relist_every_passes"]

log = logging.getLogger(__name__)

DEFAULT_RELIST_INTERVAL_S: Final = 300.0
"""How often the view is reconciled by default (``relistIntervalSeconds``): a stale object lives at most this long."""

LIST_PATHS: Final[Mapping[str, str]] = {
    PODS: "/api/v1/pods",  # with the agent selectors (list_params)
    JOBS: "/apis/batch/v1/jobs",
    REPLICASETS: "/apis/apps/v1/replicasets",
    NODES: "/api/v1/nodes",
}
"""The collection of every kind the view holds, listed cluster-wide as kopf watches it."""


def list_params(plural: str, agent_selector: str, agent_namespace: str) -> dict[str, str]:
    """The selectors kopf watches ``plural`` with (only agent pods are watched; the other kinds are not filtered)."""
    params: dict[str, str] = {}
    if plural == PODS:
        params["labelSelector"] = agent_selector
        if agent_namespace:
            params["fieldSelector"] = f"metadata.namespace={agent_namespace}"
    return params


def relist_every_passes(relist_interval_s: float, scrape_interval_s: float) -> int:
    """Passes between two reconciliations (0: never, when ``relist_interval_s`` is 0)."""
    if relist_interval_s <= 0:
        return 0
    return max(1, math.ceil(relist_interval_s / scrape_interval_s - 1e-9))


class Relister:
    """Reconciles ``cluster`` with listings through ``api`` every ``every_passes`` passes (0: never)."""

    def __init__(
        self,
        cluster: ClusterState,
        api: KubeApi,
        stats: OperatorStats,
        *,
        every_passes: int,
    ) -> None:
        if every_passes < 0:
            raise ValueError(f"every_passes must not be negative, got {every_passes}")
        self.cluster = cluster
        self.api = api
        self.stats = stats
        for plural in LIST_PATHS:  # every kind's counter exists from the start (0), as Prometheus expects
            stats.pruned.setdefault(plural, 0)
        self.every_passes = every_passes
        selector, namespace = cluster.agent_selection()
        self._params = {plural: list_params(plural, selector, namespace) for plural in LIST_PATHS}
        self._passes = 0
        self.runs = 0

    async def maybe_reconcile(self) -> int:
        """Called at the start of every pass: reconciles ``every_passes`` passes after the first one (kopf has just
        listed everything then), and every ``every_passes`` passes after that. Returns how many objects it pruned."""
        if not self.every_passes:
            return 0
        due = self._passes >= self.every_passes
        self._passes = 1 if due else self._passes + 1
        return await self.reconcile() if due else 0

    async def reconcile(self) -> int:
        """List every kind and prune what is gone; a kind that cannot be listed is left as it is (and counted)."""
        self.runs += 1
        pruned = 0
        for plural, path in LIST_PATHS.items():
            since = self.cluster.mark()
            try:
                items = await self.api.list(path, params=self._params[plural], metadata_only=True)
            except ApiError as error:
                log.warning("cannot list %s to reconcile the cluster view (next time): %s", plural, error)
                self.stats.count_error("relist_failed")
                continue
            listed = {object_key(plural, item.get("metadata") or {}) for item in items}
            gone = self.cluster.prune(plural, listed, since)
            if gone:
                log.info("%d %s deleted while a watch was down forgotten: %s", len(gone), plural, ", ".join(gone[:10]))
                self.stats.count_pruned(plural, len(gone))
                pruned += len(gone)
        return pruned

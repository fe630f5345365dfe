"""The periodic relist (controller/relist.py) of a large cluster view: its cost per reconciliation.

A view of ``--jobs`` Jobs, as many ReplicaSets, and ``--nodes`` nodes with their agents is reconciled against an
API that answers metadata-only pages of 500 items (``limit``/``continue``, through the real ``KubeApi.list``), with
``--deleted`` of each kind gone from the answers. Prints figures (median wall time per reconciliation, requests,
peak Python memory it allocates, objects pruned); asserts nothing (this machine is shared and noisy).

    flock /tmp/jl-bench.lock python -m bench.relist [--jobs 10000] [--nodes 1000] [--deleted 0.01] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

from jouleledger.controller.cluster import ClusterState
from jouleledger.controller.relist import Relister
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.kube.api import KubeApi

AGENT_NAMESPACE = "jouleledger"
AGENT_LABELS = {"app.kubernetes.io/component": "agent"}


class PagedApi(KubeApi):
    """``KubeApi`` whose requests are answered from memory, in pages (``list`` is the real one)."""

    def __init__(self, items: Mapping[str, list[dict[str, Any]]]) -> None:  # no client, no pool
        self.items = items
        self.requests = 0

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.requests += 1
        params = kwargs.get("params") or {}
        limit = int(params.get("limit", 500))
        start = int(params.get("continue", "0"))
        items = self.items[path.rsplit("/", 1)[-1]]
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {"metadata": {"continue": str(start + limit) if more else ""}, "items": page}


def metadata(plural: str, key: str) -> dict[str, Any]:
    """What a PartialObjectMetadata item carries that matters here (plus a typical amount of the rest)."""
    name_or_uid = {"name": key} if plural == "nodes" else {"uid": key, "name": f"obj-{key}", "namespace": "ml"}
    return {
        "metadata": {
            **name_or_uid,
            "resourceVersion": "123456789",
            "labels": {"app": "train", "team": "vision"},
            "creationTimestamp": "2026-12-01T00:00:00Z",
        }
    }


def build(jobs: int, nodes: int, deleted: float) -> tuple[ClusterState, dict[str, list[dict[str, Any]]]]:
    cluster = ClusterState(
        team_label="team",
        agent_namespace=AGENT_NAMESPACE,
        agent_selector=AGENT_LABELS,
        agent_port=9400,
        zone_of=lambda _: "",
    )
    listed: dict[str, list[dict[str, Any]]] = {"pods": [], "jobs": [], "replicasets": [], "nodes": []}
    every = max(1, round(1 / deleted)) if deleted > 0 else 0

    def keep(index: int) -> bool:
        return not every or index % every != every - 1

    for index in range(nodes):
        node = f"node-{index}"
        cluster.apply("nodes", None, {"metadata": {"name": node, "labels": {}}})
        agent = {
            "metadata": {
                "name": f"agent-{index}",
                "namespace": AGENT_NAMESPACE,
                "uid": f"a-{index}",
                "labels": AGENT_LABELS,
            },
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "podIP": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"},
        }
        cluster.apply("pods", None, agent)
        if keep(index):
            listed["nodes"].append(metadata("nodes", node))
            listed["pods"].append(metadata("pods", f"a-{index}"))
    for index in range(jobs):
        owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "cron", "controller": True}
        cluster.apply(
            "jobs",
            None,
            {
                "metadata": {"name": f"j-{index}", "namespace": "ml", "uid": f"j-{index}", "ownerReferences": [owner]},
                "status": {},
            },
        )
        cluster.apply(
            "replicasets", None, {"metadata": {"name": f"rs-{index}", "namespace": "ml", "uid": f"rs-{index}"}}
        )
        if keep(index):
            listed["jobs"].append(metadata("jobs", f"j-{index}"))
            listed["replicasets"].append(metadata("replicasets", f"rs-{index}"))
    return cluster, listed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deleted", type=float, default=0.01, help="fraction of each kind deleted meanwhile")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    walls: list[float] = []
    peaks: list[float] = []
    pruned = requests = 0
    for _ in range(args.runs):
        cluster, listed = build(args.jobs, args.nodes, args.deleted)
        api = PagedApi(listed)
        relist = Relister(cluster, api, OperatorStats(), every_passes=1)
        tracemalloc.start()
        started = time.perf_counter()
        pruned = await relist.reconcile()
        walls.append(time.perf_counter() - started)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        requests = api.requests
    objects = 2 * args.jobs + 2 * args.nodes
    print(
        f"relist of {objects} objects ({args.jobs} Jobs, {args.jobs} ReplicaSets, {args.nodes} nodes and agents): "
        f"median {statistics.median(walls) * 1000:.1f} ms per reconciliation (tracemalloc on), {requests} list "
        f"requests of <= 500, peak allocated {statistics.median(peaks):.1f} MiB, pruned {pruned}"
    )


if __name__ == "__main__":
    asyncio.run(main())

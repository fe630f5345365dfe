"""The periodic relist (controller/relist.py): what was deleted while a watch was down leaves the operator's view.

kopf lists again after a dropped or expired watch but never reports what was deleted in the gap. The unit tests
drive :class:`ClusterState.prune` and :class:`Relister` with a listing that races a watch ADD; the in-process test
deletes an agent pod, a node and a Job while their watches are held (kopf in-process against the emulator), then
shows the view forgets them at the relist, and that every remaining Job is still annotated once with its exact
energy: the Job whose node lost its agent at its finalization deadline, recorded incomplete with that node missing.
Passes are driven by the test (the scrape interval is an hour), the operator's clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from jouleledger.controller.cluster import ClusterState
from jouleledger.controller.config import ConfigError, parse_config
from jouleledger.controller.relist import DEFAULT_RELIST_INTERVAL_S, Relister, relist_every_passes
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.kube.api import ApiError, KubeApi
from tests._figures import figure
from tests._kube_emulator import (
    AGENT_NAMESPACE,
    FakeAgents,
    FaultyEmulator,
    agent_pod,
    completed,
    job_object,
    node_object,
    pod_object,
    rfc3339,
    served,
)
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import FIXTURE_CONFIG, Running, ScriptedIntensity, StartOperator, eventually

EPOCH = "00000000feed0002"
SCRAPE_INTERVAL_S = 3600.0


def cluster_view() -> ClusterState:
    return ClusterState(
        team_label="team",
        agent_namespace=AGENT_NAMESPACE,
        agent_selector={"app.kubernetes.io/component": "agent"},
        agent_port=9400,
        zone_of=FIXTURE_CONFIG.zone_of,
    )


def seeded_view() -> ClusterState:
    """Nodes n1, n2 with their agents; Jobs ml/a and ml/b."""
    cluster = cluster_view()
    for index, node in enumerate(("n1", "n2"), start=1):
        cluster.apply("nodes", None, node_object(node, "z1"))
        cluster.apply("pods", None, agent_pod(node, f"127.0.0.{index}"))
    for name in ("a", "b"):
        cluster.apply("jobs", None, job_object("ml", name, f"job-{name}"))
    return cluster


# --- ClusterState.prune ------------------------------------------------------------------------------------------


def test_prune_forgets_what_the_listing_lacks_but_never_an_object_added_while_listing() -> None:
    cluster = seeded_view()
    since = cluster.mark()  # the listing begins
    cluster.apply("jobs", "ADDED", job_object("ml", "c", "job-c"))  # a watch ADD racing it: not in the listing
    cluster.apply("jobs", "MODIFIED", job_object("ml", "a", "job-a"))  # a listed one, modified meanwhile
    assert cluster.prune("jobs", {"job-a"}, since) == ["job-b"]  # b was deleted while the watch was down
    assert sorted(cluster.jobs) == ["job-a", "job-c"]
    assert cluster.prune("pods", {"agent-n1"}, since) == ["agent-n2"]
    assert [target.node for target in cluster.agent_targets()] == ["n1"]
    assert cluster.prune("nodes", {"n1"}, since) == ["n2"]
    assert sorted(cluster.node_zones) == ["n1"]
    # At the next listing c is older than its start: gone from that listing means gone.
    assert cluster.prune("jobs", {"job-a"}, cluster.mark()) == ["job-c"]
    # Deleted ones are not pruned twice, an emptied kind prunes nothing more, and a watch DELETE drops the mark.
    cluster.apply("jobs", "DELETED", job_object("ml", "a", "job-a"))
    assert cluster.prune("jobs", set(), cluster.mark()) == []
    with pytest.raises(ValueError, match="unknown kind"):
        cluster.prune("secrets", set(), 0)


def test_a_recreated_agent_replaces_the_pruned_one() -> None:
    cluster = seeded_view()
    cluster.prune("pods", {"agent-n1"}, cluster.mark())
    replacement = agent_pod("n2", "127.0.0.9")
    replacement["metadata"]["uid"] = "agent-n2-new"
    cluster.apply("pods", "ADDED", replacement)
    targets = [(target.node, target.ip) for target in cluster.agent_targets()]
    assert targets == [("n1", "127.0.0.1"), ("n2", "127.0.0.9")]


# --- Relister ----------------------------------------------------------------------------------------------------


class ListingApi:
    """Answers lists from ``items`` (plural -> metadata); ``during`` is applied to the view while a kind is listed
    (after the listing read it), ``failing`` kinds answer 503."""

    def __init__(self, cluster: ClusterState, items: Mapping[str, list[dict[str, Any]]]) -> None:
        self.cluster = cluster
        self.items = items
        self.during: dict[str, tuple[str, dict[str, Any]]] = {}
        self.failing: set[str] = set()
        self.calls: list[tuple[str, dict[str, str], bool]] = []

    async def list(
        self, path: str, *, params: Mapping[str, str] | None = None, metadata_only: bool = False
    ) -> list[dict[str, Any]]:
        plural = path.rsplit("/", 1)[-1]
        self.calls.append((plural, dict(params or {}), metadata_only))
        if plural in self.failing:
            raise ApiError("GET", path, 503, "Unavailable", "injected")
        if plural in self.during:
            event, body = self.during.pop(plural)
            self.cluster.apply(plural, event, body)
        return [{"metadata": metadata} for metadata in self.items.get(plural, [])]


def relister(cluster: ClusterState, api: ListingApi, every_passes: int) -> tuple[Relister, OperatorStats]:
    stats = OperatorStats()
    fake: Any = api  # what Relister calls of KubeApi: list()
    kube: KubeApi = fake
    return Relister(cluster, kube, stats, every_passes=every_passes), stats


async def test_relister_prunes_each_kind_keeps_a_racing_add_and_skips_a_kind_it_cannot_list() -> None:
    cluster = seeded_view()
    cluster.apply("replicasets", None, {"metadata": {"uid": "rs-1", "namespace": "ml", "name": "web-1"}})
    api = ListingApi(
        cluster,
        {
            "pods": [{"uid": "agent-n1"}],
            "jobs": [{"uid": "job-a"}],
            "nodes": [{"name": "n1"}, {"name": "n2"}],
            "replicasets": [],
        },
    )
    api.during["jobs"] = ("ADDED", job_object("ml", "c", "job-c"))  # created after the listing read the Jobs
    api.failing.add("replicasets")
    relist, stats = relister(cluster, api, every_passes=2)
    assert [await relist.maybe_reconcile() for _ in range(3)] == [0, 0, 2]  # the third pass: two after the first
    assert sorted(cluster.jobs) == ["job-a", "job-c"]
    assert [target.node for target in cluster.agent_targets()] == ["n1"]
    assert sorted(cluster.node_zones) == ["n1", "n2"]
    assert "rs-1" in cluster.owners  # its listing failed: nothing is pruned from an incomplete answer
    assert stats.pruned == {"pods": 1, "jobs": 1, "replicasets": 0, "nodes": 0}
    assert stats.footprint_errors == {"relist_failed": 1}
    agent_selection = {
        "labelSelector": "app.kubernetes.io/component=agent",
        "fieldSelector": f"metadata.namespace={AGENT_NAMESPACE}",
    }
    assert api.calls[0] == ("pods", agent_selection, True)
    assert {plural: params for plural, params, _ in api.calls[1:]} == {"jobs": {}, "replicasets": {}, "nodes": {}}
    assert all(metadata_only for _, _, metadata_only in api.calls)
    api.failing.clear()
    assert [await relist.maybe_reconcile() for _ in range(2)] == [0, 2]  # c is not listed now; rs-1 neither
    assert sorted(cluster.jobs) == ["job-a"]
    assert "rs-1" not in cluster.owners
    assert stats.pruned == {"pods": 1, "jobs": 2, "replicasets": 1, "nodes": 0}
    assert relist.runs == 2


async def test_relist_interval_zero_never_lists() -> None:
    cluster = seeded_view()
    api = ListingApi(cluster, {})
    relist, _ = relister(cluster, api, every_passes=0)
    assert [await relist.maybe_reconcile() for _ in range(5)] == [0] * 5
    assert api.calls == []
    assert len(cluster.jobs) == 2


def test_relist_interval_setting() -> None:
    assert parse_config(None).relist_interval_s == DEFAULT_RELIST_INTERVAL_S == 300.0
    assert parse_config({"relistIntervalSeconds": 60}).relist_interval_s == 60.0
    with pytest.raises(ConfigError, match="relistIntervalSeconds"):
        parse_config({"relistIntervalSeconds": -1})
    assert relist_every_passes(300.0, 15.0) == 20
    assert relist_every_passes(300.0, 7.0) == 43  # rounded up: never more often than asked
    assert relist_every_passes(300.0, 3600.0) == 1
    assert relist_every_passes(0.0, 15.0) == 0


# --- in-process: kopf against the emulator, watches held while objects are deleted --------------------------------


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[FaultyEmulator]:
    """The emulator with watch faults (this module's ``start_operator`` runs against it)."""
    async with served(FaultyEmulator()) as emulator:
        yield emulator


JOBS = {"train-0": "n1", "train-1": "n2", "train-2": "n1"}  # Job -> the node of its one pod


def setup_cluster(api: FaultyEmulator, agents: FakeAgents) -> None:
    for index, node in enumerate(("n1", "n2"), start=1):
        agents.ips[node] = f"127.0.0.{index}"
        api.objects["v1/nodes", None, node] = node_object(node, "z1")
        api.objects["v1/pods", AGENT_NAMESPACE, f"agent-{node}"] = agent_pod(node, f"127.0.0.{index}")
    for name, node in JOBS.items():
        uid = f"uid-{name}"
        api.objects["batch/v1/jobs", "ml", name] = job_object("ml", name, uid)
        api.objects["v1/pods", "ml", f"{name}-x"] = pod_object(
            "ml", f"{name}-x", f"pod-{name}", node, owner_kind="Job", owner_name=name, owner_uid=uid
        )


def publish(agents: FakeAgents, tick_s: float, energy_j: Mapping[str, int]) -> None:
    for node in ("n1", "n2"):
        pods = [
            Pod("ml", f"{name}-x", f"pod-{name}", float(energy), energy / 500, "Job", name, f"uid-{name}")
            for name, energy in energy_j.items()
            if JOBS[name] == node
        ]
        agents.texts[node] = agent_text(node, tick_s, pods, epoch=EPOCH)


def annotations(api: FaultyEmulator, name: str) -> dict[str, str]:
    found = api.objects["batch/v1/jobs", "ml", name].get("metadata", {}).get("annotations") or {}
    return {key: value for key, value in found.items() if key.startswith("jouleledger.io/")}


def annotation_patches(api: FaultyEmulator, name: str) -> int:
    path = f"/apis/batch/v1/namespaces/ml/jobs/{name}"
    return sum(1 for r in api.requests if r.method.value == "PATCH" and r.url.path == path)


def footprint(api: FaultyEmulator, name: str) -> dict[str, Any]:
    raw: dict[str, Any] = api.objects["jouleledger.io/v1alpha1/workloadfootprints", "ml", f"uid-{name}"].raw
    return raw


async def delete(api: FaultyEmulator, path: str) -> None:
    async with api.delete(path) as response:
        assert response.status < 300, await response.text()


async def complete(api: FaultyEmulator, name: str, when_s: float) -> None:
    async with api.patch(f"/apis/batch/v1/namespaces/ml/jobs/{name}/status", json=completed(rfc3339(when_s))) as r:
        assert r.status == 200, await r.text()


def seen_finished(running: Running, name: str) -> bool:
    job = running.app.cluster.jobs.get(f"uid-{name}")
    return job is not None and job.state.finished


@pytest.mark.slow
async def test_objects_deleted_while_watches_are_down_leave_the_view_at_the_relist(
    api: FaultyEmulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents)
    base_s = time.time()
    clock = {"now": base_s}
    energy_j = dict.fromkeys(JOBS, 0)
    publish(agents, base_s, energy_j)
    config = parse_config({"maxGpuPowerW": 10_000, "relistIntervalSeconds": 2 * SCRAPE_INTERVAL_S})
    running = await start_operator(
        ScriptedIntensity({"z1": 400.0}),
        config=config,
        scrape_interval_s=SCRAPE_INTERVAL_S,
        clock=lambda: clock["now"],
        finalize_deadline_s=600.0,
        write_interval_s=0.0,
    )
    accountant = running.accountant
    cluster = running.app.cluster
    relist = accountant.relister
    assert relist.every_passes == 2

    tick_s = base_s + 1.0
    energy_j = {"train-0": 3000, "train-1": 5000, "train-2": 7000}
    publish(agents, tick_s, energy_j)
    clock["now"] = tick_s
    await accountant.run_pass()  # the second pass: energy of all three Jobs folded, no relist yet
    assert relist.runs == 0

    # The watches go down; meanwhile n2 (its agent with it) and the Job train-2 (its pod with it) are deleted.
    resources = ("v1/pods", "v1/nodes", "batch/v1/jobs")
    before = dict(api.watches_started)
    for resource in resources:
        api.hold(resource)
        await api.drop(resource)
    await eventually(lambda: api.held >= len(resources), what="the new watches held")
    await delete(api, f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods/agent-n2")
    await delete(api, "/api/v1/nodes/n2")
    await delete(api, "/apis/batch/v1/namespaces/ml/jobs/train-2")
    await delete(api, "/api/v1/namespaces/ml/pods/train-2-x")
    agents.status["n2"] = 503  # nothing answers there any more
    del energy_j["train-2"]
    for resource in resources:
        api.release(resource)
    for resource in resources:
        started = before.get(resource, 0)
        await eventually(lambda r=resource, n=started: api.watches_started.get(r, 0) > n, what=f"{resource} rewatched")

    # kopf watches again but reports none of the deletions: the view still holds all three.
    assert [target.node for target in cluster.agent_targets()] == ["n1", "n2"]
    assert "uid-train-2" in cluster.jobs
    assert "n2" in cluster.node_zones

    tick_s += 1.0
    energy_j["train-0"] += 1000
    publish(agents, tick_s, energy_j)
    clock["now"] = tick_s
    scrapes_before = dict(accountant.stats.scrapes)
    await accountant.run_pass()  # the third pass relists first: the stale agent is not scraped
    assert [target.node for target in cluster.agent_targets()] == ["n1"]
    assert accountant.stats.scrapes["error"] == scrapes_before["error"]
    assert relist.runs == 1
    assert "uid-train-2" not in cluster.jobs
    assert "pod-train-2" not in cluster.pods
    assert "n2" not in cluster.node_zones
    # agent-n2 and train-2-x; train-2; n2
    assert accountant.view().pruned == {"pods": 2, "jobs": 1, "nodes": 1, "replicasets": 0}
    assert accountant.ledger.accounts["uid-train-1"].totals.energy_mj == 5000 * 1000  # n2's energy stays

    # Both remaining Jobs complete: train-0 is final at n1's next tick; train-1 waits for n2's, which never comes.
    completion_s = tick_s + 0.5
    await complete(api, "train-0", completion_s)
    await complete(api, "train-1", completion_s)
    for name in ("train-0", "train-1"):
        await eventually(lambda n=name: seen_finished(running, n), what=f"{name} seen completed")
    tick_s += 1.0
    publish(agents, tick_s, energy_j)
    clock["now"] = tick_s
    await accountant.run_pass()
    assert annotations(api, "train-0")
    assert not annotations(api, "train-1")  # not before its deadline: a new agent on n2 may still report
    clock["now"] = completion_s + 600.0  # its finalization deadline
    await accountant.run_pass()
    for _ in range(3):  # more passes (one relists again) write nothing twice
        tick_s += 1.0
        publish(agents, tick_s, energy_j)
        clock["now"] += 1.0
        await accountant.run_pass()
    assert relist.runs == 3
    for name, energy in energy_j.items():
        assert annotations(api, name)["jouleledger.io/energy-kwh"] == f"{energy / 3_600_000:.6f}", name
        assert footprint(api, name)["status"]["energyMillijoules"] == energy * 1000, name
        assert annotation_patches(api, name) == 1, name
    assert footprint(api, "train-0")["status"]["final"]["missingNodes"] == []
    assert footprint(api, "train-1")["status"]["final"]["missingNodes"] == ["n2"]
    assert annotation_patches(api, "train-2") == 0
    figure(
        f"relist after watches held: pruned { ({k: v for k, v in accountant.view().pruned.items() if v}) }, "
        f"relists {relist.runs}, "
        f"Jobs annotated once {len(energy_j)}, mJ lost or doubled 0"
    )

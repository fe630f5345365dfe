"""Two operator shards (``--shard 0/1 --total-shards 2``) against one Kubernetes API (kmock) and the same agents:
no footprint or Job is written by both, and together they record exactly what one unsharded operator records."""

from __future__ import annotations

import time
from typing import Any

import kmock
import pytest

from jouleledger.core.sharding import ShardSpec, shard_of
from tests._kube_emulator import (
    Emulator,
    FakeAgents,
    place_agents,
    place_job,
    register_resources,
)
from tests.controller._exposition import Pod, agent_text
from tests.controller._passes import TwoPasses, two_pass_app

pytestmark = pytest.mark.slow

FOOTPRINTS = "jouleledger.io/v1alpha1/workloadfootprints"
NODES = {"n1": "127.0.0.1", "n2": "127.0.0.2"}
JOBS = 12
BASE = time.time()


def populate(api: Emulator, agents: FakeAgents, base: float) -> None:
    """Two nodes; twelve finished Jobs, one pod each, alternating nodes; unallocated energy on both nodes."""
    place_agents(api, agents, NODES)
    for index in range(JOBS):
        place_job(api, index, "n1" if index % 2 == 0 else "n2", completed_at=base - 10)
    expose(agents, base)


def expose(agents: FakeAgents, base: float, idle_j: float = 0.0, ticks: float = 10.0) -> None:
    """The agents' expositions: each Job's pod on its node, and ``idle_j`` more unallocated energy per node."""
    pods: dict[str, list[Pod]] = {node: [] for node in NODES}
    for index in range(JOBS):
        node = "n1" if index % 2 == 0 else "n2"
        name, uid, pod_uid = f"train-{index}", f"job-{index}", f"pod-{index}"
        energy_j = 1000.0 * (index + 1) + 0.125
        pods[node].append(Pod("ml", f"{name}-x", pod_uid, energy_j, 10.0 + index, "Job", name, uid, "vision"))
    for index, node in enumerate(NODES):
        unallocated_j = 500.0 * (index + 1) + idle_j
        agents.texts[node] = agent_text(
            node, base + ticks - 10.0, pods[node], unallocated_j=unallocated_j, epoch="00" * 8, ticks=ticks
        )


def app_for(api: Emulator, agents: FakeAgents, shard: ShardSpec) -> TwoPasses:
    """An operator whose ``once()`` runs two passes; between them the agents' idle energy grows by 250 J (a node's
    unallocated energy counts from a process's second scrape on)."""

    async def more_idle_energy() -> None:
        expose(agents, BASE, idle_j=250.0, ticks=15.0)

    return two_pass_app(api, agents, more_idle_energy, shard=shard)


def writes(api: Emulator, since: int) -> tuple[set[str], set[str]]:
    """The footprints and the Jobs written by the requests served after the first ``since``."""
    footprints: set[str] = set()
    jobs: set[str] = set()
    for request in api.requests[since:]:
        if request.method.value not in {"POST", "PATCH", "PUT"}:
            continue
        path = request.url.path
        if "/workloadfootprints" in path:
            name = path.split("/workloadfootprints", 1)[1].strip("/").split("/")[0]
            footprints.add(name or str((request.data or {}).get("metadata", {}).get("name", "")))
        elif "/jobs/" in path:
            jobs.add(path.split("/jobs/", 1)[1].split("/")[0])
    return footprints, jobs


def recorded(api: Emulator) -> dict[str, tuple[Any, ...]]:
    """Per footprint: its final energy, GPU-seconds, pods; and the Job annotations."""
    out: dict[str, tuple[Any, ...]] = {}
    for (resource, _, name), obj in api.objects.items():
        if resource == kmock.resource(FOOTPRINTS) and not obj.deleted:
            final = obj.raw["status"]["final"]
            out[name] = (final["energyMillijoules"], final.get("gpuSeconds"), obj.raw["status"]["pods"])
    for index in range(JOBS):
        annotations = api.objects["batch/v1/jobs", "ml", f"train-{index}"].get("metadata", {}).get("annotations", {})
        out[f"train-{index}"] = tuple(sorted((k, v) for k, v in annotations.items() if k.startswith("jouleledger.io/")))
    return out


async def test_two_shards_write_disjoint_footprints_whose_totals_equal_one_unsharded_run(
    api: Emulator, agents: FakeAgents
) -> None:
    base = BASE
    owners = {shard_of(f"job-{index}", 2) for index in range(JOBS)}
    assert owners == {0, 1}  # the fixture's UIDs land on both shards (else the test proves nothing)

    # One unsharded operator on its own API: the reference.
    async with Emulator() as single, kmock.Server(single):
        register_resources(single)
        populate(single, agents, base)
        unsharded = app_for(single, agents, ShardSpec(0, 1))
        summary = await unsharded.once()
        assert summary.annotated == JOBS
        reference = recorded(single)
        assert unsharded.accountant is not None
        reference_unallocated = unsharded.accountant.ledger.rollups()

    populate(api, agents, base)
    written: list[tuple[set[str], set[str]]] = []
    unallocated_mj = 0
    for shard in (0, 1):
        expose(agents, base)  # each shard's process sees the same two readings the unsharded one saw
        since = len(api.requests)
        app = app_for(api, agents, ShardSpec(shard, 2))
        await app.once()
        written.append(writes(api, since))
        assert app.accountant is not None
        unallocated_mj += sum(app.accountant.ledger.rollups().unallocated_mj.values())
        # Only this shard's workloads are in its ledger.
        assert all(shard_of(uid, 2) == shard for uid in app.accountant.ledger.accounts)

    (footprints_0, jobs_0), (footprints_1, jobs_1) = written
    assert footprints_0
    assert footprints_1
    assert not footprints_0 & footprints_1
    assert jobs_0
    assert jobs_1
    assert not jobs_0 & jobs_1
    assert footprints_0 | footprints_1 == {f"job-{index}" for index in range(JOBS)}
    assert recorded(api) == reference  # the same footprints and annotations as one operator
    assert unallocated_mj == sum(reference_unallocated.unallocated_mj.values()) == 500_000  # 2 nodes x 250 J

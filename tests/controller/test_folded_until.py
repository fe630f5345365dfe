"""The operator asks each agent to leave out the finished pods it has durably folded (``?folded_until=T``), and only
those: a pod whose final footprint is not written yet stays in the exposition, and a restarted operator asks the
same from its first scrape on (the value is stored in the footprints), so a left-out pod is never counted again.

The fake agents honour the parameter as real agents do (tests/_kube_emulator.py); passes are driven by the test.
Last, the order of a pass's writes: a Job's final footprint and annotation never wait behind running workloads'.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from tests._kube_emulator import (
    AGENT_NAMESPACE,
    Emulator,
    FakeAgents,
    Fault,
    agent_pod,
    completed,
    job_object,
    node_object,
    pod_object,
)
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import Running, ScriptedIntensity, StartOperator, eventually, no_sleep, stop

pytestmark = pytest.mark.slow

FOOTPRINTS = "jouleledger.io/v1alpha1/workloadfootprints"
EPOCH = "00000000000000e1"


def rfc3339(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def setup(api: Emulator, agents: FakeAgents) -> None:
    """Node n1 with its agent, Job ml/train (job-1) with pod train-x, and a service pod that keeps running."""
    agents.ips["n1"] = "127.0.0.1"
    api.objects["v1/nodes", None, "n1"] = node_object("n1", "z1")
    api.objects["v1/pods", AGENT_NAMESPACE, "agent-n1"] = agent_pod("n1", "127.0.0.1")
    api.objects["batch/v1/jobs", "ml", "train"] = job_object("ml", "train", "job-1")
    api.objects["v1/pods", "ml", "train-x"] = pod_object(
        "ml", "train-x", "pod-1", "n1", owner_kind="Job", owner_name="train", owner_uid="job-1"
    )


def train(energy_j: float) -> Pod:
    return Pod("ml", "train-x", "pod-1", energy_j, energy_j / 360, "Job", "train", "job-1", "vision")


def serve(energy_j: float) -> Pod:
    return Pod("ml", "web", "pod-w", energy_j, energy_j / 360, device="GPU-b")


def text(tick_s: float, *, finished_s: float | None = None, web_j: float = 0.0, train_j: float = 7200.0) -> str:
    finished = {} if finished_s is None else {("ml", "train-x"): finished_s}
    return agent_text("n1", tick_s, [train(train_j), serve(web_j)], epoch=EPOCH, finished=finished)


def footprint(api: Emulator) -> dict[str, Any]:
    raw: dict[str, Any] = api.objects[FOOTPRINTS, "ml", "job-1"].raw
    return raw


async def job_finished(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator, *, web_j: float = 0.0
) -> tuple[Running, float]:
    """The operator started, one pass with the Job's pod at 3600 J, then the Job complete (at ``base + 1.5``)."""
    setup(api, agents)
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base, epoch=EPOCH)
    running = await start_operator(ScriptedIntensity(), api_sleep=no_sleep)  # retried writes wait no time
    agents.texts["n1"] = text(base + 1, train_j=3600.0, web_j=web_j)
    await running.accountant.run_pass()
    status = completed(rfc3339(base + 1.5))
    async with api.patch("/apis/batch/v1/namespaces/ml/jobs/train/status", json=status) as r:
        assert r.status == 200, await r.text()
    await eventually(
        lambda: "job-1" in running.app.cluster.jobs and running.app.cluster.jobs["job-1"].state.finished,
        what="the Job's completion event",
    )
    return running, base


async def test_a_finished_pod_is_left_out_once_its_final_footprint_is_written_and_after_a_restart(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    first, base = await job_finished(api, agents, start_operator, web_j=100.0)
    accountant = first.accountant

    # The agent shows the pod's final totals with its finish time (a sample time of the agent's clock).
    finished_s = base + 1.75
    agents.texts["n1"] = text(base + 2, finished_s=finished_s, web_j=200.0)
    await accountant.run_pass()  # folded, finalized, written: from now on the agent may leave it out
    assert footprint(api)["status"]["final"]["energyMillijoules"] == 7_200_000
    assert agents.folded_until["n1"][-1] is None

    for index in range(10):  # the series misses from every scrape: eventually pruned, never a reset
        agents.texts["n1"] = text(base + 3 + index, finished_s=finished_s, web_j=300.0 + index)
        await accountant.run_pass()
        assert agents.folded_until["n1"][-1] == finished_s  # the exact float the agent exported
    assert accountant.stats.counter_resets == {}
    assert dict(accountant.stats.rejected) == {}
    # The pruned watermarks leave the footprint at its next write (here the flush at shutdown), with the value.
    await stop(first)
    assert footprint(api)["status"]["series"] == []
    assert footprint(api)["status"]["foldedUntil"] == [{"node": "n1", "epoch": EPOCH, "unixSeconds": finished_s}]
    assert footprint(api)["status"]["lateEnergyMillijoules"] == 0

    # The agent still holds the pod. A restarted operator's first scrape already leaves it out: its watermark is
    # gone from the footprint, so reading it again would count its 7200 J a second time.
    second = await start_operator(ScriptedIntensity())
    assert agents.folded_until["n1"][-1] == finished_s
    agents.texts["n1"] = text(base + 20, finished_s=finished_s, web_j=400.0)
    await second.accountant.run_pass()
    assert agents.folded_until["n1"][-1] == finished_s
    rollups = second.accountant.ledger.rollups()
    assert rollups.namespaces["ml"].energy_mj == 91_000  # the service pod's 400 J - 309 J (flushed at the stop)
    assert footprint(api)["status"]["lateEnergyMillijoules"] == 0
    assert footprint(api)["status"]["final"]["energyMillijoules"] == 7_200_000


async def test_a_pod_whose_final_footprint_is_not_written_stays_in_the_exposition(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    running, base = await job_finished(api, agents, start_operator)
    accountant = running.accountant

    # Every write of the footprint fails for a while: the agent must keep exporting the pod.
    api.faults.append(Fault("PATCH", r"/workloadfootprints/job-1", 500, count=1000))
    api.faults.append(Fault("POST", r"/workloadfootprints", 500, count=1000))
    finished_s = base + 1.75
    for index in range(3):
        agents.texts["n1"] = text(base + 2 + index, finished_s=finished_s)
        await accountant.run_pass()
        assert agents.folded_until["n1"][-1] is None
    assert accountant.stats.footprint_errors.get("footprint_write", 0) >= 3

    api.faults.clear()
    agents.texts["n1"] = text(base + 5, finished_s=finished_s)
    await accountant.run_pass()  # written now; the next scrape leaves the pod out
    agents.texts["n1"] = text(base + 6, finished_s=finished_s)
    await accountant.run_pass()
    assert agents.folded_until["n1"][-1] == finished_s
    assert footprint(api)["status"]["final"]["energyMillijoules"] == 7_200_000
    assert footprint(api)["status"]["lateEnergyMillijoules"] == 0


async def test_a_final_footprint_and_its_annotation_come_before_the_writes_of_running_workloads(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    running, base = await job_finished(api, agents, start_operator, web_j=100.0)
    accountant = running.accountant
    accountant.write_interval_s = 0.0  # the service pod's footprint is due at every pass
    agents.texts["n1"] = text(base + 2, finished_s=base + 1.75, web_j=200.0)
    first = len(api.requests)
    await accountant.run_pass()
    writes = [
        f"{request.method.value} {request.url.path}"
        for request in api.requests[first:]
        if request.method.value in ("POST", "PATCH") and "/events" not in request.url.path
    ]
    annotation = writes.index("PATCH /apis/batch/v1/namespaces/ml/jobs/train")
    final = writes.index("PATCH /apis/jouleledger.io/v1alpha1/namespaces/ml/workloadfootprints/job-1/status")
    service = writes.index("PATCH /apis/jouleledger.io/v1alpha1/namespaces/ml/workloadfootprints/pod-w/status")
    assert final < annotation < service

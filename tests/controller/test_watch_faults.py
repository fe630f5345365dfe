"""Watch streams that fail under a running operator (kopf in-process against the emulator): streams the API server
drops, ``410 Gone`` in a live stream, and a stream that hangs (open, silent, never closed by the server). kopf must
watch again each time, and every Job that completed meanwhile is still annotated once, with its energy.

Passes are driven by the test (the scrape interval is an hour); faults are injected at chosen points, and the test
waits for their effects (a new watch stream, the Job's completion seen), never for time.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator

import kopf
import pytest
import pytest_asyncio

from jouleledger.controller.app import WATCH_CLIENT_TIMEOUT_S, WATCH_SERVER_TIMEOUT_S, configure_watching
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
from tests.controller._operator import Running, ScriptedIntensity, StartOperator, eventually, test_settings

JOBS_RESOURCE = "batch/v1/jobs"
WATCHED = (JOBS_RESOURCE, "v1/pods", "v1/nodes", "apps/v1/replicasets")
EPOCH = "00000000feed0001"


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[FaultyEmulator]:
    """The emulator with watch faults (this module's ``start_operator`` runs against it)."""
    async with served(FaultyEmulator()) as emulator:
        yield emulator


def test_production_watch_timeouts_are_finite() -> None:
    """kopf's defaults leave a watch open for ever on a silent connection; the operator's are finite, and settings
    a caller chose (a test's short client timeout) are kept."""
    settings = kopf.OperatorSettings()
    configure_watching(settings)
    server, client = settings.watching.server_timeout, settings.watching.client_timeout
    assert server == WATCH_SERVER_TIMEOUT_S
    assert isinstance(server, int)  # sent as timeoutSeconds: a real API server refuses 300.0 with 400
    assert client == WATCH_CLIENT_TIMEOUT_S
    assert server is not None
    assert client is not None
    assert math.isfinite(client)
    assert client > server > 0  # the server ends a healthy watch first; the client only gives up on a hung one
    assert 0 < settings.watching.inactivity_timeout < math.inf
    chosen = kopf.OperatorSettings()
    chosen.watching.client_timeout = 1.5
    configure_watching(chosen)
    assert chosen.watching.client_timeout == 1.5


def setup_cluster(api: FaultyEmulator, agents: FakeAgents, jobs: int) -> list[tuple[str, str]]:
    """Node n1 with its agent, and Jobs ``ml/train-<i>`` (uid job-<i>), each with one pod on n1."""
    agents.ips["n1"] = "127.0.0.1"
    api.objects["v1/nodes", None, "n1"] = node_object("n1", "z1")
    api.objects["v1/pods", AGENT_NAMESPACE, "agent-n1"] = agent_pod("n1", "127.0.0.1")
    names = []
    for index in range(jobs):
        name, uid = f"train-{index}", f"job-{index}"
        api.objects["batch/v1/jobs", "ml", name] = job_object("ml", name, uid)
        api.objects["v1/pods", "ml", f"{name}-x"] = pod_object(
            "ml", f"{name}-x", f"pod-{index}", "n1", owner_kind="Job", owner_name=name, owner_uid=uid
        )
        names.append((name, uid))
    return names


def publish(agents: FakeAgents, tick_s: float, energy_j: list[int]) -> None:
    pods = [
        Pod("ml", f"train-{i}-x", f"pod-{i}", float(e), e / 500, "Job", f"train-{i}", f"job-{i}")
        for i, e in enumerate(energy_j)
    ]
    agents.texts["n1"] = agent_text("n1", tick_s, pods, epoch=EPOCH)


def annotations(api: FaultyEmulator, name: str) -> dict[str, str]:
    found = api.objects["batch/v1/jobs", "ml", name].get("metadata", {}).get("annotations") or {}
    return {key: value for key, value in found.items() if key.startswith("jouleledger.io/")}


def annotation_patches(api: FaultyEmulator, name: str) -> int:
    path = f"/apis/batch/v1/namespaces/ml/jobs/{name}"
    return sum(1 for r in api.requests if r.method.value == "PATCH" and r.url.path == path)


async def complete(api: FaultyEmulator, name: str, when_s: float) -> None:
    async with api.patch(f"/apis/batch/v1/namespaces/ml/jobs/{name}/status", json=completed(rfc3339(when_s))) as r:
        assert r.status == 200, await r.text()


def seen_finished(running: Running, uid: str) -> bool:
    job = running.app.cluster.jobs.get(uid)
    return job is not None and job.state.finished


def check_recorded(api: FaultyEmulator, name: str, uid: str, energy_j: int) -> None:
    assert annotations(api, name)["jouleledger.io/energy-kwh"] == f"{energy_j / 3_600_000:.6f}", name
    footprint = api.objects["jouleledger.io/v1alpha1/workloadfootprints", "ml", uid].raw
    assert footprint["status"]["energyMillijoules"] == energy_j * 1000, name
    assert annotation_patches(api, name) == 1, name


async def rewatched(api: FaultyEmulator, resource: str, before: int) -> None:
    await eventually(lambda: api.watches_started.get(resource, 0) > before, what=f"a new watch of {resource}")


@pytest.mark.slow
async def test_dropped_watches_and_410_gone_while_jobs_complete_lose_no_job(
    api: FaultyEmulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    jobs = setup_cluster(api, agents, 4)
    energy_j = [0] * len(jobs)
    tick_s = time.time()
    publish(agents, tick_s, energy_j)
    running = await start_operator(ScriptedIntensity({"z1": 400.0}))
    faults: Counter[str] = Counter()
    for index, (name, uid) in enumerate(jobs):
        tick_s += 1.0
        for running_index in range(index, len(jobs)):  # the Jobs not yet completed draw energy
            energy_j[running_index] += 1000 * (running_index + 1)
        publish(agents, tick_s, energy_j)
        await running.accountant.run_pass()
        before = dict(api.watches_started)
        if index % 2 == 0:  # every live watch stream is closed by the server
            for resource in WATCHED:
                await api.drop(resource)
                faults["dropped"] += 1
        else:  # the watches' resourceVersion is too old
            for resource in (JOBS_RESOURCE, "v1/pods"):
                await api.gone(resource)
                faults["gone"] += 1
        await complete(api, name, tick_s + 0.5)  # maybe on the old stream, maybe on the new one
        await api.drop(JOBS_RESOURCE)  # and once more, the completion maybe still in flight
        faults["dropped"] += 1
        await rewatched(api, JOBS_RESOURCE, before.get(JOBS_RESOURCE, 0))
        await rewatched(api, "v1/pods", before.get("v1/pods", 0))
        await eventually(lambda uid=uid: seen_finished(running, uid), what=f"{name} seen completed")
        tick_s += 1.0  # the agent's next tick, after the completion: the footprint is final
        publish(agents, tick_s, energy_j)
        await running.accountant.run_pass()
        assert annotations(api, name), name
    for _ in range(2):  # nothing is written twice later
        tick_s += 1.0
        publish(agents, tick_s, energy_j)
        await running.accountant.run_pass()
    for index, (name, uid) in enumerate(jobs):
        check_recorded(api, name, uid, energy_j[index])
    figure(
        f"watch faults (dropped/410): {dict(faults)}, live streams closed {api.dropped_streams}, "
        f"watches started {sum(api.watches_started.values())}, "
        f"Jobs {len(jobs)} each annotated once, mJ lost or doubled 0"
    )


@pytest.mark.slow
async def test_a_hung_watch_is_abandoned_by_the_client_timeout_and_the_job_completed_meanwhile_is_recorded(
    api: FaultyEmulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    """The Job's completion goes to a stream that sends nothing more and that the server never closes; only the
    operator's client timeout (short here, 330 s in production) ends it. New streams are held until the completion
    was swallowed, so that it cannot go to a fresh one instead."""
    settings = test_settings()
    settings.watching.client_timeout = 1.0
    settings.watching.inactivity_timeout = 3600.0  # the client timeout, not kopf's inactivity timeout, must do it
    [(name, uid)] = setup_cluster(api, agents, 1)
    tick_s = time.time()
    publish(agents, tick_s, [0])
    running = await start_operator(ScriptedIntensity({"z1": 400.0}), settings=settings)
    tick_s += 1.0
    publish(agents, tick_s, [5000])
    await running.accountant.run_pass()
    await rewatched(api, JOBS_RESOURCE, 0)

    hung: list[int] = []

    def hang_the_live_stream() -> bool:  # in one step: the stream the operator has open now hangs, new ones wait
        if api.live.get(JOBS_RESOURCE, 0) < 1:
            return False
        api.hold(JOBS_RESOURCE)
        hung.append(api.hang(JOBS_RESOURCE))
        return True

    await eventually(hang_the_live_stream, what="a live watch of Jobs")
    started = api.watches_started[JOBS_RESOURCE]
    await complete(api, name, tick_s + 0.5)
    await eventually(lambda: api.abandoned >= 1, what="the operator giving up on the hung watch (its client timeout)")
    await eventually(lambda: api.held >= 1, what="the operator watching again (held)")
    assert not seen_finished(running, uid)  # no stream could deliver the completion
    api.release(JOBS_RESOURCE)
    await eventually(lambda: seen_finished(running, uid), what="the completion seen through a new watch")
    assert api.watches_started[JOBS_RESOURCE] > started
    assert hung[0] >= 1  # the operator's live stream was hung

    tick_s += 1.0
    publish(agents, tick_s, [5000])
    await running.accountant.run_pass()
    check_recorded(api, name, uid, 5000)
    figure(
        f"watch faults (hung): hangs {api.hangs}, hung streams abandoned by the client {api.abandoned}, "
        f"events swallowed {api.swallowed}, reconnects held {api.held}, "
        f"Job recorded once after the client timeout ({settings.watching.client_timeout:g} s in the test)"
    )

"""The accounting loop under a faulty API server: hundreds of injected 500/503, 429 with Retry-After, 410, 409,
401 and 403 answers on every request the operator makes (restore, footprint create/status, Job read/patch, Events),
and an operator restart in the middle. The loop runs without kopf against the kmock emulator (Jobs and pods are
applied to its cluster view directly), with an injected sleep that records every retry delay.

At the end every Job's footprint and annotation hold exactly the energy its pod drew (0 mJ lost or doubled), each
Job's annotations were written by exactly one successful PATCH. The figures are printed. That a Retry-After is
obeyed is shown on its own below (with this much concurrency a sleep cannot be paired with its answer).
"""

from __future__ import annotations

import random
import time
from collections import Counter

import kopf
import pytest

from jouleledger.controller.accountant import Accountant
from jouleledger.controller.agent_http import AgentHttpClient
from jouleledger.controller.scrape import AgentClientConfig, AgentScraper, build_agent_client
from jouleledger.kube.api import KubeApi, build_api_client
from tests._figures import figure
from tests._kube_emulator import (
    Emulator,
    FakeAgents,
    Fault,
    completed,
    job_object,
    node_object,
    pod_object,
    rfc3339,
)
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import no_sleep, one_node_cluster, test_accountant

pytestmark = pytest.mark.slow

JOBS = 8
STATUSES = (500, 503, 429, 410, 409, 401, 403)
OURS = ("/workloadfootprints", "/jobs/", "/events")


async def test_hundreds_of_api_faults_lose_nothing_and_annotate_each_job_once(
    api: Emulator, agents: FakeAgents
) -> None:
    figures = await _run(api, agents, seed=20261201)
    figure(f"API faults: {figures}")
    assert figures["faults"] >= 200


async def _run(api: Emulator, agents: FakeAgents, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    injected: Counter[str] = Counter()
    faulted: Counter[tuple[str, str]] = Counter()
    rate = {"p": 0.35}

    def chaos(method: str, path: str) -> Fault | None:
        if not any(part in path for part in OURS) or rng.random() >= rate["p"]:
            return None
        status = rng.choice(STATUSES)
        if status == 403 and "/jobs/" in path:
            status = 503  # a 403 on the Job itself is permanent by design (an Event says so): not a transient fault
        elif status == 410 and not (method == "GET" and path.endswith("/workloadfootprints")):
            status = 500  # 410 Gone answers a list (an expired continue token), not one object
        elif status == 409 and method == "GET":
            status = 503
        injected[str(status)] += 1
        faulted[(method, path)] += 1
        return Fault(method, ".", status, 1, str(rng.randint(1, 3)) if status == 429 else "")

    api.objects["v1/nodes", None, "n1"] = node_object("n1", "z1")
    base = time.time()
    cluster = one_node_cluster(agents)
    pods = []
    for index in range(JOBS):
        name, uid = f"train-{index}", f"job-{index}"
        job = job_object("ml", name, uid)
        api.objects["batch/v1/jobs", "ml", name] = job
        cluster.apply("jobs", None, job)
        pod = pod_object("ml", f"{name}-x", f"pod-{index}", "n1", owner_kind="Job", owner_name=name, owner_uid=uid)
        cluster.apply("pods", None, pod)
        pods.append(Pod("ml", f"{name}-x", f"pod-{index}", 0.0, 0.0, "Job", name, uid))
    energy_j = [0.0] * JOBS
    clock = {"now": base}

    def build() -> Accountant:
        info = kopf.ConnectionInfo(server=str(api.url).rstrip("/"))
        kube = KubeApi(build_api_client(info), attempts=4, sleep=no_sleep)
        scraper_client = build_agent_client(AgentClientConfig())
        clients.append(scraper_client)
        kubes.append(kube)
        scraper = AgentScraper(scraper_client, timeout_s=5, concurrency=4, backoff_base_s=0.0, backoff_max_s=0.0)
        return test_accountant(kube, scraper, cluster, lambda: clock["now"], time.monotonic)

    clients: list[AgentHttpClient] = []
    kubes: list[KubeApi] = []
    api.chaos = chaos
    accountant = build()
    tick = 0

    async def run_pass(draw: bool) -> None:
        nonlocal tick
        tick += 1
        if draw:
            for index in range(JOBS):
                if index not in done:
                    energy_j[index] += 100.0 * (index + 1)
        shown = [
            Pod(p.namespace, p.name, p.uid, energy_j[i], energy_j[i] / 500, p.owner_kind, p.owner_name, p.owner_uid)
            for i, p in enumerate(pods)
        ]
        agents.texts["n1"] = agent_text("n1", base + tick, shown)
        clock["now"] = base + tick + 0.5
        await accountant.run_pass()

    done: set[int] = set()

    def finish(index: int) -> None:
        done.add(index)
        key = ("batch/v1/jobs", "ml", f"train-{index}")
        job = {**api.objects[key].raw, **completed(rfc3339(base + tick + 0.2))}
        api.objects[key] = job
        cluster.apply("jobs", "MODIFIED", job)

    try:
        for step in range(40):
            await run_pass(draw=True)
            if step == 20:
                accountant = build()  # an operator restart, under the same faults
            if step % 6 == 5 and len(done) < JOBS:  # a Job finishes
                finish(len(done))
        for index in range(JOBS):
            if index not in done:
                finish(index)
        for _ in range(25):  # still faulty: everything finishes anyway
            await run_pass(draw=False)
        rate["p"] = 0.0
        for _ in range(3):
            await run_pass(draw=False)
    finally:
        api.chaos = None
        for client in clients:
            await client.aclose()
        for kube in kubes:
            await kube.aclose()

    for index in range(JOBS):
        path = f"/apis/batch/v1/namespaces/ml/jobs/train-{index}"
        annotations = api.objects["batch/v1/jobs", "ml", f"train-{index}"].raw["metadata"].get("annotations", {})
        assert annotations["jouleledger.io/energy-kwh"] == f"{energy_j[index] / 3_600_000:.6f}", index
        footprint = api.objects["jouleledger.io/v1alpha1/workloadfootprints", "ml", f"job-{index}"].raw
        assert footprint["status"]["energyMillijoules"] == round(energy_j[index] * 1000), index
        patches = sum(1 for r in api.requests if r.method.value == "PATCH" and r.url.path == path)
        assert patches - faulted[("PATCH", path)] == 1, index
    return {"faults": sum(injected.values()), **injected, "passes": tick}


async def test_retry_after_is_obeyed_and_backoff_grows(api: Emulator) -> None:
    """429 with ``Retry-After: 2`` then ``7`` (above the doubled backoff), 503, then the answer: the client sleeps
    2 s, 7 s, then the doubled backoff (capped at 10 s)."""
    slept: list[float] = []

    async def sleep(delay_s: float) -> None:
        slept.append(delay_s)

    path = "/apis/jouleledger.io/v1alpha1/namespaces/ml/workloadfootprints"
    api.faults += [Fault("GET", path, 429, 1, "2"), Fault("GET", path, 429, 1, "7"), Fault("GET", path, 503, 1)]
    client = build_api_client(kopf.ConnectionInfo(server=str(api.url).rstrip("/")))
    kube = KubeApi(client, attempts=5, backoff_s=0.2, max_backoff_s=10.0, sleep=sleep)
    try:
        assert await kube.list(path) == []
    finally:
        await kube.aclose()
    assert slept == [2.0, 7.0, 10.0]
    assert kube.retries == 3

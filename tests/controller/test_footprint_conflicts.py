"""Optimistic concurrency on footprint status writes, against the emulator: a footprint another writer changed
since the operator last read or wrote it is a 409; the operator reads it again, merges it by the series
watermarks and writes again, so the other writer's energy is neither lost nor counted twice."""

from __future__ import annotations

import copy
import time

from tests._kube_emulator import Emulator, FakeAgents
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import api_and_agent_clients, one_job_accountant

FOOTPRINT = ("jouleledger.io/v1alpha1/workloadfootprints", "ml", "job-1")


async def test_a_status_write_over_a_changed_footprint_gets_409_and_merges_the_other_writers_energy(
    api: Emulator, agents: FakeAgents
) -> None:
    base = time.time()
    clock = {"now": base}
    async with api_and_agent_clients(api) as (kube, scraper_client):
        accountant = one_job_accountant(api, agents, kube, scraper_client, clock)

        async def run_pass(tick: int, energy_j: float) -> None:
            pod = Pod("ml", "train-x", "pod-1", energy_j, energy_j / 100, "Job", "train", "job-1")
            agents.texts["n1"] = agent_text("n1", base + tick, [pod], epoch="00000000000000aa")
            clock["now"] = base + tick + 0.5
            await accountant.run_pass()

        await run_pass(1, 0.0)
        await run_pass(2, 100.0)
        assert api.objects[FOOTPRINT].raw["status"]["energyMillijoules"] == 100_000

        # A second operator instance, scraping a node this one cannot reach, wrote 40 J of the Job's other pod.
        other = copy.deepcopy(api.objects[FOOTPRINT].raw)
        status = other["status"]
        status["energyMillijoules"] += 40_000
        status["gpuSeconds"] += 0.4
        status["series"].append(
            {**status["series"][0], "node": "n2", "pod": "train-y", "podUid": "pod-2", "energyMillijoules": 40_000}
        )
        status["series"][-1]["gpuSeconds"] = 0.4
        other["metadata"]["resourceVersion"] = "999999"
        api.objects[FOOTPRINT] = other

        await run_pass(3, 200.0)
        assert accountant.stats.footprint_errors.get("footprint_conflict") == 1
        stored = api.objects[FOOTPRINT].raw["status"]
        assert stored["energyMillijoules"] == 240_000  # ours (200 J) and the other writer's 40 J, once
        assert {series["node"] for series in stored["series"]} == {"n1", "n2"}

        await run_pass(4, 250.0)
        assert api.objects[FOOTPRINT].raw["status"]["energyMillijoules"] == 290_000
        assert accountant.stats.footprint_errors.get("footprint_conflict") == 1

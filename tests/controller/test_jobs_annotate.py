"""A pass annotates its finished Jobs concurrently: one Job's requests never wait for another Job's."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from jouleledger.controller.cluster import ClusterState
from jouleledger.controller.jobs import JobRecorder
from jouleledger.core.footprints import FootprintBook, WorkloadAccount
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.core.workload import WorkloadRef
from tests._kube_emulator import completed, job_object


class _Writer:
    """Answers every read after a few turns of the event loop, counting the reads in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.annotated: list[str] = []

    async def read(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        self.in_flight -= 1
        return {"metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": {}}}

    async def annotate(self, job: Mapping[str, Any], annotations: Mapping[str, str | None]) -> None:
        self.annotated.append(job["metadata"]["name"])

    async def event(self, job: object, kind: str, reason: str, message: str) -> None:
        return None


async def test_finished_jobs_are_annotated_concurrently_each_once() -> None:
    cluster = ClusterState(
        team_label="team", agent_namespace="jl", agent_selector={}, agent_port=9470, zone_of=lambda _: "z"
    )
    ledger = FootprintBook("EUR")
    for index in range(5):
        uid = f"job-{index}"
        cluster.apply("jobs", None, {**job_object("ml", f"train-{index}", uid), **completed("2026-01-01T00:00:00Z")})
        account = ledger.accounts[uid] = WorkloadAccount(WorkloadRef("ml", "Job", f"train-{index}", uid), "t", "EUR")
        ledger.finalize(uid, 1000.0, 1010.0)
        account.written(1010.0)
    writer = _Writer()
    recorder = JobRecorder(
        ledger=ledger,
        cluster=cluster,
        writer=writer,  # type: ignore[arg-type]
        stats=OperatorStats(),
        deadline_s=120.0,
        clock_skew_s=0.0,
    )
    assert await recorder.annotate(1011.0) == 5
    assert writer.most == 5  # all five read at once, not one after the other
    assert sorted(writer.annotated) == [f"train-{index}" for index in range(5)]
    assert await recorder.annotate(1012.0) == 0  # each once

"""A pass annotates its finished Jobs concurrently: one Job's requests never wait for another Job's."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from jouleledger.controller.cluster import ClusterState
from jouleledger.controller.jobs import JobRecorder
from jouleledger.core.footprints import FootprintBook, WorkloadAccount
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.core.workload import WorkloadRef
from jouleledger.kube.jobs import footprint_annotations
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


class _Keeper(_Writer):
    """Keeps what it writes: a read returns the Job with the annotations last written."""

    def __init__(self) -> None:
        super().__init__()
        self.annotations: dict[str, str] = {}

    async def read(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        metadata = {"name": name, "namespace": namespace, "uid": uid, "annotations": dict(self.annotations)}
        return {"metadata": metadata}

    async def annotate(self, job: Mapping[str, Any], annotations: Mapping[str, str | None]) -> None:
        await super().annotate(job, annotations)
        for key, value in annotations.items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value


async def test_an_annotated_job_is_compared_again_only_once_the_watch_brings_a_new_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = ClusterState(
        team_label="team", agent_namespace="jl", agent_selector={}, agent_port=9470, zone_of=lambda _: "z"
    )
    ledger = FootprintBook("EUR")
    job = {**job_object("ml", "train", "job-1"), **completed("2026-01-01T00:00:00Z")}
    cluster.apply("jobs", None, job)
    account = ledger.accounts["job-1"] = WorkloadAccount(WorkloadRef("ml", "Job", "train", "job-1"), "t", "EUR")
    ledger.finalize("job-1", 1000.0, 1010.0)
    account.written(1010.0)
    writer = _Keeper()
    stats = OperatorStats()
    recorder = JobRecorder(
        ledger=ledger,
        cluster=cluster,
        writer=writer,  # type: ignore[arg-type]
        stats=stats,
        deadline_s=120.0,
        clock_skew_s=0.0,
    )
    assert await recorder.annotate(1011.0) == 1

    def with_annotations(annotations: dict[str, str]) -> dict[str, Any]:
        return {**job, "metadata": {**job["metadata"], "annotations": annotations}}

    cluster.apply("jobs", "MODIFIED", with_annotations(dict(writer.annotations)))  # the watch brings the write
    compared: list[object] = []

    def counted(annotations: Mapping[str, str] | None) -> dict[str, str]:
        compared.append(annotations)
        return footprint_annotations(annotations)

    monkeypatch.setattr("jouleledger.controller.jobs.footprint_annotations", counted)
    assert await recorder.annotate(1012.0) == 0
    assert len(compared) == 1  # found intact
    assert await recorder.annotate(1013.0) == 0
    assert len(compared) == 1  # the same version of the Job: not compared again
    edited = {**writer.annotations, "jouleledger.io/energy-kwh": "9.999999"}
    cluster.apply("jobs", "MODIFIED", with_annotations(edited))
    writer.annotations = edited
    assert await recorder.annotate(1014.0) == 0
    assert writer.annotations["jouleledger.io/energy-kwh"] != "9.999999"  # restored
    assert stats.tampering == 1

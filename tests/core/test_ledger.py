"""Cumulative counters: liveness, retention, and the checkpoint state round trip."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.ledger import LedgerStateError, PodCounters
from jouleledger.core.model import ContainerDevices, GpuInfo, GpuReading, NodeHeader, Owner, PodInfo, Sample

GPU = GpuInfo("GPU-a", "H100", True, 700)
HEADER = NodeHeader("n1", (GPU,))
A = PodInfo("ns", "a", "uid-a", {"team": "x"}, Owner("Job", "j", "uid-j"), (ContainerDevices("c", ("GPU-a",)),))


def step(pipeline: Pipeline, t: float, energy: int, pods: tuple[PodInfo, ...], known: bool = True) -> None:
    pipeline.step(Sample(t, (GpuReading("GPU-a", energy, 0),), pods), pods_known=known)


def test_finished_pods_are_kept_for_the_retention_window_then_dropped() -> None:
    pipeline = Pipeline(HEADER, retention_s=10)
    step(pipeline, 0, 0, (A,))
    step(pipeline, 1, 500, (A,))
    step(pipeline, 2, 900, ())  # the pod is gone: its GPU was idle during (1, 2]
    snapshot = pipeline.snapshot()
    assert snapshot.pods["uid-a"].finished_s == 2
    assert snapshot.devices[0].energy_mj == 500
    assert snapshot.unallocated_mj == 400
    step(pipeline, 11.9, 901, ())
    assert "uid-a" in pipeline.snapshot().pods
    step(pipeline, 12, 902, ())
    snapshot = pipeline.snapshot()
    assert snapshot.pods == {}
    assert snapshot.devices == ()
    assert snapshot.measured_mj == 902, "GPU totals outlive the pods"


def test_a_pod_seen_again_is_live_again_and_labels_follow() -> None:
    pipeline = Pipeline(HEADER)
    step(pipeline, 0, 0, (A,))
    step(pipeline, 1, 10, (A,))
    step(pipeline, 2, 20, ())
    relabelled = PodInfo("ns", "a", "uid-a", {"team": "y"}, A.owner, A.containers)
    step(pipeline, 3, 30, (relabelled,))
    record = pipeline.snapshot().pods["uid-a"]
    assert record.finished_s is None
    assert record.labels == {"team": "y"}
    assert (record.first_seen_s, record.last_seen_s) == (1, 3)


def test_state_round_trip_is_exact() -> None:
    pipeline = Pipeline(HEADER)
    step(pipeline, 0, 0, (A,))
    step(pipeline, 1.5, 12345, (A,))
    restored = Pipeline(HEADER)
    restored.restore(copy.deepcopy(pipeline.to_state()))
    assert restored.snapshot() == pipeline.snapshot()
    step(restored, 2.5, 20000, (A,))
    assert restored.snapshot().devices[0].energy_mj == 20000


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("ledger", "version"), 99, "unsupported ledger state version"),
        (("version",), 0, "unsupported pipeline state version"),
        (("ledger", "node"), "elsewhere", "not 'n1'"),
        (("ledger", "t_s"), float("nan"), "malformed"),
        (("ledger", "gpus"), {"GPU-a": {"measured_mj": -1, "unallocated_mj": 0}}, "malformed"),
        (("baselines",), {"GPU-a": {"t_s": 0}}, "malformed"),
    ],
)
def test_bad_state_is_refused(path: tuple[str, ...], value: object, message: str) -> None:
    pipeline = Pipeline(HEADER)
    step(pipeline, 0, 0, (A,))
    step(pipeline, 1, 10, (A,))
    state = copy.deepcopy(pipeline.to_state())
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(LedgerStateError, match=message):
        Pipeline(HEADER).restore(state)


def test_devices_for_an_unknown_pod_are_refused() -> None:
    pipeline = Pipeline(HEADER)
    step(pipeline, 0, 0, (A,))
    step(pipeline, 1, 10, (A,))
    state = pipeline.ledger.to_state()
    state["pods"] = []
    with pytest.raises(LedgerStateError, match="unknown pod"):
        PodCounters.from_state(HEADER, 10, state)


def test_negative_retention_is_refused() -> None:
    with pytest.raises(ValueError, match="retention_s"):
        PodCounters(HEADER, -1)


def normalised(pipeline: Pipeline) -> object:
    """The snapshot with its devices in a fixed order (a rebuilt ledger may list them in another)."""
    snapshot = pipeline.snapshot()
    return dataclasses.replace(snapshot, devices=tuple(sorted(snapshot.devices, key=lambda d: (d.pod_key, d.device))))


def test_full_state_plus_journal_entries_rebuild_the_ledger_exactly() -> None:
    from jouleledger.hardware.simulated import SimulatedNode

    node = SimulatedNode(gpus=4, seed=11, mean_lifetime_s=20.0, mean_idle_s=3.0)
    live = Pipeline(node.header(), retention_s=15)
    for _ in range(30):
        sample = node.sample()
        assert sample is not None
        live.step(sample)
    state = copy.deepcopy(live.to_state())
    entries = []
    for _ in range(90):  # long enough for pods to start, finish and expire between full states
        sample = node.sample()
        assert sample is not None
        live.step(sample)
        entries.append(copy.deepcopy(live.journal_entry()))
    rebuilt = Pipeline(node.header(), retention_s=15)
    rebuilt.restore(state)
    for entry in entries:
        rebuilt.apply_journal_entry(entry)
    assert normalised(rebuilt) == normalised(live)
    rebuilt.apply_journal_entry(entries[-1])  # absolute values: applying an entry twice changes nothing
    assert normalised(rebuilt) == normalised(live)
    assert rebuilt.accountant.baselines == live.accountant.baselines


def test_a_journal_naming_an_unknown_slot_is_refused() -> None:
    pipeline = Pipeline(HEADER)
    step(pipeline, 0, 0, (A,))
    state = pipeline.to_state()
    step(pipeline, 1, 10, (A,))
    first = pipeline.journal_entry()
    step(pipeline, 2, 20, (A,))
    second = pipeline.journal_entry()
    fresh = Pipeline(HEADER)
    fresh.restore(state)
    with pytest.raises(LedgerStateError, match="never defined"):
        fresh.apply_journal_entry(second)  # the entry that named the slot was skipped
    fresh.apply_journal_entry(first)
    fresh.apply_journal_entry(second)
    assert fresh.snapshot().devices[0].energy_mj == 20

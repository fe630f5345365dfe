"""Counter identity across restarts and power losses (the agent side of the epoch contract).

A power loss takes the journal's tail that was flushed but not yet fsynced. It is modelled by copying the checkpoint
and the journal cut at its last fsync point into a fresh directory and starting a new agent there: the restored
counters must be at least every value exported before under the same epoch, or the operator would count the drop
as a reset and the energy again.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from jouleledger.agent.persistence import journal_path
from jouleledger.agent.runner import AgentRunner
from jouleledger.core import contract as names
from jouleledger.hardware.simulated import SimulatedNode
from jouleledger.metrics.agent import AgentCollector


class TickClock:
    """A monotonic clock that advances one second per call to :meth:`advance` (one per tick)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self) -> None:
        self.now += 1.0


def _node() -> SimulatedNode:
    return SimulatedNode(gpus=4, seed=11, mean_lifetime_s=30.0, mean_idle_s=4.0, max_samples=400)


def _exported(runner: AgentRunner) -> dict[tuple[str, str], int]:
    return {(device.pod_key, device.device): device.energy_mj for device in runner.view().ledger.devices}


def _power_loss_copy(runner: AgentRunner, into: Path) -> Path:
    """What the disk holds after a power loss now: the checkpoint, and the journal up to its last fsync."""
    store = runner.store
    assert store is not None
    into.mkdir()
    checkpoint = into / store.path.name
    shutil.copyfile(store.path, checkpoint)
    journal = journal_path(store.path)
    data = journal.read_bytes()[: store.journal.synced_size]
    journal_path(checkpoint).write_bytes(data)
    return checkpoint


@pytest.mark.parametrize("journal_fsync_s", [0.0, 5.0], ids=["fsync-every-tick", "fsync-every-5-ticks"])
@pytest.mark.parametrize("power_loss_at_tick", [7, 17, 38, 61, 99])
def test_power_loss_never_lowers_an_exported_counter_under_the_same_epoch(
    tmp_path: Path, power_loss_at_tick: int, journal_fsync_s: float
) -> None:
    clock = TickClock()
    (tmp_path / "live").mkdir()
    runner = AgentRunner(
        _node(),
        backend="simulated",
        checkpoint_path=tmp_path / "live" / "ck.json",
        compact_every=25,
        journal_fsync_s=journal_fsync_s,
        monotonic_clock=clock,
        retention_s=1e9,
    )
    highest: dict[tuple[str, str], int] = {}
    highest_ticks = 0
    for _ in range(power_loss_at_tick):
        clock.advance()
        assert runner.tick()
        for key, energy_mj in _exported(runner).items():
            highest[key] = max(highest.get(key, 0), energy_mj)
        highest_ticks = max(highest_ticks, runner.view().status.ticks_total)
    epoch = runner.view().status.epoch
    checkpoint = _power_loss_copy(runner, tmp_path / "after-power-loss")
    runner.close()

    restarted = AgentRunner(_node(), backend="simulated", checkpoint_path=checkpoint, retention_s=1e9)
    try:
        assert restarted.view().status.epoch == epoch, "a restored checkpoint keeps its epoch"
        restored = _exported(restarted)
        below = {key: (restored.get(key, 0), value) for key, value in highest.items() if restored.get(key, 0) < value}
        assert below == {}, f"restored counters below values exported under epoch {epoch}: {below}"
        assert restarted.view().status.ticks_total >= highest_ticks
        assert highest, "the run must have exported some pod energy"
    finally:
        restarted.close()


def test_exports_lag_to_the_last_durable_write(tmp_path: Path) -> None:
    """Between fsyncs the export stays at the last durable state; an fsync brings it up to date."""
    clock = TickClock()
    runner = AgentRunner(
        _node(),
        backend="simulated",
        checkpoint_path=tmp_path / "ck.json",
        compact_every=1000,
        journal_fsync_s=3.0,
        monotonic_clock=clock,
    )
    try:
        ticks = []
        for _ in range(8):
            clock.advance()
            runner.tick()
            ticks.append(runner.view().status.ticks_total)
        # tick 1 writes the full checkpoint; the journal (reset at t=1) fsyncs at t=4 and t=7
        assert ticks == [1, 1, 1, 4, 4, 4, 7, 7]
        assert runner.view().ledger.t_s < runner.pipeline.snapshot().t_s
    finally:
        runner.close()


def test_restart_with_checkpoint_keeps_epoch_and_ticks(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    for _ in range(12):
        first.tick()
    epoch = first.epoch
    first.save_checkpoint()
    assert first.view().status.ticks_total == 12
    second = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert second.epoch == epoch
        assert second.view().status.ticks_total == 12
        second.tick()
        assert second.view().status.ticks_total == 13
    finally:
        second.close()


def test_crash_restart_restores_ticks_from_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = AgentRunner(_node(), backend="simulated", checkpoint_path=path, compact_every=5)
    for _ in range(13):
        first.tick()
    epoch = first.epoch
    first.close()  # no final checkpoint: ticks 11-13 live only in the journal
    second = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert (second.epoch, second.view().status.ticks_total) == (epoch, 13)
    finally:
        second.close()


def test_restart_without_checkpoint_is_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    for _ in range(5):
        first.tick()
    first.save_checkpoint()
    epoch = first.epoch
    path.unlink()
    journal_path(path).unlink()
    second = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert second.epoch != epoch
        assert second.view().status.ticks_total == 0
        assert re.fullmatch("[0-9a-f]{16}", second.epoch)
    finally:
        second.close()


def test_corrupt_checkpoint_is_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    first.tick()
    first.save_checkpoint()
    path.write_bytes(path.read_bytes()[:-20] + b"\n")
    second = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert second.epoch != first.epoch
        assert second.view().status.checkpoint_errors_total == 1
    finally:
        second.close()


def test_without_checkpoint_every_start_is_a_new_epoch() -> None:
    epochs = {AgentRunner(_node(), backend="simulated").epoch for _ in range(3)}
    assert len(epochs) == 3


def test_epoch_is_on_the_agent_info_series(tmp_path: Path) -> None:
    runner = AgentRunner(_node(), backend="simulated", checkpoint_path=tmp_path / "ck.json")
    try:
        runner.tick()
        registry = CollectorRegistry()
        registry.register(AgentCollector(runner.view))
        info = [
            sample.labels
            for family in registry.collect()
            for sample in family.samples
            if sample.name == f"{names.AGENT_INFO}_info"
        ]
        assert [labels["epoch"] for labels in info] == [runner.epoch]
    finally:
        runner.close()


def test_without_a_checkpoint_change_tracking_does_not_grow_with_churn() -> None:
    """Nobody journals a ledger without a checkpoint (``--dry-run``): what changed is dropped every tick instead of
    piling up with every pod that passes (found by bench.agent_churn: RSS grew with the pods seen)."""
    node = SimulatedNode(gpus=4, seed=2, mean_lifetime_s=3.0, mean_idle_s=1.0, max_samples=300)
    runner = AgentRunner(node, backend="simulated", retention_s=5.0)
    while runner.tick():
        pass
    assert len(runner.pipeline.snapshot().pods) < 100, "pods expire after their retention"
    pending = runner.pipeline.journal_entry()["ledger"]
    assert pending["expired"] == []
    assert pending["pods"] == []
    assert pending["devices"] == []

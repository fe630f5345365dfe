"""The agent loop: counting, checkpoint restart without loss or double counting, degraded pod source."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jouleledger.agent import persistence
from jouleledger.agent.persistence import journal_path
from jouleledger.agent.runner import AgentRunner, SourceHealth
from jouleledger.core.model import ContainerDevices, GpuInfo, GpuReading, NodeHeader, PodInfo, Sample

GPU = GpuInfo("GPU-a", "NVIDIA H100 80GB HBM3", True, 700)
HEADER = NodeHeader("node-1", (GPU,))
TRAIN = PodInfo("team-a", "train-0", "uid-1", {"team": "a"}, None, (ContainerDevices("main", ("GPU-a",)),))


@dataclass
class ScriptedSource:
    """A source that plays given samples; ``pods_known`` per sample simulates a kubelet outage."""

    samples: list[Sample]
    known: list[bool] = field(default_factory=list)
    position: int = 0

    @property
    def simulated(self) -> bool:
        return False

    def header(self) -> NodeHeader:
        return HEADER

    def sample(self) -> Sample | None:
        if self.position >= len(self.samples):
            return None
        self.position += 1
        return self.samples[self.position - 1]

    def health(self) -> SourceHealth:
        index = self.position - 1
        up = self.known[index] if index < len(self.known) else True
        return SourceHealth(pods_known=up, pod_source_errors_total=0 if up else 1)

    def close(self) -> None:
        pass


def samples(energies_mj: list[int], pods: tuple[PodInfo, ...] = (TRAIN,), start_s: float = 0.0) -> list[Sample]:
    return [Sample(start_s + i, (GpuReading("GPU-a", energy, 100_000),), pods) for i, energy in enumerate(energies_mj)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def pod_energy(runner: AgentRunner) -> int:
    return sum(device.energy_mj for device in runner.view().ledger.devices)


def drain(runner: AgentRunner) -> Iterator[None]:
    while runner.tick():
        yield None


@pytest.fixture(autouse=True)
def close_runners(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every runner a test makes releases its journal at the end, as the process would at exit."""
    made: list[AgentRunner] = []
    original = AgentRunner.__init__

    def tracking_init(self: AgentRunner, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(AgentRunner, "__init__", tracking_init)
    yield
    for runner in made:
        runner.close()


def test_counts_each_interval_once(tmp_path: Path) -> None:
    runner = AgentRunner(ScriptedSource(samples([0, 100, 300, 600])), backend="replay", wall_clock=FakeClock())
    list(drain(runner))
    assert pod_energy(runner) == 600
    assert runner.view().status.ticks_total == 4


def test_restart_from_checkpoint_neither_loses_nor_double_counts(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    energies = [0, 100, 300, 600, 1000, 1500]
    first = AgentRunner(ScriptedSource(samples(energies[:3])), backend="replay", checkpoint_path=path)
    list(drain(first))
    assert pod_energy(first) == 300
    # The process dies; a new one starts and reads the same GPU later on.
    second = AgentRunner(ScriptedSource(samples(energies[3:], start_s=3.0)), backend="replay", checkpoint_path=path)
    assert pod_energy(second) == 300, "restored counters"
    list(drain(second))
    assert pod_energy(second) == 1500, "the interval across the restart is counted exactly once"


def test_a_crash_loses_nothing_that_was_ticked(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    crashed = AgentRunner(ScriptedSource(samples([0, 100, 300, 350])), backend="replay", checkpoint_path=path)
    list(drain(crashed))  # no save_checkpoint(): the process is killed after its last tick
    assert journal_path(path).exists()
    restarted = AgentRunner(ScriptedSource([]), backend="replay", checkpoint_path=path)
    assert pod_energy(restarted) == 350


def test_a_torn_journal_line_loses_only_the_tick_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    crashed = AgentRunner(ScriptedSource(samples([0, 100, 300])), backend="replay", checkpoint_path=path)
    list(drain(crashed))
    with journal_path(path).open("ab") as journal:
        journal.write(b'0badc0de {"ledger": {"t_s": 3')  # killed mid-append
    restarted = AgentRunner(ScriptedSource(samples([600], start_s=3.0)), backend="replay", checkpoint_path=path)
    assert pod_energy(restarted) == 300
    assert restarted.view().status.checkpoint_errors_total == 0, "a torn tail is expected after a crash"
    list(drain(restarted))
    assert pod_energy(restarted) == 600, "the interval since the last journalled reading is counted once"


def test_a_corrupt_journal_line_is_reported_and_nothing_after_it_is_used(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    crashed = AgentRunner(ScriptedSource(samples([0, 100, 300, 600])), backend="replay", checkpoint_path=path)
    list(drain(crashed))
    lines = journal_path(path).read_bytes().split(b"\n")
    assert len(lines) == 5  # header, three ticks after the first full checkpoint, final newline
    lines[2] = lines[2].replace(b"300", b"301")  # checksum no longer matches
    journal_path(path).write_bytes(b"\n".join(lines))
    restarted = AgentRunner(ScriptedSource([]), backend="replay", checkpoint_path=path)
    assert restarted.view().status.checkpoint_errors_total == 1
    assert pod_energy(restarted) == 100, "the state stops at the last intact tick, consistent with its baseline"


def test_compaction_starts_a_new_generation_and_ignores_the_stale_journal(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    runner = AgentRunner(
        ScriptedSource(samples([0, 10, 20, 30, 40, 50, 60])), backend="replay", checkpoint_path=path, compact_every=3
    )
    generations = set()
    while runner.tick():
        payload = persistence.load(path)
        assert payload is not None
        generations.add(payload["generation"])
    assert len(generations) == 2, "a full checkpoint at ticks 1 and 5, journal lines in between"
    stale = journal_path(path).read_bytes()
    runner.save_checkpoint()  # a new generation; the old journal's ticks are all inside it
    journal_path(path).write_bytes(stale)
    restarted = AgentRunner(ScriptedSource([]), backend="replay", checkpoint_path=path)
    assert pod_energy(restarted) == 60


def test_corrupt_checkpoint_is_quarantined_counted_and_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    path.write_text('{"format": "jouleledger-checkpoint", "version": 1, "sha256": "00", "payload": {}}\n')
    runner = AgentRunner(
        ScriptedSource(samples([0, 50])), backend="replay", checkpoint_path=path, wall_clock=FakeClock()
    )
    assert runner.view().status.checkpoint_errors_total == 1
    assert (tmp_path / "ck.json.corrupt-1000").exists()
    list(drain(runner))
    assert pod_energy(runner) == 50
    assert persistence.load(path) is not None, "a fresh checkpoint replaces the quarantined one"


def test_checkpoint_of_another_backend_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = AgentRunner(ScriptedSource(samples([0, 100])), backend="simulated", checkpoint_path=path)
    list(drain(first))
    second = AgentRunner(ScriptedSource(samples([0, 7])), backend="replay", checkpoint_path=path)
    list(drain(second))
    assert pod_energy(second) == 7


def test_checkpoint_for_another_node_is_rejected_and_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    runner = AgentRunner(ScriptedSource(samples([0, 100])), backend="replay", checkpoint_path=path)
    list(drain(runner))
    payload = persistence.load(path)
    assert payload is not None
    payload["pipeline"]["ledger"]["node"] = "other-node"
    persistence.save(path, payload)
    restarted = AgentRunner(ScriptedSource([]), backend="replay", checkpoint_path=path, wall_clock=FakeClock())
    assert restarted.view().status.checkpoint_errors_total == 1
    assert pod_energy(restarted) == 0


def test_unreachable_pod_source_sends_energy_to_unallocated_and_degrades_health() -> None:
    source = ScriptedSource(
        [*samples([0, 100]), Sample(2.0, (GpuReading("GPU-a", 250, 100_000),), ())], known=[True, True, False]
    )
    clock = FakeClock()
    runner = AgentRunner(source, backend="replay", wall_clock=clock)
    list(drain(runner))
    view = runner.view()
    assert pod_energy(runner) == 100
    assert view.ledger.unallocated_mj == 150
    assert view.ledger.measured_mj == 250
    assert view.ledger.pods["uid-1"].finished_s is None, "an outage does not finish pods"
    healthy, body = runner.health()
    assert healthy
    assert body["status"] == "degraded"
    assert "unreachable" in json.dumps(body["problems"])


def test_stalled_loop_fails_health() -> None:
    clock = FakeClock()
    runner = AgentRunner(ScriptedSource(samples([0, 1])), backend="replay", wall_clock=clock, interval_s=1.0)
    runner.tick()
    clock.now += 60
    healthy, body = runner.health()
    assert not healthy
    assert body["status"] == "stalled"


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        AgentRunner(ScriptedSource([]), backend="replay", interval_s=0)

"""Restoring what is on disk: values that pass the checksum but not the bounds are rejected like corruption, and a
journal entry is validated whole before any of it is applied."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from jouleledger.agent import persistence
from jouleledger.agent.persistence import journal_path
from jouleledger.agent.runner import AgentRunner
from jouleledger.hardware.simulated import SimulatedNode


def _node() -> SimulatedNode:
    return SimulatedNode(gpus=2, seed=3, mean_lifetime_s=20.0, mean_idle_s=2.0, max_samples=200)


def _run(path: Path, ticks: int, **kwargs: object) -> AgentRunner:
    runner = AgentRunner(_node(), backend="simulated", checkpoint_path=path, **kwargs)  # type: ignore[arg-type]
    for _ in range(ticks):
        runner.tick()
    return runner


def test_a_checkpoint_with_a_valid_checksum_but_values_beyond_int64_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = _run(path, 10)
    first.save_checkpoint()
    payload = persistence.load(path)
    assert payload is not None
    device = payload["pipeline"]["ledger"]["devices"][0]
    device[4] = 2**63  # energy_mj: the file is re-signed, so only the bounds can catch it
    persistence.save(path, payload)

    restarted = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert restarted.view().status.checkpoint_errors_total == 1
        assert restarted.view().ledger.devices == ()
        assert restarted.epoch != first.epoch  # counters start from zero: a new epoch
        assert list(tmp_path.glob("ck.json.corrupt-*")), "the bad file is kept aside for inspection"
        for _ in range(5):  # and the agent goes on ticking (before the fix every tick raised OverflowError)
            assert restarted.tick()
    finally:
        restarted.close()


def _rewrite_journal_entry(path: Path, index: int, edit: object) -> None:
    journal = journal_path(path)
    header, *lines = journal.read_text().splitlines()
    entry = json.loads(lines[index][9:])
    edit(entry)  # type: ignore[operator]
    body = json.dumps(entry, separators=(",", ":"))
    lines[index] = f"{zlib.crc32(body.encode()):08x} {body}"
    journal.write_text("\n".join([header, *lines]) + "\n")


def test_a_journal_entry_that_fails_validation_is_not_half_applied(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = _run(path, 60, compact_every=1000)
    first.close()
    journal = journal_path(path)
    header, *lines = journal.read_text().splitlines()
    # The last entry that changes pods and devices: those come before its GPU totals, which are poisoned.
    index = max(
        i
        for i, line in enumerate(lines)
        if json.loads(line[9:])["ledger"]["pods"] and json.loads(line[9:])["ledger"]["devices"]
    )
    # What the agent restores when the journal simply ends before that entry:
    before = tmp_path / "before"
    before.mkdir()
    (before / "ck.json").write_bytes(path.read_bytes())
    journal_path(before / "ck.json").write_text("\n".join([header, *lines[:index]]) + "\n")
    expected = AgentRunner(_node(), backend="simulated", checkpoint_path=before / "ck.json")
    expected.close()

    def poison(entry: dict[str, object]) -> None:
        ledger = entry["ledger"]
        assert isinstance(ledger, dict)
        ledger["gpus"] = {uuid: dict(totals, measured_mj=-1) for uuid, totals in ledger["gpus"].items()}

    _rewrite_journal_entry(path, index, poison)
    restarted = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert restarted.view().status.checkpoint_errors_total == 1
        got, want = restarted.pipeline.snapshot(), expected.pipeline.snapshot()
        assert got.pods == want.pods, "the rejected entry's pods must not be applied"
        assert set(got.devices) == set(want.devices), "nor its device counters"
        assert got.gpus == want.gpus
        assert restarted.pipeline.accountant.baselines == expected.pipeline.accountant.baselines
    finally:
        restarted.close()


def test_a_journal_entry_with_bad_baselines_changes_no_counter(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = _run(path, 30, compact_every=1000)
    first.close()
    lines = journal_path(path).read_text().splitlines()[1:]
    last = len(lines) - 1
    before_last = json.loads(lines[last - 1][9:])["ledger"]

    def poison(entry: dict[str, object]) -> None:
        baselines = entry["baselines"]
        assert isinstance(baselines, dict)
        for base in baselines.values():
            base["energy_mj"] = 2**64

    _rewrite_journal_entry(path, last, poison)
    restarted = AgentRunner(_node(), backend="simulated", checkpoint_path=path)
    try:
        assert restarted.view().status.checkpoint_errors_total == 1
        assert restarted.view().ledger.t_s == before_last["t_s"]
    finally:
        restarted.close()

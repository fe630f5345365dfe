"""How energy was measured travels with it: the part that came from power integration (no energy counter, or a
rejected counter delta) is counted per pod and device and per GPU, exported, and kept across restarts.

The fixture ``mixed-node.jsonl`` (see tests/agent/test_replay.py for its hand-worked numbers): GPU-cccc
has no counter (all 1,100,010 mJ from power, 400,005 of it held by stray-0); GPU-aaaa's counter delta is rejected
once (train-0 gets 1,000,000 mJ from power of its 3,250,500); GPU-bbbb is all counter.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jouleledger.agent import persistence
from jouleledger.agent.persistence import journal_path
from jouleledger.agent.pipeline import Pipeline
from jouleledger.agent.runner import AgentRunner
from jouleledger.core import contract as names
from jouleledger.core.snapshot import LedgerSnapshot
from jouleledger.hardware.replay import ReplaySource
from jouleledger.metrics.agent import AgentCollector

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "mixed-node.jsonl"


def _from_power(snapshot: LedgerSnapshot) -> tuple[dict[str, int], dict[str, int]]:
    pods: dict[str, int] = {}
    for device in snapshot.devices:
        pods[device.pod] = pods.get(device.pod, 0) + device.energy_from_power_mj
    return pods, {gpu.uuid: gpu.energy_from_power_mj for gpu in snapshot.gpus}


def _run(checkpoint_path: Path | None, compact_every: int = 3) -> AgentRunner:
    """The agent over the whole fixture; with ``compact_every=3`` its last three ticks are journal lines."""
    source = ReplaySource(FIXTURE)
    try:
        runner = AgentRunner(source, backend="replay", checkpoint_path=checkpoint_path, compact_every=compact_every)
        while runner.tick():
            pass
    finally:
        source.close()
    return runner


def _restart(checkpoint_path: Path) -> AgentRunner:
    source = ReplaySource(FIXTURE)
    source.close()  # only its header is needed
    return AgentRunner(source, backend="replay", checkpoint_path=checkpoint_path)


def test_collector_exports_energy_from_power_per_pod_and_gpu() -> None:
    runner = _run(None)
    registry = CollectorRegistry()
    registry.register(AgentCollector(runner.view))
    pod = f"{names.POD_ENERGY_FROM_POWER}_total"
    gpu = f"{names.GPU_ENERGY_FROM_POWER}_total"
    samples = {
        (sample.name, sample.labels.get("pod", ""), sample.labels["gpu"]): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name in (pod, gpu)
    }
    assert samples == {
        (pod, "train-0", "GPU-aaaa"): 1000.0,  # mixed
        (pod, "stray-0", "GPU-cccc"): 400.005,  # all from power
        (gpu, "", "GPU-aaaa"): 1000.0,
        (gpu, "", "GPU-cccc"): 1100.01,
    }, "series only once non-zero; GPU-bbbb (all counter) and serve-0 have none"


@pytest.mark.parametrize("final_checkpoint", [True, False], ids=["checkpoint", "journal"])
def test_energy_from_power_survives_a_restart(tmp_path: Path, final_checkpoint: bool) -> None:
    path = tmp_path / "ck.json"
    first = _run(path)
    want = _from_power(first.pipeline.snapshot())
    if final_checkpoint:
        first.save_checkpoint()
    else:
        first.close()  # the last ticks are only in the journal
    restarted = _restart(path)
    try:
        assert _from_power(restarted.view().ledger) == want
        assert want[0]["stray-0"] == 400_005
        assert want[0]["train-0"] == 1_000_000
    finally:
        restarted.close()


def _downgrade_state(pipeline_state: dict[str, Any]) -> dict[str, Any]:
    """The same counters as a version 1 agent wrote them (no energy from power)."""
    ledger = dict(pipeline_state["ledger"], version=1)
    ledger["devices"] = [entry[:6] for entry in ledger["devices"]]
    ledger["gpus"] = {
        uuid: {k: v for k, v in totals.items() if k != "from_power_mj"} for uuid, totals in ledger["gpus"].items()
    }
    return dict(pipeline_state, version=1, ledger=ledger)


def test_reads_a_version_1_checkpoint_and_journal(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    first = _run(path)
    energy = {(d.pod_key, d.device): d.energy_mj for d in first.pipeline.snapshot().devices}
    first.close()
    payload = persistence.load(path)
    assert payload is not None
    payload["pipeline"] = _downgrade_state(payload["pipeline"])
    persistence.save(path, payload)
    journal = journal_path(path)
    header, *lines = journal.read_bytes().decode().splitlines()
    assert lines, "the fixture run must leave journal entries after the last full checkpoint"
    old_lines = [json.dumps(dict(json.loads(header), version=1))]
    for line in lines:
        entry = json.loads(line[9:])
        entry["ledger"].pop("from_power")
        entry["ledger"]["devices"] = [device[:6] for device in entry["ledger"]["devices"]]
        for totals in entry["ledger"]["gpus"].values():
            totals.pop("from_power_mj")
        body = json.dumps(entry, separators=(",", ":"))
        old_lines.append(f"{zlib.crc32(body.encode()):08x} {body}")
    journal.write_text("\n".join(old_lines) + "\n")

    restarted = _restart(path)
    try:
        snapshot = restarted.view().ledger
        assert restarted.view().status.checkpoint_errors_total == 0
        assert {(d.pod_key, d.device): d.energy_mj for d in snapshot.devices} == energy
        assert all(device.energy_from_power_mj == 0 for device in snapshot.devices)
    finally:
        restarted.close()


def test_pipeline_state_is_version_2_and_holds_energy_from_power() -> None:
    source = ReplaySource(FIXTURE)
    pipeline = Pipeline(source.header())
    for sample in source:
        pipeline.step(sample)
    source.close()
    state = pipeline.to_state()
    assert state["version"] == 2
    assert state["ledger"]["version"] == 2
    restored = Pipeline(pipeline.header)
    restored.restore(json.loads(json.dumps(state)))
    assert _from_power(restored.snapshot()) == _from_power(pipeline.snapshot())

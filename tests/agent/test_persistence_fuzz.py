"""Fuzzing what the agent reads back from disk: checkpoint files, journal files, the pipeline state and journal
entries. Only the documented error types escape (:class:`CorruptCheckpointError`, :class:`LedgerStateError`; the
journal reader never raises for content), a rejected journal entry changes nothing, and whatever is accepted holds
no negative, non-finite or out-of-range value."""

from __future__ import annotations

import contextlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jouleledger.agent import persistence
from jouleledger.agent.persistence import read_journal
from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.ledger import LedgerStateError
from jouleledger.hardware.simulated import SimulatedNode
from tests._fuzz import mutated


@cache
def _documents() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A header, a pipeline state after 20 ticks and the journal entry of the 21st tick (plain JSON)."""
    node = SimulatedNode(gpus=2, seed=9, mean_lifetime_s=8.0, mean_idle_s=1.0)
    pipeline = Pipeline(node.header())
    for _ in range(20):
        pipeline.step(node.sample())  # type: ignore[arg-type]
    state = json.loads(json.dumps(pipeline.to_state()))
    pipeline.step(node.sample())  # type: ignore[arg-type]
    entry = json.loads(json.dumps(pipeline.journal_entry()))
    return node.header(), state, entry


def _restored(state: Any) -> Pipeline:
    header, _, _ = _documents()
    pipeline = Pipeline(header)
    pipeline.restore(state)
    return pipeline


def _check_sane(pipeline: Pipeline) -> None:
    snapshot = pipeline.snapshot()
    for device in snapshot.devices:
        assert 0 <= device.energy_mj < 2**63
        assert 0 <= device.energy_from_power_mj < 2**63
        assert math.isfinite(device.gpu_seconds)
        assert device.gpu_seconds >= 0
    for gpu in snapshot.gpus:
        assert 0 <= gpu.measured_mj < 2**63
        assert 0 <= gpu.unallocated_mj < 2**63
        assert gpu.power_w is None or (math.isfinite(gpu.power_w) and gpu.power_w >= 0)
    for base in pipeline.accountant.baselines.values():
        assert math.isfinite(base.t_s)
        assert base.energy_mj is None or 0 <= base.energy_mj < 2**63
        assert base.power_mw is None or 0 <= base.power_mw < 2**63
    assert all(count >= 0 for count in pipeline.accountant.rejected.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_checkpoint_decode_raises_only_its_own_error(data: bytes) -> None:
    try:
        payload = persistence.decode(data)
    except persistence.CorruptCheckpointError:
        return
    assert isinstance(payload, dict)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 3))
def test_checkpoint_decode_of_a_damaged_file(noise: bytes, where: int) -> None:
    _, state, _ = _documents()
    data = persistence.encode({"pipeline": state})
    cut = len(data) * where // 4
    with contextlib.suppress(persistence.CorruptCheckpointError):
        persistence.decode(data[:cut] + noise + data[cut + len(noise) :])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_journal_reader_never_raises_for_content(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "journal"
    path.write_bytes(data)
    result = read_journal(path, "generation")
    assert all(isinstance(entry, dict) for entry in result.entries)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_mutated_pipeline_state_is_restored_sanely_or_rejected(data: st.DataObject) -> None:
    _, state, _ = _documents()
    candidate = data.draw(mutated(state))
    try:
        pipeline = _restored(candidate)
    except LedgerStateError:
        return
    _check_sane(pipeline)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_mutated_journal_entry_is_applied_whole_or_not_at_all(data: st.DataObject) -> None:
    _, state, entry = _documents()
    candidate = data.draw(mutated(entry))
    pipeline = _restored(state)
    before = (pipeline.ledger.to_state(), pipeline.accountant.baselines, dict(pipeline.accountant.rejected))
    try:
        pipeline.apply_journal_entry(candidate)
    except LedgerStateError:
        after = (pipeline.ledger.to_state(), pipeline.accountant.baselines, dict(pipeline.accountant.rejected))
        assert after == before, "a rejected entry must leave the state as it was"
        return
    _check_sane(pipeline)

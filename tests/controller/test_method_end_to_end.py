"""The method annotation from a real agent's exposition: the agent pipeline over a recorded trace with a GPU that
has no energy counter (GPU-cccc, a T4), one whose counter delta is rejected once (GPU-aaaa) and one that is all
counter (GPU-bbbb); its ``/metrics`` text parsed and folded by the operator's core, as one scrape.

Expected split (tests/agent/test_energy_from_power.py has it by hand): stray-0 only ran on GPU-cccc (all from
power), train-0 got 1,000,000 mJ of its 3,250,500 mJ from power, serve-0 only used counters.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from jouleledger.agent.runner import AgentRunner
from jouleledger.core.deltas import DeltaTracker, parse_agent_samples
from jouleledger.core.footprints import KEY_METHOD, FootprintBook, job_annotations
from jouleledger.hardware.replay import ReplaySource
from jouleledger.metrics.agent import AgentCollector
from jouleledger.metrics.operator_collector import parse_exposition
from tests.core._footprints import by_owner, rates

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "mixed-node.jsonl"


def test_counterless_gpu_is_integrated_nvml_power_a_rejected_delta_mixed_and_counters_measured() -> None:
    source = ReplaySource(FIXTURE)
    try:
        runner = AgentRunner(source, backend="nvml")  # the backend label of a real node; the data is the trace's
        registry = CollectorRegistry()
        registry.register(AgentCollector(runner.view))
        tracker, book = DeltaTracker(), FootprintBook("USD")
        tracker.observe(parse_agent_samples(parse_exposition(generate_latest(registry).decode())))
        while runner.tick():
            pass
    finally:
        source.close()
    scrape = parse_agent_samples(parse_exposition(generate_latest(registry).decode()))
    book.fold(tracker.observe(scrape), rates(0.0, 1.0, 100.0), by_owner, scrape.model_of)
    split = {
        account.ref.name: (
            account.totals.energy_from_power_mj,
            job_annotations(book.finalize(uid, 1.0, 2.0))[KEY_METHOD],
        )
        for uid, account in list(book.accounts.items())
    }
    assert split == {
        "stray-0": (400_005, "integrated-nvml-power"),
        "train": (1_000_000, "mixed"),  # the Job of train-0
        "mig-0": (0, "measured-nvml-energy-counter"),
        "serve-0": (0, "measured-nvml-energy-counter"),
    }

"""Kill the agent at random moments (SIGKILL) and restart it: the counters must end exactly where an
uninterrupted run ends, so nothing is lost and nothing is counted twice across crashes.

The child process runs the real AgentRunner with the real checkpoint and journal over a recorded trace. Time goes
on while it is down, as on a live node: after a restart it resumes the trace after the last tick the killed
process completed (noted in a side file after each tick), not after what its checkpoint holds. Ticks the
checkpoint lost would then be covered by one long gap interval split by the pods of its end, and per-pod totals
would differ from the uninterrupted run.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.tracefile import dump_header, dump_sample
from jouleledger.hardware.simulated import SimulatedNode

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from jouleledger.agent.runner import AgentRunner
    from jouleledger.hardware.replay import ReplaySource

    trace, checkpoint, done, progress = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])

    class Resuming(ReplaySource):
        def __init__(self, path, after_s):
            super().__init__(path)
            self.after_s = after_s
        def sample(self):
            while (sample := super().sample()) is not None and sample.t_s <= self.after_s:
                pass
            return sample

    probe = ReplaySource(trace)
    header = probe.header()
    probe.close()
    runner = AgentRunner(Resuming(trace, float("-inf")), backend="replay", checkpoint_path=checkpoint,
                         retention_s=1e9, compact_every=7)
    restored = max((b.t_s for b in runner.pipeline.accountant.baselines.values()), default=float("-inf"))
    completed = float(progress.read_text()) if progress.exists() else float("-inf")
    runner.source = Resuming(trace, max(restored, completed))
    while runner.tick():
        progress.with_suffix(".tmp").write_text(repr(runner.view().ledger.t_s))
        progress.with_suffix(".tmp").replace(progress)
        time.sleep(0.002)
    snapshot = runner.view().ledger
    done.write_text(json.dumps({
        "devices": sorted([d.pod_key, d.device, d.energy_mj] for d in snapshot.devices),
        "measured_mj": snapshot.measured_mj, "unallocated_mj": snapshot.unallocated_mj,
    }))
    """
)


@pytest.mark.slow
def test_random_sigkills_neither_lose_nor_double_count(tmp_path: Path) -> None:
    node = SimulatedNode(gpus=4, seed=5, mean_lifetime_s=40.0, mean_idle_s=5.0, max_samples=400)
    trace = tmp_path / "node.jsonl"
    expected = Pipeline(node.header(), retention_s=1e9)
    with trace.open("w") as out:
        out.write(dump_header(node.header()) + "\n")
        while (sample := node.sample()) is not None:
            out.write(dump_sample(sample) + "\n")
            expected.step(sample)
    snapshot = expected.snapshot()
    want = {
        "devices": sorted([d.pod_key, d.device, d.energy_mj] for d in snapshot.devices),
        "measured_mj": snapshot.measured_mj,
        "unallocated_mj": snapshot.unallocated_mj,
    }
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    checkpoint, done, progress = tmp_path / "ck.json", tmp_path / "done.json", tmp_path / "progress"
    rng = random.Random(1234)
    kills = 0
    deadline = time.monotonic() + 60
    while not done.exists():
        assert time.monotonic() < deadline, "the agent never finished the trace"
        child = subprocess.Popen([sys.executable, str(script), str(trace), str(checkpoint), str(done), str(progress)])
        try:
            child.wait(timeout=rng.uniform(0.3, 0.9))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
        else:
            assert child.returncode == 0
    assert kills >= 2, "the test must actually interrupt the agent"
    assert json.loads(done.read_text()) == want

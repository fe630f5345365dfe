"""Kill the agent (SIGKILL) at seeded tick counts and restart it: the counters must end exactly where an
uninterrupted run ends, so nothing is lost and nothing is counted twice across crashes.

The kill schedule is deterministic: each run of the child is told the trace time at which it is to be killed; it
ticks past that point by a few seeded ticks (so a kill can land mid-write) and then waits, never finishing, so
every scheduled kill interrupts it whatever the machine's load. Only the last run is allowed to finish.

The child process runs the real AgentRunner with the real checkpoint and journal over a recorded trace. Time goes
on while it is down, as on a live node: after a restart it resumes the trace after the last tick the killed
process completed (noted in a side file after each tick), not after what its checkpoint holds. Ticks the
checkpoint lost would then be covered by one long gap interval split by the pods of its end, and per-pod totals
would differ from the uninterrupted run.
"""

from __future__ import annotations

import json
import math
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
from tests._figures import figure

KILLS = 24

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from jouleledger.agent.runner import AgentRunner
    from jouleledger.hardware.replay import ReplaySource

    trace, checkpoint, done, progress = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    kill_at_s, extra_ticks = float(sys.argv[5]), int(sys.argv[6])  # inf: run to the end

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
    past_kill_point = 0
    while runner.tick():
        t_s = runner.view().ledger.t_s
        progress.with_suffix(".tmp").write_text(repr(t_s))
        progress.with_suffix(".tmp").replace(progress)
        if t_s >= kill_at_s:
            past_kill_point += 1
            if past_kill_point > extra_ticks:
                time.sleep(600)  # wait for the SIGKILL; never finish a run that is scheduled to be killed
        time.sleep(0.001)
    snapshot = runner.pipeline.snapshot()
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
    sample_times: list[float] = []
    with trace.open("w") as out:
        out.write(dump_header(node.header()) + "\n")
        while (sample := node.sample()) is not None:
            sample_times.append(sample.t_s)
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
    times = sample_times
    # KILLS distinct kill points, seeded, spread over the trace (not in its last ticks, so every run has work).
    kill_points = sorted(rng.sample(range(3, len(times) - 10), KILLS))
    schedule = [(times[index], rng.randint(0, 3)) for index in kill_points] + [(math.inf, 0)]
    kills = 0
    for kill_at_s, extra_ticks in schedule:
        child = subprocess.Popen(
            [sys.executable, *map(str, (script, trace, checkpoint, done, progress)), repr(kill_at_s), str(extra_ticks)]
        )
        try:
            if math.isinf(kill_at_s):
                assert child.wait(timeout=120) == 0
                continue
            deadline = time.monotonic() + 120
            while not (progress.exists() and float(progress.read_text() or "-inf") >= kill_at_s):
                assert child.poll() is None, f"the agent exited ({child.returncode}) before its kill point"
                assert time.monotonic() < deadline, "the agent never reached its kill point"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.01))
            assert child.poll() is None, "a run scheduled to be killed must still be running"
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    got = json.loads(done.read_text())
    difference_mj = abs(got["measured_mj"] - want["measured_mj"]) + sum(
        abs(a[2] - b[2]) for a, b in zip(got["devices"], want["devices"], strict=False)
    )
    figure(f"agent crash test: {kills} SIGKILLs over {len(times)} ticks, per-pod difference {difference_mj} mJ")
    assert kills == KILLS
    assert got == want

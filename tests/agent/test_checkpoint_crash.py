"""A writer SIGKILLed at random moments never leaves a partial checkpoint behind.

A child process saves checkpoints in a loop, each payload self-consistent (``seq`` repeated in ``data``), and
prints each ``seq`` after its save returned. After the kill, :func:`load` must give no checkpoint (killed before
the first save completed) or one complete payload: the last one reported, or the one after it (saved, killed
before the print). SIGKILL keeps the page cache, so this checks atomicity of the replace, not power-loss
durability (that is the fsyncs' job).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jouleledger.agent import persistence

pytestmark = pytest.mark.slow

ROUNDS = 12
DATA_LEN = 4096  # a ~30 kB payload, so that a kill often lands inside a write

CHILD = textwrap.dedent(
    """
    import sys
    from jouleledger.agent import persistence

    path, data_len = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    seq = 0
    while True:
        persistence.save(path, {"seq": seq, "data": [seq] * data_len, "tail": f"end-{seq}"})
        print(seq, flush=True)
        seq += 1
    """
)


def test_sigkill_during_checkpoint_writes_leaves_a_complete_earlier_payload(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    outcomes: list[int | None] = []
    for round_index in range(ROUNDS):
        path = tmp_path / f"round-{round_index}" / "ledger.json"
        path.parent.mkdir()
        if round_index % 2:  # half the rounds start over an earlier checkpoint
            persistence.save(path, {"seq": -1, "data": [-1] * DATA_LEN, "tail": "end--1"})
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(DATA_LEN)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(child.pid, signal.SIGKILL)
            output, errors = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL, errors
        reported = [int(line) for line in output.split()]
        last = reported[-1] if reported else (-1 if round_index % 2 else None)

        loaded = persistence.load(path)
        if loaded is None:
            assert last is None, f"round {round_index}: checkpoint {last} was saved, then lost"
            outcomes.append(None)
            continue
        seq = loaded["seq"]
        assert loaded == {"seq": seq, "data": [seq] * DATA_LEN, "tail": f"end-{seq}"}
        allowed = {0} if last is None else {last, last + 1}
        assert seq in allowed, f"round {round_index}: loaded {seq}, last reported {last}"
        outcomes.append(seq)
    # the kills landed at different points of the writer's life, not all before or after its first save
    assert len(set(outcomes)) > 1, outcomes

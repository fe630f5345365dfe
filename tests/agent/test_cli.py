"""The command line: demo, agent --once, record -> replay round trip, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jouleledger.agent.pipeline import Pipeline
from jouleledger.cli import main
from jouleledger.hardware.simulated import SimulatedNode


def jl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jouleledger", *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_demo_prints_pods_namespaces_teams_and_unallocated() -> None:
    done = jl("demo", "--port", "0", "--wall-s", "0", "--duration-s", "600")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for heading in ("per team", "per namespace", "per pod", "(unallocated: idle GPUs)", "SIMULATED"):
        assert heading in out
    assert "kWh" in out


def test_agent_once_on_the_simulated_backend(tmp_path: Path) -> None:
    checkpoint = tmp_path / "state" / "ck.json"
    done = jl("agent", "--backend", "simulated", "--once", "--checkpoint-path", str(checkpoint))
    assert done.returncode == 0, done.stderr
    health = json.loads(done.stdout)
    assert (health["status"], health["simulated"], health["ticks"]) == ("ok", True, 1)
    assert "SIMULATED" in done.stderr
    assert checkpoint.exists()


def test_agent_dry_run_leaves_the_checkpoint_alone(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ck.json"
    done = jl("agent", "--backend", "simulated", "--once", "--dry-run", "--checkpoint-path", str(checkpoint))
    assert done.returncode == 0, done.stderr
    assert not checkpoint.exists()
    assert "neither read nor written" in done.stderr


def test_agent_requires_an_explicit_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JOULELEDGER_BACKEND", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "--once"])
    assert exit_info.value.code == 2
    assert "--backend" in capsys.readouterr().err


def test_replay_backend_needs_a_trace() -> None:
    done = jl("agent", "--backend", "replay", "--once")
    assert done.returncode == 1
    assert "--trace" in done.stderr


def test_nvml_backend_without_a_gpu_fails_clearly_and_does_not_fake_data() -> None:
    done = jl("agent", "--backend", "nvml", "--node-name", "n1", "--once", "--pod-metadata", "none")
    if done.returncode == 0:
        pytest.skip("this machine has a working NVIDIA driver")
    assert done.returncode == 1
    assert "NVML" in done.stderr


def test_record_then_replay_gives_what_the_pipeline_counted(tmp_path: Path) -> None:
    trace = tmp_path / "sim.jsonl"
    done = jl("record", "--backend", "simulated", "--out", str(trace), "--samples", "120", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert len(trace.read_text().splitlines()) == 121
    replayed = json.loads(jl("replay", str(trace), "--json").stdout)
    # The same samples straight through the pipeline, without the file in between.
    node = SimulatedNode(node=replayed["node"], gpus=4, seed=3, interval_s=1.0, max_samples=120)
    pipeline = Pipeline(node.header(), retention_s=1e12)
    while (sample := node.sample()) is not None:
        pipeline.step(sample)
    snapshot = pipeline.snapshot()
    assert replayed["measured_mj"] == snapshot.measured_mj > 0
    assert replayed["unallocated_mj"] == snapshot.unallocated_mj
    direct = {}
    for device in snapshot.devices:
        direct[device.pod_key] = direct.get(device.pod_key, 0) + device.energy_mj
    assert {pod["uid"]: pod["energy_mj"] for pod in replayed["pods"]} == direct
    assert sum(direct.values()) + snapshot.unallocated_mj == snapshot.measured_mj


@pytest.mark.gpu
def test_record_on_a_real_gpu_then_replay(tmp_path: Path) -> None:
    """On a GPU machine: record a few real samples (no kubelet needed) and replay them."""
    from jouleledger.hardware.base import BackendError
    from jouleledger.hardware.nvml import NvmlMeter

    try:
        NvmlMeter().close()
    except BackendError as error:
        pytest.skip(f"no usable NVML here: {error}")
    trace = tmp_path / "gpu.jsonl"
    done = jl(
        "record",
        "--out",
        str(trace),
        "--samples",
        "3",
        "--interval-s",
        "0.5",
        "--pod-metadata",
        "none",
        "--kubelet-socket",
        f"unix://{tmp_path}/absent.sock",
    )
    assert done.returncode == 0, done.stderr
    replayed = json.loads(jl("replay", str(trace), "--json").stdout)
    assert replayed["gpus"], "the real GPUs appear in the trace header"
    assert replayed["measured_mj"] > 0
    assert replayed["unallocated_mj"] == replayed["measured_mj"], "without a kubelet no pod holds a GPU"

"""``jouleledger replay`` over a small mixed node, checked against numbers worked out by hand.

The fixture ``mixed-node.jsonl`` has three GPUs and three samples after the baseline:

* GPU-aaaa (H100, counter): time-sliced between train-0 (pid 11, 60 % SM) and serve-0 (pid 22, 20 %); then a
  counter reset (driver reload) to 500 mJ; then an impossible counter jump (8,999,500 mJ in 10 s > 700 W x 10 s)
  that falls back to the power trapezoid (100 W + 100 W) / 2 x 10 s = 1,000,000 mJ.
* GPU-bbbb (H100, MIG 3 + 4 slices): only MIG-bbbb-2 is held (by mig-0); the GPU is missing from the sample at
  t=20 so its reading at t=30 covers the whole 20 s gap.
* GPU-cccc (T4, no counter): power trapezoid; held through a process (pid 33) by stray-0 in the first interval,
  idle afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jouleledger.agent.replay import replay
from jouleledger.core.carbon import CarbonRates
from jouleledger.hardware.replay import ReplaySource

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "mixed-node.jsonl"


@pytest.fixture
def report() -> dict[str, object]:
    source = ReplaySource(FIXTURE)
    try:
        return replay(source, CarbonRates(1.5, 200.0, 36.0)).to_json()
    finally:
        source.close()


def _pods(report: dict[str, object]) -> dict[str, dict[str, float]]:
    return {pod["name"]: pod for pod in report["pods"]}  # type: ignore[attr-defined,index]


def test_pod_energy_is_split_exactly(report: dict[str, object]) -> None:
    pods = _pods(report)
    # aaaa interval 1: 3,000,000 x 60/80 and x 20/80; interval 2: reset -> 500; interval 3: trapezoid 1,000,000.
    assert pods["train-0"]["energy_mj"] == 2_250_000 + 500 + 1_000_000
    assert pods["serve-0"]["energy_mj"] == 750_000
    # bbbb: 2,000,001 split 3:4 -> quotas 857,143.29 / 1,142,857.71 -> the spare mJ goes to the larger remainder.
    # Then the 20 s gap: 999,999 split 3:4 -> 428,571 / 571,428 exactly.
    assert pods["mig-0"]["energy_mj"] == 1_142_858 + 571_428
    # cccc interval 1: (30,000 + 50,001) / 2 mW x 10 s = 400,005 mJ, held through pid 33.
    assert pods["stray-0"]["energy_mj"] == 400_005


def test_gpu_seconds_follow_the_energy_fraction(report: dict[str, object]) -> None:
    pods = _pods(report)
    assert pods["train-0"]["gpu_seconds"] == pytest.approx(7.5 + 10 + 10)
    assert pods["serve-0"]["gpu_seconds"] == pytest.approx(2.5)
    assert pods["mig-0"]["gpu_seconds"] == pytest.approx(4 / 7 * 10 + 4 / 7 * 20)
    assert pods["stray-0"]["gpu_seconds"] == pytest.approx(10.0)


def test_gpus_measured_and_unallocated(report: dict[str, object]) -> None:
    gpus = {gpu["uuid"]: gpu for gpu in report["gpus"]}  # type: ignore[attr-defined]
    assert gpus["GPU-aaaa"] == {
        "uuid": "GPU-aaaa",
        "measured_mj": 4_000_500,
        "unallocated_mj": 0,
        "energy_from_power_mj": 1_000_000,
    }
    assert gpus["GPU-bbbb"] == {
        "uuid": "GPU-bbbb",
        "measured_mj": 3_000_000,
        "unallocated_mj": 857_143 + 428_571,
        "energy_from_power_mj": 0,
    }
    assert gpus["GPU-cccc"] == {
        "uuid": "GPU-cccc",
        "measured_mj": 1_100_010,
        "unallocated_mj": 400_005 + 300_000,
        "energy_from_power_mj": 1_100_010,
    }
    assert report["measured_mj"] == 4_000_500 + 3_000_000 + 1_100_010
    assert report["unallocated_mj"] == 857_143 + 428_571 + 700_005


def test_energy_from_power_is_carried_per_pod(report: dict[str, object]) -> None:
    """The method travels with the energy: GPU-cccc has no counter (all from power), GPU-aaaa's counter was
    rejected once (mixed: only that interval's trapezoid), GPU-bbbb is all counter."""
    pods = _pods(report)
    assert pods["train-0"]["energy_from_power_mj"] == 1_000_000  # mixed: 2,250,500 from the counter
    assert pods["serve-0"]["energy_from_power_mj"] == 0
    assert pods["mig-0"]["energy_from_power_mj"] == 0
    assert pods["stray-0"]["energy_from_power_mj"] == pods["stray-0"]["energy_mj"] == 400_005  # all


def test_conservation_over_the_whole_trace(report: dict[str, object]) -> None:
    pods_mj = sum(pod["energy_mj"] for pod in report["pods"])  # type: ignore[attr-defined]
    assert pods_mj + report["unallocated_mj"] == report["measured_mj"]  # type: ignore[operator]


def test_carbon_uses_each_intervals_intensity(report: dict[str, object]) -> None:
    kwh = 1 / 3_600_000_000
    train = _pods(report)["train-0"]["carbon_g"]
    expected = (
        2_250_000 * kwh * 1.5 * 100
        + 7.5 / 3600 * 36  # grid 100 g/kWh
        + 500 * kwh * 1.5 * 200
        + 10 / 3600 * 36  # no grid value: the default 200 g/kWh
        + 1_000_000 * kwh * 1.5 * 300
        + 10 / 3600 * 36  # grid 300 g/kWh
    )
    assert train == pytest.approx(expected, rel=1e-12)


def test_cli_json_matches_the_library(report: dict[str, object]) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jouleledger",
            "replay",
            str(FIXTURE),
            "--json",
            "--pue",
            "1.5",
            "--intensity-g-per-kwh",
            "200",
            "--embodied-g-per-gpu-hour",
            "36",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(completed.stdout) == report


def test_cli_names_the_bad_line(tmp_path: Path) -> None:
    lines = FIXTURE.read_text().splitlines()
    lines[2] = lines[2].replace('"power_mw": 300000', '"power_mw": -5', 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    completed = subprocess.run(
        [sys.executable, "-m", "jouleledger", "replay", str(bad), "--json"], check=False, capture_output=True, text=True
    )
    assert completed.returncode == 1
    assert "trace line 3" in completed.stderr
    assert "power_mw" in completed.stderr
    assert completed.stdout == ""

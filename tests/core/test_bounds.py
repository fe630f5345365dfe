"""Rules v1.1, the bounds: small hostile traces through the real replay pipeline never invent energy.

Power above the GPU's limit (or a missing one) is rejected and counted; power is integrated over at most 300 s; a
header without a positive finite ``power_limit_w`` and times beyond 1e12 s are errors of the trace itself; energy
from a counter over a long gap is kept, bounded by the power limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jouleledger.agent.replay import ReplayReport, replay
from jouleledger.core.carbon import CarbonRates
from jouleledger.core.tracefile import TraceError
from jouleledger.hardware.replay import ReplaySource

T4 = {"uuid": "GPU-t4", "model": "Tesla T4", "energy_counter": False, "power_limit_w": 70}
H100 = {"uuid": "GPU-h1", "model": "NVIDIA H100 80GB HBM3", "energy_counter": True, "power_limit_w": 700}
POD = {
    "namespace": "team-a",
    "name": "train-0",
    "uid": "uid-1",
    "containers": [{"name": "main", "devices": ["GPU-t4", "GPU-h1"]}],
}


def _write(path: Path, gpus: list[dict[str, Any]], samples: list[tuple[float, dict[str, tuple[Any, Any]]]]) -> Path:
    lines = [{"type": "header", "version": 1, "node": "n", "gpus": gpus}]
    for t, readings in samples:
        lines.append(
            {
                "type": "sample",
                "t": t,
                "gpus": [{"uuid": uuid, "energy_mj": e, "power_mw": p} for uuid, (e, p) in readings.items()],
                "pods": [POD],
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _replay(path: Path) -> ReplayReport:
    source = ReplaySource(path)
    try:
        return replay(source, CarbonRates(1.0, 100.0, 0.0))
    finally:
        source.close()


def test_power_above_the_limit_is_rejected_and_counted(tmp_path: Path) -> None:
    # 1 MW on a 70 W T4: neither interval next to the reading is integrated.
    trace = _write(
        tmp_path / "t.jsonl",
        [T4],
        [(0, {"GPU-t4": (None, 60_000)}), (10, {"GPU-t4": (None, 1_000_000_000)}), (20, {"GPU-t4": (None, 60_000)})],
    )
    report = _replay(trace)
    assert report.snapshot.measured_mj == 0
    assert report.snapshot.rejected[("GPU-t4", "power_above_power_limit")] == 1
    assert report.snapshot.rejected[("GPU-t4", "power_missing")] == 2
    assert report.carbon_g.get("uid-1", 0.0) == 0.0


def test_power_at_the_limit_is_integrated(tmp_path: Path) -> None:
    trace = _write(tmp_path / "t.jsonl", [T4], [(0, {"GPU-t4": (None, 70_000)}), (10, {"GPU-t4": (None, 70_000)})])
    report = _replay(trace)
    assert report.snapshot.measured_mj == 700_000
    assert report.snapshot.rejected == {}


def test_a_rejected_power_reading_is_still_the_baseline_of_a_later_good_interval(tmp_path: Path) -> None:
    trace = _write(
        tmp_path / "t.jsonl",
        [T4],
        [
            (0, {"GPU-t4": (None, 5_000_000)}),
            (10, {"GPU-t4": (None, 40_000)}),
            (20, {"GPU-t4": (None, 60_000)}),
        ],
    )
    assert _replay(trace).snapshot.measured_mj == 500_000  # only (10, 20]: (40 + 60) / 2 W x 10 s


@pytest.mark.parametrize(("gap_s", "expected_mj"), [(300.0, 300 * 50_000), (300.5, 0), (31_536_000.0, 0)])
def test_power_is_integrated_over_at_most_300_s(tmp_path: Path, gap_s: float, expected_mj: int) -> None:
    trace = _write(tmp_path / "t.jsonl", [T4], [(0, {"GPU-t4": (None, 50_000)}), (gap_s, {"GPU-t4": (None, 50_000)})])
    report = _replay(trace)
    assert report.snapshot.measured_mj == expected_mj
    rejected = report.snapshot.rejected.get(("GPU-t4", "power_interval_above_300s"), 0)
    assert rejected == (0 if expected_mj else 1)


def test_a_counter_over_a_long_gap_is_kept(tmp_path: Path) -> None:
    year_s = 31_536_000.0
    trace = _write(
        tmp_path / "t.jsonl",
        [H100],
        [(0, {"GPU-h1": (1_000, 100_000)}), (year_s, {"GPU-h1": (1_000 + 3_000_000_000_000, 100_000)})],
    )
    report = _replay(trace)
    assert report.snapshot.measured_mj == 3_000_000_000_000  # below 700 W x one year
    assert report.snapshot.rejected == {}


def test_an_impossible_counter_delta_over_a_long_gap_is_not_integrated_either(tmp_path: Path) -> None:
    trace = _write(
        tmp_path / "t.jsonl",
        [H100],
        [(0, {"GPU-h1": (0, 100_000)}), (1000, {"GPU-h1": (800_000_000, 100_000)})],  # 800 kJ in 1000 s > 700 W
    )
    report = _replay(trace)
    assert report.snapshot.measured_mj == 0
    assert report.snapshot.rejected == {
        ("GPU-h1", "counter_delta_above_power_limit"): 1,
        ("GPU-h1", "power_interval_above_300s"): 1,
    }


def test_rejected_power_is_not_shown_as_the_gpu_power(tmp_path: Path) -> None:
    trace = _write(tmp_path / "t.jsonl", [T4], [(0, {"GPU-t4": (None, 50_000)}), (1, {"GPU-t4": (None, 71_000)})])
    (gpu,) = _replay(trace).snapshot.gpus
    assert gpu.power_w == 50.0


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (0, "must be positive"),
        (-70, "below 0"),
        (None, "is required"),
        ("70", "not a number"),
        (1e999, "not finite"),
        (20_000, "above 10000"),
    ],
)
def test_header_needs_a_positive_finite_power_limit(tmp_path: Path, limit: object, message: str) -> None:
    gpu = dict(T4, power_limit_w=limit)
    if limit is None:
        del gpu["power_limit_w"]
    trace = _write(tmp_path / "t.jsonl", [gpu], [(0, {"GPU-t4": (None, 1)})])
    with pytest.raises(TraceError, match=message) as raised:
        ReplaySource(trace)
    assert raised.value.line == 1


@pytest.mark.parametrize("t", [1e300, -1e300, 1e12 + 1])
def test_sample_times_are_bounded(tmp_path: Path, t: float) -> None:
    trace = _write(tmp_path / "t.jsonl", [T4], [(0, {"GPU-t4": (None, 1)}), (t, {"GPU-t4": (None, 1)})])
    with pytest.raises(TraceError, match="t: ") as raised:
        _replay(trace)
    assert raised.value.line == 3


def test_counter_readings_are_bounded_to_int64(tmp_path: Path) -> None:
    trace = _write(tmp_path / "t.jsonl", [H100], [(0, {"GPU-h1": (2**63, 1)})])
    with pytest.raises(TraceError, match="energy_mj"):
        _replay(trace)

"""Whole-pipeline properties over random sample streams: exact conservation, no impossible energy."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.model import (
    ContainerDevices,
    GpuInfo,
    GpuReading,
    MigInstance,
    NodeHeader,
    PodInfo,
    ProcessUsage,
    Sample,
)
from tests._figures import figure

HEADER = NodeHeader(
    "n",
    (
        GpuInfo("GPU-a", "H100", True, 700),
        GpuInfo("GPU-m", "H100", True, 700, (MigInstance("MIG-1", 3), MigInstance("MIG-2", 4))),
        GpuInfo("GPU-t", "T4", False, 70),
    ),
)
DEVICES = ["GPU-a", "GPU-a::1", "GPU-a::2", "MIG-1", "MIG-2", "GPU-t", "GPU-zzz"]


def _pod(index: int, devices: list[str], pids: list[int]) -> PodInfo:
    """Pod ``p<index>`` (uid ``u<index>``) whose one container holds ``devices`` and runs ``pids``."""
    return PodInfo("ns", f"p{index}", f"u{index}", containers=(ContainerDevices("c", tuple(devices), tuple(pids)),))


@st.composite
def streams(draw: st.DrawFn) -> list[Sample]:
    pods = [
        _pod(
            i,
            draw(st.lists(st.sampled_from(DEVICES), max_size=2)),
            draw(st.lists(st.integers(1, 9), max_size=2, unique=True)),
        )
        for i in range(draw(st.integers(0, 5)))
    ]
    t = 0.0
    energy = {"GPU-a": 0, "GPU-m": 0}
    samples = []
    for _ in range(draw(st.integers(1, 12))):
        t += draw(st.sampled_from([0.5, 1.0, 2.0, 7.5]))
        readings = []
        for gpu in HEADER.gpus:
            if draw(st.integers(0, 9)) == 0:
                continue  # could not be read this sample
            processes = tuple(
                ProcessUsage(pid, util)
                for pid, util in draw(
                    st.lists(st.tuples(st.integers(1, 9), st.integers(0, 100)), max_size=3, unique_by=lambda p: p[0])
                )
            )
            power = draw(st.one_of(st.none(), st.integers(0, int(gpu.power_limit_w * 1000))))
            if gpu.energy_counter:
                jump = draw(st.sampled_from(["normal", "reset", "impossible", "missing"]))
                if jump == "reset":
                    energy[gpu.uuid] = draw(st.integers(0, 1000))
                elif jump == "impossible":
                    energy[gpu.uuid] += 10**12
                elif jump == "normal":
                    energy[gpu.uuid] += draw(st.integers(0, 700_000))
                value = None if jump == "missing" else energy[gpu.uuid]
                readings.append(GpuReading(gpu.uuid, value, power, processes))
            else:
                readings.append(GpuReading(gpu.uuid, None, power, processes))
        present = tuple(pod for pod in pods if draw(st.booleans()))
        samples.append(Sample(t, tuple(readings), present, draw(st.one_of(st.none(), st.floats(0, 900)))))
    return samples


@settings(max_examples=200, deadline=None)
@given(streams())
def test_every_interval_conserves_energy_and_respects_the_power_limit(stream: list[Sample]) -> None:
    pipeline = Pipeline(HEADER, retention_s=1e9)
    limits = {gpu.uuid: gpu.power_limit_w for gpu in HEADER.gpus}
    measured = 0
    for sample in stream:
        result = pipeline.step(sample)
        for interval in result.gpus:
            split = interval.split
            assert sum(share.energy_mj for share in split.shares) + split.unallocated_mj == split.energy_mj
            assert split.energy_mj == interval.measurement.delta_mj >= 0
            if interval.measurement.method.value == "energy_counter":
                assert split.energy_mj <= limits[split.uuid] * 1000 * interval.measurement.interval_s
            measured += split.energy_mj
    snapshot = pipeline.snapshot()
    assert snapshot.measured_mj == measured
    assert sum(device.energy_mj for device in snapshot.devices) + snapshot.unallocated_mj == measured
    assert all(device.gpu_seconds >= 0 for device in snapshot.devices)


def test_unknown_gpus_and_time_going_backwards_are_counted_not_used() -> None:
    pipeline = Pipeline(HEADER)
    pipeline.step(Sample(10.0, (GpuReading("GPU-a", 0, 1000), GpuReading("GPU-ghost", 5, 5))))
    result = pipeline.step(Sample(9.0, (GpuReading("GPU-a", 500, 1000),)))  # a clock step backwards
    assert result.gpus == ()
    result = pipeline.step(Sample(11.0, (GpuReading("GPU-a", 900, 1000),)))
    assert [interval.split.energy_mj for interval in result.gpus] == [400], "the reading at t=9 is the baseline"
    assert pipeline.accountant.rejected == {("GPU-ghost", "unknown_gpu"): 1, ("GPU-a", "time_not_increasing"): 1}
    assert pipeline.snapshot().unallocated_mj == 400


def _seeded_stream(seed: int) -> list[Sample]:
    """A random sample stream from ``seed``: cheap to generate, so that thousands of examples fit in a CI run.

    Covers what the hypothesis strategy above does, plus power above the limit and gaps beyond 300 s.
    """
    rng = random.Random(seed)
    pods = [
        _pod(i, rng.sample(DEVICES, rng.randint(0, 2)), rng.sample(range(1, 10), rng.randint(0, 2)))
        for i in range(rng.randint(0, 6))
    ]
    t = 0.0
    energy = {"GPU-a": 0, "GPU-m": 0}
    samples = []
    for _ in range(rng.randint(1, 16)):
        t += rng.choice([0.5, 1.0, 2.0, 7.5, 299.0, 301.0]) if rng.random() < 0.9 else rng.uniform(0.001, 4000.0)
        readings = []
        for gpu in HEADER.gpus:
            if rng.random() < 0.1:
                continue
            processes = tuple(
                ProcessUsage(pid, rng.choice([0, 5, 50, 100, 33.3])) for pid in rng.sample(range(1, 10), 2)
            )
            limit_mw = int(gpu.power_limit_w * 1000)
            power = rng.choice([None, rng.randint(0, limit_mw), limit_mw, limit_mw + 1, 10**9])
            value = None
            if gpu.energy_counter:
                jump = rng.choice(["normal", "normal", "reset", "impossible", "missing"])
                if jump == "reset":
                    energy[gpu.uuid] = rng.randint(0, 1000)
                elif jump == "impossible":
                    energy[gpu.uuid] += 10**12
                elif jump == "normal":
                    energy[gpu.uuid] += rng.randint(0, 700_000)
                value = None if jump == "missing" else energy[gpu.uuid]
            readings.append(GpuReading(gpu.uuid, value, power, processes))
        present = tuple(pod for pod in pods if rng.random() < 0.7)
        samples.append(Sample(t, tuple(readings), present, rng.choice([None, 0.0, 420.5])))
    return samples


CONSERVATION_EXAMPLES = 2_000
_figures = {"examples": 0, "intervals": 0, "difference_mj": 0}


@settings(max_examples=CONSERVATION_EXAMPLES, deadline=None, database=None)
@given(st.integers(0, 2**64 - 1))
def test_conservation_over_thousands_of_seeded_streams(seed: int) -> None:
    pipeline = Pipeline(HEADER, retention_s=1e9)
    measured = 0
    for sample in _seeded_stream(seed):
        result = pipeline.step(sample)
        for interval in result.gpus:
            split, measurement = interval.split, interval.measurement
            assert sum(share.energy_mj for share in split.shares) + split.unallocated_mj == split.energy_mj
            assert split.energy_mj == measurement.delta_mj >= 0
            limit = next(gpu.power_limit_w for gpu in HEADER.gpus if gpu.uuid == split.uuid)
            # never above the power limit (a trapezoid at the limit may round up by under 1 mJ)
            assert split.energy_mj <= limit * 1000 * measurement.interval_s + 0.5
            if measurement.method.value == "power_integration":
                assert measurement.interval_s <= 300.0
            measured += split.energy_mj
            _figures["intervals"] += 1
    snapshot = pipeline.snapshot()
    difference = abs(sum(device.energy_mj for device in snapshot.devices) + snapshot.unallocated_mj - measured)
    _figures["examples"] += 1
    _figures["difference_mj"] += difference
    assert snapshot.measured_mj == measured
    assert difference == 0
    assert all(0 <= device.energy_from_power_mj <= device.energy_mj for device in snapshot.devices)


def test_conservation_figures_are_printed() -> None:
    """Runs after the property above (file order) and prints what it checked, so that CI shows the figures."""
    figure(
        f"conservation property: {_figures['examples']} examples, {_figures['intervals']} GPU intervals, "
        f"{_figures['difference_mj']} mJ difference"
    )
    if _figures["examples"]:
        assert _figures["examples"] >= CONSERVATION_EXAMPLES

"""The simulated node's GPUs: header, virtual clock, power, energy counters and injected faults."""

from __future__ import annotations

import re
import time
from itertools import pairwise

import pytest

from jouleledger.core.model import NodeHeader
from jouleledger.hardware.base import BackendError, NodeSource
from jouleledger.hardware.simulated import H100_MODEL, T4_MODEL, SimulatedNode
from tests.hardware._simulated import take

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_is_a_simulated_node_source() -> None:
    source: NodeSource = SimulatedNode()
    assert source.simulated is True
    assert isinstance(source.header(), NodeHeader)
    source.close()


def test_default_layout_two_exclusive_one_time_sliced_one_mig() -> None:
    node = SimulatedNode()
    header = node.header()
    assert header.node == "sim-gpu-node"
    assert len(header.gpus) == 4
    for gpu in header.gpus:
        assert re.fullmatch("GPU-" + UUID_RE, gpu.uuid)
        assert gpu.model == H100_MODEL
        assert gpu.power_limit_w == 700
        assert gpu.energy_counter
    assert [len(gpu.mig) for gpu in header.gpus] == [0, 0, 0, 2]
    mig = header.gpus[3].mig
    assert [instance.slices for instance in mig] == [3, 4]
    assert all(re.fullmatch("MIG-" + UUID_RE, instance.uuid) for instance in mig)
    # The time-sliced GPU (the third) hands out replicas ::0 .. ::2 and nothing else.
    replicas = {
        device
        for sample in take(node, 400)
        for pod in sample.pods
        for container in pod.containers
        for device in container.devices
        if device.startswith(header.gpus[2].uuid)
    }
    assert replicas
    assert replicas <= {f"{header.gpus[2].uuid}::{n}" for n in range(3)}


def test_same_seed_same_samples_other_seed_other_node() -> None:
    first, second = SimulatedNode(seed=7), SimulatedNode(seed=7)
    assert first.header() == second.header()
    assert take(first, 300) == take(second, 300)
    other = SimulatedNode(seed=8)
    assert {gpu.uuid for gpu in other.header().gpus}.isdisjoint(gpu.uuid for gpu in first.header().gpus)


def test_header_does_not_depend_on_fault_or_noise_options() -> None:
    plain = SimulatedNode(seed=3).header()
    assert SimulatedNode(seed=3, stray_processes=True, drop_gpu_every=2, grid=False).header() == plain


def test_virtual_clock_never_reads_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    node = SimulatedNode(interval_s=2.5, start_s=100.0)

    def no_wall_clock() -> float:
        raise AssertionError("the simulated node read the wall clock")

    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, no_wall_clock)
    times = [sample.t_s for sample in take(node, 5)]
    assert times == [100.0, 102.5, 105.0, 107.5, 110.0]


def test_max_samples_then_none_and_close() -> None:
    node = SimulatedNode(max_samples=3)
    assert len(take(node, 3)) == 3
    assert node.sample() is None
    node.close()
    with pytest.raises(BackendError, match="closed"):
        node.sample()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gpus": 0}, "gpus"),
        ({"gpus": 2, "mig_gpus": 2, "timeslice_gpus": 1}, "timeslice_gpus"),
        ({"interval_s": 0.0}, "interval_s"),
        ({"interval_s": float("nan")}, "interval_s"),
        ({"gpus": 1, "mig_gpus": 1, "timeslice_gpus": 0, "mixed_models": True}, "mixed_models"),
        ({"drop_gpu_every": 0}, "drop_gpu_every"),
        ({"counter_reset_at": [-1]}, "counter_reset_at"),
        ({"node": ""}, "node"),
    ],
)
def test_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatedNode(**options)  # type: ignore[arg-type]


def test_counters_monotone_within_power_limit_and_equal_to_the_power_trapezoid() -> None:
    node = SimulatedNode.benchmark(seed=1, interval_s=0.5)
    header = node.header()
    limits_mw = {gpu.uuid: gpu.power_limit_w * 1000 for gpu in header.gpus}
    samples = take(node, 600)
    for previous, current in pairwise(samples):
        dt_s = current.t_s - previous.t_s
        assert dt_s == pytest.approx(0.5)
        before = {reading.uuid: reading for reading in previous.gpus}
        for reading in current.gpus:
            assert reading.energy_mj is not None
            assert reading.power_mw is not None
            assert 0.97 * 62_000 <= reading.power_mw <= limits_mw[reading.uuid]
            old = before[reading.uuid]
            assert old.energy_mj is not None
            assert old.power_mw is not None
            delta_mj = reading.energy_mj - old.energy_mj
            assert 0 <= delta_mj <= limits_mw[reading.uuid] * dt_s
            # The counter integrates the same power that is reported: the fallback would agree within 1 mJ.
            assert abs(delta_mj - (old.power_mw + reading.power_mw) / 2 * dt_s) <= 1


def test_power_follows_utilisation() -> None:
    node = SimulatedNode(seed=2, mean_lifetime_s=40.0, mean_idle_s=20.0)
    header = node.header()
    whole = [gpu.uuid for gpu in header.gpus if not gpu.mig]
    samples = take(node, 1500)
    idle_run = dict.fromkeys(whole, 0)
    busy_run = dict.fromkeys(whole, 0)
    checked_idle = checked_busy = 0
    for sample in samples:
        held = {
            device.partition("::")[0]
            for pod in sample.pods
            for container in pod.containers
            for device in container.devices
        }
        for reading in sample.gpus:
            if reading.uuid not in idle_run:
                continue
            assert reading.power_mw is not None
            util = sum(process.sm_util for process in reading.processes)
            idle_run[reading.uuid] = idle_run[reading.uuid] + 1 if reading.uuid not in held else 0
            busy_run[reading.uuid] = busy_run[reading.uuid] + 1 if util >= 80 else 0
            if idle_run[reading.uuid] >= 5:
                assert not reading.processes
                assert reading.power_mw < 92_000  # settled at idle (60-90 W for an H100)
                checked_idle += 1
            if busy_run[reading.uuid] >= 2:
                assert reading.power_mw > 400_000
                checked_busy += 1
    assert checked_idle > 20
    assert checked_busy > 20


def test_mig_gpu_draws_power_for_its_instances_without_processes() -> None:
    node = SimulatedNode(seed=4, mean_lifetime_s=None)  # pods never finish: both instances always held
    mig_gpu = node.header().gpus[3]
    powers = []
    for sample in take(node, 50):
        (reading,) = [reading for reading in sample.gpus if reading.uuid == mig_gpu.uuid]
        assert reading.processes == ()
        assert reading.power_mw is not None
        powers.append(reading.power_mw)
    assert max(powers) > 120_000  # above idle: the instances' pods are at work
    assert max(powers) <= 700_000


def test_driver_reload_restarts_every_counter_near_zero() -> None:
    node = SimulatedNode(seed=5, counter_reset_at=(10, 30))
    samples = take(node, 40)
    for index in range(1, 40):
        before = {reading.uuid: reading.energy_mj for reading in samples[index - 1].gpus}
        for reading in samples[index].gpus:
            assert reading.energy_mj is not None
            previous_mj = before[reading.uuid]
            assert previous_mj is not None
            if index in (10, 30):
                assert reading.energy_mj < previous_mj
                assert reading.energy_mj <= 700 * 1000 * 1.0  # within what one interval can deliver
            else:
                assert reading.energy_mj >= previous_mj


def test_dropped_gpu_is_missing_and_its_next_reading_covers_the_gap() -> None:
    node = SimulatedNode(seed=6, drop_gpu_every=4)
    header = node.header()
    uuids = [gpu.uuid for gpu in header.gpus]
    samples = take(node, 40)
    last_seen: dict[str, tuple[float, int]] = {}
    for index, sample in enumerate(samples):
        present = [reading.uuid for reading in sample.gpus]
        if index % 4 == 3:
            missing = set(uuids) - set(present)
            assert missing == {uuids[(index // 4) % 4]}  # one GPU, in turn
        else:
            assert present == uuids
        for reading in sample.gpus:
            assert reading.energy_mj is not None
            if reading.uuid in last_seen:
                then_s, then_mj = last_seen[reading.uuid]
                assert 0 <= reading.energy_mj - then_mj <= 700_000 * (sample.t_s - then_s)
            last_seen[reading.uuid] = (sample.t_s, reading.energy_mj)


def test_mixed_models_have_a_t4_without_energy_counter() -> None:
    node = SimulatedNode(seed=9, mixed_models=True)
    header = node.header()
    t4s = [gpu for gpu in header.gpus if gpu.model == T4_MODEL]
    assert len(t4s) == 1
    (t4,) = t4s
    assert not t4.energy_counter
    assert t4.power_limit_w == 70
    assert not t4.mig
    for sample in take(node, 200):
        for reading in sample.gpus:
            assert reading.power_mw is not None
            if reading.uuid == t4.uuid:
                assert reading.energy_mj is None
                assert 0 < reading.power_mw <= 70_000
            else:
                assert reading.energy_mj is not None


def test_grid_intensity_follows_the_day() -> None:
    hour_s = 3600.0
    midday = SimulatedNode(start_s=13 * hour_s).sample()
    evening = SimulatedNode(start_s=19 * hour_s).sample()
    assert midday is not None
    assert evening is not None
    assert midday.grid_g_per_kwh is not None
    assert evening.grid_g_per_kwh is not None
    # By hand: 300 - 120 (solar dip at 13:00) ± 6 noise, and 300 + 70 (evening peak) - 2.2 ± 6 noise.
    assert 170 <= midday.grid_g_per_kwh <= 190
    assert 360 <= evening.grid_g_per_kwh <= 375
    no_grid = SimulatedNode(grid=False).sample()
    assert no_grid is not None
    assert no_grid.grid_g_per_kwh is None

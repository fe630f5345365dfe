"""What one NvmlMeter read costs in library calls, counted by the fake libnvidia-ml itself (see conftest), and the
behaviour that keeps the cheap read correct: static facts refreshed on change, processes only where needed."""

from __future__ import annotations

from collections.abc import Iterator

from jouleledger.core.model import GpuReading, ProcessUsage
from jouleledger.hardware.base import GpuLostError
from jouleledger.hardware.nvml import NvmlMeter
from tests.hardware.fake_nvml_build import FakeNvmlState

ENERGY = "nvmlDeviceGetTotalEnergyConsumption"
POWER = "nvmlDeviceGetPowerUsage"
LIMIT = "nvmlDeviceGetEnforcedPowerLimit"
PROCESSES = "nvmlDeviceGetComputeRunningProcesses_v3"
UTILISATION = "nvmlDeviceGetProcessUtilization"
COUNT = "nvmlDeviceGetCount_v2"


def uuid(index: int) -> str:
    return f"GPU-{index:08x}-0000-1111-2222-333344445555"


def node(gpus: int = 8, *, power_mw: int = 250_000, limit_mw: int = 700_000, extra: str = "") -> str:
    """``gpus`` H100s, each running one process with utilisation samples; ``extra`` goes after the first GPU."""
    lines = []
    for index in range(gpus):
        lines += [
            f"gpu {uuid(index)} NVIDIA H100 80GB HBM3",
            f"energy {1_000_000 + index}",
            f"power {power_mw}",
            f"limit {limit_mw}",
            f"proc {100 + index}",
            f"util {100 + index} 1000 40",
        ]
        if index == 0 and extra:
            lines.append(extra)
    return "\n".join(lines)


def counting(meter_reads: Iterator[object], fake: FakeNvmlState) -> list[int]:
    """The library calls of each read."""
    counts = []
    for _ in meter_reads:
        counts.append(fake.calls())
        fake.reset_calls()
    return counts


def test_exclusive_gpus_cost_two_calls_each_per_read(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(8))
    with NvmlMeter(refresh_every_reads=1000) as meter:
        meter.gpus()
        meter.read(processes_for=frozenset())  # baseline
        fake_nvml.reset_calls()
        readout = meter.read(processes_for=frozenset())
        assert fake_nvml.calls() == 16
        assert fake_nvml.calls(ENERGY) == 8
        assert fake_nvml.calls(POWER) == 8
        assert readout.errors == ()
        assert readout.readings[0] == GpuReading(uuid(0), 1_000_000, 250_000, ())
        # and it stays so, read after read
        fake_nvml.reset_calls()
        assert counting((meter.read(processes_for=frozenset()) for _ in range(5)), fake_nvml) == [16] * 5


def test_processes_are_queried_only_for_the_gpus_that_need_them(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(8))
    # the wall clock before every sample's timestamp, so that the samples count as taken after the first read
    with NvmlMeter(refresh_every_reads=1000, wall_clock_us=lambda: 0) as meter:
        meter.gpus()
        meter.read(processes_for=frozenset())
        fake_nvml.reset_calls()
        readings = meter.read(processes_for={uuid(3)}).readings
    assert [reading.uuid for reading in readings if reading.processes] == [uuid(3)]
    assert readings[3].processes == (ProcessUsage(103, 40.0),)
    # one query per fact per GPU: the bindings size their buffer with a first call, so two library calls each
    assert fake_nvml.calls(PROCESSES) == 2
    assert fake_nvml.calls(UTILISATION) == 2
    assert fake_nvml.calls(ENERGY) == fake_nvml.calls(POWER) == 8
    assert fake_nvml.calls(LIMIT) == 0


def test_every_gpu_is_queried_for_processes_when_no_set_is_given(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(2))
    with NvmlMeter() as meter:
        readings = meter.read().readings
    assert [reading.processes for reading in readings] == [(ProcessUsage(100, 40.0),), (ProcessUsage(101, 40.0),)]


def test_power_limits_and_the_device_count_are_refreshed_every_n_reads(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(8))
    with NvmlMeter(refresh_every_reads=4) as meter:
        meter.gpus()
        fake_nvml.reset_calls()
        limits = []
        counts = []
        for _ in range(8):
            meter.read(processes_for=frozenset())
            limits.append(fake_nvml.calls(LIMIT))
            counts.append(fake_nvml.calls(COUNT))
            fake_nvml.reset_calls()
    assert limits == [0, 0, 0, 8, 0, 0, 0, 8]
    assert counts == [0, 0, 0, 1, 0, 0, 0, 1]


def test_a_raised_power_limit_is_read_before_a_reading_is_rejected(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(1, limit_mw=300_000))
    with NvmlMeter(refresh_every_reads=1000) as meter:
        meter.gpus()
        meter.read(processes_for=frozenset())
        # the administrator raises the limit to 500 W and the GPU draws 450 W: above 1.2 x the cached 300 W
        fake_nvml.write(node(1, power_mw=450_000, limit_mw=500_000))
        fake_nvml.reset_calls()
        reading = meter.read(processes_for=frozenset()).readings[0]
        assert reading.power_mw == 450_000
        assert fake_nvml.calls(LIMIT) == 1
        assert dict(meter.rejected) == {}
        # a reading above the freshly read limit is still rejected
        fake_nvml.write(node(1, power_mw=650_000, limit_mw=500_000))
        assert meter.read(processes_for=frozenset()).readings[0].power_mw is None
        assert dict(meter.rejected) == {(uuid(0), "power_above_limit"): 1}


def test_a_gpu_error_makes_the_next_read_check_its_power_limit(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(1))
    with NvmlMeter(refresh_every_reads=1000) as meter:
        meter.gpus()
        fake_nvml.write(node(1, extra="rc 15"))
        assert isinstance(meter.read(processes_for=frozenset()).errors[0], GpuLostError)
        fake_nvml.write(node(1, limit_mw=400_000))
        fake_nvml.reset_calls()
        meter.read(processes_for=frozenset())
        assert fake_nvml.calls(LIMIT) == 1


def test_a_new_gpu_is_found_at_the_periodic_device_count(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(node(2))
    with NvmlMeter(refresh_every_reads=2) as meter:
        assert [r.uuid for r in meter.read(processes_for=frozenset()).readings] == [uuid(0), uuid(1)]
        fake_nvml.write(node(3))
        assert [r.uuid for r in meter.read(processes_for=frozenset()).readings] == [uuid(0), uuid(1), uuid(2)]
        fake_nvml.write(node(2))
        meter.read(processes_for=frozenset())
        readout = meter.read(processes_for=frozenset())
    assert [r.uuid for r in readout.readings] == [uuid(0), uuid(1)]
    assert [(type(e), e.uuid) for e in readout.errors] == [(GpuLostError, uuid(2))]


def test_utilisation_resumed_after_skipped_reads_covers_only_the_last_interval(fake_nvml: FakeNvmlState) -> None:
    """Samples older than the previous read belong to intervals the GPU was not shared in: not averaged."""
    state = node(1) + "\nproc 200\nutil 100 1500 80\nutil 200 500 10\nutil 200 1500 50"
    fake_nvml.write(state)
    wall_us = iter([1000, 2000, 3000])
    with NvmlMeter(wall_clock_us=lambda: next(wall_us)) as meter:
        assert meter.read(processes_for=frozenset()).readings[0].processes == ()
        processes = meter.read(processes_for={uuid(0)}).readings[0].processes
        # pid 100: only the sample at 1500 (not the one at 1000); pid 200: only 50 (not 10 at 500)
        assert processes == (ProcessUsage(100, 80.0), ProcessUsage(200, 50.0))
        fake_nvml.write(state + "\nutil 200 2500 30")
        # processes read at the previous read: only samples newer than the newest seen, as before
        processes = meter.read(processes_for={uuid(0)}).readings[0].processes
    assert processes == (ProcessUsage(100, 0.0), ProcessUsage(200, 30.0))


def test_a_driver_reload_at_a_refresh_read_recovers_at_the_next_read(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write("generation 1\n" + node(2))
    with NvmlMeter(refresh_every_reads=2) as meter:
        meter.read(processes_for=frozenset())
        # the driver reloads and the counters restart; the refresh read's device calls fail as well
        fake_nvml.write("generation 2\nreload_rc 16\n" + node(2).replace("energy 1000000", "energy 7"))
        failed = meter.read(processes_for=frozenset())
        assert failed.readings == ()
        assert {type(error).__name__ for error in failed.errors} == {"DriverReloadedError"}
        recovered = meter.read(processes_for=frozenset())
    assert recovered.errors == ()
    assert [reading.energy_mj for reading in recovered.readings] == [7, 1_000_001]

"""NvmlMeter against a pure-Python fake at its ``nvml`` seam: lifecycle, error mapping, validation, averaging."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from jouleledger.core.model import GpuInfo, GpuReading, MigInstance, ProcessUsage
from jouleledger.hardware.base import (
    BackendError,
    DriverReloadedError,
    GpuLostError,
    NotSupportedError,
    ReadingError,
)
from jouleledger.hardware.nvml import NvmlMeter
from tests.hardware import fake_pynvml as fake
from tests.hardware.fake_pynvml import FakeGpu, FakeMig, FakeNvml


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def make(*gpus: FakeGpu) -> tuple[FakeNvml, NvmlMeter, FakeClock]:
    nvml = FakeNvml(*gpus)
    clock = FakeClock()
    return nvml, NvmlMeter(nvml, clock=clock, reinit_backoff_s=5.0), clock


def reading(meter: NvmlMeter, uuid: str) -> GpuReading:
    readout = meter.read()
    matches = [r for r in readout.readings if r.uuid == uuid]
    assert len(matches) == 1, readout
    return matches[0]


# --- lifecycle ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_importing_the_module_neither_imports_pynvml_nor_touches_nvml() -> None:
    code = "import sys, jouleledger.hardware.nvml; assert 'pynvml' not in sys.modules, 'imported at import time'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_constructor_initialises_and_close_shuts_down_once() -> None:
    nvml, meter, _ = make(FakeGpu("GPU-a"))
    assert nvml.count("nvmlInit") == 1
    assert nvml.count("nvmlShutdown") == 0
    meter.close()
    meter.close()
    assert nvml.count("nvmlShutdown") == 1
    with pytest.raises(BackendError, match="closed"):
        meter.read()


def test_context_manager_closes() -> None:
    nvml = FakeNvml(FakeGpu("GPU-a"))
    with NvmlMeter(nvml) as meter:
        assert [info.uuid for info in meter.gpus()] == ["GPU-a"]
    assert nvml.count("nvmlShutdown") == 1


def test_default_module_is_pynvml_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(FakeGpu("GPU-from-sys-modules"))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with NvmlMeter() as meter:
        assert [info.uuid for info in meter.gpus()] == ["GPU-from-sys-modules"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (fake.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 was not found"),
        (fake.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (fake.NVML_ERROR_UNKNOWN, "NVML return code 999"),
    ],
)
def test_init_failure_is_a_backend_error(code: int, message: str) -> None:
    nvml = FakeNvml(FakeGpu("GPU-a"))
    nvml.init_error = code
    with pytest.raises(BackendError, match=message):
        NvmlMeter(nvml)


def test_failing_device_count_at_start_is_a_backend_error_and_shuts_down() -> None:
    nvml = FakeNvml(FakeGpu("GPU-a"))
    nvml.count_error = fake.NVML_ERROR_UNKNOWN
    with pytest.raises(BackendError, match="could not be listed"):
        NvmlMeter(nvml)
    assert nvml.count("nvmlShutdown") == 1


# --- discovery ---------------------------------------------------------------------------------------------------


def test_gpus_describe_model_counter_limit_and_mig() -> None:
    plain = FakeGpu("GPU-plain", name="NVIDIA A100-SXM4-80GB", limit_mw=400_000)
    old = FakeGpu("GPU-old", name="Tesla P100", limit_mw=250_000, errors={"nvmlDeviceGetMigMode": 3})
    old.errors["nvmlDeviceGetTotalEnergyConsumption"] = fake.NVML_ERROR_NOT_SUPPORTED
    mig = FakeGpu(
        "GPU-mig",
        limit_mw=700_000,
        mig_mode=1,
        # a 3g instance, and a 4g instance split into two 2c compute instances (each a MIG device of its own)
        migs=[FakeMig("MIG-1", 3, 3), FakeMig("MIG-2", 4, 2), FakeMig("MIG-3", 4, 2)],
    )
    _, meter, _ = make(plain, old, mig)
    assert meter.gpus() == (
        GpuInfo("GPU-plain", "NVIDIA A100-SXM4-80GB", True, 400.0),
        GpuInfo("GPU-old", "Tesla P100", False, 250.0),
        GpuInfo(
            "GPU-mig",
            "NVIDIA H100 80GB HBM3",
            True,
            700.0,
            (MigInstance("MIG-1", 3), MigInstance("MIG-2", 2), MigInstance("MIG-3", 2)),
        ),
    )


def test_mig_slices_fall_back_to_gpu_instance_slices_and_bad_counts_are_rejected() -> None:
    gpu = FakeGpu("GPU-m", mig_mode=1, migs=[FakeMig("MIG-a", 2, 0), FakeMig("MIG-b", 0, 0)])
    _, meter, _ = make(gpu)
    (info,) = meter.gpus()
    assert info.mig == (MigInstance("MIG-a", 2),)
    assert meter.rejected == {("GPU-m", "mig_slices_invalid"): 1}


def test_unreadable_power_limit_is_bounded_by_the_absolute_ceiling() -> None:
    gpu = FakeGpu("GPU-a", errors={"nvmlDeviceGetEnforcedPowerLimit": fake.NVML_ERROR_NOT_SUPPORTED})
    _, meter, _ = make(gpu)
    assert meter.gpus()[0].power_limit_w == 10_000.0


def test_a_gpu_that_cannot_be_described_is_left_out_of_gpus() -> None:
    lost = FakeGpu("GPU-lost")
    _, meter, _ = make(FakeGpu("GPU-ok"), lost)
    lost.errors["nvmlDeviceGetName"] = fake.NVML_ERROR_GPU_IS_LOST
    assert [info.uuid for info in meter.gpus()] == ["GPU-ok"]


# --- readings ----------------------------------------------------------------------------------------------------


def test_read_returns_counter_power_and_processes() -> None:
    gpu = FakeGpu("GPU-a", energy_mj=123_456_789, power_mw=312_000, pids=[4242])
    _, meter, _ = make(gpu)
    got = reading(meter, "GPU-a")
    assert (got.energy_mj, got.power_mw) == (123_456_789, 312_000)
    assert got.processes == (ProcessUsage(4242, 0.0),)


def test_sm_util_is_the_mean_of_the_samples_since_the_last_read() -> None:
    gpu = FakeGpu(
        "GPU-a",
        pids=[10, 11, 12],
        samples=[(10, 100, 50), (10, 200, 70), (11, 150, 20)],
    )
    nvml, meter, _ = make(gpu)
    first = reading(meter, "GPU-a").processes
    # pid 10: (50 + 70) / 2 = 60, not the maximum 70; pid 12 had no sample
    assert first == (ProcessUsage(10, 60.0), ProcessUsage(11, 20.0), ProcessUsage(12, 0.0))
    gpu.samples += [(10, 300, 10), (11, 400, 90), (11, 500, 30)]
    second = reading(meter, "GPU-a").processes
    assert second == (ProcessUsage(10, 10.0), ProcessUsage(11, 60.0), ProcessUsage(12, 0.0))
    third = reading(meter, "GPU-a").processes
    assert third == (ProcessUsage(10, 0.0), ProcessUsage(11, 0.0), ProcessUsage(12, 0.0))
    assert nvml.last_seen_args == [0, 200, 500]


def test_samples_at_or_before_the_last_seen_timestamp_are_ignored_even_if_returned() -> None:
    gpu = FakeGpu("GPU-a", pids=[10], samples=[(10, 100, 90)])
    nvml, meter, _ = make(gpu)
    nvml.return_whole_buffer = True
    assert reading(meter, "GPU-a").processes == (ProcessUsage(10, 90.0),)
    gpu.samples += [(10, 200, 30)]
    assert reading(meter, "GPU-a").processes == (ProcessUsage(10, 30.0),)


def test_last_seen_timestamps_are_kept_per_gpu() -> None:
    a = FakeGpu("GPU-a", pids=[1], samples=[(1, 1000, 40)])
    b = FakeGpu("GPU-b", pids=[2], samples=[(2, 50, 80)])
    nvml, meter, _ = make(a, b)
    meter.read()
    meter.read()
    assert nvml.last_seen_args == [0, 0, 1000, 50]


def test_duplicate_pids_are_reported_once() -> None:
    _, meter, _ = make(FakeGpu("GPU-a", pids=[7, 7, 8]))
    assert reading(meter, "GPU-a").processes == (ProcessUsage(7, 0.0), ProcessUsage(8, 0.0))


def test_unsupported_energy_counter_reads_none_and_is_not_asked_again() -> None:
    gpu = FakeGpu("GPU-a", errors={"nvmlDeviceGetTotalEnergyConsumption": fake.NVML_ERROR_NOT_SUPPORTED})
    nvml, meter, _ = make(gpu)
    assert reading(meter, "GPU-a").energy_mj is None
    assert reading(meter, "GPU-a").energy_mj is None
    assert nvml.count("nvmlDeviceGetTotalEnergyConsumption") == 1


@pytest.mark.parametrize(
    ("function", "power_mw", "processes"),
    [
        ("nvmlDeviceGetPowerUsage", None, (ProcessUsage(3, 40.0),)),
        ("nvmlDeviceGetComputeRunningProcesses", 1000, ()),
        ("nvmlDeviceGetProcessUtilization", 1000, (ProcessUsage(3, 0.0),)),
    ],
)
def test_unsupported_queries_leave_only_their_value_empty(
    function: str, power_mw: int | None, processes: tuple[ProcessUsage, ...]
) -> None:
    gpu = FakeGpu("GPU-a", energy_mj=5, power_mw=1000, pids=[3], samples=[(3, 10, 40)])
    gpu.errors[function] = fake.NVML_ERROR_NOT_SUPPORTED
    _, meter, _ = make(gpu)
    readout = meter.read()
    assert readout.errors == ()
    (got,) = readout.readings
    assert (got.energy_mj, got.power_mw, got.processes) == (5, power_mw, processes)


NVML_ERROR_NO_PERMISSION = 4


@pytest.mark.parametrize(
    ("function", "processes"),
    [
        ("nvmlDeviceGetComputeRunningProcesses", ()),
        ("nvmlDeviceGetProcessUtilization", (ProcessUsage(3, 0.0),)),
    ],
)
def test_process_queries_that_fail_leave_energy_and_power_and_warn_once(
    function: str, processes: tuple[ProcessUsage, ...], caplog: pytest.LogCaptureFixture
) -> None:
    gpu = FakeGpu("GPU-a", energy_mj=5, power_mw=1000, pids=[3], samples=[(3, 10, 40)])
    gpu.errors[function] = NVML_ERROR_NO_PERMISSION
    _, meter, _ = make(gpu)
    for _ in range(3):
        readout = meter.read()
        assert readout.errors == ()
        assert readout.readings == (GpuReading("GPU-a", 5, 1000, processes),)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "going on without" in r.getMessage()]
    assert len(warnings) == 1
    assert function in warnings[0].getMessage()


@pytest.mark.parametrize("function", ["nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetProcessUtilization"])
def test_a_gpu_lost_while_listing_processes_is_still_lost(function: str) -> None:
    gpu = FakeGpu("GPU-a", pids=[3], samples=[(3, 10, 40)])
    _, meter, _ = make(gpu)
    gpu.errors[function] = fake.NVML_ERROR_GPU_IS_LOST
    readout = meter.read()
    assert readout.readings == ()
    assert [(e.uuid, e.kind) for e in readout.errors] == [("GPU-a", "gpu_lost")]


def test_a_mig_layout_that_cannot_be_read_leaves_the_gpu_whole() -> None:
    gpu = FakeGpu("GPU-m", mig_mode=1, migs=[FakeMig("MIG-a", 7, 7)])
    gpu.errors["nvmlDeviceGetAttributes"] = NVML_ERROR_NO_PERMISSION
    _, meter, _ = make(gpu)
    assert meter.gpus() == (GpuInfo("GPU-m", "NVIDIA H100 80GB HBM3", True, 700.0),)


def test_library_mismatch_on_process_listing_is_logged_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml, meter, _ = make(FakeGpu("GPU-a", pids=[3]))

    def mismatch(handle: object) -> None:
        raise fake.NVMLLibraryMismatchError("old driver")

    monkeypatch.setattr(nvml, "nvmlDeviceGetComputeRunningProcesses", mismatch)
    assert reading(meter, "GPU-a").processes == ()


# --- per-GPU failures --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type", "kind"),
    [
        (fake.NVML_ERROR_GPU_IS_LOST, GpuLostError, "gpu_lost"),
        (fake.NVML_ERROR_UNKNOWN, GpuLostError, "gpu_lost"),
        (fake.NVML_ERROR_TIMEOUT, ReadingError, "error"),
        (fake.NVML_ERROR_UNINITIALIZED, DriverReloadedError, "driver_reloaded"),
        (fake.NVML_ERROR_RESET_REQUIRED, DriverReloadedError, "driver_reloaded"),
        (fake.NVML_ERROR_DRIVER_NOT_LOADED, DriverReloadedError, "driver_reloaded"),
    ],
)
def test_one_failing_gpu_does_not_stop_the_others(code: int, error_type: type[ReadingError], kind: str) -> None:
    bad = FakeGpu("GPU-bad")
    good = FakeGpu("GPU-good", energy_mj=42, power_mw=200_000)
    _, meter, _ = make(bad, good)
    bad.errors["nvmlDeviceGetPowerUsage"] = code
    readout = meter.read()
    assert [r.uuid for r in readout.readings] == ["GPU-good"]
    assert readout.readings[0].energy_mj == 42
    (error,) = readout.errors
    assert type(error) is error_type
    assert (error.uuid, error.kind) == ("GPU-bad", kind)
    assert f"NVML return code {code}" in str(error)


def test_a_gpu_whose_handle_cannot_be_fetched_is_an_error_until_it_comes_back() -> None:
    flaky = FakeGpu("GPU-flaky", errors={"nvmlDeviceGetHandleByIndex": fake.NVML_ERROR_NOT_SUPPORTED})
    _, meter, _ = make(FakeGpu("GPU-ok"), flaky)
    readout = meter.read()
    (error,) = readout.errors
    assert isinstance(error, NotSupportedError)
    assert error.uuid == "nvml-index-1"
    del flaky.errors["nvmlDeviceGetHandleByIndex"]
    assert [r.uuid for r in meter.read().readings] == ["GPU-ok", "GPU-flaky"]


# --- driver reload -----------------------------------------------------------------------------------------------


def test_driver_reload_reinitialises_on_the_next_read() -> None:
    gpu = FakeGpu("GPU-a", energy_mj=1000)
    nvml, meter, _ = make(gpu)
    gpu.errors["*"] = fake.NVML_ERROR_UNINITIALIZED
    (error,) = meter.read().errors
    assert isinstance(error, DriverReloadedError)
    del gpu.errors["*"]
    gpu.energy_mj = 7  # counters restart after a reload
    assert reading(meter, "GPU-a").energy_mj == 7
    assert (nvml.count("nvmlShutdown"), nvml.count("nvmlInit")) == (1, 2)


def test_failed_reinitialisation_is_retried_only_after_the_backoff() -> None:
    a, b = FakeGpu("GPU-a"), FakeGpu("GPU-b")
    nvml, meter, clock = make(a, b)
    a.errors["*"] = fake.NVML_ERROR_RESET_REQUIRED
    meter.read()
    nvml.init_error = fake.NVML_ERROR_DRIVER_NOT_LOADED
    readout = meter.read()
    assert readout.readings == ()
    assert [(e.uuid, e.kind) for e in readout.errors] == [("GPU-a", "driver_reloaded"), ("GPU-b", "driver_reloaded")]
    assert "re-initialisation failed" in str(readout.errors[0])
    assert nvml.count("nvmlInit") == 2
    clock.now_s += 4.9
    assert meter.read().readings == ()
    assert nvml.count("nvmlInit") == 2
    with pytest.raises(BackendError, match="waiting"):
        meter.gpus()
    clock.now_s += 0.1
    nvml.init_error = None
    del a.errors["*"]
    assert [r.uuid for r in meter.read().readings] == ["GPU-a", "GPU-b"]
    assert nvml.count("nvmlInit") == 3


def test_a_gpu_missing_after_reinitialisation_is_reported_lost() -> None:
    a, b = FakeGpu("GPU-a"), FakeGpu("GPU-b")
    nvml, meter, _ = make(a, b)
    a.errors["*"] = fake.NVML_ERROR_UNINITIALIZED
    meter.read()
    nvml.gpus = [b]
    readout = meter.read()
    assert [r.uuid for r in readout.readings] == ["GPU-b"]
    (error,) = readout.errors
    assert (type(error), error.uuid) == (GpuLostError, "GPU-a")


# --- validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, 1.5, 2**64 - 1, "12", None, True])
def test_invalid_energy_is_dropped_and_counted(bad: object) -> None:
    gpu = FakeGpu("GPU-a", power_mw=300_000)
    _, meter, _ = make(gpu)
    gpu.energy_mj = bad
    got = reading(meter, "GPU-a")
    assert (got.energy_mj, got.power_mw) == (None, 300_000)
    assert meter.rejected == {("GPU-a", "energy_invalid"): 1}


@pytest.mark.parametrize("bad", [-1, -math.inf, math.nan, 0.5, 2**32 - 1, "300"])
def test_invalid_power_is_dropped_and_counted(bad: object) -> None:
    gpu = FakeGpu("GPU-a", energy_mj=9, power_mw=bad, limit_mw=None)
    gpu.errors["nvmlDeviceGetEnforcedPowerLimit"] = fake.NVML_ERROR_NOT_SUPPORTED
    _, meter, _ = make(gpu)
    got = reading(meter, "GPU-a")
    assert (got.energy_mj, got.power_mw) == (9, None)
    assert meter.rejected == {("GPU-a", "power_invalid"): 1}


def test_power_up_to_120_percent_of_the_limit_is_accepted() -> None:
    gpu = FakeGpu("GPU-a", limit_mw=700_000, power_mw=840_000)  # 700 W x 1.2 = 840 W
    _, meter, _ = make(gpu)
    assert reading(meter, "GPU-a").power_mw == 840_000
    gpu.power_mw = 840_001
    assert reading(meter, "GPU-a").power_mw is None
    assert meter.rejected == {("GPU-a", "power_above_limit"): 1}


def test_a_raised_power_limit_applies_from_the_next_read() -> None:
    gpu = FakeGpu("GPU-a", limit_mw=300_000, power_mw=400_000)
    _, meter, _ = make(gpu)
    assert reading(meter, "GPU-a").power_mw is None
    gpu.limit_mw = 400_000
    assert reading(meter, "GPU-a").power_mw == 400_000


def test_an_invalid_power_limit_is_counted_and_the_last_valid_one_kept() -> None:
    gpu = FakeGpu("GPU-a", limit_mw=500_000, power_mw=550_000)
    _, meter, _ = make(gpu)
    assert reading(meter, "GPU-a").power_mw == 550_000
    gpu.limit_mw = 0
    gpu.power_mw = 650_000  # above 1.2 x the last valid 500 W limit
    assert reading(meter, "GPU-a").power_mw is None
    assert meter.rejected == {("GPU-a", "power_limit_invalid"): 1, ("GPU-a", "power_above_limit"): 1}


@pytest.mark.parametrize("bad", [101, -1, math.nan, 50.5, None])
def test_a_process_with_an_out_of_range_sm_util_sample_is_skipped(bad: object) -> None:
    gpu = FakeGpu("GPU-a", pids=[1, 2], samples=[(1, 10, 30), (1, 20, bad), (2, 15, 70)])
    _, meter, _ = make(gpu)
    assert reading(meter, "GPU-a").processes == (ProcessUsage(2, 70.0),)
    assert meter.rejected == {("GPU-a", "sm_util_invalid"): 1}


@pytest.mark.parametrize("bad", [0, -5, 2**32, "42", None])
def test_invalid_pids_are_skipped_and_counted(bad: object) -> None:
    gpu = FakeGpu("GPU-a", pids=[bad, 5], samples=[(bad, 10, 50), (5, 10, 20)])
    _, meter, _ = make(gpu)
    assert reading(meter, "GPU-a").processes == (ProcessUsage(5, 20.0),)
    assert meter.rejected == {("GPU-a", "pid_invalid"): 2}


def test_samples_with_invalid_timestamps_are_skipped_and_counted() -> None:
    gpu = FakeGpu("GPU-a", pids=[5], samples=[(5, -3, 90), (5, 10, 20)])
    nvml, meter, _ = make(gpu)
    nvml.return_whole_buffer = True
    assert reading(meter, "GPU-a").processes == (ProcessUsage(5, 20.0),)
    assert meter.rejected == {("GPU-a", "util_timestamp_invalid"): 1}


def test_rejected_counts_accumulate_per_gpu_and_reason_and_are_read_only() -> None:
    a = FakeGpu("GPU-a", energy_mj=-1)
    b = FakeGpu("GPU-b", energy_mj=-1, power_mw=-1)
    _, meter, _ = make(a, b)
    meter.read()
    meter.read()
    assert meter.rejected == {
        ("GPU-a", "energy_invalid"): 2,
        ("GPU-b", "energy_invalid"): 2,
        ("GPU-b", "power_invalid"): 2,
    }
    with pytest.raises(TypeError):
        meter.rejected[("GPU-a", "energy_invalid")] = 0  # type: ignore[index]

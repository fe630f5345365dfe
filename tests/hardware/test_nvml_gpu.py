"""NvmlMeter against the real NVML of this machine; skipped where ``nvmlInit`` fails (no GPU or driver)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from jouleledger.hardware.base import BackendError
from jouleledger.hardware.nvml import POWER_LIMIT_TOLERANCE, NvmlMeter
from jouleledger.hardware.proc import ProcMap

pytestmark = pytest.mark.gpu


@pytest.fixture
def meter() -> Iterator[NvmlMeter]:
    try:
        real = NvmlMeter()
    except BackendError as err:
        pytest.skip(f"no usable NVML here: {err}")
    with real:
        yield real


def test_every_gpu_is_described(meter: NvmlMeter) -> None:
    gpus = meter.gpus()
    assert gpus, "NVML initialised but listed no GPU"
    for gpu in gpus:
        assert gpu.uuid.startswith("GPU-")
        assert gpu.model
        assert 0 < gpu.power_limit_w <= 10_000
        assert all(instance.uuid.startswith("MIG-") and instance.slices >= 1 for instance in gpu.mig)


def test_readings_are_plausible_and_the_counter_does_not_go_back(meter: NvmlMeter) -> None:
    gpus = {gpu.uuid: gpu for gpu in meter.gpus()}
    first = meter.read()
    assert first.errors == ()
    time.sleep(0.2)  # real hardware: let the energy counter move
    second = meter.read()
    assert {r.uuid for r in second.readings} == set(gpus)
    before = {r.uuid: r.energy_mj for r in first.readings}
    for reading in second.readings:
        gpu = gpus[reading.uuid]
        if gpu.energy_counter:
            assert reading.energy_mj is not None
            assert before[reading.uuid] is not None
            assert reading.energy_mj >= before[reading.uuid]  # type: ignore[operator]
        if reading.power_mw is not None:
            assert 0 <= reading.power_mw <= gpu.power_limit_w * 1000 * POWER_LIMIT_TOLERANCE
        for process in reading.processes:
            assert process.pid > 0
            assert 0 <= process.sm_util <= 100
    assert meter.rejected == {}


def test_gpu_processes_of_this_host_map_through_proc(meter: NvmlMeter) -> None:
    pids = [process.pid for reading in meter.read().readings for process in reading.processes]
    proc_map = ProcMap(os.environ.get("JOULELEDGER_PROC_ROOT", "/proc"))
    mapped = proc_map.lookup(pids)  # outside Kubernetes nothing maps; it must simply not fail
    assert set(mapped) <= set(pids)

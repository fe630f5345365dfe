"""NvmlMeter through the real nvidia-ml-py bindings over a fake libnvidia-ml built from C (see conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jouleledger.core.model import GpuInfo, GpuReading, MigInstance, ProcessUsage
from jouleledger.hardware.base import BackendError, DriverReloadedError, GpuLostError
from jouleledger.hardware.nvml import NvmlMeter
from tests.hardware.fake_nvml_build import STATE_ENV, FakeNvmlState

TWO_GPUS = """
    gpu GPU-0a1b2c3d-0000-1111-2222-333344445555 NVIDIA H100 80GB HBM3
    energy 81234567
    power 312000
    limit 700000
    proc 4242
    proc 4343
    util 4242 1000 50
    util 4242 2000 70
    util 4343 1500 20
    gpu GPU-99999999-8888-7777-6666-555544443333 NVIDIA A100-SXM4-40GB
    energy 5000
    power 90000
    limit 400000
    mig_mode 1
    mig MIG-11111111-2222-3333-4444-555555555555 3 3
    mig MIG-66666666-7777-8888-9999-000000000000 4 4
"""
H100 = "GPU-0a1b2c3d-0000-1111-2222-333344445555"
A100 = "GPU-99999999-8888-7777-6666-555544443333"


def test_gpus_and_a_reading_through_the_bindings(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(TWO_GPUS)
    with NvmlMeter() as meter:
        assert meter.gpus() == (
            GpuInfo(H100, "NVIDIA H100 80GB HBM3", True, 700.0),
            GpuInfo(
                A100,
                "NVIDIA A100-SXM4-40GB",
                True,
                400.0,
                (
                    MigInstance("MIG-11111111-2222-3333-4444-555555555555", 3),
                    MigInstance("MIG-66666666-7777-8888-9999-000000000000", 4),
                ),
            ),
        )
        readout = meter.read()
    assert readout.errors == ()
    assert readout.readings == (
        # pid 4242: mean of 50 and 70
        GpuReading(H100, 81_234_567, 312_000, (ProcessUsage(4242, 60.0), ProcessUsage(4343, 20.0))),
        GpuReading(A100, 5000, 90_000, ()),
    )


def test_only_samples_newer_than_the_last_read_are_averaged(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(TWO_GPUS)
    with NvmlMeter() as meter:
        meter.read()
        later = TWO_GPUS.replace("energy 81234567", "energy 81300000").replace(
            "util 4343 1500 20", "util 4343 1500 20\n    util 4343 2500 40\n    util 4343 3000 80"
        )
        fake_nvml.write(later)
        reading = meter.read().readings[0]
    assert reading.energy_mj == 81_300_000
    # pid 4343: (40 + 80) / 2 from the two samples after t=2000 (not 20, 40 and 80); pid 4242 had none since
    assert reading.processes == (ProcessUsage(4242, 0.0), ProcessUsage(4343, 60.0))


def test_energy_counter_not_supported(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write("gpu GPU-old Tesla P100-PCIE-16GB\nenergy_rc 3\npower 30000\nlimit 250000\nmig_rc 3")
    with NvmlMeter() as meter:
        assert meter.gpus() == (GpuInfo("GPU-old", "Tesla P100-PCIE-16GB", False, 250.0),)
        assert meter.read().readings == (GpuReading("GPU-old", None, 30_000, ()),)


def test_a_lost_gpu_is_an_error_and_the_other_is_read(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(TWO_GPUS)
    with NvmlMeter() as meter:
        fake_nvml.write(TWO_GPUS.replace("power 312000", "power 312000\n    rc 15"))
        readout = meter.read()
    assert [r.uuid for r in readout.readings] == [A100]
    (error,) = readout.errors
    assert isinstance(error, GpuLostError)
    assert error.uuid == H100
    assert "GPU is lost" in str(error)


def test_driver_reload_then_recovery(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write("generation 1\n" + TWO_GPUS)
    with NvmlMeter() as meter:
        fake_nvml.write("generation 2\nreload_rc 16\n" + TWO_GPUS.replace("energy 5000", "energy 12"))
        readout = meter.read()
        assert readout.readings == ()
        assert {type(e) for e in readout.errors} == {DriverReloadedError}
        assert {e.uuid for e in readout.errors} == {H100, A100}
        recovered = meter.read()
    assert recovered.errors == ()
    assert [(r.uuid, r.energy_mj) for r in recovered.readings] == [(H100, 81_234_567), (A100, 12)]


def test_values_out_of_bounds_are_rejected(fake_nvml: FakeNvmlState) -> None:
    fake_nvml.write(
        """
        gpu GPU-bad
        energy 18446744073709551615
        power 900000
        limit 700000
        proc 1
        proc 2
        util 1 10 150
        util 2 10 30
        """
    )
    with NvmlMeter() as meter:
        assert meter.read().readings == (GpuReading("GPU-bad", None, None, (ProcessUsage(2, 30.0),)),)
        assert dict(meter.rejected) == {
            ("GPU-bad", "energy_invalid"): 1,
            ("GPU-bad", "power_above_limit"): 1,
            ("GPU-bad", "sm_util_invalid"): 1,
        }


@pytest.mark.parametrize(("state", "message"), [("init_rc 9", "driver is not loaded"), ("init_rc 999", "999")])
def test_init_failure_is_a_backend_error(fake_nvml: FakeNvmlState, state: str, message: str) -> None:
    fake_nvml.write(state)
    with pytest.raises(BackendError, match=message):
        NvmlMeter()


@pytest.mark.slow
def test_the_bindings_find_the_library_by_its_soname(fake_nvml_library: Path, tmp_path: Path) -> None:
    """pynvml's own loader (``CDLL("libnvidia-ml.so.1")``) resolves through the library search path."""
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (libdir / "libnvidia-ml.so.1").symlink_to(fake_nvml_library)
    state = FakeNvmlState(tmp_path / "state")
    state.write(TWO_GPUS)
    script = textwrap.dedent(
        """
        import json
        from jouleledger.hardware.nvml import NvmlMeter
        with NvmlMeter() as meter:
            gpus = meter.gpus()
            readout = meter.read()
        print(json.dumps({"gpus": [[g.uuid, g.model, g.power_limit_w, len(g.mig)] for g in gpus],
                          "energy": [r.energy_mj for r in readout.readings]}))
        """
    )
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir), STATE_ENV: str(state.path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {
        "gpus": [[H100, "NVIDIA H100 80GB HBM3", 700.0, 0], [A100, "NVIDIA A100-SXM4-40GB", 400.0, 2]],
        "energy": [81_234_567, 5000],
    }

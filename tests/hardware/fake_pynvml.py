"""A pure-Python stand-in for the ``pynvml`` module, handed to ``NvmlMeter`` at its seam.

Devices are plain objects whose attributes the tests set, including values no real NVML returns (negative,
non-finite, wrong types), and any function can be made to fail with an NVML return code for one GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_UNKNOWN = 999


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLLibraryMismatchError(Exception):
    pass


@dataclass
class FakeMig:
    uuid: str
    gpu_instance_slices: int
    compute_instance_slices: int


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: Any = 0
    power_mw: Any = 100_000
    limit_mw: Any = 700_000
    pids: list[Any] = field(default_factory=list)
    samples: list[tuple[Any, Any, Any]] = field(default_factory=list)  # (pid, timestamp_us, sm_util)
    mig_mode: int = 0
    migs: list[FakeMig] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML return code


class FakeNvml:
    """The subset of ``pynvml`` that ``NvmlMeter`` calls; ``calls`` records every call by name."""

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError

    def __init__(self, *gpus: FakeGpu) -> None:
        self.gpus = list(gpus)
        self.calls: list[str] = []
        self.init_error: int | None = None
        self.count_error: int | None = None
        self.return_whole_buffer = False  # ignore lastSeenTimeStamp, as a sloppy driver might
        self.last_seen_args: list[int] = []
        self.initialized = False

    def _check(self, name: str, handle: object) -> FakeGpu:
        self.calls.append(name)
        gpu = handle.gpu if isinstance(handle, SimpleNamespace) else handle
        assert isinstance(gpu, FakeGpu)
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        code = gpu.errors.get(name, gpu.errors.get("*"))
        if code is not None:
            raise NVMLError(code)
        return gpu

    def count(self, name: str) -> int:
        return self.calls.count(name)

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self.calls.append("nvmlDeviceGetCount")
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        gpu = self.gpus[index]
        self._check("nvmlDeviceGetHandleByIndex", gpu)
        return gpu

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        gpu = self._check("nvmlDeviceGetUUID", handle)
        return handle.mig.uuid if isinstance(handle, SimpleNamespace) else gpu.uuid

    def nvmlDeviceGetName(self, handle: object) -> str:
        return self._check("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> Any:
        return self._check("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: object) -> Any:
        return self._check("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> Any:
        return self._check("nvmlDeviceGetEnforcedPowerLimit", handle).limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[SimpleNamespace]:
        gpu = self._check("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=None) for pid in gpu.pids]

    def nvmlDeviceGetProcessUtilization(self, handle: object, last_seen_us: int) -> list[SimpleNamespace]:
        gpu = self._check("nvmlDeviceGetProcessUtilization", handle)
        self.last_seen_args.append(last_seen_us)
        samples = [
            SimpleNamespace(pid=pid, timeStamp=stamp, smUtil=util, memUtil=0, encUtil=0, decUtil=0)
            for pid, stamp, util in gpu.samples
            if self.return_whole_buffer or stamp > last_seen_us
        ]
        if not samples:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return samples

    def nvmlDeviceGetMigMode(self, handle: object) -> list[int]:
        gpu = self._check("nvmlDeviceGetMigMode", handle)
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: object) -> int:
        self._check("nvmlDeviceGetMaxMigDeviceCount", handle)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: object, index: int) -> SimpleNamespace:
        gpu = self._check("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if index >= len(gpu.migs):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return SimpleNamespace(gpu=gpu, mig=gpu.migs[index])

    def nvmlDeviceGetAttributes(self, handle: object) -> SimpleNamespace:
        self._check("nvmlDeviceGetAttributes", handle)
        assert isinstance(handle, SimpleNamespace), "only MIG handles are asked for attributes"
        mig = handle.mig
        return SimpleNamespace(
            gpuInstanceSliceCount=mig.gpu_instance_slices, computeInstanceSliceCount=mig.compute_instance_slices
        )

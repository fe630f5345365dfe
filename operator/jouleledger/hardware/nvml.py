"""The real GPU meter: NVML through the ``nvidia-ml-py`` bindings (imported as ``pynvml``).

:class:`NvmlMeter` implements :class:`~jouleledger.hardware.base.GpuMeter`. The bindings are imported and NVML is
initialised when a meter is constructed, never at import time. The ``nvml`` argument is the seam: any object with
the ``pynvml`` functions used here (``nvmlInit``, ``nvmlShutdown``, ``nvmlDeviceGetCount``,
``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetUUID``, ``nvmlDeviceGetName``,
``nvmlDeviceGetTotalEnergyConsumption``, ``nvmlDeviceGetPowerUsage``, ``nvmlDeviceGetEnforcedPowerLimit``,
``nvmlDeviceGetComputeRunningProcesses``, ``nvmlDeviceGetProcessUtilization``, ``nvmlDeviceGetMigMode``,
``nvmlDeviceGetMaxMigDeviceCount``, ``nvmlDeviceGetMigDeviceHandleByIndex``, ``nvmlDeviceGetAttributes``) and an
``NVMLError`` exception class whose instances carry the NVML return code in ``value``.

Error mapping (per GPU, per read): ``GPU_IS_LOST`` and ``UNKNOWN`` -> :class:`GpuLostError`; ``NOT_SUPPORTED`` ->
:class:`NotSupportedError` where the GPU cannot be read at all (an unsupported energy counter or power reading
only leaves that value ``None``); ``UNINITIALIZED``, ``RESET_REQUIRED``, ``DRIVER_NOT_LOADED`` and
``LIB_RM_VERSION_MISMATCH`` -> :class:`DriverReloadedError`, after which the next read shuts NVML down,
initialises it again and rediscovers the devices (at most once every ``reinit_backoff_s`` while that fails); any
other code -> :class:`ReadingError`. The optional queries (running processes, per-process utilisation, the MIG
layout) fail the GPU only when it is lost or the driver reloaded; any other failure (no permission, not
supported) leaves them empty with a warning, so the GPU's energy is still measured. A missing library or a failing
``nvmlInit`` raises :class:`BackendError`: there is never a fallback to made-up data.

SM utilisation per process is the mean of the samples NVML took since the previous read (NVML keeps a ring
buffer; the newest timestamp seen is kept per GPU). The first read averages whatever the buffer holds, which only
matters for the baseline sample. Process ids are the host's: map them to pods with
:class:`~jouleledger.hardware.proc.ProcMap` over the host's ``/proc``.

What a read costs (library calls per GPU): the facts that do not change from tick to tick are read once and
refreshed on change, not per tick. The model, the MIG layout and the UUIDs are read by :meth:`NvmlMeter.gpus` and
at discovery; energy-counter support is probed once. The enforced power limit is read at discovery, again every
``refresh_every_reads`` reads (together with the device count: a GPU that appeared or vanished makes the meter
rediscover its devices), after any failed read of that GPU, and at once when a power reading exceeds the cached
limit's tolerance (an administrator may have raised the limit), so a changed limit never rejects a valid reading.
Running processes and their utilisation are queried only for the GPUs in ``processes_for`` (the caller knows
which GPUs are shared or held by no pod; see :meth:`NvmlMeter.read`). In steady state an exclusive GPU therefore
costs two calls per read: the energy counter and the power. When a GPU's processes are queried again after reads
without them, only utilisation samples newer than the previous read (by the wall clock, NVML's sample timestamps
are unix microseconds) are averaged, so a long-skipped ring buffer does not leak into the interval.

Every number is validated here, at the edge. A value that fails is dropped (energy or power ``None``, process
left out) and counted in :attr:`NvmlMeter.rejected` under ``(gpu uuid, reason)``; the ``REJECT_*`` constants are
the reasons. Power may exceed the enforced power limit for a few milliseconds (boost transients, and the limit is
enforced on a moving average), so a reading is rejected only above ``POWER_LIMIT_TOLERANCE`` (1.2) times the limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any

from jouleledger.core.model import GpuInfo, GpuReading, MigInstance, ProcessUsage
from jouleledger.core.units import MJ_PER_J, PID_MAX, InvalidValueError, checked_int
from jouleledger.hardware.base import (
    BackendError,
    DriverReloadedError,
    GpuLostError,
    MeterReadout,
    NotSupportedError,
    ReadingError,
)

__all__ = [
    "ABSOLUTE_MAX_POWER_MW",
    "MAX_ENERGY_MJ",
    "PID_MAX",
    "POWER_LIMIT_TOLERANCE",
    "REJECT_ENERGY",
    "REJECT_MIG_SLICES",
    "REJECT_PID",
    "REJECT_POWER",
    "REJECT_POWER_ABOVE_LIMIT",
    "REJECT_POWER_LIMIT",
    "REJECT_SM_UTIL",
    "REJECT_UTIL_TIMESTAMP",
    "NvmlMeter",
]

_log = logging.getLogger(__name__)

# NVML return codes (nvml.h). They are part of the library's ABI, so they are named here rather than read from
# whichever version of the bindings is installed.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

NVML_DEVICE_MIG_ENABLE = 1
_BAD_VALUE = -1  # not an NVML code: the call succeeded but returned something unusable

_LOST_CODES = frozenset({NVML_ERROR_GPU_IS_LOST, NVML_ERROR_UNKNOWN})
_RELOAD_CODES = frozenset(
    {
        NVML_ERROR_UNINITIALIZED,
        NVML_ERROR_RESET_REQUIRED,
        NVML_ERROR_DRIVER_NOT_LOADED,
        NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    }
)

POWER_LIMIT_TOLERANCE = 1.2
"""Power readings up to this many times the enforced limit are accepted (transient excursions above the limit)."""

ABSOLUTE_MAX_POWER_MW = 10_000_000
"""10 kW: no single GPU draws more. Bounds power where the limit is unknown, and bounds the limit itself."""

MAX_ENERGY_MJ = 2**62
"""Above any real counter (a 10 kW GPU needs ~14,000 years to get there); catches the all-ones 'not available'."""


MAX_MIG_SLICES = 64

REJECT_ENERGY = "energy_invalid"
REJECT_POWER = "power_invalid"
REJECT_POWER_ABOVE_LIMIT = "power_above_limit"
REJECT_POWER_LIMIT = "power_limit_invalid"
REJECT_SM_UTIL = "sm_util_invalid"
REJECT_PID = "pid_invalid"
REJECT_UTIL_TIMESTAMP = "util_timestamp_invalid"
REJECT_MIG_SLICES = "mig_slices_invalid"


class _NvmlCallError(Exception):
    """Internal: an NVML call failed with ``code``."""

    def __init__(self, code: int, what: str, message: str) -> None:
        super().__init__(f"{what}: {message} (NVML return code {code})")
        self.code = code
        self.what = what


@dataclass(slots=True)
class _Device:
    """A physical GPU as discovered: its index, its handle (None where it could not be fetched) and UUID."""

    index: int
    uuid: str
    handle: object | None
    energy_counter: bool | None = None  # None until probed
    power_limit_mw: int | None = None  # the last valid enforced limit
    limit_due: bool = True  # re-read the enforced limit at the next read
    processes_read: bool = False  # whether the previous read of this GPU queried its processes


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as err:  # pragma: no cover - the dependency is always installed with the package
        raise BackendError("the nvidia-ml-py package (module pynvml) is not installed") from err
    return pynvml


class NvmlMeter:
    """Reads the node's GPUs through NVML.

    ``nvml`` is the bindings module (``pynvml`` when None); ``clock`` a monotonic clock in seconds, used to space
    re-initialisation attempts ``reinit_backoff_s`` apart after a driver reload; ``refresh_every_reads`` how
    often the power limits and the device count are read again; ``wall_clock_us`` the unix time in microseconds
    (NVML's utilisation timestamps). Construction initialises NVML and discovers the GPUs, raising
    :class:`BackendError` when NVML is unusable. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        reinit_backoff_s: float = 5.0,
        refresh_every_reads: int = 60,
        wall_clock_us: Callable[[], int] = _wall_clock_us,
    ) -> None:
        if refresh_every_reads < 1:
            raise ValueError(f"refresh_every_reads must be at least 1, not {refresh_every_reads}")
        self._nvml: Any = _import_pynvml() if nvml is None else nvml
        self._clock = clock
        self._reinit_backoff_s = reinit_backoff_s
        self._refresh_every_reads = refresh_every_reads
        self._wall_clock_us = wall_clock_us
        self._reads = 0
        self._previous_read_us: int | None = None
        self._devices: list[_Device] = []
        self._vanished: set[str] = set()
        self._last_seen_us: dict[str, int] = {}
        self._rejected: dict[tuple[str, str], int] = {}
        self._degraded: set[tuple[str, str, int]] = set()
        self._stale = False
        self._next_reinit_s = 0.0
        self._open = False
        self._init()
        self._open = True
        try:
            self._discover()
        except _NvmlCallError as err:
            self.close()
            raise BackendError(f"NVML initialised but its GPUs could not be listed: {err}") from err

    # --- lifecycle -------------------------------------------------------------------------------------------

    def _init(self) -> None:
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as err:
            code = _code_of(err)
            if code == NVML_ERROR_LIBRARY_NOT_FOUND:
                reason = "libnvidia-ml.so.1 was not found (is the NVIDIA driver installed and mounted?)"
            elif code == NVML_ERROR_DRIVER_NOT_LOADED:
                reason = "the NVIDIA kernel driver is not loaded"
            elif code == NVML_ERROR_FUNCTION_NOT_FOUND:
                reason = "the NVIDIA driver is too old for these bindings"
            else:
                reason = f"{_message_of(err)} (NVML return code {code})"
            raise BackendError(f"NVML could not be initialised: {reason}") from err

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if not self._open:
            return
        self._open = False
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            _log.warning("nvmlShutdown failed: %s", _message_of(err))

    def __enter__(self) -> NvmlMeter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def rejected(self) -> Mapping[tuple[str, str], int]:
        """Cumulative count of rejected values by ``(gpu uuid, reason)`` (a read-only live view)."""
        return MappingProxyType(self._rejected)

    # --- NVML calls ------------------------------------------------------------------------------------------

    def _call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function``; an NVML error becomes :class:`_NvmlCallError` with its return code."""
        try:
            return function(*args)
        except self._nvml.NVMLError as err:
            raise _NvmlCallError(_code_of(err), what, _message_of(err)) from err

    def _discover(self) -> None:
        """List the physical GPUs and fetch their handles and UUIDs."""
        nvml = self._nvml
        previous = {device.index: device for device in self._devices}
        raw_count = self._call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount)
        try:
            count = checked_int("GPU count", raw_count, maximum=1024)
        except InvalidValueError as bad:
            raise _NvmlCallError(_BAD_VALUE, "nvmlDeviceGetCount", str(bad)) from bad
        devices: list[_Device] = []
        for index in range(count):
            try:
                handle = self._call("nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, index)
                uuid = _text(self._call("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle))
            except _NvmlCallError as err:
                known = previous.get(index)
                uuid = known.uuid if known is not None else f"nvml-index-{index}"
                _log.warning("GPU %d (%s) could not be opened: %s", index, uuid, err)
                devices.append(_Device(index, uuid, None))
                continue
            devices.append(_Device(index, uuid, handle))
        vanished = {device.uuid for device in self._devices} - {device.uuid for device in devices}
        for uuid in sorted(vanished):
            _log.warning("GPU %s is no longer listed by NVML", uuid)
        self._devices = devices
        self._vanished = vanished

    def _reinit(self) -> str | None:
        """Shut down, initialise and rediscover after a driver reload; the failure message, or None."""
        now = self._clock()
        if now < self._next_reinit_s:
            return "waiting to re-initialise NVML"
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            _log.debug("nvmlShutdown before re-initialisation failed: %s", _message_of(err))
        try:
            self._init()
            self._discover()
        except (BackendError, _NvmlCallError) as err:
            self._next_reinit_s = now + self._reinit_backoff_s
            _log.warning("NVML re-initialisation failed: %s", err)
            return f"NVML re-initialisation failed: {err}"
        _log.info("NVML re-initialised after a driver reload")
        self._stale = False
        return None

    def _ensure_ready(self) -> str | None:
        if not self._open:
            raise BackendError("the NVML meter is closed")
        if self._stale:
            return self._reinit()
        return None

    def _map_error(self, uuid: str, err: _NvmlCallError) -> ReadingError:
        if err.code in _LOST_CODES:
            return GpuLostError(uuid, str(err))
        if err.code == NVML_ERROR_NOT_SUPPORTED:
            return NotSupportedError(uuid, str(err))
        if err.code in _RELOAD_CODES:
            self._stale = True
            return DriverReloadedError(uuid, str(err))
        return ReadingError(uuid, str(err))

    def _degrade(self, uuid: str, err: _NvmlCallError) -> None:
        """An optional query (processes, utilisation, MIG layout) failed: go on without it, unless the GPU is lost
        or the driver reloaded. Warns once per GPU, query and code; repeats are logged at debug level."""
        if err.code in _LOST_CODES or err.code in _RELOAD_CODES:
            raise err
        key = (uuid, err.what, err.code)
        level = logging.DEBUG if key in self._degraded else logging.WARNING
        self._degraded.add(key)
        _log.log(level, "GPU %s: going on without %s", uuid, err)

    def _reject(self, uuid: str, reason: str, err: InvalidValueError) -> None:
        key = (uuid, reason)
        self._rejected[key] = self._rejected.get(key, 0) + 1
        _log.warning("GPU %s: rejected %s", uuid, err)

    # --- GpuMeter --------------------------------------------------------------------------------------------

    def gpus(self) -> tuple[GpuInfo, ...]:
        """The physical GPUs and their MIG instances. A GPU that cannot be described is logged and left out."""
        failure = self._ensure_ready()
        if failure is not None:
            raise BackendError(failure)
        infos: list[GpuInfo] = []
        for device in self._devices:
            try:
                infos.append(self._describe(device))
            except _NvmlCallError as err:
                error = self._map_error(device.uuid, err)
                _log.warning("GPU %s left out of the GPU list: %s", device.uuid, error)
        return tuple(infos)

    def _describe(self, device: _Device) -> GpuInfo:
        nvml = self._nvml
        handle = self._handle(device)
        model = _text(self._call("nvmlDeviceGetName", nvml.nvmlDeviceGetName, handle))
        energy_counter = self._probe_energy(device, handle)
        limit_mw = self._power_limit_mw(device, handle)
        if limit_mw is None:
            _log.warning("GPU %s has no readable power limit; bounding it by %d mW", device.uuid, ABSOLUTE_MAX_POWER_MW)
            limit_mw = ABSOLUTE_MAX_POWER_MW
        return GpuInfo(
            uuid=device.uuid,
            model=model,
            energy_counter=energy_counter,
            power_limit_w=limit_mw / MJ_PER_J,
            mig=self._mig_instances(device.uuid, handle),
        )

    def _handle(self, device: _Device) -> object:
        if device.handle is None:
            nvml = self._nvml
            handle = self._call("nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, device.index)
            uuid = _text(self._call("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle))
            if uuid != device.uuid and not device.uuid.startswith("nvml-index-"):
                raise _NvmlCallError(NVML_ERROR_GPU_IS_LOST, "nvmlDeviceGetUUID", f"index now holds {uuid}")
            device.uuid = uuid
            device.handle = handle
        return device.handle

    def _probe_energy(self, device: _Device, handle: object) -> bool:
        if device.energy_counter is None:
            try:
                self._call(
                    "nvmlDeviceGetTotalEnergyConsumption", self._nvml.nvmlDeviceGetTotalEnergyConsumption, handle
                )
            except _NvmlCallError as err:
                if err.code != NVML_ERROR_NOT_SUPPORTED:
                    raise
                device.energy_counter = False
            else:
                device.energy_counter = True
        return device.energy_counter

    def _power_limit_mw(self, device: _Device, handle: object) -> int | None:
        """The enforced power limit (mW), falling back to the last valid one; None where never known."""
        try:
            raw = self._call("nvmlDeviceGetEnforcedPowerLimit", self._nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        except _NvmlCallError as err:
            if err.code != NVML_ERROR_NOT_SUPPORTED:
                raise
            device.limit_due = False
            return device.power_limit_mw
        device.limit_due = False
        try:
            device.power_limit_mw = checked_int("power limit (mW)", raw, minimum=1, maximum=ABSOLUTE_MAX_POWER_MW)
        except InvalidValueError as bad:
            self._reject(device.uuid, REJECT_POWER_LIMIT, bad)
        return device.power_limit_mw

    def _mig_instances(self, uuid: str, handle: object) -> tuple[MigInstance, ...]:
        """The GPU's MIG devices; where they cannot be listed, a warning and none (the GPU counts as a whole)."""
        try:
            return self._list_mig_instances(uuid, handle)
        except _NvmlCallError as err:
            self._degrade(uuid, err)
            return ()

    def _list_mig_instances(self, uuid: str, handle: object) -> tuple[MigInstance, ...]:
        nvml = self._nvml
        try:
            mode = self._call("nvmlDeviceGetMigMode", nvml.nvmlDeviceGetMigMode, handle)
        except _NvmlCallError as err:
            if err.code != NVML_ERROR_NOT_SUPPORTED:
                raise
            return ()
        if mode[0] != NVML_DEVICE_MIG_ENABLE:
            return ()
        count = self._call("nvmlDeviceGetMaxMigDeviceCount", nvml.nvmlDeviceGetMaxMigDeviceCount, handle)
        try:
            count = checked_int("MIG device count", count, maximum=MAX_MIG_SLICES)
        except InvalidValueError as bad:
            raise _NvmlCallError(_BAD_VALUE, "nvmlDeviceGetMaxMigDeviceCount", str(bad)) from bad
        instances: list[MigInstance] = []
        for index in range(count):
            try:
                mig_handle = self._call(
                    "nvmlDeviceGetMigDeviceHandleByIndex", nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, index
                )
            except _NvmlCallError as err:
                if err.code in (NVML_ERROR_NOT_FOUND, NVML_ERROR_INVALID_ARGUMENT):
                    continue  # no instance created at this index
                raise
            mig_uuid = _text(self._call("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, mig_handle))
            attributes = self._call("nvmlDeviceGetAttributes", nvml.nvmlDeviceGetAttributes, mig_handle)
            # A MIG device is a compute instance: its compute slices are its share of the GPU's compute (equal to
            # its GPU instance's slices unless that instance is split into several compute instances).
            slices = getattr(attributes, "computeInstanceSliceCount", 0) or getattr(
                attributes, "gpuInstanceSliceCount", 0
            )
            try:
                instances.append(
                    MigInstance(mig_uuid, checked_int("MIG slices", slices, minimum=1, maximum=MAX_MIG_SLICES))
                )
            except InvalidValueError as bad:
                self._reject(uuid, REJECT_MIG_SLICES, bad)
        return tuple(instances)

    def read(self, processes_for: Collection[str] | None = None) -> MeterReadout:
        """Energy counter (mJ), power (mW) and running processes with their SM utilisation, per GPU, now.

        Processes are queried only for the GPUs (by UUID) in ``processes_for``, all GPUs when it is None; the
        other readings carry no processes.
        """
        failure = self._ensure_ready()
        if failure is not None:
            return MeterReadout((), tuple(DriverReloadedError(d.uuid, failure) for d in self._devices))
        now_us = self._wall_clock_us()
        previous_us, self._previous_read_us = self._previous_read_us, now_us
        self._reads += 1
        if self._reads % self._refresh_every_reads == 0:
            self._refresh()
        readings: list[GpuReading] = []
        errors: list[ReadingError] = [GpuLostError(uuid, "no longer listed by NVML") for uuid in sorted(self._vanished)]
        for device in self._devices:
            wants_processes = processes_for is None or device.uuid in processes_for
            try:
                readings.append(self._read_device(device, wants_processes, previous_us))
            except _NvmlCallError as err:
                device.limit_due = True  # check the static facts again once the GPU answers
                device.processes_read = False
                errors.append(self._map_error(device.uuid, err))
        return MeterReadout(tuple(readings), tuple(errors))

    def _refresh(self) -> None:
        """The periodic check of what rarely changes: the device count, then every GPU's power limit."""
        try:
            raw_count = self._call("nvmlDeviceGetCount", self._nvml.nvmlDeviceGetCount)
        except _NvmlCallError as err:
            if err.code in _RELOAD_CODES:
                self._stale = True
            _log.warning("could not count the GPUs: %s", err)
            raw_count = len(self._devices)
        if raw_count != len(self._devices):
            _log.warning("NVML now lists %s GPUs instead of %d: rediscovering them", raw_count, len(self._devices))
            try:
                self._discover()
            except _NvmlCallError as err:
                _log.warning("rediscovering the GPUs failed: %s", err)
        for device in self._devices:
            device.limit_due = True

    def _read_device(self, device: _Device, wants_processes: bool, previous_us: int | None) -> GpuReading:
        handle = self._handle(device)
        limit_read = device.limit_due
        limit_mw = self._power_limit_mw(device, handle) if limit_read else device.power_limit_mw
        energy_mj = self._read_energy(device, handle)
        power_mw = self._read_power(device, handle, limit_mw, limit_read)
        if wants_processes:
            processes = self._read_processes(device, handle, None if device.processes_read else previous_us)
        else:
            processes = ()
        device.processes_read = wants_processes
        return GpuReading(device.uuid, energy_mj, power_mw, processes)

    def _read_energy(self, device: _Device, handle: object) -> int | None:
        if device.energy_counter is False:
            return None
        try:
            raw = self._call(
                "nvmlDeviceGetTotalEnergyConsumption", self._nvml.nvmlDeviceGetTotalEnergyConsumption, handle
            )
        except _NvmlCallError as err:
            if err.code != NVML_ERROR_NOT_SUPPORTED:
                raise
            device.energy_counter = False
            return None
        device.energy_counter = True
        try:
            return checked_int("energy counter (mJ)", raw, maximum=MAX_ENERGY_MJ)
        except InvalidValueError as bad:
            self._reject(device.uuid, REJECT_ENERGY, bad)
            return None

    def _read_power(self, device: _Device, handle: object, limit_mw: int | None, limit_read: bool) -> int | None:
        try:
            raw = self._call("nvmlDeviceGetPowerUsage", self._nvml.nvmlDeviceGetPowerUsage, handle)
        except _NvmlCallError as err:
            if err.code != NVML_ERROR_NOT_SUPPORTED:
                raise
            return None
        try:
            power_mw = checked_int("power (mW)", raw, maximum=ABSOLUTE_MAX_POWER_MW)
        except InvalidValueError as bad:
            self._reject(device.uuid, REJECT_POWER, bad)
            return None
        if limit_mw is not None and not limit_read and power_mw > int(limit_mw * POWER_LIMIT_TOLERANCE):
            limit_mw = self._power_limit_mw(device, handle)  # the limit may have been raised since it was read
        if limit_mw is not None:
            ceiling_mw = int(limit_mw * POWER_LIMIT_TOLERANCE)
            try:
                checked_int(f"power (mW) with a {limit_mw} mW limit", power_mw, maximum=ceiling_mw)
            except InvalidValueError as bad:
                self._reject(device.uuid, REJECT_POWER_ABOVE_LIMIT, bad)
                return None
        return power_mw

    def _read_processes(self, device: _Device, handle: object, since_us: int | None) -> tuple[ProcessUsage, ...]:
        """The GPU's processes; ``since_us``, where given, bounds the utilisation samples from below (the previous
        read's time, when this GPU's processes were not queried then)."""
        nvml = self._nvml
        mismatch: Any = getattr(nvml, "NVMLLibraryMismatchError", _NeverRaisedError)
        try:
            running = self._call(
                "nvmlDeviceGetComputeRunningProcesses", nvml.nvmlDeviceGetComputeRunningProcesses, handle
            )
        except _NvmlCallError as err:
            self._degrade(device.uuid, err)
            return ()
        except mismatch as err:
            _log.warning("GPU %s: cannot list processes: %s", device.uuid, err)
            return ()
        sm_util, skipped = self._sm_utilisation(device, handle, since_us)
        processes: list[ProcessUsage] = []
        seen: set[int] = set()
        for process in running:
            try:
                pid = checked_int("pid", getattr(process, "pid", None), minimum=1, maximum=PID_MAX)
            except InvalidValueError as bad:
                self._reject(device.uuid, REJECT_PID, bad)
                continue
            if pid in seen or pid in skipped:
                continue
            seen.add(pid)
            processes.append(ProcessUsage(pid, sm_util.get(pid, 0.0)))
        return tuple(processes)

    def _sm_utilisation(
        self, device: _Device, handle: object, since_us: int | None
    ) -> tuple[dict[int, float], set[int]]:
        """Average SM utilisation per pid over the samples NVML took since the last read, and the pids to skip.

        NVML keeps a ring buffer of samples; passing the newest timestamp seen so far returns only newer ones.
        A pid with an out-of-range sample is skipped for this read.
        """
        last_seen_us = self._last_seen_us.get(device.uuid, 0)
        if since_us is not None:
            last_seen_us = max(last_seen_us, since_us)
        try:
            samples = self._call(
                "nvmlDeviceGetProcessUtilization", self._nvml.nvmlDeviceGetProcessUtilization, handle, last_seen_us
            )
        except _NvmlCallError as err:
            if err.code not in (NVML_SUCCESS, NVML_ERROR_NOT_FOUND):  # not found: no sample since last_seen_us
                self._degrade(device.uuid, err)
            return {}, set()
        totals: dict[int, list[int]] = {}
        skipped: set[int] = set()
        newest_us = last_seen_us
        for sample in samples:
            try:
                stamp_us = checked_int("utilisation sample timestamp (us)", getattr(sample, "timeStamp", None))
            except InvalidValueError as bad:
                self._reject(device.uuid, REJECT_UTIL_TIMESTAMP, bad)
                continue
            if stamp_us <= last_seen_us:
                continue  # an older sample still in the buffer
            newest_us = max(newest_us, stamp_us)
            try:
                pid = checked_int("pid", getattr(sample, "pid", None), minimum=1, maximum=PID_MAX)
            except InvalidValueError as bad:
                self._reject(device.uuid, REJECT_PID, bad)
                continue
            try:
                util = checked_int("SM utilisation (%)", getattr(sample, "smUtil", None), maximum=100)
            except InvalidValueError as bad:
                self._reject(device.uuid, REJECT_SM_UTIL, bad)
                skipped.add(pid)
                continue
            totals.setdefault(pid, []).append(util)
        self._last_seen_us[device.uuid] = newest_us
        return {pid: sum(values) / len(values) for pid, values in totals.items()}, skipped


class _NeverRaisedError(Exception):
    """Stands in for an exception class the bindings do not define."""


def _code_of(err: BaseException) -> int:
    code = getattr(err, "value", NVML_ERROR_UNKNOWN)
    return code if isinstance(code, int) else NVML_ERROR_UNKNOWN


def _message_of(err: BaseException) -> str:
    try:
        return str(err)
    except Exception:  # the bindings' __str__ calls into the library, which may be gone
        return type(err).__name__


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str) or not value:
        raise _NvmlCallError(_BAD_VALUE, "string query", f"unusable value {value!r}")
    return value

"""The seams between the agent and where its data comes from.

A :class:`NodeSource` yields whole :class:`~jouleledger.core.model.Sample` objects: the replay and simulated
backends implement it directly; on a real node it is composed from a :class:`GpuMeter` (NVML), a pod source (the
kubelet) and a process-to-pod map (``/proc``). The backend is always chosen explicitly: there is no silent fallback
from real to fake data, and a simulated source says so through ``simulated``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from jouleledger.core.model import GpuInfo, GpuReading, NodeHeader, PodInfo, Sample

__all__ = [
    "BackendError",
    "DriverReloadedError",
    "GpuLostError",
    "GpuMeter",
    "MeterReadout",
    "NodeSource",
    "NotSupportedError",
    "PodSource",
    "PodSourceError",
    "ReadingError",
]


class BackendError(RuntimeError):
    """A GPU backend failed as a whole (library missing, driver not loaded, trace unreadable)."""


class ReadingError(RuntimeError):
    """One GPU could not be read this tick; the others still can. ``kind`` names the cause for metrics."""

    kind = "error"

    def __init__(self, uuid: str, detail: str) -> None:
        super().__init__(f"{uuid}: {detail}")
        self.uuid = uuid
        self.detail = detail


class GpuLostError(ReadingError):
    """The GPU fell off the bus or stopped answering."""

    kind = "gpu_lost"


class NotSupportedError(ReadingError):
    """The query is not supported on this GPU (e.g. no total-energy counter before Volta)."""

    kind = "not_supported"


class DriverReloadedError(ReadingError):
    """The driver was reloaded or reset: handles are stale and counters restart from zero."""

    kind = "driver_reloaded"


@dataclass(frozen=True, slots=True)
class MeterReadout:
    """One tick's readings; GPUs that failed are absent from ``readings`` and present in ``errors``."""

    readings: tuple[GpuReading, ...]
    errors: tuple[ReadingError, ...] = ()


class GpuMeter(Protocol):
    """Reads the GPUs of one node (NVML on a real node)."""

    def gpus(self) -> tuple[GpuInfo, ...]:
        """The node's physical GPUs and their MIG instances."""
        ...

    def read(self, processes_for: Collection[str] | None = None) -> MeterReadout:
        """Energy counter and power of every GPU, now, and the processes with their utilisation of the GPUs (by
        UUID) in ``processes_for`` (all GPUs when None): only a GPU held by several pods, or by none, needs them."""
        ...

    def close(self) -> None: ...


class NodeSource(Protocol):
    """Yields what the agent sees on one node, one sample per tick."""

    @property
    def simulated(self) -> bool:
        """True where the data is not measured on real hardware (simulated backend)."""
        ...

    def header(self) -> NodeHeader: ...

    def sample(self) -> Sample | None:
        """The next sample, or None when the source is exhausted (end of a replayed trace)."""
        ...

    def close(self) -> None: ...


class PodSourceError(RuntimeError):
    """The pod source (the kubelet PodResources socket) could not be read this tick."""


class PodSource(Protocol):
    """Which pod and container holds which GPU device on this node (the kubelet, on a real node).

    Returned pods carry namespace, name, UID, labels, owner and, per container, the device ids and the runtime
    container id; ``pids`` are left empty (the ``/proc`` map fills them). Finished pods are filtered out.
    """

    def pods(self) -> tuple[PodInfo, ...]:
        """The running pods that hold GPU devices; raises :class:`PodSourceError` when unreachable."""
        ...

    def close(self) -> None: ...

"""What the agent sees on one node: GPUs, their readings, and the pods that hold them.

These frozen dataclasses are the single vocabulary shared by every backend (NVML, replay, simulated), the
attribution core and the trace format. Device ids follow the kubelet: ``GPU-<uuid>`` for a whole GPU,
``GPU-<uuid>::<replica>`` for a time-sliced replica, ``MIG-<uuid>`` for a MIG instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jouleledger.core.frozen import quick_init

__all__ = [
    "ContainerDevices",
    "GpuInfo",
    "GpuReading",
    "MigInstance",
    "NodeHeader",
    "Owner",
    "PodInfo",
    "ProcessUsage",
    "Sample",
    "base_device_id",
]

REPLICA_SEPARATOR = "::"


def base_device_id(device_id: str) -> str:
    """``GPU-x::3`` -> ``GPU-x`` (time-slicing replicas count as the same GPU); other ids unchanged."""
    head, _, _ = device_id.partition(REPLICA_SEPARATOR)
    return head


@dataclass(frozen=True, slots=True)
class MigInstance:
    """A MIG instance: ``slices`` is its share of the physical GPU's compute slices."""

    uuid: str
    slices: int


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """A physical GPU as configured on the node (the trace header's ``gpus`` entry)."""

    uuid: str
    model: str
    energy_counter: bool
    power_limit_w: float
    mig: tuple[MigInstance, ...] = ()

    @property
    def total_slices(self) -> int:
        return sum(instance.slices for instance in self.mig)


@quick_init
@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """A process running on a GPU and its SM utilisation (0-100) averaged over the interval."""

    pid: int
    sm_util: float


@quick_init
@dataclass(frozen=True, slots=True)
class GpuReading:
    """One reading of one GPU at a sample's time.

    ``energy_mj`` is the NVML total-energy counter (None where the GPU has no counter or it could not be read);
    ``power_mw`` the instantaneous power (None where it could not be read).
    """

    uuid: str
    energy_mj: int | None
    power_mw: int | None
    processes: tuple[ProcessUsage, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class Owner:
    """An object's controller owner reference (``kind``/``name``/``uid``; ``api_version`` where known)."""

    kind: str
    name: str
    uid: str
    api_version: str = ""


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    """A container of a pod, the GPU device ids the kubelet assigned to it, and its process ids."""

    name: str
    devices: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    container_id: str = ""  # runtime id without the ``containerd://`` prefix, where known (maps /proc cgroups)


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A pod on the node with the devices and processes of its containers."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    owner: Owner | None = None
    containers: tuple[ContainerDevices, ...] = ()

    @property
    def key(self) -> str:
        """The identity the ledger keys on: the UID where known, else ``namespace/name``."""
        return self.uid or f"{self.namespace}/{self.name}"

    def __hash__(self) -> int:
        return hash((self.namespace, self.name, self.uid))


@dataclass(frozen=True, slots=True)
class NodeHeader:
    """The node and its GPUs (the trace's header line)."""

    node: str
    gpus: tuple[GpuInfo, ...]


@quick_init
@dataclass(frozen=True, slots=True)
class Sample:
    """What was seen at time ``t_s`` (seconds, increasing).

    A GPU absent from ``gpus`` could not be read at this sample. ``pods`` and processes describe the interval
    that ends at ``t_s``; ``grid_g_per_kwh`` is the grid intensity during that interval, where known.
    """

    t_s: float
    gpus: tuple[GpuReading, ...]
    pods: tuple[PodInfo, ...] = ()
    grid_g_per_kwh: float | None = None

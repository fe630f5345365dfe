"""Immutable views of the agent's cumulative counters and health, built once per tick and read by exporters.

A snapshot is what ``/metrics`` renders, what the checkpoint stores and what ``replay``/``demo`` print; nothing
reads the live ledger directly, so a scrape never sees a half-applied tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jouleledger.core.model import Owner

__all__ = ["AgentStatus", "ExportView", "GpuTotals", "LedgerSnapshot", "PodDeviceTotals", "PodRecord"]


@dataclass(frozen=True, slots=True)
class PodRecord:
    """A pod that held a GPU device in at least one interval.

    ``finished_s`` is the sample time at which the pod was first seen gone (None while it runs); the ledger keeps
    a finished pod's totals for its retention window so that the operator can read the final value.
    """

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    owner: Owner | None
    first_seen_s: float
    last_seen_s: float
    finished_s: float | None = None


@dataclass(frozen=True, slots=True)
class PodDeviceTotals:
    """Cumulative energy and GPU-seconds of one pod on one device (``GPU-<uuid>`` or ``MIG-<uuid>``).

    ``energy_from_power_mj`` is the part of ``energy_mj`` whose intervals were measured by power integration (no
    energy counter, or its delta rejected) rather than by the energy counter.
    """

    pod_key: str
    namespace: str
    pod: str
    container: str
    device: str
    energy_mj: int
    gpu_seconds: float
    energy_from_power_mj: int = 0


@dataclass(frozen=True, slots=True)
class GpuTotals:
    """Cumulative measured and unallocated (idle) energy of one physical GPU, and its latest power reading.

    ``energy_from_power_mj`` is the part of ``measured_mj`` measured by power integration; ``power_limit_w`` is
    the GPU's power limit (the bound every reading of it is checked against), ``None`` where unknown.
    """

    uuid: str
    model: str
    measured_mj: int
    unallocated_mj: int
    power_w: float | None = None
    energy_from_power_mj: int = 0
    power_limit_w: float | None = None


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """Everything the agent has counted on ``node`` up to sample time ``t_s``.

    ``rejected`` counts readings that could not be trusted, by ``(gpu uuid, reason)``.
    """

    node: str
    t_s: float
    pods: Mapping[str, PodRecord]
    devices: tuple[PodDeviceTotals, ...]
    gpus: tuple[GpuTotals, ...]
    rejected: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def measured_mj(self) -> int:
        return sum(gpu.measured_mj for gpu in self.gpus)

    @property
    def unallocated_mj(self) -> int:
        return sum(gpu.unallocated_mj for gpu in self.gpus)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """Self-observation of the agent at the end of a tick.

    ``backend`` is ``nvml``, ``replay`` or ``simulated``; ``simulated`` is True when the data is not measured.
    ``epoch`` identifies the counters (a new one whenever they start from zero); ``ticks_total`` counts the ticks
    within it that the exported counters include.
    ``reading_errors`` counts per-GPU read failures by ``(gpu uuid, kind)`` (``gpu_lost``, ``not_supported``...).
    ``pod_source_up`` is False while the kubelet (or the trace/simulator's pod list) cannot be read: energy then
    keeps being measured and goes to unallocated.
    """

    node: str
    backend: str
    simulated: bool
    version: str
    epoch: str = ""
    ticks_total: int = 0
    tick_cpu_seconds_total: float = 0.0
    last_tick_unix_s: float = 0.0
    pod_source_up: bool = True
    pod_source_errors_total: int = 0
    reading_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    checkpoint_errors_total: int = 0
    checkpoint_writes_total: int = 0
    started_unix_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ExportView:
    """What one scrape renders: the ledger snapshot and the agent's health, captured together."""

    ledger: LedgerSnapshot
    status: AgentStatus
    label_allowlist: tuple[str, ...] = ()

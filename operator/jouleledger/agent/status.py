"""The agent's own health, as the metrics exporter and ``/healthz`` see it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jouleledger.core.snapshot import LedgerSnapshot

__all__ = ["AgentStatus", "ExportView"]


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

"""Chargeback arithmetic for a period: counter increases from sampled counters, and the idle-energy policies.

Pure (no I/O, no clocks). Energy is integer millijoules; every policy keeps
``sum(row energy) + unallocated == measured`` exactly (whole mJ by the largest-remainder method), and the carbon
and cost of idle energy follow its millijoules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from jouleledger.core.attribution import largest_remainder
from jouleledger.core.units import MAX_COUNTER_MJ

__all__ = [
    "IDLE_POLICIES",
    "Chargeback",
    "ChargebackRow",
    "IdleNode",
    "Usage",
    "allocate_idle",
    "counter_increases",
    "has_reset",
    "joules_to_mj",
]

IDLE_KEEP: Final = "keep"
IDLE_SHARE_WEIGHTED: Final = "share-weighted"
IDLE_SHARE_EVEN: Final = "share-even"
IDLE_POLICIES: Final = (IDLE_KEEP, IDLE_SHARE_WEIGHTED, IDLE_SHARE_EVEN)


def joules_to_mj(energy_j: float) -> int:
    """Whole millijoules of a finite, non-negative joule value that int64 millijoules hold (as every counter)."""
    if not math.isfinite(energy_j) or energy_j < 0:
        raise ValueError(f"energy must be finite and non-negative, got {energy_j!r}")
    if energy_j * 1000 > MAX_COUNTER_MJ:
        raise ValueError(f"energy of {energy_j:g} J is beyond any counter (at most {MAX_COUNTER_MJ / 1000:g} J)")
    return round(energy_j * 1000)


def counter_increases(
    points: Sequence[tuple[float, float]], *, start_s: float, peaks: Mapping[float, float] | None = None
) -> list[tuple[float, float]]:
    """The increase of a counter sampled at ``points`` (time order), as ``(time, increase since the previous point)``.

    A value below the previous one is a counter reset: the increase is the value itself (the counter restarted from
    zero) plus what the counter had gained before it restarted, ``peaks[time] - previous`` where ``peaks`` holds the
    counter's highest raw value in the step that ends at ``time`` (when that peak is above the value at ``time``,
    it is the last value before the reset). A series whose first point comes after ``start_s`` was born inside the
    period and counts its first value as new; a first point at ``start_s`` is the baseline.
    """
    increases: list[tuple[float, float]] = []
    previous: float | None = None
    for time_s, value in points:
        if previous is None:
            if time_s > start_s and value > 0:
                increases.append((time_s, value))
        elif value >= previous:
            if value > previous:
                increases.append((time_s, value - previous))
        else:
            peak = peaks.get(time_s) if peaks is not None else None
            before = peak - previous if peak is not None and peak > value and peak >= previous else 0.0
            if value + before > 0:
                increases.append((time_s, value + before))
        previous = value
    return increases


def has_reset(points: Sequence[tuple[float, float]]) -> bool:
    """Whether the sampled counter goes down anywhere."""
    return any(later[1] < earlier[1] for earlier, later in itertools.pairwise(points))


@dataclass(slots=True)
class Usage:
    """What one row (team, namespace, workload or node) used in the period, before idle energy is shared."""

    energy_mj: int = 0
    gpu_seconds: float = 0.0
    operational_g: float = 0.0
    embodied_g: float = 0.0
    cost: float = 0.0
    by_node_mj: dict[str, int] = field(default_factory=dict)  # the weights of the share-weighted policy
    timeline_mj: dict[float, int] = field(default_factory=dict)  # energy per step, by the step's end time
    extra: dict[str, float] = field(default_factory=dict)  # e.g. requests and tokens of a serving workload

    def add_energy(self, time_s: float, energy_mj: int, node: str | None = None) -> None:
        self.energy_mj += energy_mj
        self.timeline_mj[time_s] = self.timeline_mj.get(time_s, 0) + energy_mj
        if node is not None:
            self.by_node_mj[node] = self.by_node_mj.get(node, 0) + energy_mj


@dataclass(slots=True)
class IdleNode:
    """Energy measured on a node's GPUs that no pod held, with its carbon and cost."""

    energy_mj: int = 0
    operational_g: float = 0.0
    cost: float = 0.0
    measured_mj: int = 0  # everything the node's GPUs drew in the period, when known (0: unknown)


@dataclass(frozen=True, slots=True)
class ChargebackRow:
    key: str
    energy_mj: int  # own energy plus the idle energy shared to this row
    idle_mj: int  # the part of energy_mj that is shared idle energy
    gpu_seconds: float
    operational_g: float
    embodied_g: float
    cost: float
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def carbon_g(self) -> float:
        return self.operational_g + self.embodied_g


@dataclass(frozen=True, slots=True)
class Chargeback:
    policy: str
    rows: tuple[ChargebackRow, ...]  # by energy, largest first
    unallocated: ChargebackRow  # what is left unshared (all idle energy with --idle keep)
    measured_mj: int

    @property
    def total(self) -> ChargebackRow:
        every = (*self.rows, self.unallocated)
        return ChargebackRow(
            "total",
            sum(row.energy_mj for row in every),
            sum(row.idle_mj for row in every),
            math.fsum(row.gpu_seconds for row in every),
            math.fsum(row.operational_g for row in every),
            math.fsum(row.embodied_g for row in every),
            math.fsum(row.cost for row in every),
        )


UNALLOCATED_KEY: Final = "(unallocated: idle GPUs)"


def _weights(policy: str, node: str, keys: list[str], usage: Mapping[str, Usage]) -> list[int] | None:
    if not keys:
        return None
    if policy == IDLE_SHARE_EVEN:
        return [1] * len(keys)
    on_node = [usage[key].by_node_mj.get(node, 0) for key in keys]
    if any(on_node):
        return on_node
    overall = [usage[key].energy_mj for key in keys]  # nobody used the node: share like the whole fleet
    return overall if any(overall) else [1] * len(keys)


def allocate_idle(usage: Mapping[str, Usage], idle: Mapping[str, IdleNode], policy: str) -> Chargeback:
    """Rows for ``usage`` with each node's ``idle`` energy kept on its own line or shared by ``policy``.

    ``share-weighted`` spreads a node's idle energy over the rows in proportion to their energy on that node (rows
    that did not use the node get none; a node nobody used is spread like the whole fleet's energy);
    ``share-even`` spreads it equally over every row. Carbon and cost move with the millijoules.
    """
    if policy not in IDLE_POLICIES:
        raise ValueError(f"unknown idle policy {policy!r}")
    keys = sorted(usage)
    shared_mj = dict.fromkeys(keys, 0)
    shared_g = dict.fromkeys(keys, 0.0)
    shared_cost = dict.fromkeys(keys, 0.0)
    left = IdleNode()
    for node in sorted(idle):
        item = idle[node]
        weights = None if policy == IDLE_KEEP else _weights(policy, node, keys, usage)
        if weights is None or item.energy_mj == 0:
            left.energy_mj += item.energy_mj
            left.operational_g += item.operational_g
            left.cost += item.cost
            continue
        for key, part in zip(keys, largest_remainder(item.energy_mj, weights), strict=True):
            shared_mj[key] += part
            fraction = part / item.energy_mj
            shared_g[key] += item.operational_g * fraction
            shared_cost[key] += item.cost * fraction
    rows = [
        ChargebackRow(
            key,
            usage[key].energy_mj + shared_mj[key],
            shared_mj[key],
            usage[key].gpu_seconds,
            usage[key].operational_g + shared_g[key],
            usage[key].embodied_g,
            usage[key].cost + shared_cost[key],
            dict(usage[key].extra),
        )
        for key in keys
    ]
    rows.sort(key=lambda row: (-row.energy_mj, row.key))
    measured = sum(u.energy_mj for u in usage.values()) + sum(i.energy_mj for i in idle.values())
    unallocated = ChargebackRow(
        UNALLOCATED_KEY, left.energy_mj, left.energy_mj, 0.0, left.operational_g, 0.0, left.cost
    )
    return Chargeback(policy, tuple(rows), unallocated, measured)


def merge_timelines(usages: Iterable[Usage]) -> list[float]:
    """Every step time at which any of ``usages`` has energy, in order."""
    return sorted({time_s for usage in usages for time_s in usage.timeline_mj})

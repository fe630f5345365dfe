"""The operator's self-observation: the accounting loop's counters, and the immutable view ``/metrics`` renders."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from jouleledger.core.deltas import ScrapeDeltas
from jouleledger.core.footprints import RollupSnapshot
from jouleledger.core.frozen import quick_init

__all__ = ["DELAY_BUCKETS_S", "PASS_BUCKETS_S", "NodeIntensity", "OperatorStats", "OperatorView"]

DELAY_BUCKETS_S: Final = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Upper bounds of the completion-to-annotation delay histogram (``+Inf`` is implied)."""

PASS_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0)
"""Upper bounds of the accounting-pass duration histogram (``+Inf`` is implied)."""


@quick_init
@dataclass(frozen=True, slots=True)
class NodeIntensity:
    """The grid intensity applied to a node's latest interval."""

    zone: str
    source: str
    g_per_kwh: float


@dataclass(frozen=True, slots=True)
class OperatorView:
    """Everything one ``/metrics`` scrape of the operator renders, captured together."""

    rollups: RollupSnapshot
    scrapes: Mapping[str, int] = field(default_factory=dict)  # by result: ok | error | timeout | too_large
    agents: int = 0
    counter_resets: Mapping[str, int] = field(default_factory=dict)  # by node
    footprints_written: int = 0
    tampering: int = 0  # Job annotations found edited and restored
    footprint_errors: Mapping[str, int] = field(default_factory=dict)  # by reason
    rejected_samples: Mapping[str, int] = field(default_factory=dict)  # agent samples not trusted, by reason
    intensity_fallbacks: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (provider, reason)
    node_intensity: Mapping[str, NodeIntensity] = field(default_factory=dict)
    delay_bucket_counts: tuple[int, ...] = (0,) * (len(DELAY_BUCKETS_S) + 1)  # per bucket, not cumulative
    delay_sum_s: float = 0.0
    pruned: Mapping[str, int] = field(default_factory=dict)  # objects deleted while a watch was down, by kind
    oldest_tick_age_s: float | None = None  # the latest pass's lag behind its slowest answering agent (None: none)
    pass_bucket_counts: tuple[int, ...] = (0,) * (len(PASS_BUCKETS_S) + 1)  # per bucket, not cumulative
    pass_sum_s: float = 0.0
    last_pass_phases_s: Mapping[str, float] = field(default_factory=dict)  # by phase; empty before the first pass
    completion_reads: int = 0  # reads of only the agents finished Jobs wait for, between passes


class OperatorStats:
    """Mutable counters of the accounting loop (one owner: the loop's task)."""

    def __init__(self) -> None:
        self.scrapes: dict[str, int] = {"ok": 0, "error": 0, "timeout": 0, "too_large": 0}
        self.agents = 0
        self.counter_resets: dict[str, int] = {}
        self.footprints_written = 0
        self.tampering = 0
        self.footprint_errors: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.node_intensity: dict[str, NodeIntensity] = {}
        self.delay_bucket_counts = [0] * (len(DELAY_BUCKETS_S) + 1)
        self.delay_sum_s = 0.0
        self.delays_s: list[float] = []  # every delay, for benchmarks and logs (bounded)
        self.pruned: dict[str, int] = {}
        self.oldest_tick_age_s: float | None = None  # see AnsweredTicks.lag_s
        self.pass_bucket_counts = [0] * (len(PASS_BUCKETS_S) + 1)
        self.pass_sum_s = 0.0
        self.last_pass_phases_s: dict[str, float] = {}
        self.completion_reads = 0

    def count_pruned(self, kind: str, count: int) -> None:
        """Objects a reconciliation found deleted (while a watch was down) and removed from the cluster view."""
        if count:
            self.pruned[kind] = self.pruned.get(kind, 0) + count

    def count_rejected(self, reason: str, count: int = 1) -> None:
        if count:
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    def count_scrape(self, result: str) -> None:
        if result in self.scrapes:
            self.scrapes[result] += 1

    def count_deltas(self, node: str, deltas: ScrapeDeltas) -> None:
        """Count one agent's counter resets and its rejected deltas (they went down, or above the power limit)."""
        if deltas.resets:
            self.counter_resets[node] = self.counter_resets.get(node, 0) + deltas.resets
        self.count_rejected("implausible_energy", deltas.implausible)
        self.count_rejected("counter_regression", deltas.regressions)

    def count_error(self, reason: str, count: int = 1) -> None:
        if count:
            self.footprint_errors[reason] = self.footprint_errors.get(reason, 0) + count

    def observe_delay(self, delay_s: float) -> None:
        delay_s = max(0.0, delay_s)
        self.delay_bucket_counts[bisect.bisect_left(DELAY_BUCKETS_S, delay_s)] += 1
        self.delay_sum_s += delay_s
        if len(self.delays_s) < 100_000:
            self.delays_s.append(delay_s)

    def observe_pass(self, read_s: float, fold_s: float, write_s: float) -> None:
        """One finished pass's wall time by phase (a stepped clock's negative time counts as none): ``read`` the
        agents (and the API relist when due), ``fold`` what they said (with the serving reads and the Jobs'
        decisions), ``write`` footprints and Job annotations. The histogram counts their sum."""
        phases = {"read": max(0.0, read_s), "fold": max(0.0, fold_s), "write": max(0.0, write_s)}
        total_s = phases["read"] + phases["fold"] + phases["write"]
        self.pass_bucket_counts[bisect.bisect_left(PASS_BUCKETS_S, total_s)] += 1
        self.pass_sum_s += total_s
        self.last_pass_phases_s = phases

    def view(self, rollups: RollupSnapshot, fallbacks: Mapping[tuple[str, str], int]) -> OperatorView:
        return OperatorView(
            rollups=rollups,
            scrapes=dict(self.scrapes),
            agents=self.agents,
            counter_resets=dict(self.counter_resets),
            footprints_written=self.footprints_written,
            tampering=self.tampering,
            footprint_errors=dict(self.footprint_errors),
            rejected_samples=dict(self.rejected),
            intensity_fallbacks=dict(fallbacks),
            node_intensity=dict(self.node_intensity),
            delay_bucket_counts=tuple(self.delay_bucket_counts),
            delay_sum_s=self.delay_sum_s,
            pruned=dict(self.pruned),
            oldest_tick_age_s=self.oldest_tick_age_s,
            pass_bucket_counts=tuple(self.pass_bucket_counts),
            pass_sum_s=self.pass_sum_s,
            last_pass_phases_s=dict(self.last_pass_phases_s),
            completion_reads=self.completion_reads,
        )

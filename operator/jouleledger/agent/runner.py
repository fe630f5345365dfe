"""The agent's loop: one tick per interval reads the source, attributes, counts, checkpoints and publishes an
immutable view for ``/metrics``.

With a checkpoint the view holds the counters as of the last durable (fsynced) write, never newer, so that after a
power loss the restored counters are at least anything exported under the same epoch (see
:mod:`jouleledger.agent.persistence`). Without one (``--dry-run``) every start is a new epoch and the view is live.

The runner owns no I/O of its own beyond the checkpoint file; sources, clocks and the checkpoint path are
injected, so the same loop runs under tests with a fake clock, in ``demo`` on the simulated node and in the
DaemonSet on NVML.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jouleledger import __version__
from jouleledger.agent.persistence import CounterStore, new_epoch
from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.accounting import IntervalResult
from jouleledger.core.contract import AGENT_INTERVAL_S
from jouleledger.core.ledger import DEFAULT_RETENTION_S
from jouleledger.core.snapshot import AgentStatus, ExportView, LedgerSnapshot
from jouleledger.core.units import positive
from jouleledger.hardware.base import NodeSource

__all__ = ["AgentRunner", "HealthReporting", "SourceHealth"]

log = logging.getLogger(__name__)

STALL_INTERVALS = 5  # /healthz fails when no tick completed for this many intervals


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What a live source reports about its own inputs after a sample."""

    pods_known: bool = True
    pod_source_errors_total: int = 0
    reading_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    rejected: Mapping[tuple[str, str], int] = field(default_factory=dict)


@runtime_checkable
class HealthReporting(Protocol):
    """A source that can say whether its pod list and GPU readings were complete."""

    def health(self) -> SourceHealth: ...


class AgentRunner:
    """Runs the pipeline over a :class:`NodeSource`, one tick at a time."""

    def __init__(
        self,
        source: NodeSource,
        *,
        backend: str,
        interval_s: float = AGENT_INTERVAL_S,
        retention_s: float = DEFAULT_RETENTION_S,
        checkpoint_path: Path | None = None,
        label_allowlist: tuple[str, ...] = (),
        wall_clock: Callable[[], float] = time.time,
        cpu_clock: Callable[[], float] = time.process_time,
        on_interval: Callable[[IntervalResult], None] | None = None,
        compact_every: int = 300,
        journal_fsync_s: float = 0.0,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        positive("interval_s", interval_s)
        self.source = source
        self.backend = backend
        self.interval_s = interval_s
        self.checkpoint_path = checkpoint_path
        self.label_allowlist = label_allowlist
        self._wall = wall_clock
        self._on_interval = on_interval
        self._cpu = cpu_clock
        self.header = source.header()
        self.pipeline = Pipeline(self.header, retention_s=retention_s, journaling=checkpoint_path is not None)
        self._ticks = 0
        self._tick_cpu_s = 0.0
        self._health = SourceHealth()
        self._started_s = wall_clock()
        self._last_tick_s = 0.0
        self._lock = threading.RLock()
        self._store: CounterStore | None = None
        self.epoch = new_epoch()
        if checkpoint_path is not None:
            self._store = CounterStore(
                checkpoint_path,
                backend=backend,
                node=self.header.node,
                compact_every=compact_every,
                fsync_s=journal_fsync_s,
                wall_clock=wall_clock,
                monotonic_clock=monotonic_clock,
            )
            self._store.restore(self.pipeline)
            self.epoch = self._store.epoch
            self._ticks = self._store.ticks
        # The last durable state that was captured, and whether the state right now is durable. Journals that
        # fsync every tick (the default) make every tick durable: the snapshot is then taken lazily, by the view.
        self._durable: tuple[LedgerSnapshot, int] = (self.pipeline.snapshot(), self._ticks)
        self._now_durable = True
        self._capture_eagerly = checkpoint_path is not None and journal_fsync_s > 0
        self._view = self._build_view()
        self._view_tick = self._ticks

    # --- checkpoint --------------------------------------------------------------------------------------------

    @property
    def store(self) -> CounterStore | None:
        """Where the counters are kept (None without a checkpoint path)."""
        return self._store

    def save_checkpoint(self) -> None:
        """Write the whole state now (at shutdown); failures are counted and logged, never fatal."""
        if self._store is not None:
            if self._store.save_full(self.pipeline, self._ticks):
                self._mark_durable()
            self._store.close()

    def close(self) -> None:
        """Release the checkpoint journal (the source belongs to the caller)."""
        if self._store is not None:
            self._store.close()

    # --- ticks -------------------------------------------------------------------------------------------------

    def tick(self) -> bool:
        """Read one sample and account for it; False when the source is exhausted."""
        with self._lock:
            return self._tick_locked()

    def _tick_locked(self) -> bool:
        cpu_start = self._cpu()
        sample = self.source.sample()
        if sample is None:
            return False
        if isinstance(self.source, HealthReporting):
            self._health = self.source.health()
        result = self.pipeline.step(sample, pods_known=self._health.pods_known)
        if self._on_interval is not None:
            self._on_interval(result)
        self._ticks += 1
        self._now_durable = False
        if self._store is None or self._store.record_tick(self.pipeline, self._ticks):
            self._mark_durable()
        self._last_tick_s = self._wall()
        self._tick_cpu_s += self._cpu() - cpu_start
        return True

    def _mark_durable(self) -> None:
        """The counters as they are now are safe on disk (or there is no disk): exports may show them."""
        self._now_durable = True
        if self._capture_eagerly:  # the next ticks may not be durable: keep this state for the views until then
            self._durable = (self.pipeline.snapshot(), self._ticks)

    def _build_view(self) -> ExportView:
        if self._now_durable and self._durable[1] != self._ticks:
            self._durable = (self.pipeline.snapshot(), self._ticks)
        snapshot, durable_ticks = self._durable
        rejected: Counter[tuple[str, str]] = Counter(snapshot.rejected)
        rejected.update(self._health.rejected)
        status = AgentStatus(
            node=self.header.node,
            backend=self.backend,
            simulated=self.source.simulated,
            version=__version__,
            epoch=self.epoch,
            ticks_total=durable_ticks,
            tick_cpu_seconds_total=self._tick_cpu_s,
            last_tick_unix_s=self._last_tick_s,
            pod_source_up=self._health.pods_known,
            pod_source_errors_total=self._health.pod_source_errors_total,
            reading_errors=dict(self._health.reading_errors),
            checkpoint_errors_total=0 if self._store is None else self._store.errors,
            checkpoint_writes_total=0 if self._store is None else self._store.writes,
            started_unix_s=self._started_s,
        )
        return ExportView(replace(snapshot, rejected=dict(rejected)), status, self.label_allowlist)

    def view(self) -> ExportView:
        """An immutable view of the counters as of the latest durable tick (what a scrape renders).

        Built on demand, at most once per tick, under the same lock as the tick: a scrape never sees a
        half-applied tick, and ticks pay nothing for views nobody reads.
        """
        with self._lock:
            if self._view_tick != self._ticks:
                self._view = self._build_view()
                self._view_tick = self._ticks
            return self._view

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: fails only when the loop has stalled; a lost kubelet or GPU is reported as degraded."""
        view = self.view()
        status = view.status
        now = self._wall()
        last = self._last_tick_s or self._started_s
        problems = []
        stalled = now - last > STALL_INTERVALS * self.interval_s + 1.0
        if stalled:
            problems.append(f"no tick completed for {now - last:.1f} s")
        if not status.pod_source_up:
            problems.append("pod source (kubelet PodResources) unreachable: energy is counted as unallocated")
        if status.reading_errors:
            problems.append(f"{sum(status.reading_errors.values())} GPU read errors so far")
        body = {
            "status": "stalled" if stalled else ("degraded" if problems else "ok"),
            "node": status.node,
            "backend": status.backend,
            "simulated": status.simulated,
            "ticks": status.ticks_total,
            "problems": problems,
        }
        return not stalled, body

    def run(self, stop: threading.Event, *, max_ticks: int | None = None) -> int:
        """Tick every ``interval_s`` on a fixed cadence until ``stop`` is set, the source ends or ``max_ticks``."""
        ticks = 0
        next_at = time.monotonic()
        while not stop.is_set():
            if not self.tick():
                log.info("source exhausted after %d ticks", ticks)
                break
            ticks += 1
            if max_ticks is not None and ticks >= max_ticks:
                break
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (suspended, overloaded): skip missed ticks rather than bursting
                next_at = time.monotonic()
                delay = 0.0
            stop.wait(delay)
        return ticks

"""Keeping the agent's counters across restarts: a full checkpoint every few minutes, a journal line every tick.

On start the checkpoint is restored and its journal replayed, so a restart or crash loses at most the tick in
flight and never counts one twice (journal entries hold absolute values, and the GPU baselines travel with the
counters they belong to). Anything that cannot be trusted is reported, counted, moved aside and not used.

The counters' identity is an *epoch*: a random id made whenever the counters start from zero (no checkpoint, or
one that cannot be used) and kept in the checkpoint, with the tick count within the epoch. Every write says
whether it is durable (fsynced), so that the agent exports only what a power loss cannot take back.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jouleledger.agent import checkpoint
from jouleledger.agent.journal import Journal, journal_path, read_journal
from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.ledger import LedgerStateError
from jouleledger.core.units import mj_to_kwh

__all__ = ["CHECKPOINT_FORMAT", "CounterStore", "new_epoch"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "jouleledger-agent"
EPOCH_HEX_DIGITS = 16


def new_epoch() -> str:
    """A fresh counter identity: 16 random hex digits."""
    return secrets.token_hex(EPOCH_HEX_DIGITS // 2)


def _valid_epoch(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == EPOCH_HEX_DIGITS and all(char in "0123456789abcdef" for char in value)
    )


class CounterStore:
    """Persists one node's :class:`Pipeline` state at ``path`` (plus ``<path>.journal``).

    ``compact_every`` ticks the whole state is rewritten atomically and the journal restarts; in between each
    tick appends only what changed. Failures never stop the agent: they are logged and counted in ``errors``, and
    the next tick writes a full checkpoint again.
    """

    def __init__(
        self,
        path: Path,
        *,
        backend: str,
        node: str,
        compact_every: int = 300,
        fsync_s: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if compact_every < 1:
            raise ValueError(f"compact_every must be at least 1, got {compact_every}")
        self.path = path
        self.backend = backend
        self.node = node
        self.compact_every = compact_every
        self._wall = wall_clock
        self._journal = Journal(journal_path(path), fsync_s=fsync_s, clock=monotonic_clock)
        self._since_full = compact_every  # no full checkpoint of this process yet: the first tick writes one
        self.writes = 0
        self.errors = 0
        self.epoch = new_epoch()  # replaced by the checkpoint's own when one is restored
        self.ticks = 0  # ticks within the epoch, as restored

    @property
    def journal(self) -> Journal:
        return self._journal

    # --- start-up ----------------------------------------------------------------------------------------------

    def restore(self, pipeline: Pipeline) -> None:
        """Load the checkpoint and replay its journal into ``pipeline``; start from zero when not trustworthy.

        Sets :attr:`epoch` and :attr:`ticks`: the checkpoint's when it was restored, a new epoch and 0 otherwise.
        What was restored is made durable before this returns (journal lines read back may still have been only
        in the page cache after a crash of the process).
        """
        payload = self._load()
        if payload is None:
            return
        try:
            ticks = _checked_ticks(payload.get("ticks", 0))
            pipeline.restore(payload["pipeline"])
        except (LedgerStateError, KeyError, TypeError, ValueError) as error:
            self._bad(f"checkpoint {self.path} cannot be restored ({error})", self.path)
            return
        epoch = payload.get("epoch")
        if not _valid_epoch(epoch):
            # A checkpoint of an agent before epochs: the counters continue, under an epoch of their own now.
            log.info("checkpoint %s has no epoch; counting on under the new epoch %s", self.path, self.epoch)
        else:
            self.epoch = str(epoch)
        generation = str(payload.get("generation", ""))
        replay = read_journal(self._journal.path, generation)
        applied = 0
        for entry in replay.entries:
            try:
                pipeline.apply_journal_entry(entry)
                ticks = max(ticks, _checked_ticks(entry.get("ticks", ticks + 1)))
            except (LedgerStateError, ValueError) as error:
                replay.error = f"journal entry {applied + 1} cannot be applied ({error})"
                break
            applied += 1
        self.ticks = ticks
        if applied:
            self._sync_journal()
        if replay.error is not None:
            self.errors += 1
            log.error("%s: keeping the %d entries before it", replay.error, applied)
        elif replay.torn:
            log.warning("journal %s ended in a torn line: the tick in flight at the stop is lost", self._journal.path)
        snapshot = pipeline.ledger.snapshot()
        log.info(
            "restored %s (+%d journal ticks): %d pods, %.6f kWh measured so far",
            self.path,
            applied,
            len(snapshot.pods),
            mj_to_kwh(snapshot.measured_mj),
        )

    def _sync_journal(self) -> None:
        try:
            with self._journal.path.open("rb+") as handle:
                os.fsync(handle.fileno())
        except OSError as error:  # the first tick's full checkpoint makes the state durable instead
            self.errors += 1
            log.error("cannot fsync journal %s: %s", self._journal.path, error)

    def _load(self) -> dict[str, Any] | None:
        try:
            payload = checkpoint.load(self.path)
        except checkpoint.CorruptCheckpointError as error:
            self._bad(f"checkpoint {self.path} is corrupt ({error})", self.path)
            return None
        except OSError as error:
            self.errors += 1
            log.error("cannot read checkpoint %s: %s; starting from zero", self.path, error)
            return None
        if payload is None:
            log.info("no checkpoint at %s; starting from zero", self.path)
            return None
        if payload.get("format") != CHECKPOINT_FORMAT or payload.get("backend") != self.backend:
            log.warning(
                "checkpoint %s was written by backend %r, this agent runs %r: not restoring it",
                self.path,
                payload.get("backend"),
                self.backend,
            )
            return None
        return payload

    def _bad(self, message: str, path: Path) -> None:
        self.errors += 1
        log.error("%s; starting from zero", message)
        try:
            moved = checkpoint.quarantine(path, self._wall())
        except OSError as error:
            log.error("cannot move %s aside (%s); it will be overwritten", path, error)
        else:
            log.warning("kept the bad checkpoint for inspection as %s", moved)

    # --- every tick --------------------------------------------------------------------------------------------

    def record_tick(self, pipeline: Pipeline, ticks: int) -> bool:
        """Persist the tick just applied (``ticks`` within the epoch): a journal line, or a full checkpoint when
        one is due. True when everything up to this tick is now durable (fsynced)."""
        if self._since_full >= self.compact_every:
            return self.save_full(pipeline, ticks)
        try:
            entry = pipeline.journal_entry()
            entry["ticks"] = ticks
            durable = self._journal.append(entry)
            self._since_full += 1
            self.writes += 1
        except (OSError, ValueError, OverflowError) as error:
            self.errors += 1
            self._since_full = self.compact_every  # the next tick rewrites everything
            log.error("cannot append to journal %s: %s", self._journal.path, error)
            return False
        return durable

    def save_full(self, pipeline: Pipeline, ticks: int) -> bool:
        """Rewrite the whole state atomically under a new generation, then restart the journal; True when the
        state is now durable (the checkpoint was written and fsynced)."""
        generation = secrets.token_hex(8)
        try:
            payload: dict[str, Any] = {
                "format": CHECKPOINT_FORMAT,
                "backend": self.backend,
                "node": self.node,
                "generation": generation,
                "epoch": self.epoch,
                "ticks": ticks,
                "saved_unix_s": self._wall(),
                "pipeline": pipeline.to_state(),
            }
            checkpoint.save(self.path, payload)
        except (OSError, ValueError, OverflowError) as error:
            self.errors += 1
            self._since_full = self.compact_every
            log.error("cannot write checkpoint %s: %s", self.path, error)
            return False
        self._since_full = 0
        self.writes += 1
        try:
            self._journal.reset(generation)
        except OSError as error:  # the checkpoint holds everything; the next tick writes a full one again
            self.errors += 1
            self._since_full = self.compact_every
            log.error("cannot restart journal %s: %s", self._journal.path, error)
        return True

    def close(self) -> None:
        self._journal.close()


def _checked_ticks(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"tick count must be a non-negative integer, got {value!r}")
    return value

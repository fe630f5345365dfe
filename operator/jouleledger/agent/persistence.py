"""Keeping the agent's counters across restarts: a full checkpoint every few minutes, a journal line every tick.

On start the checkpoint is restored and its journal replayed, so a restart or crash loses at most the tick in
flight and never counts one twice (journal entries hold absolute values, and the GPU baselines travel with the
counters they belong to). Anything that cannot be trusted is reported, counted, moved aside and not used.
"""

from __future__ import annotations

import logging
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

__all__ = ["CHECKPOINT_FORMAT", "CounterStore"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "jouleledger-agent"


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
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if compact_every < 1:
            raise ValueError(f"compact_every must be at least 1, got {compact_every}")
        self.path = path
        self.backend = backend
        self.node = node
        self.compact_every = compact_every
        self._wall = wall_clock
        self._journal = Journal(journal_path(path))
        self._since_full = compact_every  # no full checkpoint of this process yet: the first tick writes one
        self.writes = 0
        self.errors = 0

    # --- start-up ----------------------------------------------------------------------------------------------

    def restore(self, pipeline: Pipeline) -> None:
        """Load the checkpoint and replay its journal into ``pipeline``; start from zero when not trustworthy."""
        payload = self._load()
        if payload is None:
            return
        try:
            pipeline.restore(payload["pipeline"])
        except (LedgerStateError, KeyError, TypeError) as error:
            self._bad(f"checkpoint {self.path} cannot be restored ({error})", self.path)
            return
        generation = str(payload.get("generation", ""))
        replay = read_journal(self._journal.path, generation)
        applied = 0
        for entry in replay.entries:
            try:
                pipeline.apply_journal_entry(entry)
            except LedgerStateError as error:
                replay.error = f"journal entry {applied + 1} cannot be applied ({error})"
                break
            applied += 1
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

    def record_tick(self, pipeline: Pipeline) -> None:
        """Persist the tick just applied: a journal line, or a full checkpoint when one is due."""
        if self._since_full >= self.compact_every:
            self.save_full(pipeline)
            return
        try:
            self._journal.append(pipeline.journal_entry())
            self._since_full += 1
            self.writes += 1
        except (OSError, ValueError) as error:
            self.errors += 1
            self._since_full = self.compact_every  # the next tick rewrites everything
            log.error("cannot append to journal %s: %s", self._journal.path, error)

    def save_full(self, pipeline: Pipeline) -> None:
        """Rewrite the whole state atomically under a new generation, then restart the journal."""
        generation = secrets.token_hex(8)
        payload: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "backend": self.backend,
            "node": self.node,
            "generation": generation,
            "saved_unix_s": self._wall(),
            "pipeline": pipeline.to_state(),
        }
        try:
            checkpoint.save(self.path, payload)
            self._journal.reset(generation)
        except (OSError, ValueError) as error:
            self.errors += 1
            log.error("cannot write checkpoint %s: %s", self.path, error)
            return
        self._since_full = 0
        self.writes += 1

    def close(self) -> None:
        self._journal.close()

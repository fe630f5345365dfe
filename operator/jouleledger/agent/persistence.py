"""Keeping the agent's counters across restarts: a full checkpoint every few minutes, a journal line every tick.

On start the checkpoint is restored and its journal replayed, so a restart or crash loses at most the tick in
flight and never counts one twice (journal entries hold absolute values, and the GPU baselines travel with the
counters they belong to). Anything that cannot be trusted is reported, counted, moved aside and not used.

The counters' identity is an *epoch*: a random id made whenever the counters start from zero (no checkpoint, or
one that cannot be used) and kept in the checkpoint, with the tick count within the epoch. Every write says
whether it is durable (fsynced), so that the agent exports only what a power loss cannot take back.

On-disk format (described here once, implemented in this module)::

    <path>          checkpoint file, one line (atomic replace, sha256 of the payload)
      {"format": "jouleledger-checkpoint", "version": 1, "sha256": "<hex>", "payload": {
         "format": "jouleledger-agent", "backend": "nvml|replay|simulated", "generation": "<16 hex>",
         "epoch": "<16 hex>", "ticks": <ticks within the epoch>, "saved_unix_s": <float>,
         "pipeline": {"version": 2,                      (jouleledger.agent.pipeline; 1 is still read)
                      "ledger": {"version": 2, "node": ..., "t_s", "pods", "devices", "gpus"},
                                                         (jouleledger.core.ledger; 1 is still read)
                      "baselines": {uuid: {"t_s", "energy_mj", "power_mw"}},
                      "rejected": [[uuid, reason, count], ...]}}}
    <path>.journal  one line per tick since that checkpoint
      {"format": "jouleledger-journal", "version": 2, "generation": "<the checkpoint's>"}
      <crc32 hex> {"ledger": <ledger changes, absolute values>, "baselines": ..., "rejected": ..., "ticks": n}

Versions: the checkpoint envelope's own (1) changes only with the envelope; the pipeline, ledger and journal
versions (2) changed together when the energy from power integration was added (version 1 of each is still
read). The node is stored once, in the ledger state (a checkpoint of another node is not restored); writers before
the epoch also wrote ``node`` into the payload, which is ignored.

The checkpoint file: ``sha256`` is the digest of the payload's canonical JSON (sorted keys, no spaces, no
NaN/Infinity). A write goes to a temporary file in the same directory, is flushed and fsynced, replaces the
checkpoint with ``os.replace`` (atomic on POSIX) and then fsyncs the directory so that the rename itself survives a
power loss. A crash at any moment leaves either the previous checkpoint or the new one, never a mixture. One
process writes a given path.

The journal: rewriting the whole checkpoint every tick costs milliseconds of CPU on a busy node; appending what
changed costs a fraction of that. Entries carry absolute values (never increments), so applying one twice cannot
double-count. Reading stops at the first line that is torn (a crash mid-append: the tick in flight is lost, as
expected) or corrupt (reported); a journal of another generation is stale (its ticks are already in the
checkpoint) and ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.ledger import LedgerStateError
from jouleledger.core.units import mj_to_kwh

__all__ = [
    "CHECKPOINT_FORMAT",
    "CorruptCheckpointError",
    "CounterStore",
    "Journal",
    "JournalRead",
    "decode",
    "encode",
    "journal_path",
    "load",
    "new_epoch",
    "quarantine",
    "read_journal",
    "save",
]

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


# --- the checkpoint file ---------------------------------------------------------------------------------------


CHECKPOINT_FILE_FORMAT: Final = "jouleledger-checkpoint"
CHECKPOINT_FILE_VERSION: Final = 1

StrPath = str | os.PathLike[str]


class CorruptCheckpointError(Exception):
    """The checkpoint file exists but cannot be trusted.

    ``reason`` is a short machine-readable kind for counting: ``truncated``, ``bad_json``,
    ``not_a_checkpoint``, ``unknown_version`` or ``checksum_mismatch``; the message explains it for humans.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def encode(payload: dict[str, Any]) -> bytes:
    """The checkpoint file's bytes for ``payload`` (a JSON-serialisable dict with string keys).

    Raises ``TypeError`` for a non-dict or a value JSON cannot hold and ``ValueError`` for NaN or infinities.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    canonical = _canonical(payload)
    header = json.dumps(
        {
            "format": CHECKPOINT_FILE_FORMAT,
            "version": CHECKPOINT_FILE_VERSION,
            "sha256": hashlib.sha256(canonical).hexdigest(),
        },
        separators=(",", ":"),
    )
    # Splice the canonical payload in rather than dumping it twice: the bytes hashed are the bytes written.
    return header[:-1].encode("utf-8") + b',"payload":' + canonical + b"}\n"


def decode(data: bytes, *, source: str = "checkpoint") -> dict[str, Any]:
    """The payload in a checkpoint file's bytes; raises :class:`CorruptCheckpointError` unless intact."""
    if not data:
        raise CorruptCheckpointError("truncated", f"{source} is empty")
    if not data.endswith(b"\n"):
        raise CorruptCheckpointError(
            "truncated", f"{source} does not end with a newline ({len(data)} bytes): torn or truncated write"
        )
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CorruptCheckpointError("bad_json", f"{source} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FILE_FORMAT:
        raise CorruptCheckpointError("not_a_checkpoint", f"{source} is not a {CHECKPOINT_FILE_FORMAT} file")
    version = document.get("version")
    if version != CHECKPOINT_FILE_VERSION or isinstance(version, bool):
        raise CorruptCheckpointError(
            "unknown_version", f"{source} has version {version!r}; this agent reads version {CHECKPOINT_FILE_VERSION}"
        )
    payload = document.get("payload")
    expected = document.get("sha256")
    if not isinstance(payload, dict) or not isinstance(expected, str):
        raise CorruptCheckpointError("not_a_checkpoint", f"{source} lacks a payload object or its sha256")
    try:
        actual = hashlib.sha256(_canonical(payload)).hexdigest()
    except ValueError as error:  # e.g. 1e999 parsed as infinity: never written by encode()
        raise CorruptCheckpointError("checksum_mismatch", f"{source} payload is not canonical: {error}") from error
    if actual != expected:
        raise CorruptCheckpointError(
            "checksum_mismatch", f"{source} payload sha256 is {actual}, the file says {expected}"
        )
    return payload


def save(path: StrPath, payload: dict[str, Any]) -> None:
    """Atomically replace the checkpoint at ``path`` with ``payload`` (see the module docstring).

    The directory must exist. On error the previous checkpoint is left untouched and the error propagates.
    """
    target = Path(path)
    data = encode(payload)
    temp = target.with_name(f".{target.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def load(path: StrPath) -> dict[str, Any] | None:
    """The payload last saved at ``path``; None when there is no checkpoint.

    Raises :class:`CorruptCheckpointError` when the file exists but is not intact (see its ``reason``), and
    ``OSError`` when it cannot be read at all (permissions, a directory): that is not corruption, so the file
    should not be quarantined.
    """
    target = Path(path)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    return decode(data, source=f"checkpoint {str(target)!r}")


def quarantine(path: StrPath, now_s: float) -> Path:
    """Move a corrupt checkpoint aside to ``<path>.corrupt-<unix seconds>`` (``-1``, ``-2``... when taken), so
    that the next save starts clean and the bad file stays for inspection. Returns the new path."""
    target = Path(path)
    stamp = int(now_s)
    candidate = target.with_name(f"{target.name}.corrupt-{stamp}")
    attempt = 0
    while candidate.exists():
        attempt += 1
        candidate = target.with_name(f"{target.name}.corrupt-{stamp}-{attempt}")
    os.rename(target, candidate)
    _fsync_directory(target.parent)
    return candidate


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the journal ---------------------------------------------------------------------------------------------


JOURNAL_FORMAT: Final = "jouleledger-journal"
JOURNAL_VERSION: Final = 2
JOURNAL_READABLE_VERSIONS: Final = (1, 2)  # 1: entries without the energy from power integration (read as unchanged)


def journal_path(checkpoint_path: Path) -> Path:
    """Where the journal of ``checkpoint_path`` lives (beside it)."""
    return checkpoint_path.with_name(checkpoint_path.name + ".journal")


def _journal_header(generation: str) -> bytes:
    return json.dumps({"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "generation": generation}).encode() + b"\n"


def _journal_line(entry: dict[str, Any]) -> bytes:
    body = json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


@dataclass(slots=True)
class JournalRead:
    """What a journal held for one generation: the intact entries, in order, and why reading stopped early.

    ``torn`` is True when the last line was cut short (a crash mid-append); ``error`` names corruption (a bad
    line followed by more data, a bad header) and ``stale`` a journal of another generation.
    """

    entries: list[dict[str, Any]] = field(default_factory=list)
    torn: bool = False
    stale: bool = False
    error: str | None = None


def read_journal(path: Path, generation: str) -> JournalRead:
    """The entries of ``path`` that belong to ``generation``; never raises for content (see :class:`JournalRead`)."""
    result = JournalRead()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return result
    lines = data.split(b"\n")
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if (
        not isinstance(header, dict)
        or header.get("format") != JOURNAL_FORMAT
        or header.get("version") not in JOURNAL_READABLE_VERSIONS
        or isinstance(header.get("version"), bool)
    ):
        if len(lines) == 1:  # the header itself was torn while being written
            result.torn = True
        else:
            result.error = f"{path} does not start with a {JOURNAL_FORMAT} version {JOURNAL_VERSION} header"
        return result
    if header.get("generation") != generation:
        result.stale = True
        return result
    body_lines = lines[1:]
    for index, line in enumerate(body_lines):
        is_last = index == len(body_lines) - 1
        if is_last and not line:
            break  # the file ends with a newline: every line was complete
        entry = _parse_line(line)
        if entry is None:
            if is_last:
                result.torn = True  # no newline after it: the append in flight when the agent stopped
            else:
                result.error = f"{path} line {index + 2} is corrupt (checksum or JSON)"
            break
        result.entries.append(entry)
    return result


def _parse_line(line: bytes) -> dict[str, Any] | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        entry = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


class Journal:
    """Appends entries for one generation; the file is flushed every append and fsynced every ``fsync_s``.

    A flushed line survives a crash of the agent process (the kernel holds it); ``fsync_s`` bounds what a power
    loss of the node can take.
    """

    def __init__(self, path: Path, *, fsync_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.fsync_s = fsync_s
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._synced_at = 0.0
        self.synced_size = 0  # bytes of the file known to be on disk (fsynced); what survives a power loss

    def reset(self, generation: str) -> None:
        """Start an empty journal for ``generation`` (atomically replacing the old one)."""
        self.close()
        temp = self.path.with_name(f".{self.path.name}.tmp")
        with temp.open("wb") as handle:
            handle.write(_journal_header(generation))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        self._file = self.path.open("ab")
        self._synced_at = self._clock()
        self.synced_size = self._file.tell()

    def append(self, entry: dict[str, Any]) -> bool:
        """Add one entry; True when it is on disk (fsynced) with all before it, False when only flushed.

        Raises ``OSError`` or ``ValueError`` (then the caller writes a full checkpoint).
        """
        if self._file is None:
            raise OSError(f"journal {self.path} is not open")
        self._file.write(_journal_line(entry))
        self._file.flush()
        now = self._clock()
        if now - self._synced_at >= self.fsync_s:
            os.fsync(self._file.fileno())
            self._synced_at = now
            self.synced_size = self._file.tell()
            return True
        return False

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None


# --- the agent's counters on disk ----------------------------------------------------------------------------


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
                entry_ticks = _checked_ticks(entry.get("ticks", ticks + 1))  # checked before anything is applied
                pipeline.apply_journal_entry(entry)
                ticks = max(ticks, entry_ticks)
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
            payload = load(self.path)
        except CorruptCheckpointError as error:
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
            moved = quarantine(path, self._wall())
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
                "generation": generation,
                "epoch": self.epoch,
                "ticks": ticks,
                "saved_unix_s": self._wall(),
                "pipeline": pipeline.to_state(),
            }
            save(self.path, payload)
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

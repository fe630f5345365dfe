"""The checkpoint's journal: one small line per tick with the counters that changed since the last line.

Rewriting the whole checkpoint every tick costs milliseconds of CPU on a busy node; appending what changed costs a
fraction of that. The full checkpoint (:mod:`jouleledger.agent.checkpoint`) is rewritten every few minutes and
names a *generation*; the journal beside it starts with that generation and then holds one line per tick::

    {"format": "jouleledger-journal", "version": 2, "generation": "<id>"}
    <crc32 of the JSON, 8 hex digits> <JSON entry>

Entries carry absolute values (never increments), so applying one twice cannot double-count. Reading stops at the
first line that is torn (a crash mid-append: the tick in flight is lost, as expected) or corrupt (reported); a
journal of another generation is stale (its ticks are already in the checkpoint) and ignored. Version 1 journals
(before the energy from power integration was kept) are still read.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

__all__ = ["FORMAT", "Journal", "JournalRead", "journal_path", "read_journal"]

FORMAT: Final = "jouleledger-journal"
VERSION: Final = 2
READABLE_VERSIONS: Final = (1, 2)  # 1: entries without the energy from power integration (read as unchanged)


def journal_path(checkpoint_path: Path) -> Path:
    """Where the journal of ``checkpoint_path`` lives (beside it)."""
    return checkpoint_path.with_name(checkpoint_path.name + ".journal")


def _header(generation: str) -> bytes:
    return json.dumps({"format": FORMAT, "version": VERSION, "generation": generation}).encode() + b"\n"


def _line(entry: dict[str, Any]) -> bytes:
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
        or header.get("format") != FORMAT
        or header.get("version") not in READABLE_VERSIONS
        or isinstance(header.get("version"), bool)
    ):
        if len(lines) == 1:  # the header itself was torn while being written
            result.torn = True
        else:
            result.error = f"{path} does not start with a {FORMAT} version {VERSION} header"
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
            handle.write(_header(generation))
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
        self._file.write(_line(entry))
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

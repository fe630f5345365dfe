"""Crash-safe, self-verifying checkpoint file for the agent's cumulative counters.

Agent restarts (upgrades, evictions, OOM kills) must not lose per-pod totals, so it periodically writes
its state here and reads it back at start. The payload is an opaque JSON object owned by the caller; this
module only guarantees that :func:`load` returns exactly one complete payload that :func:`save` wrote, or
says clearly that it cannot.

File format (one line of UTF-8 JSON, then a newline)::

    {"format": "jouleledger-checkpoint", "version": 1, "sha256": "<hex>", "payload": {...}}

``sha256`` is the digest of the payload's canonical JSON (sorted keys, no spaces, no NaN/Infinity). A write
goes to a temporary file in the same directory, is flushed and fsynced, replaces the checkpoint with
``os.replace`` (atomic on POSIX) and then fsyncs the directory so that the rename itself survives a power
loss. A crash at any moment leaves either the previous checkpoint or the new one, never a mixture. One
process writes a given path. The agent's whole on-disk format is described in :mod:`jouleledger.agent.persistence`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Final

__all__ = [
    "FORMAT",
    "VERSION",
    "CorruptCheckpointError",
    "decode",
    "encode",
    "load",
    "quarantine",
    "save",
]

FORMAT: Final = "jouleledger-checkpoint"
VERSION: Final = 1

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
        {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(canonical).hexdigest()},
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
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CorruptCheckpointError("not_a_checkpoint", f"{source} is not a {FORMAT} file")
    version = document.get("version")
    if version != VERSION or isinstance(version, bool):
        raise CorruptCheckpointError(
            "unknown_version", f"{source} has version {version!r}; this agent reads version {VERSION}"
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

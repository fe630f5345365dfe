"""The replay backend: a recorded JSONL trace (version 1, docs/trace-format.md) played back sample by sample;
``-`` reads standard input."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jouleledger.core.model import NodeHeader, Sample
from jouleledger.core.tracefile import read_trace
from jouleledger.hardware.base import BackendError

__all__ = ["ReplaySource"]


class ReplaySource:
    """A :class:`~jouleledger.hardware.base.NodeSource` over a trace file.

    The header is read when the source opens; samples are parsed lazily, so a malformed line raises
    :class:`~jouleledger.core.tracefile.TraceError` (naming its line number) when it is reached.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._owned = str(path) != "-"
        try:
            self._file: BinaryIO = self.path.open("rb") if self._owned else sys.stdin.buffer
        except OSError as error:
            raise BackendError(f"cannot open trace {self.path}: {error.strerror or error}") from error
        try:
            self._header, self._samples = read_trace(self._file)
        except Exception:
            self.close()
            raise

    @property
    def simulated(self) -> bool:
        return False

    def header(self) -> NodeHeader:
        return self._header

    def sample(self) -> Sample | None:
        return next(self._samples, None)

    def __iter__(self) -> Iterator[Sample]:
        return self._samples

    def close(self) -> None:
        if self._owned:
            self._file.close()

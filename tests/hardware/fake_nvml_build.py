"""Building the fake ``libnvidia-ml`` (``fake_nvml/fake_nvml.c``) and handing it to the real bindings: shared by
the test fixtures and ``bench/nvml_read.py``, and the handle tests drive it through. No pytest here."""

from __future__ import annotations

import ctypes
import subprocess
import textwrap
from pathlib import Path
from typing import Any

__all__ = [
    "FAKE_NVML_SONAME",
    "FAKE_NVML_SOURCE",
    "STATE_ENV",
    "FakeNvmlState",
    "build_fake_nvml",
    "call_counter",
    "install",
]

FAKE_NVML_SOURCE = Path(__file__).parent / "fake_nvml" / "fake_nvml.c"
FAKE_NVML_SONAME = "libjouleledger-fake-nvml.so"
STATE_ENV = "JOULELEDGER_FAKE_NVML"


def build_fake_nvml(gcc: str, library: Path) -> str | None:
    """Compile the fake NVML into ``library`` (warnings are errors); gcc's messages on failure, else None."""
    command = [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", f"-Wl,-soname,{FAKE_NVML_SONAME}"]
    result = subprocess.run(
        [*command, "-o", str(library), str(FAKE_NVML_SOURCE)], capture_output=True, text=True, check=False
    )
    return result.stderr if result.returncode != 0 else None


def install(pynvml: Any, library: ctypes.CDLL) -> None:
    """Make the ``pynvml`` bindings call ``library`` (their module-level handle, and an empty pointer cache)."""
    pynvml.nvmlLib = library
    pynvml._nvmlGetFunctionPointer_cache = {}


def call_counter(library: ctypes.CDLL) -> Any:
    """The library's ``fake_nvml_calls(name)``: calls of one entry point (bytes), or of all (None)."""
    function = library.fake_nvml_calls
    function.restype = ctypes.c_ulonglong
    function.argtypes = [ctypes.c_char_p]
    return function


class FakeNvmlState:
    """The fake library's state file (see the comment at the top of ``fake_nvml.c`` for its directives) and, where
    given, the loaded library, whose per-entry-point call counters :meth:`calls` reads."""

    def __init__(self, path: Path, library: ctypes.CDLL | None = None) -> None:
        self.path = path
        self.library = library

    def write(self, text: str) -> None:
        self.path.write_text(textwrap.dedent(text).strip() + "\n")

    def calls(self, entry_point: str | None = None) -> int:
        """Calls of the library's ``entry_point`` (as exported, e.g. ``nvmlDeviceGetPowerUsage``; all when None)
        since the last :meth:`reset_calls`."""
        assert self.library is not None, "no library loaded"
        return int(call_counter(self.library)(None if entry_point is None else entry_point.encode()))

    def reset_calls(self) -> None:
        assert self.library is not None, "no library loaded"
        self.library.fake_nvml_reset_calls()

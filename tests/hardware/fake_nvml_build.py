"""Building the fake ``libnvidia-ml`` (``fake_nvml/fake_nvml.c``) and handing it to the real bindings: shared by
the test fixtures and ``bench/nvml_read.py``. No pytest here."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["FAKE_NVML_SONAME", "FAKE_NVML_SOURCE", "STATE_ENV", "build_fake_nvml", "call_counter", "install"]

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

"""Fixtures for the hardware backends: the fake ``libnvidia-ml`` built from C, installed under the real bindings.

The fake library is compiled once per session with gcc (skipped locally without gcc, a failure in CI). Each test
that uses :func:`fake_nvml` gets its own state file and hands the library to ``pynvml`` directly (its module-level
``nvmlLib``, plus an empty function-pointer cache), restored afterwards. That keeps every call of the bindings real
while leaving ``libnvidia-ml.so.1`` itself unloaded, so tests marked ``gpu`` in the same session still reach the
real library. ``test_nvml_fake_library.py`` also checks the bindings' own loader in a subprocess.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from tests._tools import require_tool
from tests.hardware.fake_nvml_build import FAKE_NVML_SONAME, STATE_ENV, FakeNvmlState, build_fake_nvml


@pytest.fixture(scope="session")
def fake_nvml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake NVML compiled into a shared library (warnings are errors)."""
    gcc = require_tool("gcc")
    library = tmp_path_factory.mktemp("fake-nvml") / FAKE_NVML_SONAME
    failure = build_fake_nvml(gcc, library)
    if failure is not None:
        pytest.fail(f"building the fake NVML failed:\n{failure}", pytrace=False)
    return library


@pytest.fixture
def fake_nvml(fake_nvml_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNvmlState:
    """The real ``pynvml`` bindings, talking to the fake library; write the state before constructing a meter."""
    import pynvml

    library = ctypes.CDLL(str(fake_nvml_library))
    state = FakeNvmlState(tmp_path / "nvml-state", library)
    state.write("")
    state.reset_calls()
    monkeypatch.setenv(STATE_ENV, str(state.path))
    monkeypatch.setattr(pynvml, "nvmlLib", library)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    return state

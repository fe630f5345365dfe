"""Fixtures of the kube tests: a fake kubelet gRPC server on a temporary unix socket."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube._fakes import KubeletServer

MAX_UNIX_PATH = 100  # sun_path holds 108 bytes


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a shorter temporary folder where a socket path there would not fit ``sun_path``."""
    if len(str(tmp_path / "kubelet.sock")) <= MAX_UNIX_PATH:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="jl-") as short:
        yield Path(short)


@pytest.fixture
def kubelet_server(socket_dir: Path) -> Iterator[KubeletServer]:
    server = KubeletServer(socket_dir / "kubelet.sock")
    server.start()
    yield server
    server.stop()

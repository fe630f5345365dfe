"""A real Prometheus for tests and benchmarks: backfilling a data set with promtool, serving a TSDB on a free port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._tools import require_tool
from tests.report import _dataset

__all__ = ["SCRAPE_ACCEPT", "LoadedPrometheus", "backfill", "logged_process", "serve"]

STARTUP_TIMEOUT_S = 60.0
SCRAPE_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""The ``Accept`` header of Prometheus 2.x's scrapes (OpenMetrics preferred)."""


@dataclass(frozen=True)
class LoadedPrometheus:
    url: str
    data: _dataset.Dataset


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def backfill(data: _dataset.Dataset, where: Path) -> Path:
    """Write ``data`` as OpenMetrics and turn it into TSDB blocks under ``where/tsdb``."""
    promtool = require_tool("promtool")
    source = where / "data.om.txt"
    source.write_text(_dataset.openmetrics(data))
    tsdb = where / "tsdb"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return tsdb


@contextlib.contextmanager
def serve(tsdb: Path, log: Path, config_text: str = "global: {}\n") -> Iterator[str]:
    """Prometheus on a free 127.0.0.1 port over ``tsdb`` (no compaction; scraping only what ``config_text``
    configures: nothing by default); yields its URL."""
    prometheus = require_tool("prometheus")
    port = _free_port()
    config = tsdb.parent / "prometheus.yml"
    config.write_text(config_text)
    command = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb}",
        "--storage.tsdb.retention.time=100y",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    with logged_process(command, log) as process:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready within {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url


@contextlib.contextmanager
def logged_process(
    command: list[str], log: Path, env: dict[str, str] | None = None, *, stop_timeout_s: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running with its output in ``log``; terminated on exit (killed after ``stop_timeout_s``)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

"""``--format html`` opened offline in headless Chromium: the charts render (plotly drew its SVGs), the page logs
nothing to the console, and the screenshot is far from blank."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jouleledger.cli import main
from tests._prometheus import LoadedPrometheus
from tests._tools import require_tool
from tests.report import _png

pytestmark = pytest.mark.slow

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--log-level=0",
    "--virtual-time-budget=10000",
]


def _chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    chromium = require_tool("chromium")
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def page(loaded_prometheus: LoadedPrometheus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    status = main(
        ["report", "--prometheus", loaded_prometheus.url, "--since", "2025-11-01T00:00:00Z", "--until",
         str(loaded_prometheus.data.scenario.end_s), "--format", "html", "--output", str(out), "--pue", "1.2"]
    )  # fmt: skip
    assert status == 0
    return out


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert "<script src=" not in text  # plotly.js is inlined: the page opens offline
    assert "http://" not in text.split("</script>")[0][-200:]
    for div in ("energy-over-time", "carbon", "cost", "top-workloads", "idle-share"):
        assert f'id="{div}"' in text


def test_charts_render_without_console_messages(page: Path, tmp_path: Path) -> None:
    answer = _chromium(tmp_path, "dom", "--dump-dom", page.as_uri())
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert answer.stdout.count('class="main-svg"') >= 10  # plotly draws two SVG layers per chart, five charts
    console = [line for line in answer.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


def test_screenshot_is_not_blank(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    answer = _chromium(tmp_path, "shot", "--window-size=1200,1800", f"--screenshot={shot}", page.as_uri())
    assert answer.returncode == 0, answer.stderr[-2000:]
    share, colours = _png.ink(shot)
    assert share > 0.05, f"only {share:.1%} of the screenshot is not white"
    assert colours > 20, f"the screenshot has only {colours} colours"

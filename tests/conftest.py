"""Collects the figures tests measured (see ``tests/_figures.py``) and prints them in the terminal summary."""

from __future__ import annotations

import pytest

from tests._figures import PREFIX

_LINES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for line in report.capstdout.splitlines():
        text = line.removeprefix(PREFIX)
        if line.startswith(PREFIX) and text not in _LINES:
            _LINES.append(text)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LINES:
        terminalreporter.section("figures")
        for line in _LINES:
            terminalreporter.write_line(line)

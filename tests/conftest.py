"""Collects the figures tests measured (see ``tests/_figures.py``) and prints them in the terminal summary."""

from __future__ import annotations

import pytest

from tests._figures import PREFIX

_LINES: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Hostile inputs put lone surrogates in captured logs: escape them, or a pytest-xdist worker cannot send the
    # report (its channel encodes UTF-8 strictly) and the whole run stops.
    report.sections = [
        (title, text.encode("utf-8", "backslashreplace").decode("utf-8")) for title, text in report.sections
    ]
    for line in report.capstdout.splitlines():
        text = line.removeprefix(PREFIX)
        if line.startswith(PREFIX) and text not in _LINES:
            _LINES.append(text)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LINES:
        terminalreporter.section("figures")
        for line in _LINES:
            terminalreporter.write_line(line)

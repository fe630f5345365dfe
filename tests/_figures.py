"""Figures a test measured (kills, examples, mJ difference), printed at the end of the run so that CI shows them.

A test calls :func:`figure`; the root ``conftest.py`` collects the lines from the captured output and prints them
in pytest's terminal summary under "figures".
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "[figure] "


def figure(text: str) -> None:
    """Record one line of figures (printed now, and again in the run's summary)."""
    print(PREFIX + text)

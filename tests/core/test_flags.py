"""Checked number types for command-line flags (core/flags.py): each names the value it rejects."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from jouleledger.core.flags import non_negative_float, port_number, positive_float, positive_int


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (positive_float, "0.5", 0.5),
        (non_negative_float, "0", 0.0),
        (positive_int, "3", 3),
        (port_number, "0", 0),
        (port_number, "65535", 65535),
    ],
)
def test_accepted_values(parse: Callable[[str], float], text: str, expected: float) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("parse", "text", "meaning"),
    [
        (positive_float, "0", "a positive finite number"),
        (positive_float, "nan", "a positive finite number"),
        (positive_float, "inf", "a positive finite number"),
        (positive_float, "one", "a positive finite number"),
        (non_negative_float, "-1", "a finite number >= 0"),
        (positive_int, "0", "a whole number >= 1"),
        (positive_int, "1.5", "a whole number >= 1"),
        (port_number, "70000", "a TCP port (0-65535)"),
        (port_number, "-1", "a TCP port (0-65535)"),
    ],
)
def test_rejected_values_name_the_text(parse: Callable[[str], float], text: str, meaning: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        parse(text)
    assert str(raised.value) == f"{text!r} is not {meaning}"

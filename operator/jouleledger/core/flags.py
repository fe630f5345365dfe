"""Checked number types for command-line flags (``argparse`` ``type=`` callables).

Each rejects what the flag cannot mean (a negative interval, a NaN, port 70000) with a message naming the value,
which argparse turns into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import cast

__all__ = ["non_negative_float", "non_negative_int", "port_number", "positive_float", "positive_int"]


def _number_type(name: str, convert: Callable[[str], float], accept: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}")
        return value

    return parse


positive_float = _number_type("a positive finite number", float, lambda v: math.isfinite(v) and v > 0)
non_negative_float = _number_type("a finite number >= 0", float, lambda v: math.isfinite(v) and v >= 0)
positive_int = cast(Callable[[str], int], _number_type("a whole number >= 1", int, lambda v: v >= 1))
non_negative_int = cast(Callable[[str], int], _number_type("a whole number >= 0", int, lambda v: v >= 0))
port_number = cast(Callable[[str], int], _number_type("a TCP port (0-65535)", int, lambda v: 0 <= v <= 65535))

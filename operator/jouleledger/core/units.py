"""Units and conversions. Energy is integer millijoules inside the core (NVML's own unit).

Every conversion lives here, so a unit mistake has exactly one place to hide.
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_COUNTER_MJ",
    "MJ_PER_J",
    "MJ_PER_KWH",
    "PID_MAX",
    "S_PER_HOUR",
    "InvalidValueError",
    "checked_float",
    "checked_int",
    "j_to_mj",
    "kwh_to_mj",
    "mj_to_j",
    "mj_to_kwh",
    "positive",
    "power_limit_mj",
]

MJ_PER_J = 1_000
MJ_PER_KWH = 3_600_000_000  # 1 kWh = 3.6 MJ(mega) = 3.6e9 mJ(milli)
S_PER_HOUR = 3_600
MAX_COUNTER_MJ = 2**63 - 1  # the largest energy reading or total accepted (int64; ~10^15 J, GPU-millennia)
PID_MAX = 4_194_304  # the largest pid Linux can hand out (PID_MAX_LIMIT on 64-bit kernels; 2**22)


class InvalidValueError(ValueError):
    """A number that crossed a boundary and cannot be trusted (non-finite, negative, out of physical bounds)."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        super().__init__(f"{what}: {reason} (got {_shown(value)})")
        self.what = what
        self.value = value
        self.reason = reason


def positive(what: str, value: float) -> float:
    """``value`` when it is greater than 0 (NaN is not); ``ValueError("<what> must be positive, got <value>")``
    otherwise. For settings passed in code; numbers read from outside go through :func:`checked_float`."""
    if not value > 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return value


def checked_float(what: str, value: object, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
    """Return ``value`` as a float if it is a real, finite number within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(what, value, "not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64 (YAML and JSON integers are unbounded)
        reason = f"below {minimum:g}" if value < 0 else f"above {maximum:g}"
        raise InvalidValueError(what, value, reason) from None
    if not math.isfinite(number):
        raise InvalidValueError(what, value, "not finite")
    if number < minimum:
        raise InvalidValueError(what, value, f"below {minimum:g}")
    if number > maximum:
        raise InvalidValueError(what, value, f"above {maximum:g}")
    return number


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (an input can be a 10 kB string or a 4,000-digit integer)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of more than {limit} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_int(what: str, value: object, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (or an integral float) within bounds."""
    if isinstance(value, bool):
        raise InvalidValueError(what, value, "not an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidValueError(what, value, "not an integer")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidValueError(what, value, "not an integer")
    if value < minimum:
        raise InvalidValueError(what, value, f"below {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidValueError(what, value, f"above {maximum}")
    return value


def mj_to_j(energy_mj: int) -> float:
    return energy_mj / MJ_PER_J


def j_to_mj(energy_j: float) -> int:
    return round(energy_j * MJ_PER_J)


def mj_to_kwh(energy_mj: int | float) -> float:
    return energy_mj / MJ_PER_KWH


def kwh_to_mj(energy_kwh: float) -> int:
    return round(energy_kwh * MJ_PER_KWH)


def power_limit_mj(power_limit_w: float, interval_s: float) -> float:
    """The most energy (mJ) a device limited to ``power_limit_w`` can deliver in ``interval_s``."""
    return power_limit_w * MJ_PER_J * interval_s

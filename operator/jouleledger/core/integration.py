"""Rule 1 of attribution: the energy a GPU used in one interval, measured.

The NVML total-energy counter is preferred; where a GPU has no counter, a reading lacks it, or the counter's
delta is physically impossible (above ``power_limit_w x interval``), the trapezoid of the two power readings is
used instead. A counter that went down (driver reload) restarts from zero, so the delta is the new reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from jouleledger.core.model import GpuInfo
from jouleledger.core.units import power_limit_mj

__all__ = ["Baseline", "Measurement", "Method", "RejectReason", "measure"]


class Method(StrEnum):
    """How an interval's energy was obtained."""

    COUNTER = "energy_counter"
    COUNTER_RESET = "energy_counter_reset"
    POWER = "power_integration"
    UNMEASURED = "unmeasured"


class RejectReason(StrEnum):
    """Why a reading or a delta was not trusted."""

    COUNTER_ABOVE_LIMIT = "counter_delta_above_power_limit"
    COUNTER_MISSING = "counter_missing"
    NO_POWER = "power_missing"


@dataclass(frozen=True, slots=True)
class Baseline:
    """A GPU's reading at time ``t_s``: the start of its next interval."""

    t_s: float
    energy_mj: int | None
    power_mw: int | None


@dataclass(frozen=True, slots=True)
class Measurement:
    """The measured energy ``delta_mj`` of one GPU over ``interval_s`` and how it was obtained.

    ``rejected`` names the reasons a preferred source was not used (each counted by the agent).
    """

    delta_mj: int
    interval_s: float
    method: Method
    rejected: tuple[RejectReason, ...] = ()


def _trapezoid_mj(prev_power_mw: int, cur_power_mw: int, interval_s: float) -> int:
    # mW x s = mJ; exact rational arithmetic, then round half to even to whole mJ.
    return round(Fraction(prev_power_mw + cur_power_mw, 2) * Fraction(interval_s))


def measure(gpu: GpuInfo, prev: Baseline, cur: Baseline) -> Measurement:
    """Measure ``gpu``'s energy over ``(prev.t_s, cur.t_s]`` by attribution rule 1 (docs/attribution.md).

    Raises ``ValueError`` if the interval is not positive (the caller re-baselines instead).
    """
    interval_s = cur.t_s - prev.t_s
    if not interval_s > 0:
        raise ValueError(f"{gpu.uuid}: interval must be positive, got {interval_s!r} s")
    rejected: list[RejectReason] = []
    if gpu.energy_counter:
        if prev.energy_mj is not None and cur.energy_mj is not None:
            if cur.energy_mj >= prev.energy_mj:
                delta_mj, method = cur.energy_mj - prev.energy_mj, Method.COUNTER
            else:
                delta_mj, method = cur.energy_mj, Method.COUNTER_RESET
            if delta_mj <= power_limit_mj(gpu.power_limit_w, interval_s):
                return Measurement(delta_mj, interval_s, method)
            rejected.append(RejectReason.COUNTER_ABOVE_LIMIT)
        else:
            rejected.append(RejectReason.COUNTER_MISSING)
    if prev.power_mw is None or cur.power_mw is None:
        rejected.append(RejectReason.NO_POWER)
        return Measurement(0, interval_s, Method.UNMEASURED, tuple(rejected))
    return Measurement(
        _trapezoid_mj(prev.power_mw, cur.power_mw, interval_s), interval_s, Method.POWER, tuple(rejected)
    )

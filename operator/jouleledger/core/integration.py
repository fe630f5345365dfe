"""Rule 1 of attribution: the energy a GPU used in one interval, measured.

The NVML total-energy counter is preferred; where a GPU has no counter, a reading lacks it, or the counter's
delta is physically impossible (above ``power_limit_w x interval``), the trapezoid of the two power readings is
used instead. A counter that went down (driver reload) restarts from zero, so the delta is the new reading.

Bounds (rules v1.1): power is never integrated over more than :data:`MAX_POWER_INTEGRATION_S` (300 s) or from a
missing or rejected power reading; such an interval's energy is unknown (0, counted as rejected), never estimated.
A counter delta over a longer gap is kept, bounded by the power limit like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from jouleledger.core.model import GpuInfo
from jouleledger.core.units import power_limit_mj

__all__ = ["MAX_POWER_INTEGRATION_S", "Baseline", "Measurement", "Method", "RejectReason", "measure", "power_rejected"]

MAX_POWER_INTEGRATION_S = 300.0
"""The longest interval whose energy may come from integrating two power readings (rules v1.1)."""


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
    POWER_ABOVE_LIMIT = "power_above_power_limit"
    POWER_NEGATIVE = "power_negative"
    POWER_GAP_TOO_LONG = "power_interval_above_300s"


def power_rejected(gpu: GpuInfo, power_mw: int) -> RejectReason | None:
    """Why a power reading of ``gpu`` cannot be trusted (above its power limit, or negative); None if it can."""
    if power_mw < 0:
        return RejectReason.POWER_NEGATIVE
    if power_mw > gpu.power_limit_w * 1000:
        return RejectReason.POWER_ABOVE_LIMIT
    return None


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

    Power readings in the baselines must already be checked (:func:`power_rejected`; a rejected one is None).
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
    if interval_s > MAX_POWER_INTEGRATION_S:
        rejected.append(RejectReason.POWER_GAP_TOO_LONG)
        return Measurement(0, interval_s, Method.UNMEASURED, tuple(rejected))
    return Measurement(
        _trapezoid_mj(prev.power_mw, cur.power_mw, interval_s), interval_s, Method.POWER, tuple(rejected)
    )

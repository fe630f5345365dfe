"""Carbon and cost arithmetic: operational carbon per interval, embodied carbon per GPU-hour, price per kWh.

Operational carbon of an interval is ``kWh x PUE x grid intensity of that interval`` (never an average over a
job); embodied carbon is ``GPU-hours x grams per GPU-hour`` and takes no PUE (it is not facility energy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jouleledger.core.accounting import IntervalResult
from jouleledger.core.units import S_PER_HOUR, checked_float, mj_to_kwh

__all__ = ["CarbonRates", "CarbonTally", "embodied_g", "energy_cost", "operational_g"]

MAX_PUE = 5.0
MAX_G_PER_KWH = 5_000.0


def operational_g(energy_mj: int, pue: float, intensity_g_per_kwh: float) -> float:
    """Grams CO2e of ``energy_mj`` of IT energy drawn at ``intensity_g_per_kwh``, facility overhead included."""
    return mj_to_kwh(energy_mj) * pue * intensity_g_per_kwh


def embodied_g(gpu_seconds: float, g_per_gpu_hour: float) -> float:
    """Grams CO2e of manufacturing amortised over ``gpu_seconds`` of use."""
    return gpu_seconds / S_PER_HOUR * g_per_gpu_hour


def energy_cost(energy_mj: int, pue: float, price_per_kwh: float) -> float:
    """What ``energy_mj`` of IT energy costs at the meter (facility energy = IT energy x PUE)."""
    return mj_to_kwh(energy_mj) * pue * price_per_kwh


@dataclass(frozen=True, slots=True)
class CarbonRates:
    """Validated carbon parameters: PUE (1-5), default intensity (g/kWh), embodied grams per GPU-hour."""

    pue: float = 1.0
    default_intensity_g_per_kwh: float = 0.0
    embodied_g_per_gpu_hour: float = 0.0

    def __post_init__(self) -> None:
        checked_float("pue", self.pue, minimum=1.0, maximum=MAX_PUE)
        checked_float("intensity_g_per_kwh", self.default_intensity_g_per_kwh, minimum=0.0, maximum=MAX_G_PER_KWH)
        checked_float("embodied_g_per_gpu_hour", self.embodied_g_per_gpu_hour)

    def interval_g(self, energy_mj: int, gpu_seconds: float, intensity_g_per_kwh: float | None) -> float:
        """Operational plus embodied grams for one share of one interval."""
        intensity = self.default_intensity_g_per_kwh if intensity_g_per_kwh is None else intensity_g_per_kwh
        return operational_g(energy_mj, self.pue, intensity) + embodied_g(gpu_seconds, self.embodied_g_per_gpu_hour)


@dataclass(slots=True)
class CarbonTally:
    """Per-pod grams CO2e, accumulated interval by interval with each interval's own grid intensity; the
    unallocated (idle) energy's operational grams likewise (idle GPUs draw from the same grid)."""

    rates: CarbonRates
    grams: dict[str, float] = field(default_factory=dict)
    unallocated_g: float = 0.0

    def add(self, result: IntervalResult) -> None:
        """Fold in one sample's attributed intervals (keyed by :attr:`PodInfo.key`)."""
        for interval in result.gpus:
            seconds = interval.measurement.interval_s
            for share in interval.split.shares:
                key = share.pod.key
                grams = self.rates.interval_g(share.energy_mj, float(share.fraction) * seconds, result.grid_g_per_kwh)
                self.grams[key] = self.grams.get(key, 0.0) + grams
            idle_mj = interval.split.unallocated_mj
            if idle_mj:
                intensity = (
                    self.rates.default_intensity_g_per_kwh if result.grid_g_per_kwh is None else result.grid_g_per_kwh
                )
                self.unallocated_g += operational_g(idle_mj, self.rates.pue, intensity)

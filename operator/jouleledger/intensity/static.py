"""A static table of grid intensity by zone, with a default; also the fallback of the HTTP providers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from jouleledger.core.units import checked_float
from jouleledger.intensity.reading import (
    DEFAULT_MAX_G_PER_KWH,
    SOURCE_STATIC,
    FallbackKey,
    IntensityReading,
)
from jouleledger.intensity.zones import match_zone, validate_zone_key

__all__ = ["StaticIntensity"]


class StaticIntensity:
    """Intensity from a table ``{zone or region: g/kWh}``; a zone not in the table gets ``default_g_per_kwh``.

    Lookup follows :func:`~jouleledger.intensity.zones.match_zone` (exact zone, then its region). The table is
    validated at construction: every value must be finite and within ``[0, max_g_per_kwh]``.
    """

    def __init__(
        self,
        default_g_per_kwh: float,
        zones: Mapping[str, float] | None = None,
        *,
        max_g_per_kwh: float = DEFAULT_MAX_G_PER_KWH,
    ) -> None:
        if isinstance(max_g_per_kwh, bool) or not isinstance(max_g_per_kwh, int | float):
            raise ValueError(f"max_g_per_kwh must be a number, got {max_g_per_kwh!r}")
        if not math.isfinite(max_g_per_kwh) or max_g_per_kwh <= 0:
            raise ValueError(f"max_g_per_kwh must be finite and positive, got {max_g_per_kwh!r}")
        self.max_g_per_kwh = float(max_g_per_kwh)
        self.default_g_per_kwh = checked_float(
            "default intensity (g/kWh)", default_g_per_kwh, maximum=self.max_g_per_kwh
        )
        table: dict[str, float] = {}
        for zone, value in (zones or {}).items():
            validate_zone_key("intensity table", zone)
            # InvalidValueError is a ValueError whose message names the zone.
            table[zone] = checked_float(f"intensity of zone {zone!r} (g/kWh)", value, maximum=max_g_per_kwh)
        self.zones: Mapping[str, float] = MappingProxyType(table)

    def lookup(self, zone: str) -> tuple[float, str | None]:
        """``(g/kWh, matching table key)``; the key is None where the default applies."""
        key = match_zone(zone, self.zones)
        if key is None:
            return self.default_g_per_kwh, None
        return self.zones[key], key

    async def intensity(self, zone: str, now_unix_s: float) -> IntensityReading:
        value, _ = self.lookup(zone)
        return IntensityReading(g_per_kwh=value, zone=zone, source=SOURCE_STATIC, observed_unix_s=now_unix_s)

    async def aclose(self) -> None:
        return None

    @property
    def fallbacks(self) -> Mapping[FallbackKey, int]:
        """A static table never falls back."""
        return MappingProxyType({})

    def __repr__(self) -> str:
        return f"StaticIntensity(default_g_per_kwh={self.default_g_per_kwh:g}, zones={dict(self.zones)!r})"

"""The value every intensity provider returns, the provider Protocol, and the reasons for a fallback.

A reading is grams of CO2(-equivalent) per kWh drawn from the grid in one zone at one time. Every provider returns
a reading for every zone: when the live source fails, the reading comes from the static table and says why
(``source="static-fallback"``, ``fallback_reason``). A reading never carries a non-finite or negative number.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "DEFAULT_MAX_G_PER_KWH",
    "FALLBACK_REASONS",
    "SOURCES",
    "SOURCE_STATIC",
    "SOURCE_STATIC_FALLBACK",
    "FallbackKey",
    "IntensityProvider",
    "IntensityReading",
    "read_zones",
]

log = logging.getLogger(__name__)

# The dirtiest real grids average roughly 700-1000 g/kWh (coal-heavy); a single marginal coal unit is about
# 1000-1100 g/kWh. 2000 leaves headroom for marginal signals while rejecting unit mix-ups (lbs/MWh, kg, g/MWh).
DEFAULT_MAX_G_PER_KWH: Final = 2000.0

SOURCE_STATIC: Final = "static"
SOURCE_STATIC_FALLBACK: Final = "static-fallback"
SOURCES: Final = frozenset({SOURCE_STATIC, SOURCE_STATIC_FALLBACK, "electricitymaps", "watttime"})

# Why a reading came from the fallback table. A small fixed set: these become metric label values.
FALLBACK_REASONS: Final = frozenset(
    {
        "timeout",  # no complete answer within timeout_s
        "transport_error",  # connection refused, DNS, TLS, protocol error
        "rate_limited",  # HTTP 429
        "unauthorized",  # HTTP 401/403 (after one re-login where the API has a login)
        "http_3xx",  # unexpected redirect (redirects are not followed)
        "http_4xx",  # any other client error
        "http_5xx",  # server error
        "malformed_response",  # not JSON, or JSON without the documented fields/types
        "not_finite",  # NaN or infinity
        "out_of_range",  # negative, or above the plausible maximum
        "stale",  # the value applies to a time older than max_age_s
        "future_timestamp",  # the value claims to apply well after now (clock or API error)
        "wrong_zone",  # the answer is about another zone than the one asked for
        "wrong_units",  # the answer is in units this code does not convert
        "unmapped_zone",  # no vendor zone configured for this zone
        "no_credentials",  # the token or password file is missing or empty
        "internal_error",  # an unexpected error in this code (logged with its traceback at debug level)
    }
)

FallbackKey = tuple[str, str]
"""``(provider, reason)``: the key of a provider's fallback counter."""


@dataclass(frozen=True, slots=True)
class IntensityReading:
    """Grid carbon intensity for one zone.

    ``g_per_kwh`` is grams CO2(eq) per kWh, finite and non-negative (providers also enforce their plausible
    maximum); ``observed_unix_s`` is when the value applies (the API's timestamp, or the request time for the
    static table); ``fallback_reason`` is set exactly when ``source`` is ``"static-fallback"``.
    """

    g_per_kwh: float
    zone: str
    source: str
    observed_unix_s: float
    fallback_reason: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.g_per_kwh, bool) or not isinstance(self.g_per_kwh, int | float):
            raise TypeError(f"g_per_kwh must be a number, got {self.g_per_kwh!r}")
        if not math.isfinite(self.g_per_kwh) or self.g_per_kwh < 0:
            raise ValueError(f"g_per_kwh must be finite and non-negative, got {self.g_per_kwh!r}")
        if not self.zone:
            raise ValueError("zone must not be empty")
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; expected one of {sorted(SOURCES)}")
        if not math.isfinite(self.observed_unix_s):
            raise ValueError(f"observed_unix_s must be finite, got {self.observed_unix_s!r}")
        if (self.source == SOURCE_STATIC_FALLBACK) != (self.fallback_reason is not None):
            raise ValueError("fallback_reason is set exactly when source is 'static-fallback'")
        if self.fallback_reason is not None and self.fallback_reason not in FALLBACK_REASONS:
            raise ValueError(f"unknown fallback_reason {self.fallback_reason!r}")


class IntensityProvider(Protocol):
    """Where the operator gets grid intensity. Implementations never raise for a zone: they fall back."""

    async def intensity(self, zone: str, now_unix_s: float) -> IntensityReading:
        """The intensity that applies in ``zone`` at ``now_unix_s`` (the caller's clock)."""
        ...

    async def aclose(self) -> None:
        """Release HTTP connections the provider owns (not an injected client)."""
        ...

    @property
    def fallbacks(self) -> Mapping[FallbackKey, int]:
        """Readings served from the fallback table so far, by ``(provider, reason)``; a snapshot."""
        ...


async def read_zones(
    provider: IntensityProvider, zones: Iterable[str], now_unix_s: float
) -> tuple[dict[str, IntensityReading], int]:
    """The reading of each zone, and how many zones failed: a provider must not raise, but if one does that zone
    is left out (logged), so that its nodes wait for the next pass."""
    readings: dict[str, IntensityReading] = {}
    failed = 0
    for zone in sorted(set(zones)):
        try:
            readings[zone] = await provider.intensity(zone, now_unix_s)
        except Exception:
            log.exception("intensity provider failed for zone %s; not folding its nodes this pass", zone)
            failed += 1
    return readings, failed

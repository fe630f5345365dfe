"""Grid carbon-intensity providers: a static table by zone, and HTTP APIs (Electricity Maps, WattTime)."""

from jouleledger.intensity.config import KNOWN_KEYS, build_provider
from jouleledger.intensity.credentials import MissingSecretError, Secret
from jouleledger.intensity.electricitymaps import ElectricityMapsIntensity
from jouleledger.intensity.reading import (
    DEFAULT_MAX_G_PER_KWH,
    FALLBACK_REASONS,
    FallbackKey,
    IntensityProvider,
    IntensityReading,
    read_zones,
)
from jouleledger.intensity.static import StaticIntensity
from jouleledger.intensity.watttime import WattTimeIntensity, lbs_per_mwh_to_g_per_kwh

__all__ = [
    "DEFAULT_MAX_G_PER_KWH",
    "FALLBACK_REASONS",
    "KNOWN_KEYS",
    "ElectricityMapsIntensity",
    "FallbackKey",
    "IntensityProvider",
    "IntensityReading",
    "MissingSecretError",
    "Secret",
    "StaticIntensity",
    "WattTimeIntensity",
    "build_provider",
    "lbs_per_mwh_to_g_per_kwh",
    "read_zones",
]

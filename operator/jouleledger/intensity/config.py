"""Building a provider from the operator's ``intensity:`` configuration block.

::

    intensity:
      provider: static            # static | electricitymaps | watttime
      defaultGramsPerKwh: 400     # zones not in the table
      maxGramsPerKwh: 2000        # plausibility bound for the table and for every API answer
      zones: {eu-west-1: 300}     # static table; also the fallback of the HTTP providers
      cacheTtlSeconds: 300
      timeoutSeconds: 5
      maxAgeSeconds: 7200         # an API value older than this is stale
      electricityMaps: {url: ..., tokenFile: /etc/jouleledger/secrets/electricitymaps-token, zoneMap: {eu-west-1: IE}}
      wattTime: {url: ..., usernameFile: ..., passwordFile: ..., zoneMap: {us-east-1: PJM_DC}}

Every key is optional except the secret files and a non-empty ``zoneMap`` of the provider that is selected. An
unknown key anywhere is an error naming it (a typo must not silently fall back to a default). Secret files are
checked at build time (so a missing mount fails at start-up) and read again at each use (so rotation works).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import httpx

from jouleledger.core.units import InvalidValueError, checked_float
from jouleledger.intensity.credentials import MissingSecretError, Secret
from jouleledger.intensity.electricitymaps import DEFAULT_ELECTRICITYMAPS_URL, ElectricityMapsIntensity
from jouleledger.intensity.reading import DEFAULT_MAX_G_PER_KWH, IntensityProvider
from jouleledger.intensity.static import StaticIntensity
from jouleledger.intensity.watttime import DEFAULT_WATTTIME_URL, WattTimeIntensity

__all__ = ["DEFAULTS", "KNOWN_KEYS", "PROVIDERS", "build_provider"]

PROVIDERS: Final = ("static", "electricitymaps", "watttime")

KNOWN_KEYS: Final[Mapping[str, Mapping[str, None] | None]] = MappingProxyType(
    {
        "provider": None,
        "defaultGramsPerKwh": None,
        "maxGramsPerKwh": None,
        "zones": None,
        "cacheTtlSeconds": None,
        "timeoutSeconds": None,
        "maxAgeSeconds": None,
        "electricityMaps": MappingProxyType({"url": None, "tokenFile": None, "zoneMap": None}),
        "wattTime": MappingProxyType({"url": None, "usernameFile": None, "passwordFile": None, "zoneMap": None}),
    }
)
"""Every accepted key; a nested mapping for a section, None for a leaf (``zones``/``zoneMap`` are free-form)."""

DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "provider": "static",
        "defaultGramsPerKwh": 400.0,
        "maxGramsPerKwh": DEFAULT_MAX_G_PER_KWH,
        "cacheTtlSeconds": 300.0,
        "timeoutSeconds": 5.0,
        "maxAgeSeconds": 7200.0,
        "electricityMaps.url": DEFAULT_ELECTRICITYMAPS_URL,
        "wattTime.url": DEFAULT_WATTTIME_URL,
    }
)
"""Values used for keys that are absent (``section.key`` for nested ones)."""

_ROOT = "intensity"


def build_provider(config: Mapping[str, Any] | None, *, client: httpx.AsyncClient | None = None) -> IntensityProvider:
    """The provider the ``intensity:`` block asks for; ValueError naming the key for anything invalid.

    ``client`` is an optional shared :class:`httpx.AsyncClient` (the provider then leaves closing it to the
    caller); without one an HTTP provider makes and owns its own.
    """
    block = _section(_ROOT, {} if config is None else config, KNOWN_KEYS)
    provider = block.get("provider", DEFAULTS["provider"])
    if provider not in PROVIDERS:
        raise ValueError(f"{_ROOT}.provider: must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    max_g_per_kwh = _positive(block, "maxGramsPerKwh")
    default_g_per_kwh = _number(block, "defaultGramsPerKwh")
    zones = _zone_table(block.get("zones"))
    try:
        static = StaticIntensity(default_g_per_kwh, zones, max_g_per_kwh=max_g_per_kwh)
    except ValueError as error:
        raise ValueError(f"{_ROOT}: {error}") from None
    timing = {
        "timeout_s": _positive(block, "timeoutSeconds"),
        "cache_ttl_s": _positive(block, "cacheTtlSeconds"),
        "max_age_s": _positive(block, "maxAgeSeconds"),
    }
    # Sections of providers that are not selected are still checked for unknown keys.
    em = _section(f"{_ROOT}.electricityMaps", block.get("electricityMaps") or {}, _sub("electricityMaps"))
    wt = _section(f"{_ROOT}.wattTime", block.get("wattTime") or {}, _sub("wattTime"))
    if provider == "static":
        return static
    if provider == "electricitymaps":
        where = f"{_ROOT}.electricityMaps"
        url, zone_map = _url(where, em, DEFAULT_ELECTRICITYMAPS_URL), _zone_map(where, em.get("zoneMap"))
        token = _secret(where, em, "tokenFile")
        try:
            return ElectricityMapsIntensity(
                url, token=token, fallback=static, zone_map=zone_map, client=client, **timing
            )
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    where = f"{_ROOT}.wattTime"
    url, zone_map = _url(where, wt, DEFAULT_WATTTIME_URL), _zone_map(where, wt.get("zoneMap"))
    username, password = _secret(where, wt, "usernameFile"), _secret(where, wt, "passwordFile")
    try:
        return WattTimeIntensity(
            url,
            username=username,
            password=password,
            fallback=static,
            zone_map=zone_map,
            client=client,
            **timing,
        )
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _sub(name: str) -> Mapping[str, None]:
    known = KNOWN_KEYS[name]
    assert known is not None
    return known


def _section(where: str, value: object, known: Mapping[str, object]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in known:
            raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    return value


def _number(block: Mapping[str, Any], key: str) -> float:
    value = block.get(key, DEFAULTS[key])
    try:
        return checked_float(f"{_ROOT}.{key}", value, minimum=-math.inf)
    except InvalidValueError:
        raise ValueError(f"{_ROOT}.{key}: must be a finite number, got {value!r}") from None


def _positive(block: Mapping[str, Any], key: str) -> float:
    number = _number(block, key)
    if number <= 0:
        raise ValueError(f"{_ROOT}.{key}: must be positive, got {number:g}")
    return number


def _zone_table(value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{_ROOT}.zones: must be a mapping of zone to g/kWh, got {type(value).__name__}")
    return dict(value)  # values are checked by StaticIntensity, which names the zone


def _zone_map(where: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{where}.zoneMap: map at least one zone to the provider's zone (e.g. eu-west-1: IE)")
    return dict(value)  # keys and values are checked by the provider, which names them


def _url(where: str, section: Mapping[str, Any], default: str) -> str:
    value = section.get("url", default)
    if not isinstance(value, str):
        raise ValueError(f"{where}.url: must be a string, got {type(value).__name__}")
    return value


def _secret(where: str, section: Mapping[str, Any], key: str) -> Secret:
    path = section.get(key)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}.{key}: required (a file holding the secret, e.g. a mounted Secret)")
    secret = Secret.from_file(path)
    try:
        secret.reveal()
    except MissingSecretError as error:
        raise ValueError(f"{where}.{key}: {error}") from None
    return secret

"""What the HTTP intensity providers share: the per-zone cache, one request per zone in flight, the overall
timeout, response validation helpers, and the static fallback with its counter and warning.

A subclass implements :meth:`HttpIntensityProvider._fetch` (one vendor zone -> raw g/kWh and the time it applies)
and raises :class:`FetchError` with a reason from
:data:`~jouleledger.intensity.reading.FALLBACK_REASONS` for anything it does not like. Everything else (range,
finiteness, freshness, caching, fallback) happens here, once.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import ClassVar, Final, TypedDict
from urllib.parse import urlsplit

import httpx

from jouleledger import __version__
from jouleledger.core.units import InvalidValueError, checked_float
from jouleledger.intensity.credentials import MissingSecretError
from jouleledger.intensity.reading import (
    FALLBACK_REASONS,
    SOURCE_STATIC_FALLBACK,
    FallbackKey,
    IntensityReading,
)
from jouleledger.intensity.static import StaticIntensity
from jouleledger.intensity.zones import match_zone, validate_zone_key

__all__ = [
    "FetchError",
    "HttpIntensityProvider",
    "RawValue",
    "check_status",
    "json_object",
    "parse_timestamp",
    "raw_number",
    "validate_base_url",
]

log = logging.getLogger(__name__)

# A value may claim to apply a little after our clock (clock skew, a 5-minute interval that has just started).
MAX_FUTURE_S: Final = 900.0
# The longest a 429's Retry-After keeps us from asking again.
MAX_RETRY_AFTER_S: Final = 3600.0
# How long a failure is remembered (no new request) unless failure_ttl_s says otherwise; capped by cache_ttl_s.
DEFAULT_FAILURE_TTL_S: Final = 60.0

USER_AGENT: Final = f"jouleledger/{__version__}"


class FetchError(Exception):
    """A fetch failed for ``reason`` (a label value); ``detail`` is for the log and never holds a secret."""

    def __init__(self, reason: str, detail: str, *, retry_after_s: float | None = None) -> None:
        if reason not in FALLBACK_REASONS:
            raise ValueError(f"unknown fallback reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class RawValue:
    """What a vendor said, converted to g/kWh but not yet validated."""

    g_per_kwh: float
    observed_unix_s: float


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached outcome for one vendor zone: a validated value, or the reason the last fetch failed."""

    fetched_unix_s: float
    expires_unix_s: float
    value: RawValue | None
    reason: str | None


def validate_base_url(what: str, url: object) -> str:
    """Return ``url`` without a trailing slash if it is an absolute http(s) URL without query or fragment."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what}: URL must be a non-empty string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what}: URL must be an absolute http(s) URL, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what}: URL must not carry a query, fragment or credentials")
    return url.rstrip("/")


def check_status(response: httpx.Response) -> None:
    """Raise :class:`FetchError` unless the response is a 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (401, 403):
        raise FetchError("unauthorized", f"HTTP {status}")
    if status == 429:
        raise FetchError("rate_limited", "HTTP 429", retry_after_s=_retry_after_s(response))
    if 300 <= status < 600:
        raise FetchError(f"http_{status // 100}xx", f"HTTP {status}")
    raise FetchError("malformed_response", f"unexpected HTTP status {status}")


def _retry_after_s(response: httpx.Response) -> float | None:
    header = response.headers.get("retry-after")
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None  # the HTTP-date form: ignored, the failure TTL applies
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def json_object(response: httpx.Response) -> Mapping[str, object]:
    """The response body as a JSON object, or :class:`FetchError` ``malformed_response``."""
    try:
        body = response.json()
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError; nesting thousands deep
        raise FetchError("malformed_response", f"body is not JSON ({type(error).__name__})") from None
    if not isinstance(body, dict):
        raise FetchError("malformed_response", f"body is a JSON {type(body).__name__}, not an object")
    return body


def raw_number(what: str, value: object) -> float:
    """``value`` as a float if it is a JSON number; NaN/infinity give ``not_finite`` (range is checked later)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FetchError("malformed_response", f"{what} is not a number (got {type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64 (JSON integers are unbounded)
        raise FetchError("out_of_range", f"{what} is an integer beyond float64") from None
    if not math.isfinite(number):
        raise FetchError("not_finite", f"{what} is {value!r}")
    return number


def parse_timestamp(what: str, value: object) -> float:
    """An ISO 8601 timestamp with a UTC offset (``Z`` or ``+00:00``) as Unix seconds."""
    if not isinstance(value, str):
        raise FetchError("malformed_response", f"{what} is not a string (got {type(value).__name__})")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FetchError("malformed_response", f"{what} is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise FetchError("malformed_response", f"{what} has no UTC offset: {value[:40]!r}")
    return moment.timestamp()


class HttpOptions(TypedDict, total=False):
    """The keyword options every HTTP provider takes (see :class:`HttpIntensityProvider`)."""

    client: httpx.AsyncClient | None
    timeout_s: float
    cache_ttl_s: float
    max_age_s: float
    failure_ttl_s: float | None
    max_g_per_kwh: float | None


class HttpIntensityProvider(abc.ABC):
    """Base of the HTTP providers: cache, concurrency, timeout, validation and fallback around ``_fetch``.

    ``zone_map`` maps the operator's zones (cloud regions/zones, matched as in
    :func:`~jouleledger.intensity.zones.match_zone`) to the vendor's zone names. Values are cached per vendor
    zone for ``cache_ttl_s``; a failure is remembered for ``failure_ttl_s`` (or a 429's Retry-After) so a broken
    API is not hammered. A cached value older than ``max_age_s`` is never served.
    """

    name: ClassVar[str]

    def __init__(
        self,
        *,
        base_url: str,
        fallback: StaticIntensity,
        zone_map: Mapping[str, str],
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
        cache_ttl_s: float = 300.0,
        max_age_s: float = 7200.0,
        failure_ttl_s: float | None = None,
        max_g_per_kwh: float | None = None,
    ) -> None:
        self.base_url = validate_base_url(f"{self.name} url", base_url)
        if not isinstance(fallback, StaticIntensity):
            raise TypeError(f"fallback must be a StaticIntensity, got {type(fallback).__name__}")
        self.fallback = fallback
        self.zone_map: Mapping[str, str] = MappingProxyType(
            {
                validate_zone_key(f"{self.name} zone map", key): validate_zone_key(
                    f"{self.name} zone map entry {key!r}", value
                )
                for key, value in zone_map.items()
            }
        )
        self.timeout_s = _positive(f"{self.name} timeout_s", timeout_s)
        self.cache_ttl_s = _positive(f"{self.name} cache_ttl_s", cache_ttl_s)
        self.max_age_s = _positive(f"{self.name} max_age_s", max_age_s)
        default_failure_ttl_s = min(DEFAULT_FAILURE_TTL_S, self.cache_ttl_s)
        self.failure_ttl_s = (
            default_failure_ttl_s if failure_ttl_s is None else _positive("failure_ttl_s", failure_ttl_s)
        )
        self.max_g_per_kwh = (
            fallback.max_g_per_kwh if max_g_per_kwh is None else _positive("max_g_per_kwh", max_g_per_kwh)
        )
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(follow_redirects=False)
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._fallbacks: Counter[FallbackKey] = Counter()
        self._warned_unmapped: set[str] = set()

    # ---- the one thing a vendor implements ------------------------------------------------------------------

    @abc.abstractmethod
    async def _fetch(self, vendor_zone: str, now_unix_s: float) -> RawValue:
        """Ask the API once for ``vendor_zone``; raise :class:`FetchError` (or let httpx errors through)."""

    # ---- the Protocol ---------------------------------------------------------------------------------------

    async def intensity(self, zone: str, now_unix_s: float) -> IntensityReading:
        if not math.isfinite(now_unix_s):
            raise ValueError(f"now_unix_s must be finite, got {now_unix_s!r}")
        key = match_zone(zone, self.zone_map)
        if key is None:
            if zone not in self._warned_unmapped:
                self._warned_unmapped.add(zone)
                log.warning("%s: zone %r has no entry in the zone map; using the static table for it", self.name, zone)
            return await self._fallback_reading(zone, now_unix_s, "unmapped_zone")
        vendor_zone = self.zone_map[key]
        entry = self._usable_entry(vendor_zone, now_unix_s)
        if entry is None:
            lock = self._locks.setdefault(vendor_zone, asyncio.Lock())
            async with lock:
                entry = self._usable_entry(vendor_zone, now_unix_s)
                if entry is None:
                    entry = await self._refresh(vendor_zone, now_unix_s)
                    self._cache[vendor_zone] = entry
        if entry.value is None:
            assert entry.reason is not None
            return await self._fallback_reading(zone, now_unix_s, entry.reason)
        return IntensityReading(
            g_per_kwh=entry.value.g_per_kwh,
            zone=zone,
            source=self.name,
            observed_unix_s=entry.value.observed_unix_s,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    @property
    def fallbacks(self) -> Mapping[FallbackKey, int]:
        return MappingProxyType(dict(self._fallbacks))

    # ---- internals ------------------------------------------------------------------------------------------

    def _usable_entry(self, vendor_zone: str, now_unix_s: float) -> _Entry | None:
        entry = self._cache.get(vendor_zone)
        if entry is None or not entry.fetched_unix_s <= now_unix_s < entry.expires_unix_s:
            return None  # absent, expired, or the clock went backwards
        if entry.value is not None and now_unix_s - entry.value.observed_unix_s > self.max_age_s:
            return None  # became stale while cached
        return entry

    async def _refresh(self, vendor_zone: str, now_unix_s: float) -> _Entry:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._fetch(vendor_zone, now_unix_s)
            value = self._validated(raw, now_unix_s)
        except FetchError as error:
            return self._failure(vendor_zone, now_unix_s, error.reason, error.detail, error.retry_after_s)
        except (TimeoutError, httpx.TimeoutException) as error:
            return self._failure(vendor_zone, now_unix_s, "timeout", _describe(error, self.timeout_s))
        except httpx.HTTPError as error:
            return self._failure(vendor_zone, now_unix_s, "transport_error", type(error).__name__)
        except MissingSecretError as error:
            return self._failure(vendor_zone, now_unix_s, "no_credentials", str(error))
        except Exception as error:  # a bug must not stop the accounting: count it, fall back, keep going
            # Only the type is logged at warning level: a message could quote a header value.
            log.debug("%s: zone %s: unexpected error", self.name, vendor_zone, exc_info=True)
            return self._failure(vendor_zone, now_unix_s, "internal_error", type(error).__name__)
        return _Entry(
            fetched_unix_s=now_unix_s,
            expires_unix_s=now_unix_s + self.cache_ttl_s,
            value=value,
            reason=None,
        )

    def _validated(self, raw: RawValue, now_unix_s: float) -> RawValue:
        value = raw.g_per_kwh
        if not math.isfinite(value):
            raise FetchError("not_finite", f"intensity is {value!r}")
        if value < 0 or value > self.max_g_per_kwh:
            raise FetchError("out_of_range", f"{value:g} g/kWh is outside [0, {self.max_g_per_kwh:g}]")
        if not math.isfinite(raw.observed_unix_s):
            raise FetchError("malformed_response", "timestamp is not finite")
        age_s = now_unix_s - raw.observed_unix_s
        if age_s > self.max_age_s:
            raise FetchError("stale", f"value is {age_s:.0f} s old (max {self.max_age_s:g} s)")
        if -age_s > MAX_FUTURE_S:
            raise FetchError("future_timestamp", f"value applies {-age_s:.0f} s in the future")
        return raw

    def _failure(
        self,
        vendor_zone: str,
        now_unix_s: float,
        reason: str,
        detail: str,
        retry_after_s: float | None = None,
    ) -> _Entry:
        hold_s = self.failure_ttl_s if retry_after_s is None else max(self.failure_ttl_s, retry_after_s)
        log.warning(
            "%s: zone %s: %s (%s); using the static table for %.0f s",
            self.name,
            vendor_zone,
            reason,
            detail,
            hold_s,
        )
        return _Entry(fetched_unix_s=now_unix_s, expires_unix_s=now_unix_s + hold_s, value=None, reason=reason)

    async def _fallback_reading(self, zone: str, now_unix_s: float, reason: str) -> IntensityReading:
        self._fallbacks[(self.name, reason)] += 1
        static = await self.fallback.intensity(zone, now_unix_s)
        return IntensityReading(
            g_per_kwh=static.g_per_kwh,
            zone=zone,
            source=SOURCE_STATIC_FALLBACK,
            observed_unix_s=static.observed_unix_s,
            fallback_reason=reason,
        )


def _describe(error: BaseException, timeout_s: float) -> str:
    if isinstance(error, httpx.TimeoutException):
        return type(error).__name__
    return f"no complete answer within {timeout_s:g} s"


def _positive(what: str, value: object) -> float:
    try:
        number = checked_float(what, value)
    except InvalidValueError as error:
        raise ValueError(f"{what} must be finite and positive, got {value!r}") from error
    if number <= 0:
        raise ValueError(f"{what} must be finite and positive, got {value!r}")
    return number

"""WattTime: the current marginal CO2 emissions rate (MOER) of a grid region, converted to g/kWh.

Authentication (API v3): ``GET {base_url}/login`` with HTTP basic auth answers ``{"token": "<JWT>"}``; the token
is sent as ``Authorization: Bearer <JWT>`` and expires after 30 minutes. It is cached, renewed after
:data:`TOKEN_REFRESH_S` of our clock, and renewed once more whenever a data request answers 401.

Data: ``GET {base_url}/v3/forecast?region=PJM_DC&signal_type=co2_moer&horizon_hours=0`` answers::

    {"meta": {"region": "PJM_DC", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh", ...},
     "data": [{"point_time": "2026-05-21T10:05:00+00:00", "value": 912.4}, ...]}

The earliest point is the current 5-minute interval (``horizon_hours=0`` asks for just that one; a longer answer
is accepted and its earliest point used). Why this endpoint and signal:

- ``co2_moer`` in lbs/MWh is an emissions *rate*, so it can be multiplied by measured energy; 1 lb/MWh is
  453.59237 g / 1000 kWh = 0.45359237 g/kWh exactly.
- ``/v3/signal-index`` answers a 0-100 percentile of the region's recent range: good for deciding when to run a
  job, meaningless as grams per kWh, so it is not used.
- ``/v3/historical`` needs a time window and lags the real-time value; the forecast endpoint carries the current
  value within minutes.

MOER is a *marginal* rate (the generators that respond to a change in load), not the average of the grid mix;
readings say ``source="watttime"`` so reports can tell the two methods apart. The answer must be for the region
asked for (``wrong_zone`` otherwise) and in lbs_co2_per_mwh (``wrong_units`` otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final, Unpack

import httpx

from jouleledger.intensity._http import (
    USER_AGENT,
    FetchError,
    HttpIntensityProvider,
    HttpOptions,
    RawValue,
    check_status,
    json_object,
    parse_timestamp,
    raw_number,
)
from jouleledger.intensity.credentials import Secret
from jouleledger.intensity.static import StaticIntensity

__all__ = [
    "DEFAULT_WATTTIME_URL",
    "G_PER_LB",
    "KWH_PER_MWH",
    "TOKEN_REFRESH_S",
    "WattTimeIntensity",
    "lbs_per_mwh_to_g_per_kwh",
]

DEFAULT_WATTTIME_URL: Final = "https://api.watttime.org"
G_PER_LB: Final = 453.59237  # the international avoirdupois pound, exact by definition
KWH_PER_MWH: Final = 1000
SIGNAL_TYPE: Final = "co2_moer"
UNITS: Final = "lbs_co2_per_mwh"
# Tokens live 30 minutes; renew after 25 so a token never expires between our check and the API's.
TOKEN_REFRESH_S: Final = 25 * 60.0


def lbs_per_mwh_to_g_per_kwh(rate_lbs_per_mwh: float) -> float:
    """Pounds per megawatt-hour to grams per kilowatt-hour (x 0.45359237)."""
    return rate_lbs_per_mwh * G_PER_LB / KWH_PER_MWH


class WattTimeIntensity(HttpIntensityProvider):
    """Live marginal intensity from WattTime, with the static table as the fallback for any failure."""

    name = "watttime"

    def __init__(
        self,
        base_url: str = DEFAULT_WATTTIME_URL,
        *,
        username: Secret | str,
        password: Secret | str,
        fallback: StaticIntensity,
        zone_map: Mapping[str, str],
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(base_url=base_url, fallback=fallback, zone_map=zone_map, **options)
        self._username = Secret.of(username)
        self._password = Secret.of(password)
        self._token: str | None = None
        self._token_obtained_unix_s = 0.0
        self._login_lock = asyncio.Lock()
        self.logins = 0
        """Successful logins so far (a plain attribute for tests and debugging)."""

    async def _fetch(self, vendor_zone: str, now_unix_s: float) -> RawValue:
        token = await self._bearer(now_unix_s, rejected=None)
        response = await self._forecast(vendor_zone, token)
        if response.status_code == 401:
            token = await self._bearer(now_unix_s, rejected=token)
            response = await self._forecast(vendor_zone, token)
        check_status(response)
        return _parse_forecast(json_object(response), vendor_zone)

    async def _forecast(self, vendor_zone: str, token: str) -> httpx.Response:
        return await self._client.get(
            f"{self.base_url}/v3/forecast",
            params={"region": vendor_zone, "signal_type": SIGNAL_TYPE, "horizon_hours": 0},
            headers={"authorization": f"Bearer {token}", "accept": "application/json", "user-agent": USER_AGENT},
            timeout=self.timeout_s,
        )

    async def _bearer(self, now_unix_s: float, *, rejected: str | None) -> str:
        """A usable token: the cached one unless it is old or was just ``rejected``; else log in (once for all)."""
        async with self._login_lock:
            token = self._token
            age_s = now_unix_s - self._token_obtained_unix_s
            if token is not None and token != rejected and 0 <= age_s < TOKEN_REFRESH_S:
                return token
            self._token = None
            token = await self._login()
            self._token = token
            self._token_obtained_unix_s = now_unix_s
            self.logins += 1
            return token

    async def _login(self) -> str:
        response = await self._client.get(
            f"{self.base_url}/login",
            auth=httpx.BasicAuth(self._username.reveal(), self._password.reveal()),
            headers={"accept": "application/json", "user-agent": USER_AGENT},
            timeout=self.timeout_s,
        )
        try:
            check_status(response)
            body = json_object(response)
        except FetchError as error:
            raise FetchError(error.reason, f"login: {error.detail}", retry_after_s=error.retry_after_s) from None
        token = body.get("token")
        if not isinstance(token, str) or not token or not token.isascii() or not token.isprintable() or " " in token:
            # a JWT is printable ASCII: anything else cannot even be sent back in a header
            raise FetchError("malformed_response", "login: answer has no usable 'token'")
        return token

    def __repr__(self) -> str:
        user, password = self._username, self._password
        return f"WattTimeIntensity(base_url={self.base_url!r}, username={user!r}, password={password!r})"


def _parse_forecast(body: Mapping[str, object], vendor_zone: str) -> RawValue:
    meta = body.get("meta")
    if not isinstance(meta, dict):
        raise FetchError("malformed_response", "answer has no 'meta' object")
    region = meta.get("region")
    if not isinstance(region, str):
        raise FetchError("malformed_response", "meta has no 'region' string")
    if region != vendor_zone:
        raise FetchError("wrong_zone", f"asked for {vendor_zone!r}, answer is for {region[:40]!r}")
    signal_type = meta.get("signal_type", SIGNAL_TYPE)
    units = meta.get("units")
    if signal_type != SIGNAL_TYPE or units != UNITS:
        raise FetchError(
            "wrong_units",
            f"expected {SIGNAL_TYPE} in {UNITS}, got {str(signal_type)[:40]!r} in {str(units)[:40]!r}",
        )
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise FetchError("malformed_response", "answer has no 'data' points")
    points: list[tuple[float, object]] = []
    for index, point in enumerate(data):
        if not isinstance(point, dict):
            raise FetchError("malformed_response", f"data[{index}] is not an object")
        points.append((parse_timestamp(f"data[{index}].point_time", point.get("point_time")), point.get("value")))
    observed_unix_s, value = min(points, key=lambda item: item[0])
    rate_lbs_per_mwh = raw_number("MOER value (lbs/MWh)", value)
    return RawValue(g_per_kwh=lbs_per_mwh_to_g_per_kwh(rate_lbs_per_mwh), observed_unix_s=observed_unix_s)

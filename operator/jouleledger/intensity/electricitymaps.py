"""Electricity Maps: the latest carbon intensity of a grid zone, in gCO2eq/kWh.

Request (API v3)::

    GET {base_url}/carbon-intensity/latest?zone=IE
    auth-token: <token>

Answer (the fields used here; others are ignored)::

    {"zone": "IE", "carbonIntensity": 302, "datetime": "2026-05-21T10:00:00.000Z", ...}

``carbonIntensity`` is gCO2eq/kWh of the zone's consumption mix (lifecycle emission factors unless the account is
set otherwise); ``datetime`` is the start of the hour the value applies to, so a fresh value is up to an hour old.
The answer's ``zone`` must be the zone asked for: the API may otherwise answer for a zone it picked itself (it
falls back to the caller's IP location when it does not know the zone), and that is reported as ``wrong_zone``.
A ``null`` intensity (a zone without data) is a ``malformed_response``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Unpack

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

__all__ = ["DEFAULT_ELECTRICITYMAPS_URL", "ElectricityMapsIntensity"]

DEFAULT_ELECTRICITYMAPS_URL: Final = "https://api.electricitymap.org/v3"


class ElectricityMapsIntensity(HttpIntensityProvider):
    """Live intensity from Electricity Maps, with the static table as the fallback for any failure."""

    name = "electricitymaps"

    def __init__(
        self,
        base_url: str = DEFAULT_ELECTRICITYMAPS_URL,
        *,
        token: Secret | str,
        fallback: StaticIntensity,
        zone_map: Mapping[str, str],
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(base_url=base_url, fallback=fallback, zone_map=zone_map, **options)
        self._token = Secret.of(token)

    async def _fetch(self, vendor_zone: str, now_unix_s: float) -> RawValue:
        headers = {"auth-token": self._token.reveal(), "accept": "application/json", "user-agent": USER_AGENT}
        response = await self._client.get(
            f"{self.base_url}/carbon-intensity/latest",
            params={"zone": vendor_zone},
            headers=headers,
            timeout=self.timeout_s,
        )
        check_status(response)
        body = json_object(response)
        answered_zone = body.get("zone")
        if not isinstance(answered_zone, str):
            raise FetchError("malformed_response", "answer has no 'zone' string")
        if answered_zone != vendor_zone:
            raise FetchError("wrong_zone", f"asked for {vendor_zone!r}, answer is for {answered_zone[:40]!r}")
        return RawValue(
            g_per_kwh=raw_number("carbonIntensity", body.get("carbonIntensity")),
            observed_unix_s=parse_timestamp("datetime", body.get("datetime")),
        )

    def __repr__(self) -> str:
        return f"ElectricityMapsIntensity(base_url={self.base_url!r}, token={self._token!r})"

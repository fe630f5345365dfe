"""Fuzzing what the intensity APIs can answer (Electricity Maps, WattTime's login and forecast) through
``httpx.MockTransport``: any status, headers, body or JSON. The provider always returns a reading, never raises;
its intensity is finite, non-negative and at most the plausible maximum; a bad answer becomes the static fallback
with a named reason (never ``internal_error``: every way an answer can be wrong has its own reason), counted once."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouleledger.intensity import ElectricityMapsIntensity, StaticIntensity, WattTimeIntensity
from jouleledger.intensity._http import HttpIntensityProvider
from jouleledger.intensity.reading import FALLBACK_REASONS, SOURCE_STATIC_FALLBACK
from tests._figures import figure
from tests._fuzz import json_values, mutated
from tests.intensity._fakes import NOW_S

EM_BODY: dict[str, Any] = {
    "zone": "IE",
    "carbonIntensity": 302,
    "datetime": "2026-05-21T10:00:00.000Z",
    "updatedAt": "2026-05-21T10:12:31.014Z",
    "isEstimated": False,
}
WT_FORECAST: dict[str, Any] = {
    "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"},
    "data": [
        {"point_time": "2026-05-21T10:20:00+00:00", "value": 912.4},
        {"point_time": "2026-05-21T10:25:00+00:00", "value": 900.0},
    ],
}
WT_LOGIN: dict[str, Any] = {"token": "jwt-1"}
RAW_BODIES = [
    b"[" * 100_000 + b"]" * 100_000,  # json recurses until RecursionError
    b"\xff\xfe\x00",
    b"<html>oops</html>",
    b"",
    b'{"zone": "IE", "carbonIntensity": ' + b"9" * 400 + b', "datetime": "2026-05-21T10:00:00Z"}',
    b'{"zone": "IE", "carbonIntensity": 1e999, "datetime": "2026-05-21T10:00:00Z"}',
    b'{"zone": "IE", "carbonIntensity": 300, "datetime": "9999-12-31T23:59:59-23:59"}',
    b'{"zone": "IE", "carbonIntensity": 300, "datetime": "0001-01-01T00:00:00+23:59"}',
]
TIMESTAMPS = [
    "2026-05-21T10:00:00Z",
    "2026-05-21T10:00:00",  # no offset
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2026-13-01T00:00:00Z",
    "2026-05-21T10:00:00.123456789Z",
    "2026-05-21T10:00:00+25:00",
    "\ud800",
    "x" * 10_000,
]
HEADERS = st.sampled_from(
    [
        {},
        {},
        {"Retry-After": "30"},
        {"Retry-After": "-1"},
        {"Retry-After": "nan"},
        {"Retry-After": "1e400"},
        {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"Content-Type": "text/plain"},
        {"Content-Encoding": "gzip"},
    ]
)
STATUSES = st.sampled_from([200] * 10 + [204, 301, 400, 401, 403, 404, 429, 500, 503, 999])


@dataclass(frozen=True)
class Answer:
    """What the fake API answers (a response is built per request: httpx decodes the body when it is built)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def response(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, headers=self.headers, content=self.body)


def _ok(body: dict[str, Any]) -> Answer:
    return Answer(200, {}, json.dumps(body).encode())


@st.composite
def answers(draw: st.DrawFn, valid: dict[str, Any], timestamp_paths: list[tuple[Any, ...]]) -> Answer:
    """An answer: the valid body mutated (or a hostile timestamp), arbitrary JSON, or a raw body; any status."""
    status, headers = draw(STATUSES), draw(HEADERS)
    choice = draw(st.integers(0, 9))
    if choice < 6:
        body = json.dumps(draw(mutated(valid))).encode()
    elif choice < 8:
        document = json.loads(json.dumps(valid))
        parent = document
        path = draw(st.sampled_from(timestamp_paths))
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(st.sampled_from(TIMESTAMPS))
        body = json.dumps(document).encode()
    elif choice < 9:
        body = json.dumps(draw(json_values)).encode()
    else:
        body = draw(st.sampled_from(RAW_BODIES))
    return Answer(status, headers, body)


def _fallback() -> StaticIntensity:
    return StaticIntensity(450, {"eu-west-1": 300})


def _read(provider: HttpIntensityProvider, zone: str) -> tuple[str, str | None]:
    async def once() -> tuple[str, str | None]:
        reading = await provider.intensity(zone, NOW_S)
        assert math.isfinite(reading.g_per_kwh)
        assert 0 <= reading.g_per_kwh <= provider.max_g_per_kwh
        assert math.isfinite(reading.observed_unix_s)
        fallbacks = dict(provider.fallbacks)
        if reading.source == SOURCE_STATIC_FALLBACK:
            assert reading.fallback_reason in FALLBACK_REASONS
            assert reading.fallback_reason != "internal_error"
            assert fallbacks == {(provider.name, reading.fallback_reason): 1}
            assert reading.g_per_kwh == 300.0  # the static table's value for the zone
        else:
            assert reading.source == provider.name
            assert fallbacks == {}
        await provider.aclose()
        return reading.source, reading.fallback_reason

    return asyncio.run(once())


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _electricity_maps(answer: Answer) -> ElectricityMapsIntensity:
    return ElectricityMapsIntensity(
        "https://em.example.test/v3",
        token="t",
        fallback=_fallback(),
        zone_map={"eu-west-1": "IE"},
        client=_client(answer.response),
    )


def _watt_time(login: Answer, forecast: Answer) -> WattTimeIntensity:
    def handle(request: httpx.Request) -> httpx.Response:
        return (login if request.url.path == "/login" else forecast).response(request)

    return WattTimeIntensity(
        "https://wt.example.test",
        username="u",
        password="p",
        fallback=_fallback(),
        zone_map={"eu-west-1": "CAISO_NORTH"},
        client=_client(handle),
    )


def test_electricity_maps_answers_give_a_reading_or_a_counted_fallback() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @example(_ok(EM_BODY))
    @example(Answer(200, {}, RAW_BODIES[0]))  # RecursionError: was counted as internal_error
    @example(Answer(200, {}, RAW_BODIES[4]))  # OverflowError (an integer beyond float64): was internal_error
    @example(Answer(200, {}, RAW_BODIES[6]))  # the last second of year 9999, 24 hours west: future_timestamp
    @example(Answer(200, {}, RAW_BODIES[7]))  # year 1, 24 hours east: stale
    @given(answers(EM_BODY, [("datetime",)]))
    def run(answer: Answer) -> None:
        source, reason = _read(_electricity_maps(answer), "eu-west-1a")
        outcomes[reason or source] += 1

    run()
    figure(f"Electricity Maps answer fuzz: {outcomes.total()} answers, reading by source/reason {dict(outcomes)}")
    assert outcomes["electricitymaps"]


def test_watt_time_answers_give_a_reading_or_a_counted_fallback() -> None:
    outcomes: Counter[str] = Counter()
    forecast_times = [("data", 0, "point_time"), ("data", 1, "point_time")]

    @settings(max_examples=300, deadline=None)
    @example(_ok(WT_LOGIN), _ok(WT_FORECAST))
    @example(_ok({"token": "\ud800"}), _ok(WT_FORECAST))  # a token no header can carry: was internal_error
    @example(_ok({"token": "jwt\u00e9"}), _ok(WT_FORECAST))  # not ASCII: likewise
    @given(
        st.one_of(st.just(_ok(WT_LOGIN)), answers(WT_LOGIN, [("token",)])),
        st.one_of(st.just(_ok(WT_FORECAST)), answers(WT_FORECAST, forecast_times)),
    )
    def run(login: Answer, forecast: Answer) -> None:
        source, reason = _read(_watt_time(login, forecast), "eu-west-1a")
        outcomes[reason or source] += 1

    run()
    figure(f"WattTime answer fuzz: {outcomes.total()} login/forecast pairs, reading by source/reason {dict(outcomes)}")
    assert outcomes["watttime"]

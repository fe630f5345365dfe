"""WattTime provider against a fake API: login and token reuse, re-login on 401, lbs/MWh -> g/kWh, failures."""

from __future__ import annotations

import asyncio
import base64
import logging

import httpx
import pytest

from jouleledger.intensity import StaticIntensity, WattTimeIntensity, lbs_per_mwh_to_g_per_kwh
from tests.intensity._fakes import NOW_S, FakeApi

BASE = "https://wt.example.test"
USER = "carbon-user"
PASSWORD = "pa55-w0rd-secret"
# NOW is 2026-05-21T10:20:00Z: the current 5-minute interval starts exactly then.
POINT = "2026-05-21T10:20:00+00:00"


class WattTimeApi:
    """A fake WattTime: /login hands out jwt-1, jwt-2, ...; /v3/forecast answers with ``forecast``."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.issued = 0
        self.valid_tokens: set[str] = set()
        self.login_answer: httpx.Response | None = None
        self.forecast_value: object = 1000
        self.forecast_body: dict[str, object] | None = None
        self.forecast_status = 200
        api.handler = self.handle

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            if self.login_answer is not None:
                return self.login_answer
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return httpx.Response(401)
            self.issued += 1
            token = f"jwt-{self.issued}"
            self.valid_tokens.add(token)
            return httpx.Response(200, json={"token": token})
        assert request.url.path == "/v3/forecast"
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.valid_tokens:
            return httpx.Response(401)
        if self.forecast_status != 200:
            return httpx.Response(self.forecast_status)
        region = request.url.params["region"]
        body = self.forecast_body or {
            "meta": {"region": region, "signal_type": "co2_moer", "units": "lbs_co2_per_mwh", "model": {}},
            "data": [{"point_time": POINT, "value": self.forecast_value}],
        }
        return httpx.Response(200, json=body)

    def forecasts(self) -> list[httpx.Request]:
        return [request for request in self.api.requests if request.url.path == "/v3/forecast"]

    def logins(self) -> list[httpx.Request]:
        return [request for request in self.api.requests if request.url.path == "/login"]


@pytest.fixture
def wt_api(api: FakeApi) -> WattTimeApi:
    return WattTimeApi(api)


def provider(client: httpx.AsyncClient, static: StaticIntensity, **kwargs: object) -> WattTimeIntensity:
    options: dict[str, object] = {
        "username": USER,
        "password": PASSWORD,
        "fallback": static,
        "zone_map": {"us-east-1": "PJM_DC", "us-west-1": "CAISO_NORTH"},
        "client": client,
        "cache_ttl_s": 300.0,
    }
    options.update(kwargs)
    return WattTimeIntensity(BASE, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lbs_per_mwh", "g_per_kwh"),
    [
        (0.0, 0.0),
        (1.0, 0.45359237),  # 453.59237 g / 1000 kWh
        (1000.0, 453.59237),
        (2204.62262184878, 1000.0),  # 1000 / 0.45359237
        (1500.0, 680.388555),
    ],
)
def test_unit_conversion(lbs_per_mwh: float, g_per_kwh: float) -> None:
    assert lbs_per_mwh_to_g_per_kwh(lbs_per_mwh) == pytest.approx(g_per_kwh, rel=1e-12, abs=1e-12)


async def test_happy_path(wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    wt_api.forecast_value = 1000
    wt = provider(client, static)
    reading = await wt.intensity("us-east-1a", NOW_S)
    assert reading.g_per_kwh == pytest.approx(453.59237, rel=1e-12)
    assert (reading.zone, reading.source, reading.observed_unix_s) == ("us-east-1a", "watttime", NOW_S)
    assert reading.fallback_reason is None
    [login] = wt_api.logins()
    assert login.headers["authorization"] == "Basic Y2FyYm9uLXVzZXI6cGE1NS13MHJkLXNlY3JldA=="  # user:password
    [forecast] = wt_api.forecasts()
    assert forecast.headers["authorization"] == "Bearer jwt-1"
    assert dict(forecast.url.params) == {"region": "PJM_DC", "signal_type": "co2_moer", "horizon_hours": "0"}
    assert str(forecast.url).startswith("https://wt.example.test/v3/forecast?")
    assert dict(wt.fallbacks) == {}


async def test_token_is_reused_across_zones_and_renewed_after_25_minutes(
    wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    wt = provider(client, static)
    await wt.intensity("us-east-1", NOW_S)
    await wt.intensity("us-west-1", NOW_S + 1)
    assert (len(wt_api.logins()), len(wt_api.forecasts())) == (1, 2)
    await wt.intensity("us-east-1", NOW_S + 1499)  # cache expired, token still young
    assert len(wt_api.logins()) == 1
    await wt.intensity("us-west-1", NOW_S + 1500)  # 25 min after login: renew first
    assert len(wt_api.logins()) == 2
    assert wt_api.forecasts()[-1].headers["authorization"] == "Bearer jwt-2"
    assert wt.logins == 2


async def test_401_triggers_one_relogin(
    wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    wt = provider(client, static)
    await wt.intensity("us-east-1", NOW_S)
    wt_api.valid_tokens.clear()  # the server revoked jwt-1 early
    reading = await wt.intensity("us-east-1", NOW_S + 300)
    assert reading.source == "watttime"
    assert [request.headers["authorization"] for request in wt_api.forecasts()] == [
        "Bearer jwt-1",
        "Bearer jwt-1",
        "Bearer jwt-2",
    ]
    assert len(wt_api.logins()) == 2


async def test_persistent_401_falls_back(
    wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    wt_api.forecast_status = 401
    wt = provider(client, static)
    reading = await wt.intensity("us-east-1", NOW_S)
    assert (reading.source, reading.fallback_reason, reading.g_per_kwh) == ("static-fallback", "unauthorized", 380.0)
    assert (len(wt_api.logins()), len(wt_api.forecasts())) == (2, 2)
    assert dict(wt.fallbacks) == {("watttime", "unauthorized"): 1}


@pytest.mark.parametrize(
    ("login_answer", "reason"),
    [
        (httpx.Response(401), "unauthorized"),
        (httpx.Response(429), "rate_limited"),
        (httpx.Response(502), "http_5xx"),
        (httpx.Response(200, json={"error": "nope"}), "malformed_response"),
        (httpx.Response(200, json={"token": ""}), "malformed_response"),
        (httpx.Response(200, text="token=abc"), "malformed_response"),
    ],
)
async def test_login_failures(
    wt_api: WattTimeApi,
    client: httpx.AsyncClient,
    static: StaticIntensity,
    *,
    login_answer: httpx.Response,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wt_api.login_answer = login_answer
    wt = provider(client, static)
    with caplog.at_level(logging.DEBUG):
        reading = await wt.intensity("us-east-1", NOW_S)
    assert (reading.fallback_reason, reading.g_per_kwh) == (reason, 380.0)
    assert wt_api.forecasts() == []
    assert "login" in caplog.text
    assert PASSWORD not in caplog.text


def _meta(**changes: object) -> dict[str, object]:
    meta: dict[str, object] = {"region": "PJM_DC", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"}
    meta.update(changes)
    return meta


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"meta": _meta(region="CAISO_NORTH"), "data": [{"point_time": POINT, "value": 900}]}, "wrong_zone"),
        ({"meta": _meta(units="kg_co2_per_mwh"), "data": [{"point_time": POINT, "value": 900}]}, "wrong_units"),
        ({"meta": _meta(signal_type="health_damage"), "data": [{"point_time": POINT, "value": 9}]}, "wrong_units"),
        ({"meta": _meta(units=None), "data": [{"point_time": POINT, "value": 900}]}, "wrong_units"),
        ({"meta": _meta(), "data": []}, "malformed_response"),
        ({"meta": _meta(), "data": {"point_time": POINT, "value": 900}}, "malformed_response"),
        ({"meta": _meta(), "data": [[POINT, 900]]}, "malformed_response"),
        ({"meta": _meta(), "data": [{"value": 900}]}, "malformed_response"),
        ({"meta": _meta(), "data": [{"point_time": POINT}]}, "malformed_response"),
        ({"meta": _meta(), "data": [{"point_time": POINT, "value": "900"}]}, "malformed_response"),
        ({"data": [{"point_time": POINT, "value": 900}]}, "malformed_response"),
        ({"meta": {"units": "lbs_co2_per_mwh"}, "data": [{"point_time": POINT, "value": 900}]}, "malformed_response"),
        ({"meta": _meta(), "data": [{"point_time": POINT, "value": -1}]}, "out_of_range"),
        # 4410 lbs/MWh = 2000.34 g/kWh: a plausible-looking number in the wrong unit space is still rejected.
        ({"meta": _meta(), "data": [{"point_time": POINT, "value": 4410}]}, "out_of_range"),
        ({"meta": _meta(), "data": [{"point_time": "2026-05-21T08:19:59Z", "value": 900}]}, "stale"),
        ({"meta": _meta(), "data": [{"point_time": "2026-05-21T10:35:01Z", "value": 900}]}, "future_timestamp"),
    ],
)
async def test_bad_forecasts_fall_back(
    wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity, body: dict[str, object], reason: str
) -> None:
    wt_api.forecast_body = body
    wt = provider(client, static)
    reading = await wt.intensity("us-east-1", NOW_S)
    assert (reading.source, reading.fallback_reason, reading.g_per_kwh) == ("static-fallback", reason, 380.0)
    assert dict(wt.fallbacks) == {("watttime", reason): 1}


async def test_nan_value_falls_back(api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    meta = '{"region": "PJM_DC", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"}'
    forecast = f'{{"meta": {meta}, "data": [{{"point_time": "{POINT}", "value": NaN}}]}}'

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, json={"token": "jwt"})
        return httpx.Response(200, text=forecast)

    api.handler = handle
    reading = await provider(client, static).intensity("us-east-1", NOW_S)
    assert reading.fallback_reason == "not_finite"


async def test_largest_accepted_value_and_earliest_point(
    wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    # Points out of order: the earliest (10:20) is the current interval. 4000 lbs/MWh = 1814.36948 g/kWh.
    wt_api.forecast_body = {
        "meta": _meta(),
        "data": [
            {"point_time": "2026-05-21T10:25:00Z", "value": 10},
            {"point_time": POINT, "value": 4000},
            {"point_time": "2026-05-21T10:30:00Z", "value": 20},
        ],
    }
    reading = await provider(client, static).intensity("us-east-1", NOW_S)
    assert reading.g_per_kwh == pytest.approx(1814.36948, rel=1e-12)
    assert reading.observed_unix_s == NOW_S


async def test_concurrent_first_calls_log_in_once(
    wt_api: WattTimeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    wt = provider(client, static)
    zones = ["us-east-1a", "us-west-1a", "us-east-1b", "us-west-1b"] * 5
    readings = await asyncio.gather(*(wt.intensity(zone, NOW_S) for zone in zones))
    assert {reading.source for reading in readings} == {"watttime"}
    assert (len(wt_api.logins()), len(wt_api.forecasts())) == (1, 2)


async def test_timeout_during_login(api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow login", request=request)

    api.handler = handle
    wt = provider(client, static)
    reading = await wt.intensity("us-east-1", NOW_S)
    assert reading.fallback_reason == "timeout"
    assert dict(wt.fallbacks) == {("watttime", "timeout"): 1}


def test_repr_hides_credentials(client: httpx.AsyncClient, static: StaticIntensity) -> None:
    text = repr(provider(client, static))
    assert PASSWORD not in text
    assert USER not in text

"""Electricity Maps provider against a fake API (httpx.MockTransport): values, cache, failures, concurrency."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from jouleledger.intensity import ElectricityMapsIntensity, StaticIntensity
from tests.intensity._fakes import NOW_S, FakeApi, settle

TOKEN = "em-secret-token-123"
BASE = "https://em.example.test/v3"
# 2026-05-21T10:00:00Z is NOW_S - 1200 s (NOW is 10:20:00 UTC).
HOUR_START = "2026-05-21T10:00:00.000Z"


def answer(
    intensity: object = 302, when: object = HOUR_START, zone: object = "IE", status: int = 200
) -> httpx.Response:
    body: dict[str, object] = {
        "zone": zone,
        "carbonIntensity": intensity,
        "datetime": when,
        "updatedAt": "2026-05-21T10:12:31.014Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
        "estimationMethod": None,
    }
    return httpx.Response(status, json=body)


def provider(client: httpx.AsyncClient, static: StaticIntensity, **kwargs: object) -> ElectricityMapsIntensity:
    options: dict[str, object] = {
        "token": TOKEN,
        "fallback": static,
        "zone_map": {"eu-west-1": "IE", "eu-west-2": "GB"},
        "client": client,
        "timeout_s": 5.0,
        "cache_ttl_s": 300.0,
        "max_age_s": 7200.0,
    }
    options.update(kwargs)
    return ElectricityMapsIntensity(BASE, **options)  # type: ignore[arg-type]


async def test_happy_path(api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    api.handler = lambda request: answer(302)
    em = provider(client, static)
    reading = await em.intensity("eu-west-1a", NOW_S)
    assert reading.g_per_kwh == 302.0
    assert reading.zone == "eu-west-1a"
    assert reading.source == "electricitymaps"
    assert reading.observed_unix_s == NOW_S - 1200
    assert reading.fallback_reason is None
    [request] = api.requests
    assert request.method == "GET"
    assert str(request.url) == "https://em.example.test/v3/carbon-intensity/latest?zone=IE"
    assert request.headers["auth-token"] == TOKEN
    assert dict(em.fallbacks) == {}


async def test_fractional_value_and_offset_timestamp(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    # 12:00+02:00 is 10:00Z.
    api.handler = lambda request: answer(87.25, "2026-05-21T12:00:00+02:00")
    reading = await provider(client, static).intensity("eu-west-1", NOW_S)
    assert (reading.g_per_kwh, reading.observed_unix_s) == (87.25, NOW_S - 1200)


async def test_cache_hit_and_expiry(api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    values = iter([302, 250])
    api.handler = lambda request: answer(next(values))
    em = provider(client, static)
    assert (await em.intensity("eu-west-1", NOW_S)).g_per_kwh == 302
    assert (await em.intensity("eu-west-1b", NOW_S + 299.9)).g_per_kwh == 302  # same vendor zone, cached
    assert len(api.requests) == 1
    assert (await em.intensity("eu-west-1", NOW_S + 300)).g_per_kwh == 250  # TTL over
    assert len(api.requests) == 2


async def test_cached_value_is_not_served_once_stale(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    # The value applies to 10:00Z (1200 s before NOW); with max_age 1300 s it turns stale 100 s after NOW,
    # before the 300 s TTL ends, so the next call asks again (and the API now has a newer hour).
    answers = iter([answer(302), answer(280, "2026-05-21T10:20:00Z")])
    api.handler = lambda request: next(answers)
    em = provider(client, static, max_age_s=1300.0)
    assert (await em.intensity("eu-west-1", NOW_S)).g_per_kwh == 302
    assert (await em.intensity("eu-west-1", NOW_S + 100)).g_per_kwh == 302
    reading = await em.intensity("eu-west-1", NOW_S + 101)
    assert (reading.g_per_kwh, reading.observed_unix_s) == (280, NOW_S)
    assert len(api.requests) == 2


async def test_clock_going_backwards_refetches(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    api.handler = lambda request: answer(302)
    em = provider(client, static)
    await em.intensity("eu-west-1", NOW_S)
    await em.intensity("eu-west-1", NOW_S - 10)
    assert len(api.requests) == 2


def _raise(error: Exception) -> httpx.Response:
    raise error


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (lambda r: _raise(httpx.ReadTimeout("slow", request=r)), "timeout"),
        (lambda r: _raise(httpx.ConnectTimeout("slow", request=r)), "timeout"),
        (lambda r: _raise(httpx.ConnectError("refused", request=r)), "transport_error"),
        (lambda r: _raise(RuntimeError("bug")), "internal_error"),
        (lambda r: httpx.Response(500), "http_5xx"),
        (lambda r: httpx.Response(503, text="maintenance"), "http_5xx"),
        (lambda r: httpx.Response(429), "rate_limited"),
        (lambda r: httpx.Response(401), "unauthorized"),
        (lambda r: httpx.Response(403), "unauthorized"),
        (lambda r: httpx.Response(404, json={"error": "zone not found"}), "http_4xx"),
        (lambda r: httpx.Response(302, headers={"location": "https://elsewhere.test/"}), "http_3xx"),
        (lambda r: httpx.Response(200, text="<html>oops</html>"), "malformed_response"),
        (lambda r: httpx.Response(200, text='{"zone": "IE", "carbonIntensity": 3'), "malformed_response"),
        (lambda r: httpx.Response(200, content=b"\xff\xfe\x00"), "malformed_response"),
        (lambda r: httpx.Response(200, json=[302]), "malformed_response"),
        (lambda r: httpx.Response(200, json={"carbonIntensity": 302, "datetime": HOUR_START}), "malformed_response"),
        (lambda r: answer(None), "malformed_response"),
        (lambda r: answer("302"), "malformed_response"),
        (lambda r: answer(True), "malformed_response"),
        (lambda r: answer(302, when=None), "malformed_response"),
        (lambda r: answer(302, when="yesterday"), "malformed_response"),
        (lambda r: answer(302, when="2026-05-21T10:00:00"), "malformed_response"),  # no UTC offset
        (lambda r: answer(-1), "out_of_range"),
        (lambda r: answer(2000.5), "out_of_range"),
        (lambda r: answer(302_000), "out_of_range"),  # g/MWh by mistake
        (lambda r: answer(302, zone="GB"), "wrong_zone"),
        (lambda r: answer(302, when="2026-05-21T08:19:59Z"), "stale"),  # 7201 s old
        (lambda r: answer(302, when="2026-05-21T10:35:01Z"), "future_timestamp"),  # 901 s ahead
    ],
)
async def test_failures_fall_back_with_reason(
    api: FakeApi,
    client: httpx.AsyncClient,
    static: StaticIntensity,
    *,
    response: object,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.handler = response  # type: ignore[assignment]
    em = provider(client, static)
    with caplog.at_level(logging.DEBUG):
        reading = await em.intensity("eu-west-1c", NOW_S)
    assert reading.source == "static-fallback"
    assert reading.fallback_reason == reason
    assert reading.g_per_kwh == 300.0  # the table's eu-west-1 entry
    assert reading.zone == "eu-west-1c"
    assert reading.observed_unix_s == NOW_S
    assert dict(em.fallbacks) == {("electricitymaps", reason): 1}
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert reason in warnings[0].getMessage()
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_json_literals(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity, literal: str
) -> None:
    body = f'{{"zone": "IE", "carbonIntensity": {literal}, "datetime": "{HOUR_START}"}}'
    api.handler = lambda request: httpx.Response(200, text=body, headers={"content-type": "application/json"})
    reading = await provider(client, static).intensity("eu-west-1", NOW_S)
    assert (reading.source, reading.fallback_reason, reading.g_per_kwh) == ("static-fallback", "not_finite", 300.0)


async def test_boundaries_are_accepted(api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    # Exactly max_age old, exactly 900 s ahead, exactly 0 and exactly the maximum are all valid.
    cases = [
        ("2026-05-21T08:20:00Z", 0, NOW_S - 7200),
        ("2026-05-21T10:35:00Z", 2000, NOW_S + 900),
    ]
    for when, value, observed in cases:
        api.handler = lambda request, when=when, value=value: answer(value, when)
        reading = await provider(client, static).intensity("eu-west-1", NOW_S)
        assert (reading.source, reading.g_per_kwh, reading.observed_unix_s) == ("electricitymaps", value, observed)


async def test_plausible_bound_is_configurable(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    api.handler = lambda request: answer(2500)
    assert (await provider(client, static, max_g_per_kwh=3000).intensity("eu-west-1", NOW_S)).g_per_kwh == 2500
    low = provider(client, static, max_g_per_kwh=200)
    assert (await low.intensity("eu-west-1", NOW_S)).fallback_reason == "out_of_range"


async def test_overall_timeout_without_sleeping_long(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        return answer()

    api.handler = hang
    reading = await provider(client, static, timeout_s=0.02).intensity("eu-west-1", NOW_S)
    assert (reading.fallback_reason, reading.g_per_kwh) == ("timeout", 300.0)


async def test_failure_is_remembered_then_retried(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    answers = iter([httpx.Response(500), answer(302)])
    api.handler = lambda request: next(answers)
    em = provider(client, static)
    assert (await em.intensity("eu-west-1", NOW_S)).fallback_reason == "http_5xx"
    assert (await em.intensity("eu-west-1", NOW_S + 59)).fallback_reason == "http_5xx"  # no new request
    assert len(api.requests) == 1
    assert dict(em.fallbacks) == {("electricitymaps", "http_5xx"): 2}  # one per reading served
    reading = await em.intensity("eu-west-1", NOW_S + 60)
    assert (reading.source, reading.g_per_kwh) == ("electricitymaps", 302)
    assert len(api.requests) == 2


async def test_retry_after_is_honoured(api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity) -> None:
    api.handler = lambda request: httpx.Response(429, headers={"retry-after": "120"})
    em = provider(client, static)
    await em.intensity("eu-west-1", NOW_S)
    await em.intensity("eu-west-1", NOW_S + 119)
    assert len(api.requests) == 1
    await em.intensity("eu-west-1", NOW_S + 120)
    assert len(api.requests) == 2
    assert dict(em.fallbacks) == {("electricitymaps", "rate_limited"): 3}


async def test_unmapped_zone_makes_no_request_and_warns_once(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity, caplog: pytest.LogCaptureFixture
) -> None:
    em = provider(client, static)
    with caplog.at_level(logging.WARNING):
        first = await em.intensity("us-east-1a", NOW_S)
        await em.intensity("us-east-1a", NOW_S + 1)
    assert (first.source, first.fallback_reason, first.g_per_kwh) == ("static-fallback", "unmapped_zone", 380.0)
    assert api.requests == []
    assert dict(em.fallbacks) == {("electricitymaps", "unmapped_zone"): 2}
    assert len(caplog.records) == 1


async def test_concurrent_calls_share_one_request(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return answer(302 if request.url.params["zone"] == "IE" else 190, zone=request.url.params["zone"])

    api.handler = slow
    em = provider(client, static)
    zones = ["eu-west-1", "eu-west-1a", "eu-west-1b", "eu-west-2", "eu-west-2a"] * 4
    tasks = [asyncio.create_task(em.intensity(zone, NOW_S)) for zone in zones]
    await settle()
    # Both vendor zones are in flight at the same time (no global serialisation), each exactly once.
    assert sorted(request.url.params["zone"] for request in api.requests) == ["GB", "IE"]
    gate.set()
    readings = await asyncio.gather(*tasks)
    assert [reading.g_per_kwh for reading in readings] == [302, 302, 302, 190, 190] * 4
    assert [reading.zone for reading in readings] == zones
    assert len(api.requests) == 2


async def test_concurrent_failures_make_one_request(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity
) -> None:
    api.handler = lambda request: httpx.Response(500)
    em = provider(client, static)
    readings = await asyncio.gather(*(em.intensity("eu-west-1", NOW_S) for _ in range(10)))
    assert {reading.fallback_reason for reading in readings} == {"http_5xx"}
    assert len(api.requests) == 1
    assert dict(em.fallbacks) == {("electricitymaps", "http_5xx"): 10}


async def test_token_file_is_reread_and_missing_file_falls_back(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity, tmp_path: Path
) -> None:
    from jouleledger.intensity import Secret

    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    api.handler = lambda request: answer()
    em = provider(client, static, token=Secret.from_file(token_file), cache_ttl_s=10.0)
    await em.intensity("eu-west-1", NOW_S)
    token_file.write_text("rotated")
    await em.intensity("eu-west-1", NOW_S + 10)
    assert [request.headers["auth-token"] for request in api.requests] == ["first", "rotated"]
    token_file.unlink()
    reading = await em.intensity("eu-west-1", NOW_S + 20)
    assert reading.fallback_reason == "no_credentials"
    assert len(api.requests) == 2


def test_fallbacks_snapshot_is_read_only(client: httpx.AsyncClient, static: StaticIntensity) -> None:
    em = provider(client, static)
    with pytest.raises(TypeError):
        em.fallbacks[("electricitymaps", "timeout")] = 1  # type: ignore[index]
    assert TOKEN not in repr(em)


async def test_owned_client_is_closed_injected_client_is_not(
    static: StaticIntensity, client: httpx.AsyncClient
) -> None:
    owned = ElectricityMapsIntensity(BASE, token=TOKEN, fallback=static, zone_map={"eu-west-1": "IE"})
    await owned.aclose()
    assert owned._client.is_closed
    injected = provider(client, static)
    await injected.aclose()
    assert not client.is_closed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"cache_ttl_s": -1}, "cache_ttl_s"),
        ({"max_age_s": float("nan")}, "max_age_s"),
        ({"zone_map": {"eu-west-1": ""}}, "zone map"),
        ({"zone_map": {"": "IE"}}, "zone map"),
    ],
)
def test_constructor_validation(
    client: httpx.AsyncClient, static: StaticIntensity, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        provider(client, static, **kwargs)


@pytest.mark.parametrize("url", ["ftp://x", "api.example.test/v3", "https://x/v3?zone=IE", ""])
def test_bad_base_url(static: StaticIntensity, url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        ElectricityMapsIntensity(url, token=TOKEN, fallback=static, zone_map={"a": "IE"})


@pytest.mark.parametrize("header", ["Wed, 21 Oct 2026 07:28:00 GMT", "-5", "nan"])
async def test_unusable_retry_after_uses_the_failure_ttl(
    api: FakeApi, client: httpx.AsyncClient, static: StaticIntensity, header: str
) -> None:
    api.handler = lambda request: httpx.Response(429, headers={"retry-after": header})
    em = provider(client, static)
    await em.intensity("eu-west-1", NOW_S)
    await em.intensity("eu-west-1", NOW_S + 59)
    await em.intensity("eu-west-1", NOW_S + 60)
    assert len(api.requests) == 2


async def test_non_finite_clock_is_a_caller_error(client: httpx.AsyncClient, static: StaticIntensity) -> None:
    with pytest.raises(ValueError, match="now_unix_s"):
        await provider(client, static).intensity("eu-west-1", float("nan"))


def test_fallback_must_be_a_static_table(client: httpx.AsyncClient, static: StaticIntensity) -> None:
    with pytest.raises(TypeError, match="StaticIntensity"):
        provider(client, static, fallback=object())

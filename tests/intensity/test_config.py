"""build_provider: the operator's ``intensity:`` block, its defaults, and clear errors for bad values."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from jouleledger.intensity import (
    KNOWN_KEYS,
    ElectricityMapsIntensity,
    StaticIntensity,
    WattTimeIntensity,
    build_provider,
)
from tests.intensity._fakes import NOW_S, FakeApi


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    files = {"token": "em-token", "user": "wt-user", "password": "wt-password"}
    paths = {}
    for name, content in files.items():
        path = tmp_path / name
        path.write_text(content + "\n")
        paths[name] = str(path)
    return paths


async def test_empty_block_is_the_default_static_table() -> None:
    for config in (None, {}):
        provider = build_provider(config)
        assert isinstance(provider, StaticIntensity)
        assert (await provider.intensity("anywhere-1", NOW_S)).g_per_kwh == 400.0


async def test_static_table() -> None:
    provider = build_provider(
        {"provider": "static", "defaultGramsPerKwh": 500, "zones": {"eu-west-1": 300, "europe-west4": 280.5}}
    )
    assert isinstance(provider, StaticIntensity)
    assert (await provider.intensity("europe-west4-c", NOW_S)).g_per_kwh == 280.5
    assert (await provider.intensity("us-east-1", NOW_S)).g_per_kwh == 500.0


async def test_every_known_key_is_accepted(secrets: dict[str, str]) -> None:
    # A block that uses every key of KNOWN_KEYS builds: the structure the chart is checked against is real.
    values: dict[str, Any] = {
        "provider": "electricitymaps",
        "defaultGramsPerKwh": 400,
        "maxGramsPerKwh": 1500,
        "zones": {"eu-west-1": 300},
        "cacheTtlSeconds": 600,
        "timeoutSeconds": 3,
        "maxAgeSeconds": 3600,
        "electricityMaps": {
            "url": "https://em.example.test/v3",
            "tokenFile": secrets["token"],
            "zoneMap": {"eu-west-1": "IE"},
        },
        "wattTime": {
            "url": "https://wt.example.test",
            "usernameFile": secrets["user"],
            "passwordFile": secrets["password"],
            "zoneMap": {"us-east-1": "PJM_DC"},
        },
    }
    assert _key_tree(values) == _key_tree(KNOWN_KEYS)
    provider = build_provider(values)
    assert isinstance(provider, ElectricityMapsIntensity)
    assert (provider.base_url, provider.timeout_s, provider.cache_ttl_s, provider.max_age_s) == (
        "https://em.example.test/v3",
        3.0,
        600.0,
        3600.0,
    )
    assert provider.max_g_per_kwh == 1500.0
    assert dict(provider.zone_map) == {"eu-west-1": "IE"}
    assert dict(provider.fallback.zones) == {"eu-west-1": 300.0}
    await provider.aclose()


def _key_tree(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _key_tree(value) if key in ("electricityMaps", "wattTime") else None for key, value in mapping.items()}


def test_known_keys_shape() -> None:
    assert set(KNOWN_KEYS) == {
        "provider",
        "defaultGramsPerKwh",
        "maxGramsPerKwh",
        "zones",
        "cacheTtlSeconds",
        "timeoutSeconds",
        "maxAgeSeconds",
        "electricityMaps",
        "wattTime",
    }
    assert set(KNOWN_KEYS["electricityMaps"] or {}) == {"url", "tokenFile", "zoneMap"}
    assert set(KNOWN_KEYS["wattTime"] or {}) == {"url", "usernameFile", "passwordFile", "zoneMap"}


async def test_electricitymaps_defaults_and_end_to_end(secrets: dict[str, str], api: FakeApi) -> None:
    api.handler = lambda request: httpx.Response(
        200, json={"zone": "IE", "carbonIntensity": 250, "datetime": "2026-05-21T10:00:00Z"}
    )
    async with api.client() as http:
        provider = build_provider(
            {
                "provider": "electricitymaps",
                "electricityMaps": {"tokenFile": secrets["token"], "zoneMap": {"eu-west-1": "IE"}},
            },
            client=http,
        )
        assert isinstance(provider, ElectricityMapsIntensity)
        assert provider.base_url == "https://api.electricitymap.org/v3"
        assert (provider.timeout_s, provider.cache_ttl_s, provider.max_age_s) == (5.0, 300.0, 7200.0)
        reading = await provider.intensity("eu-west-1", NOW_S)
        await provider.aclose()
        assert not http.is_closed
    assert (reading.source, reading.g_per_kwh) == ("electricitymaps", 250.0)
    assert api.requests[0].headers["auth-token"] == "em-token"


async def test_watttime(secrets: dict[str, str]) -> None:
    provider = build_provider(
        {
            "provider": "watttime",
            "zones": {"us-east-1": 380},
            "wattTime": {
                "usernameFile": secrets["user"],
                "passwordFile": secrets["password"],
                "zoneMap": {"us-east-1": "PJM_DC"},
            },
        }
    )
    assert isinstance(provider, WattTimeIntensity)
    assert provider.base_url == "https://api.watttime.org"
    assert "wt-password" not in repr(provider)
    await provider.aclose()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"zonez": {}}, r"intensity\.zonez: unknown key"),
        ({"electricityMaps": {"tokenfile": "/x"}}, r"intensity\.electricityMaps\.tokenfile: unknown key"),
        ({"wattTime": {"zone_map": {}}}, r"intensity\.wattTime\.zone_map: unknown key"),
        ({"provider": "carbonara"}, r"intensity\.provider: must be one of static, electricitymaps, watttime"),
        ({"defaultGramsPerKwh": "400"}, r"intensity\.defaultGramsPerKwh: must be a finite number"),
        ({"defaultGramsPerKwh": -1}, r"default intensity"),
        ({"maxGramsPerKwh": 0}, r"intensity\.maxGramsPerKwh: must be positive"),
        ({"timeoutSeconds": 0}, r"intensity\.timeoutSeconds: must be positive"),
        ({"cacheTtlSeconds": True}, r"intensity\.cacheTtlSeconds: must be a finite number"),
        ({"maxAgeSeconds": float("inf")}, r"intensity\.maxAgeSeconds: must be a finite number"),
        ({"zones": {"eu-west-1": 300, "ap-south-1": 9000}}, r"'ap-south-1'"),
        ({"zones": [300]}, r"intensity\.zones: must be a mapping"),
        ({"electricityMaps": "yes"}, r"intensity\.electricityMaps: must be a mapping"),
        ({"provider": "electricitymaps", "electricityMaps": {"zoneMap": {"a": "IE"}}}, r"tokenFile: required"),
        ({"provider": "electricitymaps"}, r"intensity\.electricityMaps\.zoneMap: map at least one zone"),
        ({"provider": "watttime", "wattTime": {"zoneMap": {}}}, r"intensity\.wattTime\.zoneMap: map at least one"),
    ],
)
def test_invalid_blocks(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_provider(config)


def test_missing_or_empty_secret_file_fails_at_build(tmp_path: Path) -> None:
    absent = tmp_path / "absent-token"
    block = {"provider": "electricitymaps", "electricityMaps": {"tokenFile": str(absent), "zoneMap": {"a": "IE"}}}
    with pytest.raises(ValueError, match=r"intensity\.electricityMaps\.tokenFile: .*absent-token"):
        build_provider(block)
    absent.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        build_provider(block)


def test_bad_url_and_zone_map_entries_are_prefixed(secrets: dict[str, str]) -> None:
    section = {"tokenFile": secrets["token"], "zoneMap": {"eu-west-1": "IE"}}
    with pytest.raises(ValueError, match=r"intensity\.electricityMaps: .*URL"):
        build_provider({"provider": "electricitymaps", "electricityMaps": {**section, "url": "ftp://x"}})
    with pytest.raises(ValueError, match=r"intensity\.electricityMaps: .*zone map"):
        build_provider({"provider": "electricitymaps", "electricityMaps": {**section, "zoneMap": {"eu-west-1": 7}}})
    with pytest.raises(ValueError, match=r"intensity\.electricityMaps\.url: must be a string"):
        build_provider({"provider": "electricitymaps", "electricityMaps": {**section, "url": 7}})


def test_watttime_errors_are_prefixed(secrets: dict[str, str]) -> None:
    section = {"usernameFile": secrets["user"], "passwordFile": secrets["password"], "zoneMap": {"us-east-1": "X"}}
    with pytest.raises(ValueError, match=r"intensity\.wattTime: .*URL"):
        build_provider({"provider": "watttime", "wattTime": {**section, "url": "wt.example.test"}})
    with pytest.raises(ValueError, match=r"intensity\.wattTime\.passwordFile: required"):
        build_provider({"provider": "watttime", "wattTime": {**section, "passwordFile": ""}})

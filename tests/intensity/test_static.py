"""The static table: lookup by zone and region, validation at construction."""

from __future__ import annotations

import math

import pytest

from jouleledger.intensity import StaticIntensity
from jouleledger.intensity.zones import match_zone
from tests.intensity._fakes import NOW_S


@pytest.mark.parametrize(
    ("zone", "expected_key"),
    [
        ("eu-west-1", "eu-west-1"),  # exact
        ("eu-west-1a", "eu-west-1"),  # AWS availability zone
        ("eu-west-10", None),  # another region, not a zone of eu-west-1
        ("eu-west-1-lax-1a", "eu-west-1"),  # dash-separated sub-zone
        ("europe-west4-a", "europe-west4"),  # GCP zone
        ("europe-west4", "europe-west4"),
        ("europe-west", None),  # a key never matches a shorter zone
        ("us-east-2", "us-east"),  # hierarchical prefix
        ("us-east-1b", "us-east-1b"),  # exact zone entry beats its region
        ("us-east-1c", "us-east-1"),
        ("westeurope-1", "westeurope"),  # Azure zone
        ("westeuropea", None),  # a letter suffix only after a digit
        ("EU-WEST-1", None),  # case-sensitive
    ],
)
def test_match_zone(zone: str, expected_key: str | None) -> None:
    keys = ["eu-west-1", "europe-west4", "us-east", "us-east-1", "us-east-1b", "westeurope"]
    assert match_zone(zone, keys) == expected_key


async def test_reading_for_exact_region_and_default() -> None:
    table = StaticIntensity(450, {"eu-west-1": 300, "europe-west4": 320.5})
    exact = await table.intensity("eu-west-1", NOW_S)
    assert (exact.g_per_kwh, exact.zone, exact.source, exact.observed_unix_s) == (300.0, "eu-west-1", "static", NOW_S)
    assert exact.fallback_reason is None
    assert (await table.intensity("europe-west4-b", NOW_S)).g_per_kwh == 320.5
    default = await table.intensity("ap-south-1", NOW_S + 5)
    assert (default.g_per_kwh, default.observed_unix_s) == (450.0, NOW_S + 5)
    assert table.lookup("eu-west-1c") == (300.0, "eu-west-1")
    assert table.lookup("ap-south-1") == (450.0, None)
    assert dict(table.fallbacks) == {}
    await table.aclose()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, 2000.5, "300", True, None])
def test_bad_zone_value_names_the_zone(bad: object) -> None:
    with pytest.raises(ValueError, match="'eu-central-1'"):
        StaticIntensity(400, {"eu-west-1": 300, "eu-central-1": bad})  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", [math.nan, -0.5, 2001, "400"])
def test_bad_default_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="default intensity"):
        StaticIntensity(bad, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", "eu west-1", 7])
def test_bad_zone_key_is_rejected(key: object) -> None:
    with pytest.raises(ValueError, match="zone"):
        StaticIntensity(400, {key: 300})  # type: ignore[dict-item]


def test_bound_is_configurable() -> None:
    assert StaticIntensity(400, {"x": 2500}, max_g_per_kwh=3000).zones["x"] == 2500.0
    with pytest.raises(ValueError, match="above 1000"):
        StaticIntensity(400, {"x": 1001}, max_g_per_kwh=1000)
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="max_g_per_kwh"):
            StaticIntensity(400, {}, max_g_per_kwh=bad)


def test_table_is_read_only() -> None:
    table = StaticIntensity(400, {"eu-west-1": 300})
    with pytest.raises(TypeError):
        table.zones["eu-west-1"] = 1  # type: ignore[index]

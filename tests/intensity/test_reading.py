"""The reading value object and file-backed secrets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from jouleledger.intensity import IntensityReading, MissingSecretError, Secret, StaticIntensity, read_zones


def test_reading_accepts_a_valid_fallback() -> None:
    reading = IntensityReading(300.0, "eu-west-1", "static-fallback", 1.0, fallback_reason="timeout")
    assert reading.fallback_reason == "timeout"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"g_per_kwh": math.nan},
        {"g_per_kwh": math.inf},
        {"g_per_kwh": -0.1},
        {"g_per_kwh": True},
        {"zone": ""},
        {"source": "guess"},
        {"observed_unix_s": math.nan},
        {"fallback_reason": "timeout"},  # set while source is not a fallback
        {"source": "static-fallback"},  # a fallback without a reason
        {"source": "static-fallback", "fallback_reason": "because"},  # not a known reason
    ],
)
def test_reading_rejects_bad_values(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"g_per_kwh": 300.0, "zone": "eu-west-1", "source": "static", "observed_unix_s": 1.0}
    fields.update(kwargs)
    with pytest.raises((ValueError, TypeError)):
        IntensityReading(**fields)  # type: ignore[arg-type]


def test_secret_from_file_is_stripped_and_reread(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  first-token\n")
    secret = Secret.from_file(path)
    assert secret.reveal() == "first-token"
    path.write_text("second-token")
    assert secret.reveal() == "second-token"
    assert "token-value" not in repr(Secret.literal("token-value"))
    assert "second-token" not in repr(secret)
    assert str(path) in repr(secret)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"a\nb", "several lines"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * 70_000, "larger than"),
    ],
)
def test_secret_file_with_bad_content(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(MissingSecretError, match=match):
        Secret.from_file(path).reveal()


def test_missing_secret_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(MissingSecretError, match="absent"):
        Secret.from_file(path).reveal()


def test_secret_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Secret()
    with pytest.raises(ValueError, match="exactly one"):
        Secret(path="/x", value="y")


class _Failing(StaticIntensity):
    async def intensity(self, zone: str, now_unix_s: float) -> IntensityReading:
        if zone == "broken":
            raise RuntimeError("a provider that raises")
        return await super().intensity(zone, now_unix_s)


async def test_read_zones_reads_each_zone_once_and_leaves_out_a_provider_that_raises() -> None:
    readings, failed = await read_zones(_Failing(300.0, {"z1": 100.0}), ["z1", "broken", "z1", "z2"], 10.0)
    assert {zone: reading.g_per_kwh for zone, reading in readings.items()} == {"z1": 100.0, "z2": 300.0}
    assert failed == 1

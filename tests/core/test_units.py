"""Units and the number validators every boundary uses (core/units.py)."""

from __future__ import annotations

import math

import pytest

from jouleledger.core.units import (
    MJ_PER_KWH,
    InvalidValueError,
    checked_float,
    checked_int,
    j_to_mj,
    kwh_to_mj,
    mj_to_j,
    mj_to_kwh,
    positive,
    power_limit_mj,
)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (7, 7), (7.0, 7), (2**63 - 1, 2**63 - 1)], ids=["zero", "int", "float", "big"]
)
def test_checked_int_accepts_integers_and_integral_floats(value: object, expected: int) -> None:
    result = checked_int("x", value, maximum=2**63 - 1)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "not an integer"),
        (1.5, "not an integer"),
        (math.nan, "not an integer"),
        (math.inf, "not an integer"),
        ("3", "not an integer"),
        (None, "not an integer"),
        (-1, "below 0"),
        (11, "above 10"),
    ],
    ids=["bool", "fraction", "nan", "inf", "string", "none", "below", "above"],
)
def test_checked_int_rejects_with_the_input_named(value: object, reason: str) -> None:
    with pytest.raises(InvalidValueError) as raised:
        checked_int("gpus[0].energy_mj", value, maximum=10)
    assert raised.value.reason == reason
    assert raised.value.what == "gpus[0].energy_mj"
    assert str(raised.value).startswith(f"gpus[0].energy_mj: {reason} (got ")


def test_checked_int_minimum_can_be_negative() -> None:
    assert checked_int("x", -5, minimum=-10) == -5


@pytest.mark.parametrize(
    ("value", "reason"),
    [(True, "not a number"), ("1", "not a number"), (math.nan, "not finite"), (-math.inf, "not finite")],
    ids=["bool", "string", "nan", "inf"],
)
def test_checked_float_rejects_what_is_not_a_finite_number(value: object, reason: str) -> None:
    with pytest.raises(InvalidValueError) as raised:
        checked_float("power_w", value)
    assert raised.value.reason == reason


def test_checked_float_bounds() -> None:
    assert checked_float("x", 3) == 3.0
    with pytest.raises(InvalidValueError, match="below"):
        checked_float("x", -0.5)
    with pytest.raises(InvalidValueError, match="above"):
        checked_float("x", 701.0, maximum=700.0)


def test_energy_conversions() -> None:
    assert mj_to_j(1_500) == 1.5
    assert j_to_mj(1.5) == 1_500
    assert j_to_mj(0.0004) == 0
    assert mj_to_kwh(MJ_PER_KWH) == 1.0
    assert kwh_to_mj(2.5) == 9_000_000_000
    assert kwh_to_mj(mj_to_kwh(123_456_789)) == 123_456_789


def test_power_limit_bounds_energy_over_an_interval() -> None:
    # 700 W for 2 s is at most 1 400 J = 1 400 000 mJ.
    assert power_limit_mj(700, 2.0) == 1_400_000


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_positive_names_the_setting(value: float) -> None:
    with pytest.raises(ValueError, match=r"^interval_s must be positive, got "):
        positive("interval_s", value)


def test_positive_returns_the_value() -> None:
    assert positive("interval_s", 0.5) == 0.5

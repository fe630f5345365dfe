"""Carbon and cost arithmetic (core/carbon.py), against hand-computed figures."""

from __future__ import annotations

import pytest

from jouleledger.core.carbon import embodied_g, energy_cost, operational_g
from jouleledger.core.units import MJ_PER_KWH


def test_operational_carbon_is_kwh_times_pue_times_intensity() -> None:
    # 2 kWh at PUE 1.5 and 400 g/kWh: 2 x 1.5 x 400 = 1 200 g.
    assert operational_g(2 * MJ_PER_KWH, 1.5, 400.0) == pytest.approx(1_200.0)


def test_embodied_carbon_is_gpu_hours_times_grams_and_takes_no_pue() -> None:
    # 90 GPU-minutes at 25 g per GPU-hour: 1.5 x 25 = 37.5 g.
    assert embodied_g(5_400.0, 25.0) == pytest.approx(37.5)


def test_cost_is_facility_energy_times_price() -> None:
    # 10 kWh of IT energy at PUE 1.2 is 12 kWh at the meter; at 0.15 per kWh: 1.80.
    assert energy_cost(10 * MJ_PER_KWH, 1.2, 0.15) == pytest.approx(1.8)
    assert energy_cost(0, 1.2, 0.15) == 0.0

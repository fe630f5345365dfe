"""Rule 1: measuring one GPU's interval energy."""

from __future__ import annotations

import pytest

from jouleledger.core.integration import Baseline, Method, RejectReason, measure
from jouleledger.core.model import GpuInfo

H100 = GpuInfo("GPU-h100", "NVIDIA H100 80GB HBM3", energy_counter=True, power_limit_w=700)
T4 = GpuInfo("GPU-t4", "Tesla T4", energy_counter=False, power_limit_w=70)


def test_counter_delta() -> None:
    m = measure(H100, Baseline(0.0, 1_000, 100_000), Baseline(2.0, 801_000, 500_000))
    assert (m.delta_mj, m.method, m.interval_s, m.rejected) == (800_000, Method.COUNTER, 2.0, ())


def test_counter_reset_takes_the_new_reading() -> None:
    m = measure(H100, Baseline(0.0, 9_000_000, 0), Baseline(1.0, 42, 0))
    assert (m.delta_mj, m.method) == (42, Method.COUNTER_RESET)


def test_counter_at_exactly_the_power_limit_is_accepted() -> None:
    m = measure(H100, Baseline(0.0, 0, 0), Baseline(1.0, 700_000, 0))
    assert (m.delta_mj, m.method) == (700_000, Method.COUNTER)


def test_impossible_counter_delta_falls_back_to_power() -> None:
    m = measure(H100, Baseline(0.0, 0, 200_000), Baseline(1.0, 700_001, 400_000))
    assert (m.delta_mj, m.method) == (300_000, Method.POWER)
    assert m.rejected == (RejectReason.COUNTER_ABOVE_LIMIT,)


def test_reset_delta_above_limit_also_falls_back() -> None:
    m = measure(H100, Baseline(0.0, 5_000_000, 100_000), Baseline(1.0, 900_000, 100_000))
    assert (m.delta_mj, m.method) == (100_000, Method.POWER)


def test_no_counter_uses_trapezoid_rounded_half_even() -> None:
    # (1 + 2) / 2 mW x 1 s = 1.5 mJ -> 2 ; (2 + 3) / 2 x 1 = 2.5 -> 2 (half to even)
    assert measure(T4, Baseline(0.0, None, 1), Baseline(1.0, None, 2)).delta_mj == 2
    assert measure(T4, Baseline(0.0, None, 2), Baseline(1.0, None, 3)).delta_mj == 2
    m = measure(T4, Baseline(0.0, None, 30_000), Baseline(0.5, None, 50_000))
    assert (m.delta_mj, m.method, m.rejected) == (20_000, Method.POWER, ())


def test_missing_counter_on_a_counter_gpu_uses_power_and_is_counted() -> None:
    m = measure(H100, Baseline(0.0, None, 100_000), Baseline(1.0, 5, 100_000))
    assert (m.delta_mj, m.method, m.rejected) == (100_000, Method.POWER, (RejectReason.COUNTER_MISSING,))


def test_nothing_to_measure_is_reported_not_invented() -> None:
    m = measure(T4, Baseline(0.0, None, None), Baseline(1.0, None, 10))
    assert (m.delta_mj, m.method, m.rejected) == (0, Method.UNMEASURED, (RejectReason.NO_POWER,))


@pytest.mark.parametrize("t_cur", [0.0, -1.0])
def test_interval_must_be_positive(t_cur: float) -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        measure(H100, Baseline(0.0, 0, 0), Baseline(t_cur, 1, 0))

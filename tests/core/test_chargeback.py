"""The pure chargeback arithmetic: counter increases from sampled counters and the idle policies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouleledger.core.chargeback import IdleNode, Usage, allocate_idle, counter_increases, has_reset, joules_to_mj


def test_baseline_at_the_start_is_not_counted() -> None:
    assert counter_increases([(0.0, 100.0), (60.0, 150.0), (120.0, 150.0)], start_s=0.0) == [(60.0, 50.0)]


def test_series_born_inside_the_period_counts_its_first_value() -> None:
    assert counter_increases([(60.0, 40.0), (120.0, 70.0)], start_s=0.0) == [(60.0, 40.0), (120.0, 30.0)]


def test_reset_counts_the_new_value_and_what_came_before_it() -> None:
    points = [(0.0, 100.0), (60.0, 10.0)]
    assert counter_increases(points, start_s=0.0) == [(60.0, 10.0)]
    assert counter_increases(points, start_s=0.0, peaks={60.0: 130.0}) == [(60.0, 40.0)]
    assert has_reset(points)
    assert not has_reset([(0.0, 1.0), (1.0, 1.0)])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_joules_to_mj_refuses_untrustworthy_values(bad: float) -> None:
    with pytest.raises(ValueError, match="finite and non-negative"):
        joules_to_mj(bad)


def _usage(energy_mj: int, **on_node: int) -> Usage:
    return Usage(energy_mj=energy_mj, by_node_mj=dict(on_node))


def test_keep_puts_idle_on_its_own_line_with_carbon_and_cost() -> None:
    result = allocate_idle({"a": _usage(10)}, {"n1": IdleNode(5, 2.0, 0.5)}, "keep")
    assert [(r.key, r.energy_mj, r.idle_mj) for r in result.rows] == [("a", 10, 0)]
    assert (result.unallocated.energy_mj, result.unallocated.operational_g, result.unallocated.cost) == (5, 2.0, 0.5)
    assert result.total.energy_mj == result.measured_mj == 15


def test_share_weighted_follows_energy_on_the_same_node() -> None:
    usage = {"a": _usage(30, n1=10, n2=20), "b": _usage(30, n1=30), "c": _usage(5, n2=5)}
    result = allocate_idle(usage, {"n1": IdleNode(7, 7.0, 0.7), "n2": IdleNode(3, 3.0, 0.3)}, "share-weighted")
    rows = {r.key: r for r in result.rows}
    # n1: 7 x 10/40 = 1.75 -> 2 (largest remainder), 7 x 30/40 = 5.25 -> 5; n2: 3 x 20/25 = 2.4 -> 2, 3 x 5/25 -> 1
    assert {k: r.idle_mj for k, r in rows.items()} == {"a": 4, "b": 5, "c": 1}
    assert rows["a"].operational_g == pytest.approx(2.0 + 2.0)
    assert rows["c"].cost == pytest.approx(0.1)
    assert result.unallocated.energy_mj == 0
    assert sum(r.energy_mj for r in result.rows) == result.measured_mj == 75


def test_a_node_nobody_used_is_shared_like_the_fleet() -> None:
    usage = {"a": _usage(30, n1=30), "b": _usage(10, n1=10)}
    result = allocate_idle(usage, {"n9": IdleNode(4)}, "share-weighted")
    assert {r.key: r.idle_mj for r in result.rows} == {"a": 3, "b": 1}


def test_share_even_and_no_rows() -> None:
    result = allocate_idle({"a": _usage(1), "b": _usage(100)}, {"n1": IdleNode(5)}, "share-even")
    assert {r.key: r.idle_mj for r in result.rows} == {"a": 3, "b": 2}
    alone = allocate_idle({}, {"n1": IdleNode(5, 1.0, 1.0)}, "share-even")
    assert alone.unallocated.energy_mj == 5  # nobody to share it with: it stays on its own line
    with pytest.raises(ValueError, match="unknown idle policy"):
        allocate_idle({}, {}, "spread")


@given(
    st.dictionaries(
        st.sampled_from("abcdef"), st.dictionaries(st.sampled_from(["n1", "n2", "n3"]), st.integers(0, 10**9))
    ),
    st.dictionaries(st.sampled_from(["n1", "n2", "n3", "n4"]), st.integers(0, 10**9)),
    st.sampled_from(["keep", "share-weighted", "share-even"]),
)
def test_every_policy_keeps_the_measured_total(
    on_node: dict[str, dict[str, int]], idle: dict[str, int], policy: str
) -> None:
    usage = {key: Usage(energy_mj=sum(nodes.values()), by_node_mj=nodes) for key, nodes in on_node.items()}
    result = allocate_idle(usage, {node: IdleNode(mj, mj / 1000) for node, mj in idle.items()}, policy)
    measured = sum(u.energy_mj for u in usage.values()) + sum(idle.values())
    assert sum(r.energy_mj for r in result.rows) + result.unallocated.energy_mj == measured == result.measured_mj
    assert result.total.operational_g == pytest.approx(sum(idle.values()) / 1000)
    assert all(r.idle_mj >= 0 for r in result.rows)

"""Reading a scrape by the previous scrape's shape (ShapePlan) and regrouping a node by its previous order: the same
results as parsing and sorting in full, for any values, and used whenever the shape is the same."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.core.deltas import (
    MAX_COUNTER_J,
    AgentScrape,
    ParseMemo,
    Sample,
    ScrapeFormatError,
    parse_agent_samples,
)
from jouleledger.core.promsource import RegroupMemo, samples_by_node
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod, agent_text

PODS = [
    Pod("ml", "a", "uid-a", 12.5, 3.0, "Job", "j", "job-1", "vision", from_power_j=2.0),
    Pod("ml", "b", "uid-b", 1.0, 1.0, device="GPU-b"),
]
OLD = Pod("ml", "a", "uid-a-old", 0.0, 0.0)
LIMIT = 'jouleledger_gpu_power_limit_watts{gpu="GPU-a",node="n1"} 700.0\n'


def _text(tick_s: float = 100.0) -> str:
    finished = {("ml", "b"): 90.0}
    text = agent_text("n1", tick_s, PODS, unallocated_j=7.0, epoch="ab" * 8, extra_info=[OLD], finished=finished)
    return text + LIMIT


def _samples(text: str, cache: dict[str, Mapping[str, str]]) -> list[Sample]:
    return parse_exposition(text, cache)


def _full(samples: list[Sample], node: str = "n1") -> AgentScrape | str:
    """The full parser's answer (no memo), or the message of the error it raises."""
    try:
        return parse_agent_samples(list(samples), expected_node=node)
    except ScrapeFormatError as error:
        return f"error: {error}"


def _memoized(samples: list[Sample], memo: ParseMemo, node: str = "n1") -> AgentScrape | str:
    try:
        return parse_agent_samples(samples, expected_node=node, memo=memo)
    except ScrapeFormatError as error:
        return f"error: {error}"


def test_a_clean_scrape_leaves_a_plan_that_reads_the_next_one_of_its_shape() -> None:
    cache: dict[str, Mapping[str, str]] = {}
    memo = ParseMemo()
    first = parse_agent_samples(_samples(_text(), cache), expected_node="n1", memo=memo)
    assert first.series
    assert first.finished_unix_s
    assert first.power_limits_w
    assert not first.rejected
    plan = memo.plan
    assert plan is not None
    later = _samples(_text(115.0).replace(" 12.5\n", " 14.25\n"), cache)  # new values, the same label mappings
    read = plan.apply(later, "n1")
    assert read is not None
    assert read == _full(later)
    assert parse_agent_samples(later, expected_node="n1", memo=memo) == read
    assert memo.plan is plan  # kept: the scrape had the plan's shape
    assert plan.apply(later, "n2") is None  # another node's check is the full parser's
    assert plan.apply(later[:-1], "n1") is None  # another shape


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -1.0, MAX_COUNTER_J * 2, 5, True],
    ids=["nan", "inf", "negative", "huge", "int", "bool"],
)
def test_a_value_the_full_parser_would_reject_or_convert_is_left_to_it(value: float) -> None:
    cache: dict[str, Mapping[str, str]] = {}
    memo = ParseMemo()
    parse_agent_samples(_samples(_text(), cache), expected_node="n1", memo=memo)
    plan = memo.plan
    assert plan is not None
    for index, (name, labels, _) in enumerate(_samples(_text(), cache)):
        samples = _samples(_text(), cache)
        samples[index] = (name, labels, value)
        read = plan.apply(samples, "n1")
        if name.startswith("jouleledger_pod_gpu_"):  # a pod counter: only a float from 0 to its maximum is read
            assert read is None, name
        elif read is not None:  # where the full parser takes the value too (a huge power limit, an int tick)
            assert read == _full(samples), name


def test_a_scrape_with_a_rejection_or_a_series_twice_leaves_no_plan() -> None:
    cache: dict[str, Mapping[str, str]] = {}
    memo = ParseMemo()
    negative = _text().replace(" 12.5\n", " -12.5\n")
    assert parse_agent_samples(_samples(negative, cache), expected_node="n1", memo=memo).rejected
    assert memo.plan is None
    line = next(line for line in _text().splitlines() if line.startswith("jouleledger_pod_gpu_energy_joules_total"))
    twice = _text() + line + "\n"  # the same series through two Prometheus jobs: harmless while the copies agree
    scrape = parse_agent_samples(_samples(twice, cache), expected_node="n1", memo=memo)
    assert not scrape.rejected
    assert memo.plan is None
    disagree = _text() + line.replace(" 12.5", " 13.5") + "\n"
    assert [bad.reason for bad in parse_agent_samples(_samples(disagree, cache), memo=memo).rejected] == [
        "duplicate_series"
    ]


ODD_VALUES = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, MAX_COUNTER_J * 2, 7, False, 1e300])
VALUES = st.one_of(st.floats(min_value=0.0, max_value=1e9), ODD_VALUES)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.integers(0, 40), VALUES, max_size=4), min_size=1, max_size=6))
def test_any_values_give_what_the_full_parser_gives(changes: list[dict[int, float]]) -> None:
    """Scrape after scrape of one shape, some values replaced (odd ones included): with the memo (and its plan),
    the same scrape or the same error as the full parser."""
    cache: dict[str, Mapping[str, str]] = {}
    memo = ParseMemo()
    assert _memoized(_samples(_text(), cache), memo) == _full(_samples(_text(), cache))
    for step, change in enumerate(changes):
        samples = _samples(_text(100.0 + 15 * step), cache)
        for index, value in change.items():
            name, labels, _ = samples[index % len(samples)]
            samples[index % len(samples)] = (name, labels, value)
        assert _memoized(samples, memo) == _full(samples)


def _answer(text: str, cache: dict[str, dict[str, str]], **target: str) -> list[tuple[Mapping[str, str], float]]:
    """An exposition as an instant query returns it, each label set one mapping per text (as the client does)."""
    result = []
    for name, labels, value in reversed(parse_exposition(text)):
        raw = {"__name__": name, **labels, **target}
        key = repr(sorted(raw.items()))
        result.append((cache.setdefault(key, raw), value))
    return result


def test_a_node_of_the_same_series_and_pods_keeps_its_order_and_a_pod_that_goes_is_ordered_again() -> None:
    cache: dict[str, dict[str, str]] = {}
    memo = RegroupMemo()
    live = {"uid-a", "uid-b"}
    first = samples_by_node(_answer(_text(), cache, job="agents"), memo, live_pods=live)
    order = memo.orders["n1"]
    later = _answer(_text(115.0), cache, job="agents")
    again = samples_by_node(later, memo, live_pods=live)
    assert memo.orders["n1"] is order
    assert again == samples_by_node(later, live_pods=live)
    assert [labels for _, labels, _ in again["n1"]] == [labels for _, labels, _ in first["n1"]]
    # The new pod of "a" is deleted: its record no longer comes after the old one's.
    gone = samples_by_node(later, memo, live_pods={"uid-b"})
    assert memo.orders["n1"] is not order
    assert gone == samples_by_node(later, live_pods={"uid-b"})
    assert gone != again


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sets(st.sampled_from(["uid-a", "uid-a-old", "uid-b"])),
            st.lists(st.integers(0, 60), max_size=3),
            st.sampled_from(["n1", "n1", "n2"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_regrouping_with_the_memo_gives_what_regrouping_afresh_gives(
    passes: list[tuple[set[str], list[int], str]],
) -> None:
    """Answers one after another: pods that exist or not, series missing, a node's series under another node."""
    cache: dict[str, dict[str, str]] = {}
    memo = RegroupMemo()
    for step, (live, dropped, other) in enumerate(passes):
        result = _answer(_text(100.0 + step), cache, job="agents")
        result = [item for index, item in enumerate(result) if index not in dropped]
        if other != "n1":
            result += _answer(_text(100.0 + step).replace('node="n1"', f'node="{other}"'), cache, job="agents")
        assert samples_by_node(result, memo, live_pods=live) == samples_by_node(result, live_pods=live)

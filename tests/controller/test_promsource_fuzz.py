"""Fuzzing the ``--source prometheus`` path: the instant query's answer (``promapi`` over ``httpx.MockTransport``)
split by node (``core/promsource.py``) and parsed as each agent's samples (``controller/promsource.py``), folded as a
pass folds it.

What one agent can put into Prometheus (any sample value, NaN and infinities included; any label value; missing
labels; duplicate or missing series) must not stop the others: the good node is accounted to the millijoule, the
bad one's untrusted values are rejected and counted. Whatever Prometheus itself answers (any JSON, any body), the
pass gets one outcome per agent and never an exception; nothing non-finite or negative is exported."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from typing import Any

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.promsource import PrometheusSource
from jouleledger.controller.scrape import ERROR, OK, ScrapeOutcome
from jouleledger.metrics.operator_collector import parse_exposition
from jouleledger.promapi import Connection, PrometheusApi, build_client
from tests._figures import figure
from tests._fuzz import HOSTILE_LABEL_VALUES, json_values, mutated
from tests.controller._fold import FoldedLedger
from tests.controller.test_scrape_fuzz import T0, bad_text, good_energy_mj, good_text

GOOD = AgentTarget(node="good", pod="agent-good", ip="10.0.0.1", port=9470)
BAD = AgentTarget(node="bad", pod="agent-bad", ip="10.0.0.2", port=9470)
VALUES = ["NaN", "+Inf", "-Inf", "-5", "-0", "0", "1e308", "1e400", "9" * 400, "5e-324", "2e16"]
"""Sample values as Prometheus' JSON spells them (a string), that no agent should send."""


def _prometheus_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def series_of(text: str, ip: str) -> list[dict[str, Any]]:
    """An agent's exposition as the instant query returns it: target labels added, values as strings."""
    return [
        {
            "metric": {"__name__": name, **labels, "job": "jouleledger-agent", "instance": f"{ip}:9470"},
            "value": [T0, _prometheus_value(value)],
        }
        for name, labels, value in parse_exposition(text)
    ]


def vector(result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@st.composite
def agent_mutations(draw: st.DrawFn, series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bad agent's series with 1 to 4 things an agent can do to them (not its node label: see the report)."""
    series = json.loads(json.dumps(series))
    for _ in range(draw(st.integers(1, 4))):
        if not series:
            break
        index = draw(st.integers(0, len(series) - 1))
        one = series[index]
        kind = draw(st.sampled_from(["value", "label", "drop_label", "duplicate", "delete"]))
        keys = sorted(key for key in one["metric"] if key not in ("__name__", "node", "job", "instance"))
        if kind == "value":
            one["value"][1] = draw(st.sampled_from(VALUES) | st.floats().map(_prometheus_value))
        elif kind in ("label", "drop_label") and keys:
            key = draw(st.sampled_from(keys))
            if kind == "drop_label":
                del one["metric"][key]
            else:
                one["metric"][key] = draw(
                    st.sampled_from([value for value in HOSTILE_LABEL_VALUES if "\ud800" not in value])
                )
        elif kind == "duplicate":
            copy = json.loads(json.dumps(one))
            copy["value"][1] = draw(st.sampled_from(["0", "1e9", "-5", copy["value"][1]]))
            series.insert(draw(st.integers(0, len(series))), copy)
        else:
            del series[index]
    return series


def _pass(body: bytes, ledger: FoldedLedger, step: int) -> list[ScrapeOutcome]:
    api = PrometheusApi(
        build_client(
            Connection("http://prom"), transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body))
        )
    )
    source = PrometheusSource(api, clock=lambda: T0 + 100 * step)
    try:
        outcomes = asyncio.run(source.scrape_all([GOOD, BAD]))
    finally:
        api.close()
    assert [outcome.target for outcome in outcomes] == [GOOD, BAD]
    for outcome in outcomes:
        assert outcome.result in (OK, ERROR)
        assert outcome.result == OK or outcome.error
    ledger.fold(outcomes, T0 + 100 * step)
    ledger.check_footprints()
    assert ledger.exported()
    return outcomes


def _answer(good: list[dict[str, Any]], bad: list[dict[str, Any]]) -> bytes:
    return json.dumps(vector([*good, *bad])).encode()


def test_one_agent_in_prometheus_cannot_stop_the_others() -> None:
    results: Counter[str] = Counter()
    rejections: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None)
    @example([{**one, "value": [T0, "NaN"]} for one in series_of(bad_text(2), BAD.ip)])  # failed every node's query
    @given(agent_mutations(series_of(bad_text(2), BAD.ip)))
    def run(bad: list[dict[str, Any]]) -> None:
        ledger = FoldedLedger()
        for step in (1, 2, 3):
            hostile = bad if step == 2 else series_of(bad_text(step), BAD.ip)
            good, outcome = _pass(_answer(series_of(good_text(step), GOOD.ip), hostile), ledger, step)
            assert good.result == OK, good.error
            assert ledger.energy_mj("uid-good") == good_energy_mj(step)
            if step == 2:
                results[outcome.result] += 1
        rejections.update(ledger.stats.rejected)

    run()
    figure(
        f"Prometheus source fuzz: {results.total()} hostile agents next to a valid one "
        f"({dict(sorted(results.items()))}), rejected samples by reason {dict(sorted(rejections.items()))}, "
        "valid agent accounted to the mJ in every one"
    )
    assert results[OK]
    assert rejections["not_finite"]


def test_any_prometheus_answer_gives_one_outcome_per_agent() -> None:
    results: Counter[str] = Counter()
    valid = vector([*series_of(good_text(1), GOOD.ip), *series_of(bad_text(1), BAD.ip)])

    @settings(max_examples=200, deadline=None)
    @given(
        mutated(valid).map(lambda document: json.dumps(document).encode()) | json_values.map(json.dumps).map(str.encode)
    )
    def run(body: bytes) -> None:
        ledger = FoldedLedger()
        outcomes = _pass(body, ledger, 1)
        results[",".join(outcome.result for outcome in outcomes)] += 1

    run()
    figure(
        f"Prometheus source, any answer: {results.total()} answers, outcomes (good,bad) {dict(sorted(results.items()))}"
    )
    assert results["ok,ok"]

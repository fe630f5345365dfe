"""Fuzzing what the Prometheus HTTP API can answer (:mod:`jouleledger.promapi` over ``httpx.MockTransport``), as
``jouleledger report`` reads it: whatever the body, status or JSON, a query returns finite samples with string
labels or raises :class:`PrometheusError` with one line; the report prints a document of finite, non-negative
figures or one error line and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouleledger.promapi import Connection, PrometheusApi, PrometheusError, build_client
from jouleledger.report import command
from tests._figures import figure
from tests._fuzz import json_values, mutated

VECTOR: dict[str, Any] = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"__name__": "up", "job": "agents", "node": "n1"}, "value": [1_800_000_000.5, "1"]},
            {"metric": {"__name__": "up", "job": "agents", "node": "n2"}, "value": [1_800_000_000.5, "0"]},
        ],
    },
}
MATRIX: dict[str, Any] = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {"metric": {"team": "a", "node": "n1"}, "values": [[0, "0"], [300, "100.5"], [600, "250"]]},
            {"metric": {"team": "b", "node": "n1"}, "values": [[0, "10"], [300, "5"], [600, "40"]]},
        ],
    },
}
RAW_BODIES = [
    b"[" * 100_000 + b"]" * 100_000,  # json recurses until RecursionError
    b"\xff\xfe\x00",
    b"<html>bad gateway</html>",
    b"",
    json.dumps({"status": "error", "error": "x" * 10_000 + "\n" + "second line"}).encode(),
    b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, '
    + b"9" * 400
    + b"]}]}}",  # an integer beyond float64
    b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"a": "\\ud800"}, '
    b'"value": [1, "1"]}]}}',  # a lone surrogate: valid JSON, not valid text
]


@st.composite
def answers(draw: st.DrawFn, valid: dict[str, Any]) -> tuple[int, bytes]:
    """``(status, body)``: mostly the valid answer mutated, else arbitrary JSON or one of the raw bodies."""
    status = draw(st.sampled_from([200] * 8 + [400, 401, 422, 503, 302]))
    choice = draw(st.integers(0, 9))
    # Compact separators half the time: Prometheus' own layout, which the client reads on its fast path.
    separators = draw(st.sampled_from([(", ", ": "), (",", ":")]))
    if choice < 7:
        return status, json.dumps(draw(mutated(valid)), separators=separators).encode()
    if choice < 9:
        return status, json.dumps(draw(json_values), separators=separators).encode()
    return status, draw(st.sampled_from(RAW_BODIES))


def _vector(result: list[Any]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def _matrix(result: list[Any]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


sample_values = st.sampled_from(["-5", "0", "1e20", "1e308", "1.7e308", "-1e300", "NaN", "+Inf", "5e-324"]) | st.floats(
    allow_nan=False, allow_infinity=False
).map(repr)
hostile_matrices = st.lists(
    st.fixed_dictionaries(
        {
            "metric": st.fixed_dictionaries(
                {"team": st.sampled_from(["a", "b", "x" * 10_000, "a\nb"]), "node": st.sampled_from(["n1", "n2"])}
            ),
            "values": st.lists(st.tuples(st.sampled_from([0, 150.5, 300, 600]), sample_values).map(list), max_size=4),
        }
    ),
    max_size=3,
).map(lambda result: (200, _matrix(result)))
"""Well-formed matrices of hostile numbers (negative, huge, subnormal, non-finite values) at times in the period."""


def _api(handler: Callable[[httpx.Request], httpx.Response]) -> PrometheusApi:
    return PrometheusApi(build_client(Connection("http://prom"), transport=httpx.MockTransport(handler)))


def _answering(status: int, body: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, content=body)


def _check_labels(labels: dict[str, str] | Any) -> None:
    for key, value in labels.items():
        assert isinstance(key, str)
        assert isinstance(value, str)
        (key + value).encode("utf-8")  # exportable and printable


def _check_error(error: PrometheusError) -> None:
    message = str(error)
    assert message
    assert "\n" not in message
    assert len(message) < 2_000


def test_instant_query_answers_are_finite_or_one_line_errors() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @example((200, _vector([1])))  # AttributeError: a series that is not an object
    @example((200, _vector([{"metric": [[1, 2]], "value": [1, "2"]}])))  # TypeError: labels that are not an object
    @example((200, _vector([{"metric": {}, "value": ["x", "2"]}])))  # ValueError: a time that is not a number
    @example((200, RAW_BODIES[0]))  # RecursionError out of response.json()
    @example((200, RAW_BODIES[-1]))  # a lone surrogate in a label value
    @given(answers(VECTOR))
    def run(answer: tuple[int, bytes]) -> None:
        api = _api(_answering(*answer))
        try:
            result = api.query("up", 1_800_000_000.0)
        except PrometheusError as error:
            _check_error(error)
            outcomes["error"] += 1
            return
        outcomes["ok"] += 1
        for labels, value in result:
            _check_labels(labels)
            assert math.isfinite(value)

    run()
    figure(f"Prometheus instant query fuzz: {outcomes.total()} answers, {dict(sorted(outcomes.items()))}")
    assert outcomes["ok"]
    assert outcomes["error"]


def test_range_query_answers_are_finite_or_one_line_errors() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @example((200, _matrix([{"metric": {}, "values": 5}])))  # TypeError: points that are not a list
    @example((200, _matrix([{"metric": {}, "values": [["NaN", "2"]]}])))  # a NaN time was accepted
    @given(answers(MATRIX) | hostile_matrices)
    def run(answer: tuple[int, bytes]) -> None:
        api = _api(_answering(*answer))
        try:
            series = api.query_range("x", 0, 600, 300)
        except PrometheusError as error:
            _check_error(error)
            outcomes["error"] += 1
            return
        outcomes["ok"] += 1
        for one in series:
            _check_labels(one.labels)
            for time_s, value in one.points:
                assert math.isfinite(time_s)
                assert math.isfinite(value)

    run()
    figure(f"Prometheus range query fuzz: {outcomes.total()} answers, {dict(sorted(outcomes.items()))}")
    assert outcomes["ok"]
    assert outcomes["error"]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def _numbers(value: Any) -> list[float]:
    """Every figure of a report document but its times."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):  # times (``*_unix_s``) are Prometheus' own and may be anything finite
        return [number for key, item in value.items() if "unix" not in key for number in _numbers(item)]
    if isinstance(value, list):
        return [number for item in value for number in _numbers(item)]
    return []


def test_report_on_hostile_answers_prints_finite_figures_or_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None)
    @example((200, _matrix([{"metric": {"team": "a"}, "values": [[300, "1e308"]]}])))  # OverflowError in round()
    @example((200, _matrix([{"metric": {"team": "a", "node": "n1"}, "values": [[0, "0"], [-1, "100.5"]]}])))
    @given(answers(MATRIX) | hostile_matrices)
    def run(answer: tuple[int, bytes]) -> None:
        args = _args("--prometheus", "http://prom", "--since", "0", "--until", "600", "--format", "json")
        args.transport = httpx.MockTransport(_answering(*answer))
        code = command.run(args, now_s=1_800_000_000.0)
        out, err = capsys.readouterr()
        if code == 2:
            [line] = err.splitlines()
            assert line.startswith("jouleledger report: ")
            outcomes["error"] += 1
            return
        assert code == 0, err
        outcomes["report"] += 1
        document = json.loads(out)
        for number in _numbers(document):
            assert math.isfinite(number)
            assert number >= 0, document

    run()
    figure(f"report on fuzzed Prometheus answers: {outcomes.total()} runs, {dict(sorted(outcomes.items()))}")
    assert outcomes["report"]
    assert outcomes["error"]

"""The client's fast path for instant vectors (:func:`jouleledger.promapi.client.fast_vector`): Prometheus' compact
layout read series by series, label sets decoded once by their text. Whatever it accepts it reads as the full JSON
decoding does; everything else is left to that decoding (None)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.promapi import Connection, PrometheusApi, build_client
from jouleledger.promapi.client import fast_vector
from tests._figures import figure

COMPACT = (",", ":")


def _body(result: list[Any], **extra: Any) -> bytes:
    data = {"resultType": "vector", "result": result, **extra}
    return json.dumps({"status": "success", "data": data}, separators=COMPACT, ensure_ascii=False).encode()


def _series(labels: dict[str, str], value: str, stamp: float = 1_800_000_000.5) -> dict[str, Any]:
    return {"metric": labels, "value": [stamp, value]}


def _decoded(body: bytes) -> list[tuple[dict[str, str], float]]:
    return [(item["metric"], float(item["value"][1])) for item in json.loads(body)["data"]["result"]]


def test_a_compact_answer_is_read_as_the_full_decoding_reads_it() -> None:
    body = _body([_series({"__name__": "a", "node": "n1"}, "1.5"), _series({"__name__": "b"}, "NaN", 7)])
    fast = fast_vector(body, finite=False)
    assert fast is not None
    assert fast[0] == ({"__name__": "a", "node": "n1"}, 1.5)
    assert fast[1][0] == {"__name__": "b"}
    assert math.isnan(fast[1][1])
    assert fast_vector(_body([]), finite=True) == []


def test_anything_else_is_left_to_the_full_decoding() -> None:
    good = _series({"a": "b"}, "1")
    for body in [
        json.dumps({"status": "success", "data": {"resultType": "vector", "result": [good]}}).encode(),  # spaces
        _body([good], warnings=["partial"]),  # more than the result
        _body([_series({"a": "\u00e9\\"}, "1")]),  # an escape
        _body([_series({"a": "b"}, "NaN")]),  # not finite, and finite asked
        _body([{"value": [1, "1"], "metric": {"a": "b"}}]),  # another key order
        _body([_series({"a": "b"}, "1", stamp=1e400)]),  # a time beyond float64
        _body([_series({"a": "b"}, "x")]),  # not a number
        _body([good]).replace(b"]}]}}", b"]},]}}"),  # a comma after the last series
        _body([good, good]).replace(b"]},{", b"]}{"),  # no comma between two
        _body([_series({"a": "b"}, "1")]).replace(b'"a":"b"', b'"a":7'),  # a label that is not a string
        _body([_series({"a": "b"}, "1")]).replace(b'"a":"b"', b'"a":"b",'),  # not JSON
        b'{"status":"error","error":"x"}',
    ]:
        assert fast_vector(body, finite=True) is None, body


def test_an_unchanged_series_keeps_its_label_mapping_across_queries() -> None:
    body = _body([_series({"__name__": "a", "node": "n1"}, "1"), _series({"__name__": "a", "node": "n2"}, "2")])
    api = PrometheusApi(
        build_client(
            Connection("http://prom"), transport=httpx.MockTransport(lambda _: httpx.Response(200, content=body))
        )
    )
    first, second = api.query("a", 0), api.query("a", 15)
    assert first == second
    assert all(a[0] is b[0] for a, b in zip(first, second, strict=True))


label_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
labels = st.dictionaries(st.sampled_from(["__name__", "node", "pod", "uid", "a"]), label_text, max_size=4)
values = st.sampled_from(["0", "-5", "1e308", "5e-324", "+Inf", "NaN", "1_0", " 1"]) | st.floats().map(repr)
stamps = st.sampled_from([0, 1, 1_800_000_000.123, -3, 1e300]) | st.floats(allow_nan=False, allow_infinity=False)


def test_whatever_the_fast_path_accepts_equals_the_full_decoding() -> None:
    taken = [0, 0]

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(labels, values, stamps), max_size=5), st.booleans())
    def run(series: list[tuple[dict[str, str], str, float]], finite: bool) -> None:
        body = _body([_series(metric, value, stamp) for metric, value, stamp in series])
        fast = fast_vector(body, finite=finite)
        taken[fast is not None] += 1
        if fast is None:
            return
        expected = _decoded(body)
        assert [metric for metric, _ in fast] == [metric for metric, _ in expected]
        for (_, got), (_, want) in zip(fast, expected, strict=True):
            assert got == want or (math.isnan(got) and math.isnan(want))
            assert not finite or math.isfinite(got)

    run()
    figure(f"Prometheus vector fast path: {sum(taken)} answers, {taken[1]} read on the fast path, {taken[0]} left")
    assert taken[1] > 100
    assert taken[0] > 10

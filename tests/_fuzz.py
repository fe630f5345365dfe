"""Hypothesis strategies shared by the fuzz tests: arbitrary JSON, and valid documents with one part broken."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

__all__ = ["HOSTILE_LABEL_VALUES", "HOSTILE_NUMBERS", "json_values", "mutated", "mutated_exposition"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["evil-\ud800", "\udfff", "a" * 10_000]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*prefix, index))
    return paths


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> Any:
    """``document`` with one value (or the whole) replaced by arbitrary JSON, or one key dropped."""
    copy = json.loads(json.dumps(document))
    path = draw(st.sampled_from(_paths(copy)))
    if not path:
        return draw(json_values)
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return copy


# --- Prometheus text expositions ------------------------------------------------------------------------------

HOSTILE_NUMBERS = (
    "NaN",
    "+Inf",
    "-Inf",
    "-1",
    "-0.0",
    "-1e-300",
    "1e308",
    "1e400",
    "9" * 4300,
    "9" * 5000,
    "0x10",
    "1_000",
    "",
    "1.0.0",
    "\u0661",  # a digit outside ASCII: float() accepts it, Prometheus does not
)
"""Sample values an agent should never send: non-finite, negative, beyond float64 or int64, not numbers."""

HOSTILE_LABEL_VALUES = (
    "",
    'a"b',
    "a\nb",
    "a\\b",
    "evil-\ud800",
    "x" * 10_000,
    "\x00",
    "ns} 1\nfake 2",
    "\u202e",
)
"""Label values a pod name or label could smuggle in (escaped as the text format says, or not at all)."""


_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_lines(lines: list[str]) -> list[int]:
    return [index for index, line in enumerate(lines) if line and not line.startswith("#")]


@st.composite
def _mutation(draw: st.DrawFn, lines: list[str]) -> list[str]:
    lines = list(lines)
    samples = _sample_lines(lines)
    kind = draw(
        st.sampled_from(
            ["value", "label", "drop_label", "duplicate", "delete", "truncate", "insert", "type", "raw_label"]
        )
    )
    if not samples or kind == "insert":
        position = draw(st.integers(0, len(lines)))
        lines.insert(position, draw(st.text(max_size=60) | st.sampled_from(["{", "x{a=} 1", "x 1 2 3", "# TYPE"])))
        return lines
    index = draw(st.sampled_from(samples))
    line = lines[index]
    head, _, value = line.rpartition(" ")
    if kind == "value":
        number = draw(st.sampled_from(HOSTILE_NUMBERS) | st.floats().map(repr) | st.integers().map(str))
        lines[index] = f"{head} {number}"
    elif kind in ("label", "raw_label", "drop_label") and _LABEL_PAIR.search(head):
        pairs = list(_LABEL_PAIR.finditer(head))
        pair = pairs[draw(st.integers(0, len(pairs) - 1))]
        if kind == "drop_label":
            replacement = ""
        else:
            hostile = draw(st.sampled_from(HOSTILE_LABEL_VALUES) | st.text(max_size=20))
            replacement = f'{pair.group(1)}="{_escaped(hostile) if kind == "label" else hostile}"'
        lines[index] = f"{head[: pair.start()]}{replacement}{head[pair.end() :]} {value}"
    elif kind == "duplicate":
        number = draw(st.sampled_from(["0", "1", "1e9", value, "-5"]))
        lines.insert(draw(st.integers(0, len(lines))), f"{head} {number}")
    elif kind == "delete":
        del lines[index]
    elif kind == "truncate":
        cut = draw(st.integers(0, len(line)))
        lines[index] = line[:cut]
        del lines[index + 1 :]
    else:  # a wrong TYPE for the sample's family
        family = head.partition("{")[0].removesuffix("_total")
        kind_name = draw(st.sampled_from(["histogram", "summary", "gauge", "counter", "untyped", "info", "bogus"]))
        lines.insert(index, f"# TYPE {family} {kind_name}")
    return lines


@st.composite
def mutated_exposition(draw: st.DrawFn, text: str, *, max_mutations: int = 4) -> bytes:
    """The exposition ``text`` with 1 to ``max_mutations`` lines broken (values, labels, duplicates, deletions,
    truncation, wrong types, junk lines), as the body bytes an agent would send: sometimes not UTF-8 at all."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, max_mutations))):
        lines = draw(_mutation(lines))
    body = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # raw bytes spliced in: invalid UTF-8, NULs, a BOM
        position = draw(st.integers(0, len(body)))
        junk = draw(
            st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf", b"\xed\xa0\x80"]) | st.binary(max_size=8)
        )
        body = body[:position] + junk + body[position:]
    return body

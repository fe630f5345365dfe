"""Hypothesis strategies shared by the fuzz tests: arbitrary JSON, and valid documents with one part broken."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

__all__ = ["json_values", "mutated"]

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

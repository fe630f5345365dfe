"""Every value of the chart is documented in values.yaml: each leaf key has a comment directly above it (or at
the end of its line), so a value added without a word of explanation fails the tests.

A leaf is a key whose entry in values.schema.json has no ``properties`` of its own: a scalar, a list, a map of
user entries, or a Kubernetes object passed through as a whole (``podSecurityContext``, ``resources.requests``).
Keys inside such an object are not values of the chart and need no comment of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from tests.chart._helm import CHART


def _leaves(node: yaml.Node, schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, int]]:
    """``(dotted key, 0-based line of the key)`` of every leaf under the mapping ``node``."""
    assert isinstance(node, yaml.MappingNode), path
    properties = schema.get("properties", {})
    for key_node, value_node in node.value:
        key = f"{path}{key_node.value}"
        child = properties.get(key_node.value, {})
        if "properties" in child and isinstance(value_node, yaml.MappingNode):
            yield from _leaves(value_node, child, key + ".")
        else:
            yield key, key_node.start_mark.line


def _undocumented(text: str, schema: Mapping[str, Any]) -> list[str]:
    lines = text.splitlines()
    missing = []
    for key, line in _leaves(yaml.compose(text), schema, ""):
        above = lines[line - 1].strip() if line > 0 else ""
        if above.startswith("#") or " #" in lines[line]:
            continue
        missing.append(f"values.yaml:{line + 1}: {key}")
    return missing


def test_every_leaf_value_has_a_comment() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert _undocumented(text, schema) == []


def test_an_undocumented_value_is_found() -> None:
    schema = {"properties": {"a": {"properties": {"b": {}, "c": {}}}, "d": {}, "k8s": {}}}
    text = "# -- about a\na:\n  # -- about b\n  b: 1\n  c: 2\nd: x  # about d\nk8s:\n  inner: 1\n"
    assert _undocumented(text, schema) == ["values.yaml:5: a.c", "values.yaml:7: k8s"]

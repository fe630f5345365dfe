"""Small, deliberately conservative helpers for the chart tests: the metric names a PromQL expression reads, and
the names the program exports according to ``jouleledger/core/contract.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from jouleledger.core.contract import SPECS
from jouleledger.metrics.agent import AgentCollector
from tests._tools import REPO_ROOT

__all__ = [
    "agent_exported_names",
    "exported_names",
    "metric_families",
    "metric_names",
    "recording_rule_names",
    "substitute_grafana_variables",
    "undeclared",
]

PROMETHEUS_RULE_TEMPLATE = REPO_ROOT / "charts" / "jouleledger" / "templates" / "prometheusrule.yaml"

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
)
_NUMBER_WORDS = frozenset({"inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def substitute_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana's ``$var``/``${var}`` with values Prometheus can evaluate (``.*`` for selections)."""
    builtins = {"__range": "1h", "__rate_interval": "1m", "__interval": "15s", "__range_s": "3600"}
    chosen = {**builtins, **(values or {})}

    def _value(match: re.Match[str]) -> str:
        name = match.group(0).lstrip("$").strip("{}").split(":")[0]
        return chosen.get(name, ".*")

    return _GRAFANA_VARIABLE.sub(_value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (function names, keywords and label names excluded)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function call
        if word in _KEYWORDS or word.lower() in _NUMBER_WORDS:
            continue
        names.add(word)
    return names


def metric_families() -> dict[str, str]:
    """``{family name: type}`` of every family in the metric contract."""
    return {name: spec.type for name, spec in SPECS.items()}


def _series(families: Iterable[str]) -> set[str]:
    return {family + suffix for family in families for suffix in _SUFFIXES[SPECS[family].type]}


def exported_names() -> set[str]:
    """Every series name the program exposes: counters with ``_total``, info with ``_info``, histograms' parts."""
    return _series(SPECS)


def agent_exported_names() -> set[str]:
    """The series the agent exposes (the families its collector describes)."""

    def _unused() -> NoReturn:
        raise AssertionError("describe() must not ask for a view")

    return _series(family.name for family in AgentCollector(_unused).describe())


def recording_rule_names(template: Path = PROMETHEUS_RULE_TEMPLATE) -> set[str]:
    """The recording rules the chart's PrometheusRule defines (read from the template's ``record:`` lines)."""
    return set(re.findall(r"^\s*-\s*record:\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*$", template.read_text("utf-8"), re.M))


def undeclared(exprs: Iterable[str], allowed: set[str]) -> dict[str, set[str]]:
    """``{expr: names not in allowed}`` for every expression that reads an unknown metric."""
    return {expr: names - allowed for expr in exprs if (names := metric_names(expr)) - allowed}

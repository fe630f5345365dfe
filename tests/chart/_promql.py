"""Small, deliberately conservative helpers for the chart tests: the metric names a PromQL expression reads, and
the names the program exports according to ``jouleledger/core/contract.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tests._tools import REPO_ROOT

__all__ = [
    "NAMES_PY",
    "agent_exported_names",
    "exported_names",
    "metric_families",
    "metric_names",
    "recording_rule_names",
    "substitute_grafana_variables",
    "undeclared",
]

NAMES_PY = REPO_ROOT / "operator" / "jouleledger" / "metrics" / "names.py"
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
# `NAME: Final = "jouleledger_..."  # type {labels}...`: the type is the first word of the comment.
_NAME_LINE = re.compile(r'^([A-Z][A-Z0-9_]*):\s*Final\s*=\s*"([a-z_:][a-z0-9_:]*)"\s*#\s*(\w+)')
_NAME_CONSTANT = re.compile(r'^([A-Z][A-Z0-9_]*):\s*Final\s*=\s*"jouleledger_')
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


def metric_families(path: Path = NAMES_PY) -> dict[str, tuple[str, str]]:
    """``{constant: (family name, type)}`` from names.py; every ``jouleledger_`` constant must state its type."""
    families: dict[str, tuple[str, str]] = {}
    untyped: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _NAME_LINE.match(line)
        if match and match.group(3) in _SUFFIXES:
            families[match.group(1)] = (match.group(2), match.group(3))
        elif _NAME_CONSTANT.match(line):
            untyped.append(line.strip())
    if untyped:
        raise ValueError(f"metric constants without a '# counter|gauge|info|histogram' comment: {untyped}")
    if not families:
        raise ValueError(f"no metric names found in {path}")
    return families


def exported_names(path: Path = NAMES_PY) -> set[str]:
    """Every series name the program exposes: counters with ``_total``, info with ``_info``, histograms' parts."""
    return {family + suffix for family, kind in metric_families(path).values() for suffix in _SUFFIXES[kind]}


def agent_exported_names(path: Path = NAMES_PY) -> set[str]:
    """The series of the agent's sections of names.py (``# --- agent...`` up to the next ``# ---`` section)."""
    families = metric_families(path)
    agent_constants: set[str] = set()
    in_agent = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# ---"):
            in_agent = line.startswith("# --- agent")
        elif in_agent and (match := _NAME_LINE.match(line)):
            agent_constants.add(match.group(1))
    if not agent_constants:
        raise ValueError(f"no '# --- agent' section in {path}")
    return {
        families[constant][0] + suffix for constant in agent_constants for suffix in _SUFFIXES[families[constant][1]]
    }


def recording_rule_names(template: Path = PROMETHEUS_RULE_TEMPLATE) -> set[str]:
    """The recording rules the chart's PrometheusRule defines (read from the template's ``record:`` lines)."""
    return set(re.findall(r"^\s*-\s*record:\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*$", template.read_text("utf-8"), re.M))


def undeclared(exprs: Iterable[str], allowed: set[str]) -> dict[str, set[str]]:
    """``{expr: names not in allowed}`` for every expression that reads an unknown metric."""
    return {expr: names - allowed for expr in exprs if (names := metric_names(expr)) - allowed}

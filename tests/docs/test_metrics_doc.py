"""docs/metrics.md lists every metric family the agent and the operator export, under its exposed name and with
its type, so the reference cannot fall behind the code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NoReturn

import pytest
from prometheus_client.core import Metric

from jouleledger.core import contract as names
from jouleledger.core.accounting import TIME_NOT_INCREASING, UNKNOWN_GPU
from jouleledger.core.integration import RejectReason
from jouleledger.metrics.agent import AgentCollector
from jouleledger.metrics.operator_collector import OperatorCollector
from tests._tools import REPO_ROOT

_ROW = re.compile(r"^\| `(jouleledger_[a-z0-9_]+)` \| ([a-z]+) \|", re.MULTILINE)
_SUFFIX = {"counter": "_total", "info": "_info"}


def _unused() -> NoReturn:
    raise AssertionError("describe() must not ask for a view")


def _families() -> Iterator[Metric]:
    yield from AgentCollector(_unused).describe()
    yield from OperatorCollector(_unused).describe()


def _exposed(name: str, kind: str) -> str:
    return name + _SUFFIX.get(kind, "")


def _documented() -> dict[str, str]:
    text = (REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    rows = _ROW.findall(text)
    documented = dict(rows)
    assert len(documented) == len(rows), "a metric is listed twice in docs/metrics.md"
    return documented


def test_every_exported_family_is_documented_with_its_type() -> None:
    documented = _documented()
    families = list(_families())
    assert families, "the collectors describe no families"
    missing = [_exposed(f.name, f.type) for f in families if _exposed(f.name, f.type) not in documented]
    assert missing == [], "add these to docs/metrics.md"
    wrong_type = {
        _exposed(f.name, f.type): (documented[_exposed(f.name, f.type)], f.type)
        for f in families
        if documented[_exposed(f.name, f.type)] != f.type
    }
    assert wrong_type == {}


@pytest.mark.parametrize(
    "name", sorted(value for key, value in vars(names).items() if key.isupper() and isinstance(value, str))
)
def test_every_declared_name_is_documented(name: str) -> None:
    documented = _documented()
    assert any(exposed in documented for exposed in (name, name + "_total", name + "_info")), name


def test_the_row_pattern_reads_the_tables() -> None:
    documented = _documented()
    assert documented["jouleledger_pod_gpu_energy_joules_total"] == "counter"
    assert documented["jouleledger_operator_annotation_delay_seconds"] == "histogram"


@pytest.mark.parametrize("reason", [*(reason.value for reason in RejectReason), UNKNOWN_GPU, TIME_NOT_INCREASING])
def test_every_rejection_reason_of_the_agent_is_documented(reason: str) -> None:
    text = (REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert f"| `{reason}` |" in text

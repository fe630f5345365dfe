"""docs/metrics.md shows the metric contract as it is: its tables are what ``tools/metrics_doc.py`` renders from
``core/contract.py`` (name, type, labels, help), every family the collectors export is in the contract, and
every reason the agent rejects a reading with is explained."""

from __future__ import annotations

import difflib
import importlib.util
from types import ModuleType
from typing import NoReturn

import pytest

from jouleledger.core.accounting import TIME_NOT_INCREASING, UNKNOWN_GPU
from jouleledger.core.contract import SPECS
from jouleledger.core.integration import RejectReason
from jouleledger.metrics.agent import AgentCollector
from jouleledger.metrics.operator_collector import OperatorCollector
from jouleledger.metrics.serving import ServingCollector
from tests._tools import REPO_ROOT

DOCUMENT = REPO_ROOT / "docs" / "metrics.md"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("metrics_doc", REPO_ROOT / "tools" / "metrics_doc.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unused() -> NoReturn:
    raise AssertionError("describe() must not ask for a view")


def test_the_tables_are_the_contract() -> None:
    current = DOCUMENT.read_text(encoding="utf-8")
    wanted = _tool().render_document(current)
    diff = "".join(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), "docs", "contract"))
    assert diff == "", "run `python tools/metrics_doc.py --write`:\n" + diff


def test_every_spec_has_a_row() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    table = _tool().render_table(SPECS.values())
    assert all(row in text for row in table.splitlines()[2:])
    assert len(table.splitlines()) == len(SPECS) + 2


def test_every_exported_family_is_in_the_contract() -> None:
    described = [
        *AgentCollector(_unused).describe(),
        *OperatorCollector(_unused).describe(),
        *ServingCollector(_unused).describe(),
    ]
    assert described
    assert sorted(family.name for family in described) == sorted(SPECS)
    assert {family.name: family.type for family in described} == {name: spec.type for name, spec in SPECS.items()}


def test_a_stale_row_is_found() -> None:
    current = DOCUMENT.read_text(encoding="utf-8")
    stale = current.replace("| Agent scrapes by result. |", "| Agent scrapes. |")
    assert stale != current
    assert _tool().render_document(stale) == current


@pytest.mark.parametrize("reason", [*(reason.value for reason in RejectReason), UNKNOWN_GPU, TIME_NOT_INCREASING])
def test_every_rejection_reason_of_the_agent_is_documented(reason: str) -> None:
    assert f"| `{reason}` |" in DOCUMENT.read_text(encoding="utf-8")

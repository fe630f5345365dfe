"""Grafana dashboards: valid dashboard JSON whose every query reads only metrics the program exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart._helm import CHART
from tests.chart._promql import exported_names, metric_names, recording_rule_names, undeclared

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "barchart", "gauge", "piechart", "text", "row"}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: unexpected query {query!r}"
            exprs.append(match.group(1))
    return exprs


def _load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def all_dashboard_queries() -> list[str]:
    """Every PromQL expression of every dashboard (panel targets and variable queries)."""
    return [expr for path in DASHBOARDS for expr in _queries(_load(path))]


def test_the_four_dashboards_exist() -> None:
    assert [path.stem for path in DASHBOARDS] == ["cluster-overview", "job-footprints", "node-gpu", "team-chargeback"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_structure(path: Path) -> None:
    dashboard = _load(path)
    assert re.fullmatch(r"jouleledger-[a-z-]+", dashboard["uid"])
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("Joule Ledger / ")
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    data_panels = [panel for panel in _panels(dashboard) if panel["type"] != "row"]
    assert len(data_panels) >= 5
    for panel in data_panels:
        where = f"{path.stem}: {panel['title']!r}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], f"{where} has no query"
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", where
            assert target["expr"].strip(), where
            assert target["expr"].count("(") == target["expr"].count(")"), where
            for name in re.findall(r"\$\{?(\w+)", target["expr"]):
                assert name.startswith("__") or name in variables, f"{where}: unknown variable ${name}"


def test_dashboard_uids_are_unique() -> None:
    uids = [_load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_every_dashboard_query_reads_exported_metrics() -> None:
    allowed = exported_names() | recording_rule_names()
    queries = all_dashboard_queries()
    assert len(queries) > 40
    assert undeclared(queries, allowed) == {}


def test_dashboards_show_every_exported_metric() -> None:
    """A metric nobody can see is a metric nobody checks: every exported series appears in some dashboard."""
    used = set().union(*(metric_names(expr) for expr in all_dashboard_queries()))
    assert exported_names() - used == set()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum(rate(foo_total[5m]))", {"foo_total"}),
        ('sum by (namespace) (rate(a_total{namespace=~"$ns", pod!="x"}[$__rate_interval])) / 3.6e6', {"a_total"}),
        ("a:b:c > on (namespace) group_left () (d > 0) or e unless on(namespace) f", {"a:b:c", "d", "e", "f"}),
        ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}),
        ("time() - last_seconds offset 5m", {"last_seconds"}),
        ('label_replace(up, "dst", "$1", "src", "(.*)") == bool 1', {"up"}),
        ("vector(10)", set()),
        ("topk(10, x) * Inf", {"x"}),
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected

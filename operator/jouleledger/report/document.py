"""The report as one plain document (what ``--format json`` prints) and its text renderers.

The JSON layout is versioned (``schema_version``) and documented in ``docs/report.md``; the table, CSV and
markdown renderers and the HTML report are all built from this document.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from jouleledger.core.chargeback import Chargeback, ChargebackRow, IdleNode, Usage, merge_timelines
from jouleledger.core.units import S_PER_HOUR, mj_to_kwh

__all__ = ["SCHEMA_VERSION", "Source", "build_document", "render"]

SCHEMA_VERSION: Final = 1
FORMATS: Final = ("table", "csv", "json", "markdown", "html")


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # "prometheus" or "footprints"
    where: str  # the URL, or the kube context/namespace
    series: Sequence[str]
    step_s: float | None


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(row: ChargebackRow, measured_mj: int) -> dict[str, Any]:
    document: dict[str, Any] = {
        "key": row.key,
        "energy_mj": row.energy_mj,
        "energy_kwh": round(mj_to_kwh(row.energy_mj), 9),
        "idle_mj": row.idle_mj,
        "gpu_hours": round(row.gpu_seconds / S_PER_HOUR, 6),
        "operational_g": round(row.operational_g, 6),
        "embodied_g": round(row.embodied_g, 6),
        "carbon_g": round(row.carbon_g, 6),
        "cost": round(row.cost, 6),
        "share": round(row.energy_mj / measured_mj, 6) if measured_mj else 0.0,
    }
    if row.extra:
        document["serving"] = dict(sorted(row.extra.items()))
    return document


def build_document(
    chargeback: Chargeback,
    *,
    by: str,
    start_s: float,
    end_s: float,
    currency: str,
    source: Source,
    usage: Mapping[str, Usage],
    idle: Mapping[str, IdleNode],
    notes: Sequence[str],
    agent_measured_mj: int | None,
) -> dict[str, Any]:
    """The report as JSON-ready data (see ``docs/report.md``)."""
    measured = chargeback.measured_mj
    times = merge_timelines(usage.values())
    nodes = []
    for node in sorted(idle):
        item = idle[node]
        nodes.append(
            {
                "node": node,
                "measured_mj": item.measured_mj,
                "idle_mj": item.energy_mj,
                "idle_share": round(item.energy_mj / item.measured_mj, 6) if item.measured_mj else None,
                "idle_operational_g": round(item.operational_g, 6),
                "idle_cost": round(item.cost, 6),
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "by": by,
        "idle_policy": chargeback.policy,
        "period": {
            "start": iso(start_s),
            "end": iso(end_s),
            "start_unix_s": start_s,
            "end_unix_s": end_s,
            "step_s": source.step_s,
        },
        "source": {"kind": source.kind, "where": source.where, "series": list(source.series)},
        "currency": currency,
        "measured_mj": measured,
        "agent_measured_mj": agent_measured_mj,
        "rows": [_row(row, measured) for row in chargeback.rows],
        "unallocated": _row(chargeback.unallocated, measured),
        "total": _row(chargeback.total, measured),
        "nodes": nodes,
        "timeline": {
            "times_unix_s": times,
            "energy_mj": {key: [usage[key].timeline_mj.get(t, 0) for t in times] for key in sorted(usage)},
        },
        "notes": list(notes),
    }


_METRIC: Final = re.compile(r"\b(jouleledger_[a-z_]+)\b")
_COLUMNS: Final = ("energy kWh", "share", "idle kWh", "GPU-hours", "CO2e kg", "cost")


def _cells(row: Mapping[str, Any], currency: str) -> list[str]:
    return [
        f"{row['energy_kwh']:.3f}",
        f"{row['share'] * 100:.1f}%",
        f"{mj_to_kwh(row['idle_mj']):.3f}",
        f"{row['gpu_hours']:.2f}",
        f"{row['carbon_g'] / 1000:.3f}",
        f"{row['cost']:.2f} {currency}".rstrip(),
    ]


def _serving_line(figures: Mapping[str, float]) -> str:
    parts = [f"{figures['requests']:,.0f} requests, {figures['output_tokens']:,.0f} output tokens "
             f"({figures['tokens']:,.0f} in all)"]  # fmt: skip
    parts.append(f"{figures['joules_per_request']:,.1f} J/request")
    if "joules_per_output_token" in figures:
        parts.append(f"{figures['joules_per_output_token']:,.2f} J/output token")
    if "joules_per_token" in figures:
        parts.append(f"{figures['joules_per_token']:,.2f} J/token")
    parts.append(f"{figures['grams_per_1000_requests']:,.1f} g CO2e per 1,000 requests")
    return ", ".join(parts)


def _header_lines(document: Mapping[str, Any]) -> list[str]:
    period = document["period"]
    source = document["source"]
    step = f", step {period['step_s']:g} s" if period.get("step_s") else ""
    lines = [
        f"Joule Ledger chargeback by {document['by']}: {period['start']} to {period['end']}",
        f"idle policy: {document['idle_policy']}; measured {mj_to_kwh(document['measured_mj']):.3f} kWh",
        f"source: {source['kind']} {source['where']}{step}",
    ]
    names = list(dict.fromkeys(_METRIC.findall(" ".join(source["series"]))))
    if names and period.get("step_s"):
        window = f"{period['step_s']:g}s"
        lines.append(
            f"series (each read as last_over_time(series[{window}]) every step; max_over_time where a counter reset):"
        )
        lines += [f"  {name}" for name in names]
    else:
        lines += [f"series: {expr}" for expr in source["series"]]
    return lines


def _all_rows(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rows = list(document["rows"])
    if document["unallocated"]["energy_mj"] or document["idle_policy"] == "keep":
        rows.append(document["unallocated"])
    return rows


def _table(document: Mapping[str, Any]) -> str:
    currency = document["currency"]
    rows = _all_rows(document)
    width = min(60, max([len("total"), *(len(row["key"]) for row in rows)]))
    cells = [_cells(row, currency) for row in [*rows, document["total"]]]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, title in enumerate(_COLUMNS)]
    lines = _header_lines(document)
    lines.append("")
    lines.append("  ".join([f"{'':<{width}}", *(f"{t:>{w}}" for t, w in zip(_COLUMNS, widths, strict=True))]))
    for row, row_cells in zip([*rows, document["total"]], cells, strict=True):
        if row is document["total"]:
            lines.append("-" * (width + sum(w + 2 for w in widths)))
        lines.append(
            "  ".join(
                [f"{row['key'][:width]:<{width}}", *(f"{c:>{w}}" for c, w in zip(row_cells, widths, strict=True))]
            )
        )
    serving = [row for row in rows if row.get("serving")]
    if serving:
        lines += ["", "serving workloads (energy per request and per token over the period)"]
        for row in serving:
            lines.append(f"  {row['key']}: {_serving_line(row['serving'])}")
    if document["notes"]:
        lines.append("")
        lines += [f"note: {note}" for note in document["notes"]]
    return "\n".join(lines) + "\n"


_CSV_FIELDS: Final = (
    "key", "energy_mj", "energy_kwh", "idle_mj", "share", "gpu_hours", "operational_g", "embodied_g", "carbon_g",
    "cost",
)  # fmt: skip


def _csv(document: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_CSV_FIELDS, "currency"])
    for row in [*_all_rows(document), document["total"]]:
        writer.writerow([*(row[name] for name in _CSV_FIELDS), document["currency"]])
    return out.getvalue()


def _markdown(document: Mapping[str, Any]) -> str:
    currency = document["currency"]
    lines = [f"# {_header_lines(document)[0]}", ""]
    lines += [f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in _header_lines(document)[1:]]
    lines += ["", f"| {document['by']} | " + " | ".join(_COLUMNS) + " |", "|---" + "|---:" * len(_COLUMNS) + "|"]
    for row in [*_all_rows(document), document["total"]]:
        key = row["key"].replace("|", "\\|")
        key = f"**{key}**" if row is document["total"] else key
        lines.append(f"| {key} | " + " | ".join(_cells(row, currency)) + " |")
    if document["notes"]:
        lines.append("")
        lines += [f"- {note}" for note in document["notes"]]
    return "\n".join(lines) + "\n"


def render(document: Mapping[str, Any], output_format: str) -> str:
    """The document as ``table``, ``csv``, ``json``, ``markdown`` or ``html``."""
    if output_format == "json":
        return json.dumps(document, indent=2, sort_keys=False) + "\n"
    if output_format == "csv":
        return _csv(document)
    if output_format == "markdown":
        return _markdown(document)
    if output_format == "html":
        from jouleledger.report.page import render_html

        return render_html(document)
    return _table(document)

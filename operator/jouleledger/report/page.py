"""``--format html``: one self-contained page (plotly, its JavaScript inlined) that opens offline.

Charts: energy per row over time (stacked), carbon and cost per row, the top 20 workloads, the idle share of each
node; then the report's table, its notes and the series it was computed from.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from jouleledger.core.units import mj_to_kwh

__all__ = ["render_html"]

TOP_WORKLOADS = 20


def _figure_html(figure: Any, div_id: str) -> str:
    text: str = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_width="100%",
        config={"displaylogo": False, "responsive": True},
    )
    return text


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout = {"title": {"text": title}, "template": "plotly_white", "height": 420, "margin": {"t": 60}}
    layout["legend"] = {"orientation": "h", "y": -0.2}
    return {**layout, **extra}


def _figures(document: Mapping[str, Any]) -> list[str]:
    import plotly.graph_objects as go

    by = document["by"]
    rows: Sequence[Mapping[str, Any]] = [*document["rows"], document["unallocated"]]
    currency = document["currency"]
    parts: list[str] = []
    timeline = document["timeline"]
    # plotly.js reads dates without a zone: give it UTC wall-clock strings and say so on the axis
    times = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in timeline["times_unix_s"]]
    energy = go.Figure(
        layout=_layout(f"GPU energy per {by} over time (kWh per step)", yaxis_title="kWh", xaxis_title="UTC")
    )
    for key, series in sorted(timeline["energy_mj"].items(), key=lambda item: -sum(item[1])):
        energy.add_trace(
            go.Scatter(x=times, y=[mj_to_kwh(v) for v in series], name=key, stackgroup="energy", mode="lines")
        )
    parts.append(_figure_html(energy, "energy-over-time"))
    keys = [row["key"] for row in rows]
    carbon = go.Figure(
        data=[
            go.Bar(name="operational", x=keys, y=[row["operational_g"] / 1000 for row in rows]),
            go.Bar(name="embodied", x=keys, y=[row["embodied_g"] / 1000 for row in rows]),
        ],
        layout=_layout(f"Carbon per {by} (kg CO2e)", barmode="stack", yaxis_title="kg CO2e"),
    )
    parts.append(_figure_html(carbon, "carbon"))
    cost = go.Figure(
        data=[go.Bar(x=keys, y=[row["cost"] for row in rows], marker_color="#2a9d8f")],
        layout=_layout(f"Cost per {by} ({currency})".replace(" ()", ""), yaxis_title=currency),
    )
    parts.append(_figure_html(cost, "cost"))
    workloads = list(document.get("workloads") or (document["rows"] if by == "workload" else []))[:TOP_WORKLOADS]
    if workloads:
        top = go.Figure(
            data=[
                go.Bar(
                    y=[row["key"] for row in reversed(workloads)],
                    x=[row["energy_kwh"] for row in reversed(workloads)],
                    orientation="h",
                    marker_color="#e76f51",
                )
            ],
            layout=_layout(
                f"Top {len(workloads)} workloads by energy (kWh)",
                height=max(320, 28 * len(workloads) + 120),
                margin={"l": 260, "t": 60},
            ),
        )
        parts.append(_figure_html(top, "top-workloads"))
    nodes = [node for node in document["nodes"] if node.get("idle_share") is not None]
    if nodes:
        idle = go.Figure(
            data=[go.Bar(x=[n["node"] for n in nodes], y=[n["idle_share"] * 100 for n in nodes])],
            layout=_layout("Idle share of each node's GPU energy (%)", yaxis_title="% idle", yaxis_range=[0, 100]),
        )
        parts.append(_figure_html(idle, "idle-share"))
    return parts


def _table(document: Mapping[str, Any]) -> str:
    currency = html.escape(document["currency"])
    head = (
        f"<tr><th>{html.escape(document['by'])}</th><th>kWh</th><th>share</th><th>idle kWh</th><th>GPU-hours</th>"
        f"<th>kg CO2e</th><th>cost {currency}</th></tr>"
    )
    body = []
    for row in [*document["rows"], document["unallocated"], document["total"]]:
        body.append(
            f"<tr><td>{html.escape(row['key'])}</td><td>{row['energy_kwh']:.3f}</td><td>{row['share'] * 100:.1f}%</td>"
            f"<td>{mj_to_kwh(row['idle_mj']):.3f}</td><td>{row['gpu_hours']:.2f}</td>"
            f"<td>{row['carbon_g'] / 1000:.3f}</td><td>{row['cost']:.2f}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr:last-child { font-weight: bold; }
.grid { max-width: 1100px; }
code { font-size: 0.85em; }
"""


def render_html(document: Mapping[str, Any]) -> str:
    """The page: plotly.js inlined once, then the charts, the table, the notes and the series used."""
    from plotly.offline import get_plotlyjs

    period = document["period"]
    title = f"Joule Ledger chargeback by {document['by']}: {period['start']} to {period['end']}"
    step = f", step {period['step_s']:g} s" if period.get("step_s") else ""
    source = document["source"]
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in document["notes"])
    series = "".join(f"<li><code>{html.escape(expr)}</code></li>" for expr in source["series"])
    charts = "".join(f"<div>{part}</div>" for part in _figures(document))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Idle policy <b>{html.escape(document['idle_policy'])}</b>; measured "
        f"{mj_to_kwh(document['measured_mj']):.3f} kWh; source {html.escape(source['kind'])} "
        f"{html.escape(source['where'])}{html.escape(step)}.</p>"
        f'<div class="grid">{charts}</div>'
        f"<h2>Chargeback</h2>{_table(document)}<h2>Notes</h2><ul>{notes}</ul>"
        f"<h2>Series</h2><ul>{series}</ul></body></html>\n"
    )

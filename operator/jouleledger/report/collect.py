"""Turn Prometheus series into per-row :class:`~jouleledger.core.chargeback.Usage` for one period.

Every counter is sampled at the report's step (one sample per series per step, as cheap as reading a recording
rule) and its increases are computed here with counter-reset handling, so the rows add up exactly to the measured
energy of the period. (The chart's ``increase1h`` recording rules extrapolate to the window's edges; summed over a
month they differ from the counters' own increase, so they feed the dashboards, not the bill.)

``team`` and ``namespace`` rows come from the operator's roll-ups (carbon per interval and zone, embodied carbon
and cost as the operator applied them); ``workload`` and ``node`` rows come from the agents' per-pod counters,
priced and weighted here from the operator's per-node grid intensity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from jouleledger.core import contract as names
from jouleledger.core.chargeback import (
    IDLE_SHARE_WEIGHTED,
    IdleNode,
    Usage,
    counter_increases,
    has_reset,
    joules_to_mj,
)
from jouleledger.core.units import S_PER_HOUR, mj_to_kwh
from jouleledger.metrics.agent import label_name_for
from jouleledger.promapi import PrometheusApi, PrometheusError, RangeSeries

__all__ = ["GROUPS", "Collected", "Period", "Pricing", "ReportError", "collect"]

GROUPS: Final = ("team", "namespace", "workload", "node")
NO_TEAM: Final = "(no team label)"


class ReportError(Exception):
    """The report cannot be made; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Period:
    start_s: float
    end_s: float
    step_s: float


@dataclass(frozen=True, slots=True)
class Pricing:
    pue: float = 1.0
    price_per_kwh: float | None = None
    currency: str | None = None
    intensity_g_per_kwh: float | None = None  # for intervals of nodes without an intensity series
    embodied_g_per_gpu_hour: float = 0.0


@dataclass(slots=True)
class Collected:
    usage: dict[str, Usage]
    idle: dict[str, IdleNode]
    currency: str
    series: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    agent_measured_mj: int | None = None


Progress = Callable[[int, int, str], None]


class _Queries:
    def __init__(self, api: PrometheusApi, period: Period, progress: Progress | None, total: int) -> None:
        self.api, self.period, self.progress, self.total, self.done = api, period, progress, total, 0
        self.used: list[str] = []

    def range(self, expr: str) -> list[RangeSeries]:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, expr)
        self.used.append(expr)
        return self.api.query_range(expr, self.period.start_s, self.period.end_s, self.period.step_s)

    @property
    def window(self) -> str:
        return f"{self.period.step_s:.3f}".rstrip("0").rstrip(".") + "s"

    def last(self, metric: str) -> str:
        """``metric`` as seen at each step: its latest raw sample within the step, so a series that ends between
        two steps still shows its final value at the next one."""
        return f"last_over_time({metric}[{self.window}])"

    def increases(
        self, metric: str, aggregate: str | None = None
    ) -> list[tuple[Mapping[str, str], list[tuple[float, float]]]]:
        """Each series' increases of the counter ``metric`` (optionally summed, ``aggregate`` = ``sum by (...)``);
        where a plain counter resets, one more query fetches each step's raw maximum so that what it counted
        before the reset is kept."""
        expr = f"{aggregate} ({self.last(metric)})" if aggregate else self.last(metric)
        result = self.range(expr)
        peaks: dict[frozenset[tuple[str, str]], dict[float, float]] = {}
        if aggregate is None and any(has_reset(series.points) for series in result):
            self.total += 1
            for series in self.range(f"max_over_time({metric}[{self.window}])"):
                peaks[_identity(series.labels)] = dict(series.points)
        start_s = self.period.start_s
        return [
            (labels, counter_increases(series.points, start_s=start_s, peaks=peaks.get(_identity(labels))))
            for series in result
            for labels in (series.labels,)
        ]


def _identity(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in labels.items() if k != "__name__")


def _mj(delta_j: float) -> int:
    return joules_to_mj(delta_j)


def _intensity(queries: _Queries) -> dict[str, list[tuple[float, float]]]:
    by_node: dict[str, list[tuple[float, float]]] = {}
    for series in queries.range(f"max by (node) ({queries.last(names.NODE_INTENSITY)})"):
        node = series.labels.get("node", "")
        by_node[node] = sorted(by_node.get(node, []) + list(series.points))
    return by_node


def _at(points: list[tuple[float, float]], time_s: float) -> float | None:
    """The intensity that applied to the step ending at ``time_s``: the latest point at or before it."""
    chosen: float | None = None
    for point_s, value in points:
        if point_s > time_s:
            break
        chosen = value
    if chosen is None and points:
        chosen = points[0][1]
    return chosen


class _Carbon:
    """Operational carbon of energy on a node during one step, from the operator's per-node intensity."""

    def __init__(self, intensity: dict[str, list[tuple[float, float]]], pricing: Pricing) -> None:
        self.intensity, self.pricing = intensity, pricing
        self.fallback_nodes: set[str] = set()

    def grams(self, node: str, time_s: float, energy_mj: int) -> float:
        g_per_kwh = _at(self.intensity.get(node, []), time_s)
        if g_per_kwh is None:
            if self.pricing.intensity_g_per_kwh is None:
                raise ReportError(
                    f"no grid intensity ({names.NODE_INTENSITY}) for node {node!r} in the period: "
                    "pass --intensity-g-per-kwh"
                )
            self.fallback_nodes.add(node)
            g_per_kwh = self.pricing.intensity_g_per_kwh
        return mj_to_kwh(energy_mj) * self.pricing.pue * g_per_kwh


def _pod_owners(queries: _Queries, team_label: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(namespace, pod) -> (workload, team) from ``jouleledger_pod_info`` over the period."""
    team = label_name_for(team_label)
    owners: dict[tuple[str, str], tuple[str, str]] = {}
    info = queries.last(f"{names.POD_INFO}_info")
    for series in queries.range(f"max by (namespace, pod, owner_kind, owner_name, {team}) ({info})"):
        labels = series.labels
        namespace, pod = labels.get("namespace", ""), labels.get("pod", "")
        kind, owner = labels.get("owner_kind", ""), labels.get("owner_name", "")
        workload = f"{namespace}/{kind}/{owner}" if kind and owner else f"{namespace}/Pod/{pod}"
        owners[(namespace, pod)] = (workload, labels.get(team) or NO_TEAM)
    return owners


def _idle_and_measured(queries: _Queries, carbon: _Carbon, unallocated: str, price: float) -> dict[str, IdleNode]:
    idle: dict[str, IdleNode] = {}
    for labels, increases in queries.increases(unallocated):
        node = labels.get("node", "")
        item = idle.setdefault(node, IdleNode())
        for time_s, delta_j in increases:
            energy_mj = _mj(delta_j)
            item.energy_mj += energy_mj
            item.operational_g += carbon.grams(node, time_s, energy_mj)
            item.cost += mj_to_kwh(energy_mj) * carbon.pricing.pue * price
    for labels, increases in queries.increases(f"{names.GPU_ENERGY}_total"):
        item = idle.setdefault(labels.get("node", ""), IdleNode())
        item.measured_mj += sum(_mj(delta_j) for _, delta_j in increases)
    return idle


def _fallback_note(carbon: _Carbon) -> list[str]:
    if not carbon.fallback_nodes:
        return []
    return [
        f"nodes without an intensity series used {carbon.pricing.intensity_g_per_kwh:g} g/kWh: "
        + ", ".join(sorted(carbon.fallback_nodes))
    ]


def _operator_idle_figures(queries: _Queries, idle: dict[str, IdleNode], pricing: Pricing) -> bool:
    """Replace the estimated idle carbon (and, without --price-per-kwh, cost) by the operator's own series where it
    exports them (operators that do: the node's PUE, intensity and zone price); whether any node had them."""
    found = False
    for labels, increases in queries.increases(f"{names.NODE_UNALLOCATED_CARBON}_total"):
        node = labels.get("node", "")
        if node in idle:
            idle[node].operational_g = math.fsum(d for _, d in increases)
            found = True
    if pricing.price_per_kwh is None:
        costs: dict[str, float] = {}
        for labels, increases in queries.increases(f"{names.NODE_UNALLOCATED_COST}_total"):
            node = labels.get("node", "")
            costs[node] = costs.get(node, 0.0) + math.fsum(d for _, d in increases)
        for node, cost in costs.items():
            if node in idle:
                idle[node].cost = cost
                found = True
    return found


def _rollups(queries: _Queries, by: str, pricing: Pricing, team_label: str, policy: str) -> Collected:
    energy, seconds, carbon_name, cost_name = (
        (names.TEAM_ENERGY, names.TEAM_GPU_SECONDS, names.TEAM_CARBON, names.TEAM_COST)
        if by == "team"
        else (names.NAMESPACE_ENERGY, names.NAMESPACE_GPU_SECONDS, names.NAMESPACE_CARBON, names.NAMESPACE_COST)
    )
    usage: dict[str, Usage] = {}
    for labels, increases in queries.increases(f"{energy}_total"):
        row = usage.setdefault(labels.get(by, ""), Usage())
        for time_s, delta_j in increases:
            row.add_energy(time_s, _mj(delta_j))
    for labels, increases in queries.increases(f"{seconds}_total"):
        usage.setdefault(labels.get(by, ""), Usage()).gpu_seconds += math.fsum(d for _, d in increases)
    for labels, increases in queries.increases(f"{carbon_name}_total"):
        row = usage.setdefault(labels.get(by, ""), Usage())
        grams = math.fsum(d for _, d in increases)
        if labels.get("scope") == "embodied":
            row.embodied_g += grams
        else:
            row.operational_g += grams
    currencies: set[str] = set()
    for labels, increases in queries.increases(f"{cost_name}_total"):
        currencies.add(labels.get("currency", ""))
        usage.setdefault(labels.get(by, ""), Usage()).cost += math.fsum(d for _, d in increases)
    currencies.discard("")
    if len(currencies) > 1:
        raise ReportError(f"the cost series carry several currencies ({', '.join(sorted(currencies))})")
    currency = next(iter(currencies), "")
    if pricing.currency and currency and pricing.currency != currency:
        raise ReportError(f"--currency {pricing.currency} differs from the operator's currency {currency}")
    currency = pricing.currency or currency
    notes: list[str] = []
    allocated_kwh = mj_to_kwh(sum(row.energy_mj for row in usage.values()))
    if pricing.price_per_kwh is not None:
        idle_price = pricing.price_per_kwh
        notes.append(f"idle energy priced at {pricing.price_per_kwh:g} {currency} per facility kWh (--price-per-kwh)")
    else:
        total_cost = math.fsum(row.cost for row in usage.values())
        mean = total_cost / allocated_kwh if allocated_kwh > 0 else 0.0
        idle_price = mean / pricing.pue
        notes.append(
            f"idle energy priced at the period's mean price of allocated energy, {mean:.4g} {currency} per GPU kWh"
            " (set one with --price-per-kwh)"
        )
    carbon = _Carbon(_intensity(queries), pricing)
    idle = _idle_and_measured(queries, carbon, f"{names.NODE_UNALLOCATED}_total", idle_price)
    operator_idle = _operator_idle_figures(queries, idle, pricing)
    if operator_idle:
        notes.append(
            f"idle carbon and cost as the operator applied them ({names.NODE_UNALLOCATED_CARBON}_total, "
            f"{names.NODE_UNALLOCATED_COST}_total); nodes without those series use the rule below"
        )
    if policy == IDLE_SHARE_WEIGHTED:
        owners = _pod_owners(queries, team_label)
        for labels, increases in queries.increases(f"{names.POD_ENERGY}_total", "sum by (namespace, pod, node)"):
            namespace = labels.get("namespace", "")
            key = namespace if by == "namespace" else owners.get((namespace, labels.get("pod", "")), ("", NO_TEAM))[1]
            if key in usage:
                node = labels.get("node", "")
                weight = sum(_mj(d) for _, d in increases)
                usage[key].by_node_mj[node] = usage[key].by_node_mj.get(node, 0) + weight
        notes.append(f"idle shared by each {by}'s energy on the same node ({names.POD_ENERGY}_total per pod)")
    if not operator_idle:
        notes.append(f"idle operational carbon: node grid intensity x PUE {pricing.pue:g}; no embodied carbon for idle")
    return Collected(usage, idle, currency, notes=notes + _fallback_note(carbon))


_SERVING: Final = {
    "energy_j": names.WORKLOAD_SERVING_ENERGY,
    "carbon_g": names.WORKLOAD_SERVING_CARBON,
    "requests": names.WORKLOAD_SERVING_REQUESTS,
    "prompt_tokens": names.WORKLOAD_SERVING_PROMPT_TOKENS,
    "output_tokens": names.WORKLOAD_SERVING_OUTPUT_TOKENS,
}


def _serving(queries: _Queries, usage: dict[str, Usage]) -> bool:
    """Add the period's serving figures to the workload rows that served requests; whether any did."""
    sums: dict[str, dict[str, float]] = {}
    for field_name, metric in _SERVING.items():
        for labels, increases in queries.increases(f"{metric}_total"):
            key = f"{labels.get('namespace', '')}/{labels.get('workload_kind', '')}/{labels.get('workload', '')}"
            figures = sums.setdefault(key, dict.fromkeys(_SERVING, 0.0))
            figures[field_name] += math.fsum(d for _, d in increases)
    served = False
    for key, figures in sums.items():
        requests, output = figures["requests"], figures["output_tokens"]
        if key not in usage or requests <= 0:
            continue  # no request in the period: no ratio
        tokens = figures["prompt_tokens"] + output
        extra = {
            "requests": requests,
            "output_tokens": output,
            "tokens": tokens,
            "energy_j": figures["energy_j"],
            "joules_per_request": figures["energy_j"] / requests,
            "grams_per_1000_requests": figures["carbon_g"] / requests * 1000,
        }
        if output > 0:
            extra["joules_per_output_token"] = figures["energy_j"] / output
        if tokens > 0:
            extra["joules_per_token"] = figures["energy_j"] / tokens
        usage[key].extra.update(extra)
        served = True
    return served


def _agents(queries: _Queries, by: str, pricing: Pricing, team_label: str) -> Collected:
    owners = _pod_owners(queries, team_label)
    carbon = _Carbon(_intensity(queries), pricing)
    price = pricing.price_per_kwh or 0.0
    usage: dict[str, Usage] = {}

    def key_of(labels: Mapping[str, str]) -> str:
        if by == "node":
            return labels.get("node", "")
        namespace, pod = labels.get("namespace", ""), labels.get("pod", "")
        return owners.get((namespace, pod), (f"{namespace}/Pod/{pod}", NO_TEAM))[0]

    for labels, increases in queries.increases(f"{names.POD_ENERGY}_total"):
        row = usage.setdefault(key_of(labels), Usage())
        node = labels.get("node", "")
        for time_s, delta_j in increases:
            energy_mj = _mj(delta_j)
            row.add_energy(time_s, energy_mj, node)
            row.operational_g += carbon.grams(node, time_s, energy_mj)
            row.cost += mj_to_kwh(energy_mj) * pricing.pue * price
    for labels, increases in queries.increases(f"{names.POD_GPU_SECONDS}_total"):
        row = usage.setdefault(key_of(labels), Usage())
        gpu_seconds = math.fsum(d for _, d in increases)
        row.gpu_seconds += gpu_seconds
        row.embodied_g += gpu_seconds / S_PER_HOUR * pricing.embodied_g_per_gpu_hour
    idle = _idle_and_measured(queries, carbon, f"{names.GPU_UNALLOCATED}_total", price)
    notes = [f"operational carbon: node grid intensity x PUE {pricing.pue:g} per step"]
    if by == "workload" and _serving(queries, usage):
        notes.append(
            "serving workloads: J/request and J/token over the period from the operator's "
            f"{names.WORKLOAD_SERVING_ENERGY}_total and the servers' request and token counters"
        )
    if pricing.price_per_kwh is None:
        notes.append("no --price-per-kwh: costs are 0")
    else:
        notes.append(f"cost: {pricing.price_per_kwh:g} {pricing.currency or ''} per facility kWh (GPU kWh x PUE)")
    if pricing.embodied_g_per_gpu_hour:
        notes.append(f"embodied carbon: {pricing.embodied_g_per_gpu_hour:g} g per GPU-hour")
    return Collected(usage, idle, pricing.currency or "", notes=notes + _fallback_note(carbon))


def collect(
    api: PrometheusApi,
    period: Period,
    by: str,
    *,
    pricing: Pricing,
    policy: str,
    team_label: str = "team",
    progress: Progress | None = None,
) -> Collected:
    """Query the period and return its rows' usage and each node's idle energy."""
    if by not in GROUPS:
        raise ReportError(f"--by {by!r}: expected one of {', '.join(GROUPS)}")
    rollup = by in ("team", "namespace")
    total = (11 if policy == IDLE_SHARE_WEIGHTED else 9) if rollup else (11 if by == "workload" else 6)
    queries = _Queries(api, period, progress, total)
    try:
        collected = (
            _rollups(queries, by, pricing, team_label, policy) if rollup else _agents(queries, by, pricing, team_label)
        )
    except PrometheusError as error:
        raise ReportError(str(error)) from error
    except ValueError as error:
        raise ReportError(f"Prometheus returned an unusable value: {error}") from error
    collected.series = queries.used
    measured = [item.measured_mj for item in collected.idle.values()]
    collected.agent_measured_mj = sum(measured) if any(measured) else None
    if not any(row.energy_mj for row in collected.usage.values()) and not any(
        item.energy_mj for item in collected.idle.values()
    ):
        raise ReportError(
            f"no Joule Ledger energy in Prometheus at {api.base_url} in the period "
            f"({'operator roll-ups' if rollup else 'agent counters'}): check --since/--until and the URL"
        )
    return collected

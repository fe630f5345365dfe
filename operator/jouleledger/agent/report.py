"""Readable footprint tables (per pod, per namespace, per team, plus unallocated idle energy) for the terminal."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass

from jouleledger.core.carbon import energy_cost
from jouleledger.core.snapshot import LedgerSnapshot
from jouleledger.core.units import S_PER_HOUR, mj_to_kwh

__all__ = ["Pricing", "Row", "add_price_arguments", "format_report", "pricing_from_args", "rows_by"]


@dataclass(frozen=True, slots=True)
class Pricing:
    """What a kWh costs: ``price_per_kwh`` of facility energy (IT energy x ``pue``) in ``currency``; no price, no
    cost column."""

    price_per_kwh: float | None = None
    currency: str = ""
    pue: float = 1.0

    def cost(self, energy_mj: int) -> float | None:
        return None if self.price_per_kwh is None else energy_cost(energy_mj, self.pue, self.price_per_kwh)


UNALLOCATED = "(unallocated: idle GPUs)"


@dataclass(slots=True)
class Row:
    """One line of a footprint table."""

    name: str
    energy_mj: int = 0
    gpu_seconds: float = 0.0
    carbon_g: float = 0.0
    pods: int = 0


def rows_by(snapshot: LedgerSnapshot, carbon_g: Mapping[str, float], group: str, team_label: str = "team") -> list[Row]:
    """Group the snapshot's pods by ``pod``, ``namespace`` or ``team`` (the ``team_label`` pod label)."""
    rows: dict[str, Row] = {}
    pod_energy: dict[str, int] = {}
    pod_seconds: dict[str, float] = {}
    for device in snapshot.devices:
        pod_energy[device.pod_key] = pod_energy.get(device.pod_key, 0) + device.energy_mj
        pod_seconds[device.pod_key] = pod_seconds.get(device.pod_key, 0.0) + device.gpu_seconds
    for key, pod in snapshot.pods.items():
        if group == "pod":
            name = f"{pod.namespace}/{pod.name}" + (" (finished)" if pod.finished_s is not None else "")
        elif group == "namespace":
            name = pod.namespace
        else:
            name = pod.labels.get(team_label, "(no team label)")
        row = rows.setdefault(name, Row(name))
        row.energy_mj += pod_energy.get(key, 0)
        row.gpu_seconds += pod_seconds.get(key, 0.0)
        row.carbon_g += carbon_g.get(key, 0.0)
        row.pods += 1
    return sorted(rows.values(), key=lambda row: (-row.energy_mj, row.name))


def _table(title: str, rows: list[Row], unallocated: Row, measured_mj: int, pricing: Pricing) -> list[str]:
    all_rows = [*rows, unallocated]
    width = min(64, max(len(row.name) for row in all_rows))
    priced = pricing.price_per_kwh is not None
    cost_title = f"cost {pricing.currency}".strip()
    lines = [
        title,
        f"  {'':<{width}} {'energy kWh':>12} {'share':>7} {'GPU-hours':>10} {'CO2e g':>10} {'pods':>5}"
        + (f" {cost_title:>12}" if priced else ""),
    ]
    for row in all_rows:
        share = row.energy_mj / measured_mj * 100 if measured_mj else 0.0
        cost = pricing.cost(row.energy_mj)
        lines.append(
            f"  {row.name[:width]:<{width}} {mj_to_kwh(row.energy_mj):>12.6f} {share:>6.1f}% "
            f"{row.gpu_seconds / S_PER_HOUR:>10.4f} {row.carbon_g:>10.3f} {row.pods or '':>5}"
            + (f" {cost:>12.6f}" if cost is not None else "")
        )
    return lines


def format_report(
    snapshot: LedgerSnapshot,
    carbon_g: Mapping[str, float],
    team_label: str = "team",
    *,
    unallocated_g: float = 0.0,
    pricing: Pricing | None = None,
) -> str:
    """The footprint of every pod, namespace and team on the node, with idle energy as its own row (with the
    operational carbon ``unallocated_g`` of that idle energy, and its cost when ``pricing`` has a price)."""
    pricing = pricing or Pricing()
    measured = snapshot.measured_mj
    lines = [
        f"node {snapshot.node}: measured {mj_to_kwh(measured):.6f} kWh on {len(snapshot.gpus)} GPUs, "
        f"{mj_to_kwh(snapshot.unallocated_mj):.6f} kWh unallocated (no pod held the GPU)",
        "",
    ]
    if pricing.price_per_kwh is not None:
        lines[-1:] = [
            f"cost at {pricing.price_per_kwh:g} {pricing.currency} per facility kWh (GPU energy x PUE {pricing.pue:g})",
            "",
        ]
    unallocated = Row(UNALLOCATED, snapshot.unallocated_mj, carbon_g=unallocated_g)
    for title, group in (("per team", "team"), ("per namespace", "namespace"), ("per pod", "pod")):
        rows = rows_by(snapshot, carbon_g, group, team_label)
        lines += _table(title, rows, unallocated, measured, pricing)
        lines.append("")
    lines.append("per GPU")
    lines.append(f"  {'':<48} {'model':<24} {'measured kWh':>13} {'unallocated kWh':>16}")
    for gpu in snapshot.gpus:
        lines.append(
            f"  {gpu.uuid[:48]:<48} {gpu.model[:24]:<24} {mj_to_kwh(gpu.measured_mj):>13.6f} "
            f"{mj_to_kwh(gpu.unallocated_mj):>16.6f}"
        )
    lines.append("")
    rejected = sum(snapshot.rejected.values())
    if rejected:
        lines.append(f"{rejected} readings were rejected as untrustworthy (see jouleledger_agent_rejected_readings)")
    return "\n".join(lines) + "\n"


def add_price_arguments(parser: argparse.ArgumentParser) -> None:
    """``--price-per-kwh`` and ``--currency`` (the cost columns of ``demo`` and ``replay``)."""
    parser.add_argument(
        "--price-per-kwh", type=float, default=None, help="price of a facility kWh (GPU kWh x PUE); adds cost columns"
    )
    parser.add_argument("--currency", default="", help="currency of --price-per-kwh (e.g. EUR)")


def pricing_from_args(args: argparse.Namespace, pue: float) -> Pricing:
    """The validated :class:`Pricing` of ``add_price_arguments``' options (ValueError naming the option)."""
    price = args.price_per_kwh
    if price is not None and (not math.isfinite(price) or price < 0):
        raise ValueError(f"--price-per-kwh {price!r}: must be a finite number >= 0")
    if price is not None and not args.currency:
        raise ValueError("--price-per-kwh needs --currency (e.g. --currency EUR)")
    return Pricing(price, args.currency, pue)

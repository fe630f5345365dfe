"""``jouleledger report --from-footprints``: the per-workload ledger from the operator's ``WorkloadFootprint``
resources, without Prometheus.

A footprint holds a workload's lifetime totals (a finished Job's final record; a running workload's totals so far),
so this report lists the workloads seen in the period with their totals, not the period's share of them. Idle
energy is not in the footprints (it belongs to no workload): use ``--prometheus`` for it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from jouleledger.core.chargeback import Usage, allocate_idle
from jouleledger.core.units import InvalidValueError, checked_float
from jouleledger.report.collect import ReportError
from jouleledger.report.document import Source, build_document

__all__ = ["footprints_document", "usage_from_footprints"]


def _number(value: object) -> float:
    """``value`` as a number >= 0, NaN when it is not one (the row is then refused)."""
    try:
        return checked_float("value", value)
    except InvalidValueError:
        return math.nan


def _time_s(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def usage_from_footprints(
    objects: Sequence[Mapping[str, Any]], by: str, start_s: float, end_s: float
) -> tuple[dict[str, Usage], str, int]:
    """Rows from footprints seen in ``[start_s, end_s]``: (usage by row, currency, workloads counted)."""
    if by == "node":
        raise ReportError("--by node needs --prometheus (a footprint spans nodes)")
    usage: dict[str, Usage] = {}
    currencies: set[str] = set()
    counted = 0
    for obj in objects:
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        workload = spec.get("workload") or {}
        namespace = str(metadata.get("namespace") or "")
        where = f"WorkloadFootprint {namespace}/{metadata.get('name', '?')}"
        first, last = _time_s(status.get("firstSeen")), _time_s(status.get("lastSeen"))
        if (first is not None and first > end_s) or (last is not None and last < start_s):
            continue
        totals = status.get("final") or status
        energy = _number(totals.get("energyMillijoules", 0))
        carbon = totals.get("carbon") or {}
        cost = totals.get("cost") or {}
        figures = (
            energy,
            _number(totals.get("gpuSeconds", 0)),
            _number(carbon.get("operationalGrams", 0)),
            _number(carbon.get("embodiedGrams", 0)),
            _number(cost.get("amount", 0)),
        )
        if any(math.isnan(x) for x in figures) or not float(energy).is_integer():
            raise ReportError(f"{where}: its totals are not finite non-negative numbers")
        if cost.get("currency"):
            currencies.add(str(cost["currency"]))
        key = {
            "team": str(status.get("team") or "(no team label)"),
            "namespace": namespace,
            "workload": f"{namespace}/{workload.get('kind', '?')}/{workload.get('name', metadata.get('name', '?'))}",
        }.get(by)
        if key is None:
            raise ReportError(f"--by {by!r}: expected one of team, namespace, workload")
        row = usage.setdefault(key, Usage())
        row.add_energy(end_s, int(energy))
        row.gpu_seconds += figures[1]
        row.operational_g += figures[2]
        row.embodied_g += figures[3]
        row.cost += figures[4]
        counted += 1
    if len(currencies) > 1:
        raise ReportError(f"the footprints carry several currencies ({', '.join(sorted(currencies))})")
    return usage, next(iter(currencies), ""), counted


def footprints_document(
    args: argparse.Namespace,
    now_s: float,
    lister: Callable[..., list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    from jouleledger.report.command import parse_time

    start_s = parse_time(args.since, now_s, "--since")
    end_s = parse_time(args.until, now_s, "--until")
    if start_s >= end_s:
        raise ReportError(f"--since ({args.since}) is not before --until ({args.until})")
    if lister is None:
        from jouleledger.kube.footprint_list import FootprintListError, list_footprints

        try:
            objects = list_footprints(args.kubeconfig, args.namespace)
        except FootprintListError as error:
            raise ReportError(str(error)) from error
    else:
        objects = lister(args.kubeconfig, args.namespace)
    usage, currency, counted = usage_from_footprints(objects, args.by, start_s, end_s)
    if not counted:
        raise ReportError("no WorkloadFootprint was seen in the period")
    chargeback = allocate_idle(usage, {}, args.idle)
    where = f"namespace {args.namespace}" if args.namespace else "all namespaces"
    return build_document(
        chargeback,
        by=args.by,
        start_s=start_s,
        end_s=end_s,
        currency=currency,
        source=Source("footprints", where, ["workloadfootprints.jouleledger.io"], None),
        usage=usage,
        idle={},
        notes=[
            f"{counted} workloads seen in the period, with their lifetime totals (finished Jobs: their final record)",
            "footprints hold no idle energy: run with --prometheus for the unallocated line",
        ],
        agent_measured_mj=None,
    )

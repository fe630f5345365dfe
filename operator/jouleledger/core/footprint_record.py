"""A workload account as a ``WorkloadFootprint`` object, and back (group ``jouleledger.io``, ``v1alpha1``).

The object is named after the workload's UID, lives in the workload's namespace and is owned by the workload
(garbage-collected with it). ``spec`` names the workload; ``status`` holds the running totals, the final record of
a finished Job, and ``series``: the watermarks (each pod's share of each agent counter already included in the
totals) that make a restart exact. Totals and watermarks are always written together, in one request.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final

from jouleledger.core.footprint import FinalRecord, Totals, WorkloadAccount
from jouleledger.core.footprint_job import job_annotations, parse_time
from jouleledger.core.footprint_scrape import SeriesKey, SeriesValue
from jouleledger.core.units import S_PER_HOUR, mj_to_kwh
from jouleledger.core.workload import WorkloadRef

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "RecordError",
    "account_from_object",
    "footprint_object",
    "footprint_status",
    "format_time",
]

GROUP: Final = "jouleledger.io"
VERSION: Final = "v1alpha1"
KIND: Final = "WorkloadFootprint"
PLURAL: Final = "workloadfootprints"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "jouleledger"}


class RecordError(ValueError):
    """A ``WorkloadFootprint`` that cannot be read back (missing or invalid fields)."""


def format_time(unix_s: float) -> str:
    """RFC 3339 UTC with microseconds (``""`` for 0: never)."""
    if not unix_s:
        return ""
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def footprint_object(account: WorkloadAccount) -> dict[str, Any]:
    """The whole object to create (``status`` included; the API ignores it on create with a status subresource,
    so the caller patches ``/status`` next)."""
    ref = account.ref
    metadata: dict[str, Any] = {
        "name": ref.uid,
        "namespace": ref.namespace,
        "labels": {**MANAGED_BY, "jouleledger.io/workload-kind": ref.kind[:63]},
    }
    if ref.api_version:
        metadata["ownerReferences"] = [
            {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name, "uid": ref.uid}
        ]
    spec: dict[str, Any] = {
        "workload": {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name, "uid": ref.uid}
    }
    if ref.parent_kind:
        spec["parent"] = {"kind": ref.parent_kind, "name": ref.parent_name}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": spec,
        "status": footprint_status(account),
    }


def _totals(totals: Totals | FinalRecord) -> dict[str, Any]:
    return {
        "energyMillijoules": totals.energy_mj,
        "energyKwh": mj_to_kwh(totals.energy_mj),
        "gpuSeconds": totals.gpu_seconds,
        "gpuHours": totals.gpu_seconds / S_PER_HOUR,
        "carbon": {
            "operationalGrams": totals.operational_g,
            "embodiedGrams": totals.embodied_g,
            "totalGrams": totals.operational_g + totals.embodied_g,
        },
    }


def footprint_status(account: WorkloadAccount) -> dict[str, Any]:
    """The ``status`` of an account's footprint."""
    status: dict[str, Any] = {
        "team": account.team,
        **_totals(account.totals),
        "cost": {"amount": account.totals.cost, "currency": account.currency},
        "pods": account.pods_counted,
        "nodes": sorted(account.nodes),
        "intensitySources": sorted(account.sources),
        "methods": sorted(account.methods),
        "firstSeen": format_time(account.first_seen_unix_s),
        "lastSeen": format_time(account.last_seen_unix_s),
        "intervalStart": format_time(account.interval_start_unix_s),
        "intervalEnd": format_time(account.interval_end_unix_s),
        "lateEnergyMillijoules": account.late_energy_mj,
        "finalized": account.final is not None,
        "series": [
            {
                "node": key.node,
                "namespace": key.namespace,
                "pod": key.pod,
                "container": key.container,
                "device": key.device,
                "podUid": pod_uid,
                "energyMillijoules": value.energy_mj,
                "gpuSeconds": value.gpu_seconds,
            }
            for (key, pod_uid), value in sorted(account.watermarks.items())
        ],
    }
    final = account.final
    if final is not None:
        status["final"] = {
            **_totals(final),
            "cost": {"amount": final.cost, "currency": final.currency},
            "intensitySources": list(final.intensity_sources),
            "methods": list(final.methods),
            "completionTime": format_time(final.completion_unix_s),
            "finalizedTime": format_time(final.finalized_unix_s),
            "complete": final.complete,
            "missingNodes": list(final.missing_nodes),
            "annotations": job_annotations(final),
        }
    return status


def _number(where: str, value: object, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{where}: not a number ({value!r})")
    if not math.isfinite(value) or value < 0:
        raise RecordError(f"{where}: must be finite and non-negative ({value!r})")
    if integer and not float(value).is_integer():
        raise RecordError(f"{where}: not an integer ({value!r})")
    return float(value)


def _time(value: object) -> float:
    return parse_time(value) or 0.0


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def account_from_object(obj: Mapping[str, Any], *, currency: str) -> WorkloadAccount:
    """Read an account back from a ``WorkloadFootprint`` (RecordError for anything that does not add up)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    workload = spec.get("workload") or {}
    parent = spec.get("parent") or {}
    status = obj.get("status") or {}
    name = str(metadata.get("name", ""))
    uid = str(workload.get("uid", ""))
    if not uid or uid != name:
        raise RecordError(f"{KIND} {name!r}: spec.workload.uid {uid!r} does not match the name")
    ref = WorkloadRef(
        namespace=str(metadata.get("namespace", "")),
        kind=str(workload.get("kind", "")),
        name=str(workload.get("name", "")),
        uid=uid,
        api_version=str(workload.get("apiVersion", "")),
        parent_kind=str(parent.get("kind", "")),
        parent_name=str(parent.get("name", "")),
    )
    carbon = status.get("carbon") or {}
    cost = status.get("cost") or {}
    account = WorkloadAccount(ref=ref, team=str(status.get("team", "")), currency=str(cost.get("currency", currency)))
    where = f"{KIND} {ref.namespace}/{name}"
    account.totals = Totals(
        energy_mj=int(_number(f"{where}: energyMillijoules", status.get("energyMillijoules", 0), integer=True)),
        gpu_seconds=_number(f"{where}: gpuSeconds", status.get("gpuSeconds", 0.0)),
        operational_g=_number(f"{where}: carbon.operationalGrams", carbon.get("operationalGrams", 0.0)),
        embodied_g=_number(f"{where}: carbon.embodiedGrams", carbon.get("embodiedGrams", 0.0)),
        cost=_number(f"{where}: cost.amount", cost.get("amount", 0.0)),
    )
    account.first_seen_unix_s = _time(status.get("firstSeen"))
    account.last_seen_unix_s = _time(status.get("lastSeen"))
    account.interval_start_unix_s = _time(status.get("intervalStart"))
    account.interval_end_unix_s = _time(status.get("intervalEnd"))
    account.nodes = set(_strings(status.get("nodes")))
    account.sources = set(_strings(status.get("intensitySources")))
    account.methods = set(_strings(status.get("methods")))
    account.late_energy_mj = int(
        _number(f"{where}: lateEnergyMillijoules", status.get("lateEnergyMillijoules", 0), integer=True)
    )
    for index, item in enumerate(status.get("series") or ()):
        if not isinstance(item, Mapping):
            raise RecordError(f"{where}: series[{index}] is not an object")
        key = SeriesKey(
            str(item.get("node", "")),
            str(item.get("namespace", "")),
            str(item.get("pod", "")),
            str(item.get("container", "")),
            str(item.get("device", "")),
        )
        pod_uid = str(item.get("podUid", ""))
        if not key.node or not key.pod or not pod_uid:
            raise RecordError(f"{where}: series[{index}] lacks node, pod or podUid")
        account.watermarks[(key, pod_uid)] = SeriesValue(
            int(_number(f"{where}: series[{index}].energyMillijoules", item.get("energyMillijoules"), integer=True)),
            _number(f"{where}: series[{index}].gpuSeconds", item.get("gpuSeconds", 0.0)),
        )
    account.pods = {pod_uid for _, pod_uid in account.watermarks}
    pods = int(_number(f"{where}: pods", status.get("pods", 0), integer=True))
    account.pods_before = max(0, pods - len(account.pods))
    final = status.get("final")
    if status.get("finalized") and isinstance(final, Mapping):
        final_carbon = final.get("carbon") or {}
        final_cost = final.get("cost") or {}
        account.final = FinalRecord(
            energy_mj=int(_number(f"{where}: final.energyMillijoules", final.get("energyMillijoules"), integer=True)),
            gpu_seconds=_number(f"{where}: final.gpuSeconds", final.get("gpuSeconds", 0.0)),
            operational_g=_number(f"{where}: final.operationalGrams", final_carbon.get("operationalGrams", 0.0)),
            embodied_g=_number(f"{where}: final.embodiedGrams", final_carbon.get("embodiedGrams", 0.0)),
            cost=_number(f"{where}: final.cost", final_cost.get("amount", 0.0)),
            currency=str(final_cost.get("currency", account.currency)),
            intensity_sources=tuple(_strings(final.get("intensitySources"))),
            methods=tuple(_strings(final.get("methods"))),
            completion_unix_s=_time(final.get("completionTime")),
            finalized_unix_s=_time(final.get("finalizedTime")),
            complete=bool(final.get("complete", True)),
            missing_nodes=tuple(_strings(final.get("missingNodes"))),
        )
    elif status.get("finalized"):
        raise RecordError(f"{where}: finalized without a final record")
    return account

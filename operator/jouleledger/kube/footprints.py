"""``WorkloadFootprint`` objects (group ``jouleledger.io``, ``v1alpha1``): the codec of a workload account, and the
store that reads and writes them through the API.

The object is named after the workload's UID, lives in the workload's namespace and is owned by the workload
(garbage-collected with it). ``spec`` names the workload; ``status`` holds the running totals, the final record of
a finished Job, and ``series``: the watermarks (each pod's share of each agent counter already included in the
totals) that make a restart exact. Totals and watermarks are always written together, in one request, and only
over the version of the footprint they were merged with (optimistic concurrency: a change by another writer is a
``409``, and the caller merges it by the watermarks and writes again).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from jouleledger.core.deltas import SeriesKey, SeriesValue
from jouleledger.core.footprints import FinalRecord, Totals, WorkloadAccount, job_annotations
from jouleledger.core.units import S_PER_HOUR, InvalidValueError, checked_float, mj_to_kwh
from jouleledger.core.workload import WorkloadRef
from jouleledger.kube.api import ConflictError, KubeApi, NotFoundError, format_time, parse_time

log = logging.getLogger(__name__)

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "FootprintStore",
    "RecordError",
    "account_from_object",
    "footprint_object",
    "footprint_path",
    "footprint_status",
]

GROUP: Final = "jouleledger.io"
VERSION: Final = "v1alpha1"
KIND: Final = "WorkloadFootprint"
PLURAL: Final = "workloadfootprints"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "jouleledger"}


class RecordError(ValueError):
    """A ``WorkloadFootprint`` that cannot be read back (missing or invalid fields)."""


def footprint_path(namespace: str = "", name: str = "") -> str:
    """The REST path of the footprints of a namespace (all namespaces when empty), or of one of them."""
    if not namespace:
        return f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


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


def _totals(totals: Totals) -> dict[str, Any]:
    return {
        "energyMillijoules": totals.energy_mj,
        "energyFromPowerMj": totals.energy_from_power_mj,
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
                "energyFromPowerMj": value.from_power_mj,
                "epoch": value.epoch,
                "ticks": value.ticks,
            }
            for (key, pod_uid), value in sorted(account.watermarks.items())
        ],
    }
    if account.folded_until:
        status["foldedUntil"] = [
            {"node": node, "epoch": epoch, "unixSeconds": until_s}
            for node, (epoch, until_s) in sorted(account.folded_until.items())
        ]
    final = account.final
    if final is not None:
        status["final"] = {
            **_totals(final.totals),
            "cost": {"amount": final.totals.cost, "currency": final.currency},
            "intensitySources": list(final.intensity_sources),
            "methods": list(final.methods),
            "completionTime": format_time(final.completion_unix_s),
            "finalizedTime": format_time(final.finalized_unix_s),
            "complete": final.complete,
            "missingNodes": list(final.missing_nodes),
            "annotations": job_annotations(final),
        }
    return status


MAX_RESTORED: Final = 1e18
"""The largest GPU-seconds, grams or cost a restored footprint may hold (far beyond any real one): more cannot be
trusted, and sums of trusted values never overflow."""
MAX_RESTORED_INTEGER: Final = 9.2e18
"""The largest millijoules or count a restored footprint may hold: within int64, as the CRD's schema says."""


def _number(where: str, value: object, *, integer: bool = False) -> float:
    try:
        number = checked_float(where, value, maximum=MAX_RESTORED_INTEGER if integer else MAX_RESTORED)
    except InvalidValueError as error:
        raise RecordError(str(error)) from error
    if integer and not number.is_integer():
        raise RecordError(f"{where}: not an integer ({value!r})")
    return number


def _time(value: object) -> float:
    return parse_time(value) or 0.0


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _read_totals(where: str, obj: Mapping[str, Any]) -> Totals:
    carbon = _mapping(f"{where}: carbon", obj.get("carbon"))
    cost = _mapping(f"{where}: cost", obj.get("cost"))
    totals = Totals(
        energy_mj=int(_number(f"{where}: energyMillijoules", obj.get("energyMillijoules", 0), integer=True)),
        gpu_seconds=_number(f"{where}: gpuSeconds", obj.get("gpuSeconds", 0.0)),
        operational_g=_number(f"{where}: carbon.operationalGrams", carbon.get("operationalGrams", 0.0)),
        embodied_g=_number(f"{where}: carbon.embodiedGrams", carbon.get("embodiedGrams", 0.0)),
        cost=_number(f"{where}: cost.amount", cost.get("amount", 0.0)),
        energy_from_power_mj=int(_number(f"{where}: energyFromPowerMj", obj.get("energyFromPowerMj", 0), integer=True)),
    )
    if totals.energy_from_power_mj > totals.energy_mj:
        raise RecordError(f"{where}: energyFromPowerMj exceeds energyMillijoules")
    return totals


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{KIND}: {where} is not an object")
    return value


def account_from_object(obj: Mapping[str, Any], *, currency: str) -> WorkloadAccount:
    """Read an account back from a ``WorkloadFootprint`` (RecordError for anything that does not add up)."""
    obj = _mapping("the object", obj)
    metadata = _mapping("metadata", obj.get("metadata"))
    spec = _mapping("spec", obj.get("spec"))
    workload = _mapping("spec.workload", spec.get("workload"))
    parent = _mapping("spec.parent", spec.get("parent"))
    status = _mapping("status", obj.get("status"))
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
    cost = _mapping("status.cost", status.get("cost"))
    account = WorkloadAccount(ref=ref, team=str(status.get("team", "")), currency=str(cost.get("currency", currency)))
    where = f"{KIND} {ref.namespace}/{name}"
    account.totals = _read_totals(where, status)
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
            str(item.get("epoch", "")),
            int(_number(f"{where}: series[{index}].ticks", item.get("ticks", 0), integer=True)),
            int(_number(f"{where}: series[{index}].energyFromPowerMj", item.get("energyFromPowerMj", 0), integer=True)),
        )
    for index, item in enumerate(status.get("foldedUntil") or ()):
        if not isinstance(item, Mapping) or not item.get("node"):
            raise RecordError(f"{where}: foldedUntil[{index}] is not an object with a node")
        until_s = _number(f"{where}: foldedUntil[{index}].unixSeconds", item.get("unixSeconds"))
        account.folded_until[str(item["node"])] = (str(item.get("epoch", "")), until_s)
    account.pods = {pod_uid for _, pod_uid in account.watermarks}
    pods = int(_number(f"{where}: pods", status.get("pods", 0), integer=True))
    account.pods_before = max(0, pods - len(account.pods))
    final = status.get("final")
    if status.get("finalized") and isinstance(final, Mapping):
        final_cost = _mapping("status.final.cost", final.get("cost"))
        account.final = FinalRecord(
            totals=_read_totals(f"{where}: final", final),
            currency=str(final_cost.get("currency", account.currency)),
            intensity_sources=tuple(_strings(final.get("intensitySources"))),
            methods=tuple(_strings(final.get("methods"))),
            completion_unix_s=_time(final.get("completionTime")),
            finalized_unix_s=_time(final.get("finalizedTime")),
            complete=bool(final.get("complete", True)),
            missing_nodes=tuple(_strings(final.get("missingNodes"))),
        )
        _check_final(where, account, final)
    elif status.get("finalized"):
        raise RecordError(f"{where}: finalized without a final record")
    return account


def _check_final(where: str, account: WorkloadAccount, final: Mapping[str, Any]) -> None:
    """A final record must be what the totals were when it was frozen, and its annotations what it renders."""
    record = account.final
    assert record is not None
    frozen, totals = record.totals, account.totals
    if frozen.energy_mj != totals.energy_mj or frozen.energy_from_power_mj != totals.energy_from_power_mj:
        raise RecordError(f"{where}: final energy {frozen.energy_mj} mJ differs from the totals ({totals.energy_mj})")
    for name in ("gpu_seconds", "operational_g", "embodied_g", "cost"):
        if not math.isclose(getattr(frozen, name), getattr(totals, name), rel_tol=1e-9, abs_tol=1e-9):
            raise RecordError(f"{where}: final {name} differs from the totals")
    written = final.get("annotations")
    if written is not None and written != job_annotations(record):
        raise RecordError(f"{where}: final.annotations do not match the final record")


CONFLICT_RETRIES: Final = 5
"""Status writes retried after a 409 (each one merges the footprint read again) before giving up until the next
pass."""

Merge = Callable[[WorkloadAccount, WorkloadAccount], None]


class FootprintStore:
    """Reads and writes ``WorkloadFootprint`` objects (create, then the ``status`` subresource); ``known`` holds
    the names of those known to exist.

    It remembers the ``resourceVersion`` of every footprint it read or wrote, and each status write carries the
    one it is based on: a footprint another writer changed since is a ``409``, never overwritten; it is read
    again, merged by the series watermarks and written again (at most ``CONFLICT_RETRIES`` times).
    """

    def __init__(self, api: KubeApi, *, concurrency: int = 16) -> None:
        self.api = api
        self._slots = asyncio.Semaphore(concurrency)  # writes in flight at once
        self.known: set[str] = set()
        self._versions: dict[tuple[str, str], str] = {}

    def _seen(self, obj: Mapping[str, Any] | None) -> None:
        metadata = (obj or {}).get("metadata") or {}
        version = metadata.get("resourceVersion")
        if version:
            self._versions[(str(metadata.get("namespace", "")), str(metadata.get("name", "")))] = str(version)

    def version(self, namespace: str, name: str) -> str | None:
        """The ``resourceVersion`` of the footprint as last read or written (None when unknown)."""
        return self._versions.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self.known.discard(name)
        self._versions.pop((namespace, name), None)

    def read_all(self, objects: list[dict[str, Any]], *, currency: str) -> tuple[list[WorkloadAccount], int]:
        """The accounts of listed footprints, and how many could not be read (they are rewritten when written)."""
        accounts: list[WorkloadAccount] = []
        unreadable = 0
        for obj in objects:
            self.known.add(str((obj.get("metadata") or {}).get("name", "")))
            self._seen(obj)
            try:
                accounts.append(account_from_object(obj, currency=currency))
            except RecordError as error:
                log.warning("ignoring an unreadable footprint (it will be rewritten): %s", error)
                unreadable += 1
        return accounts, unreadable

    async def load(self, *, currency: str, missing_ok: bool = False) -> tuple[list[WorkloadAccount], int]:
        """:meth:`read_all` of every footprint; with ``missing_ok`` a CRD that is not installed reads as none."""
        try:
            objects = await self.list_all()
        except NotFoundError:
            if not missing_ok:
                raise
            log.warning("the WorkloadFootprint CRD is not installed; starting from an empty ledger")
            objects = []
        return self.read_all(objects, currency=currency)

    def _merge(self, account: WorkloadAccount, existing: Mapping[str, Any], currency: str, merge: Merge) -> None:
        try:
            previous = account_from_object(existing, currency=currency)
        except RecordError as error:
            log.warning("overwriting an unreadable footprint: %s", error)
            return
        merge(account, previous)

    async def save(self, account: WorkloadAccount, *, currency: str, merge: Merge | None = None) -> int:
        """Create the footprint where it is not known to exist (merging one found there: forgotten, or written by
        another instance), then write its status over the version it was merged with; on a 409 read, ``merge``
        (default :meth:`WorkloadAccount.merge`) and write again. A footprint deleted meanwhile is created again
        next time (NotFoundError). Returns how many 409s were merged (ConflictError after ``CONFLICT_RETRIES``).
        At most ``concurrency`` saves run at once."""
        async with self._slots:
            return await self._save(account, currency, merge)

    async def _save(self, account: WorkloadAccount, currency: str, merge: Merge | None) -> int:
        merge_into: Merge = merge or (lambda mine, theirs: mine.merge(theirs))
        ref = account.ref
        if ref.uid not in self.known:
            try:
                await self.create(account)
            except ConflictError:
                existing = await self.get(ref.namespace, ref.uid)
                if existing is not None:
                    self._merge(account, existing, currency, merge_into)
            self.known.add(ref.uid)
        conflicts = 0
        while True:
            try:
                await self.write_status(account)
                return conflicts
            except NotFoundError:
                self.forget(ref.namespace, ref.uid)
                raise
            except ConflictError:
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise
                log.info("footprint %s/%s changed since it was read; merging and writing again", ref.namespace, ref.uid)
            existing = await self.get(ref.namespace, ref.uid)
            if existing is None:
                self.forget(ref.namespace, ref.uid)
                raise NotFoundError("GET", footprint_path(ref.namespace, ref.uid), 404, "NotFound", "deleted meanwhile")
            self._merge(account, existing, currency, merge_into)

    async def list_all(self) -> list[dict[str, Any]]:
        """Every footprint in the cluster (NotFoundError when the CRD is not installed)."""
        return await self.api.list(footprint_path())

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = await self.api.get(footprint_path(namespace, name))
        self._seen(obj)
        return obj

    async def create(self, account: WorkloadAccount) -> None:
        """Create the account's footprint (ConflictError when it exists)."""
        self._seen(await self.api.create(footprint_path(account.ref.namespace), footprint_object(account)))

    async def write_status(self, account: WorkloadAccount) -> None:
        """Write the account's totals and watermarks, in one request, conditional on the footprint's
        ``resourceVersion`` as last read or written (ConflictError when it changed since)."""
        ref = account.ref
        body: dict[str, Any] = {"status": footprint_status(account)}
        version = self.version(ref.namespace, ref.uid)
        if version is not None:
            body["metadata"] = {"resourceVersion": version}
        self._seen(await self.api.merge_patch(footprint_path(ref.namespace, ref.uid) + "/status", body))

"""The agent's cumulative counters: energy and GPU-seconds per pod and device, measured and unallocated energy
per GPU, and the pods that held a device, kept for a retention window after they finish.

Counters only ever grow while a pod is retained; a pod leaves the ledger (and ``/metrics``) once it has been
finished for ``retention_s``, so exposition grows with live pods only. The whole state round-trips through a
plain JSON-serialisable dict for the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jouleledger.core.accounting import IntervalResult
from jouleledger.core.model import NodeHeader, Owner, PodInfo
from jouleledger.core.snapshot import GpuTotals, LedgerSnapshot, PodDeviceTotals, PodRecord
from jouleledger.core.units import InvalidValueError, checked_float, checked_int

__all__ = ["Ledger", "LedgerStateError"]

STATE_VERSION = 1


class LedgerStateError(ValueError):
    """A saved ledger state that cannot be restored (wrong version, node or shape)."""


@dataclass(slots=True)
class _Pod:
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    owner: Owner | None
    first_seen_s: float
    last_seen_s: float
    finished_s: float | None = None


@dataclass(slots=True)
class _Device:
    container: str
    energy_mj: int = 0
    gpu_seconds: float = 0.0


@dataclass(slots=True)
class _Gpu:
    measured_mj: int = 0
    unallocated_mj: int = 0
    power_w: float | None = None


@dataclass(slots=True)
class Ledger:
    """Cumulative per-pod and per-GPU counters of one node."""

    header: NodeHeader
    retention_s: float = 3600.0
    t_s: float = 0.0
    _pods: dict[str, _Pod] = field(default_factory=dict)
    _devices: dict[tuple[str, str], _Device] = field(default_factory=dict)
    _gpus: dict[str, _Gpu] = field(default_factory=dict)
    _last_pods: Sequence[PodInfo] | None = None
    _tracked: int = 0
    _next_expiry_s: float | None = None
    _known_s: float = 0.0

    def __post_init__(self) -> None:
        if math.isnan(self.retention_s) or self.retention_s < 0:
            raise InvalidValueError("retention_s", self.retention_s, "must be non-negative (inf keeps every pod)")
        for gpu in self.header.gpus:
            self._gpus.setdefault(gpu.uuid, _Gpu())

    def apply(self, result: IntervalResult, pods: Sequence[PodInfo], *, pods_known: bool = True) -> None:
        """Add one sample's attributed intervals; track which pods are alive.

        ``pods_known`` is False when the pod source could not be read: then no pod is marked finished.
        """
        t_s = result.t_s
        previous_known_s = self._known_s
        self.t_s = max(self.t_s, t_s)
        for interval in result.gpus:
            totals = self._gpus.setdefault(interval.gpu.uuid, _Gpu())
            totals.measured_mj += interval.split.energy_mj
            totals.unallocated_mj += interval.split.unallocated_mj
            seconds = interval.measurement.interval_s
            for share in interval.split.shares:
                pod = share.pod
                key = pod.key
                if key not in self._pods:
                    self._pods[key] = _Pod(pod.namespace, pod.name, pod.uid, dict(pod.labels), pod.owner, t_s, t_s)
                device = self._devices.get((key, share.device))
                if device is None:
                    device = self._devices[(key, share.device)] = _Device(share.container)
                device.energy_mj += share.energy_mj
                device.gpu_seconds += float(share.fraction) * seconds
        for uuid, power_mw in result.power_mw.items():
            self._gpus.setdefault(uuid, _Gpu()).power_w = power_mw / 1000
        if pods_known and (pods is not self._last_pods or len(self._pods) != self._tracked):
            # Liveness changes only when the pod list or the set of tracked pods does; a live pod's last
            # sighting is the ledger's time (see snapshot), so an unchanged list needs no per-pod work.
            self._track_liveness(t_s, previous_known_s, pods)
            self._last_pods = pods
            self._tracked = len(self._pods)
        elif not pods_known:
            self._last_pods = None
        if pods_known:
            self._known_s = t_s
        self._expire(t_s)

    def _track_liveness(self, t_s: float, previous_known_s: float, pods: Sequence[PodInfo]) -> None:
        present = {pod.key: pod for pod in pods}
        for key, state in self._pods.items():
            pod = present.get(key)
            if pod is None:
                if state.finished_s is None:
                    state.finished_s = t_s
                    state.last_seen_s = max(state.last_seen_s, previous_known_s)
                    expiry = t_s + self.retention_s
                    if self._next_expiry_s is None or expiry < self._next_expiry_s:
                        self._next_expiry_s = expiry
                continue
            state.last_seen_s = t_s
            state.finished_s = None
            if pod.owner is not None:
                state.owner = pod.owner
            if pod.labels and pod.labels != state.labels:
                state.labels = dict(pod.labels)

    def _expire(self, t_s: float) -> None:
        if self._next_expiry_s is None or t_s < self._next_expiry_s:
            return
        expired = [
            key
            for key, state in self._pods.items()
            if state.finished_s is not None and t_s - state.finished_s >= self.retention_s
        ]
        finished = [state.finished_s for state in self._pods.values() if state.finished_s is not None]
        self._next_expiry_s = min(finished) + self.retention_s if finished else None
        if not expired:
            return
        gone = set(expired)
        for key in expired:
            del self._pods[key]
        for device_key in [device_key for device_key in self._devices if device_key[0] in gone]:
            del self._devices[device_key]

    def snapshot(self, rejected: Mapping[tuple[str, str], int] | None = None) -> LedgerSnapshot:
        """An immutable copy of every counter, for exporters."""
        models = {gpu.uuid: gpu.model for gpu in self.header.gpus}
        pods = {
            key: PodRecord(
                state.namespace,
                state.name,
                state.uid,
                dict(state.labels),
                state.owner,
                state.first_seen_s,
                self.t_s if state.finished_s is None else state.last_seen_s,
                state.finished_s,
            )
            for key, state in self._pods.items()
        }
        devices = tuple(
            PodDeviceTotals(
                key,
                pods[key].namespace,
                pods[key].name,
                device.container,
                device_id,
                device.energy_mj,
                device.gpu_seconds,
            )
            for (key, device_id), device in self._devices.items()
        )
        gpus = tuple(
            GpuTotals(uuid, models.get(uuid, "unknown"), totals.measured_mj, totals.unallocated_mj, totals.power_w)
            for uuid, totals in self._gpus.items()
        )
        return LedgerSnapshot(self.header.node, self.t_s, pods, devices, gpus, dict(rejected or {}))

    # --- checkpoint state ----------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume counting exactly, as plain JSON types."""
        return {
            "version": STATE_VERSION,
            "node": self.header.node,
            "t_s": self.t_s,
            "pods": [
                {
                    "key": key,
                    "namespace": state.namespace,
                    "name": state.name,
                    "uid": state.uid,
                    "labels": state.labels,
                    "owner": None
                    if state.owner is None
                    else {"kind": state.owner.kind, "name": state.owner.name, "uid": state.owner.uid},
                    "first_seen_s": state.first_seen_s,
                    "last_seen_s": state.last_seen_s,
                    "finished_s": state.finished_s,
                }
                for key, state in self._pods.items()
            ],
            "devices": [
                {
                    "key": key,
                    "device": device_id,
                    "container": device.container,
                    "energy_mj": device.energy_mj,
                    "gpu_seconds": device.gpu_seconds,
                }
                for (key, device_id), device in self._devices.items()
            ],
            "gpus": {
                uuid: {
                    "measured_mj": totals.measured_mj,
                    "unallocated_mj": totals.unallocated_mj,
                    "power_w": totals.power_w,
                }
                for uuid, totals in self._gpus.items()
            },
        }

    @classmethod
    def from_state(cls, header: NodeHeader, retention_s: float, state: Mapping[str, Any]) -> Ledger:
        """Rebuild a ledger saved by :meth:`to_state`; raises :class:`LedgerStateError` on any inconsistency."""
        try:
            if state.get("version") != STATE_VERSION:
                raise LedgerStateError(f"unsupported ledger state version {state.get('version')!r}")
            if state.get("node") != header.node:
                raise LedgerStateError(f"state is for node {state.get('node')!r}, not {header.node!r}")
            ledger = cls(header, retention_s, checked_float("t_s", state["t_s"]))
            for item in state["pods"]:
                owner = item["owner"]
                ledger._pods[str(item["key"])] = _Pod(
                    str(item["namespace"]),
                    str(item["name"]),
                    str(item["uid"]),
                    {str(k): str(v) for k, v in dict(item["labels"]).items()},
                    None if owner is None else Owner(str(owner["kind"]), str(owner["name"]), str(owner["uid"])),
                    checked_float("first_seen_s", item["first_seen_s"]),
                    checked_float("last_seen_s", item["last_seen_s"]),
                    None if item["finished_s"] is None else checked_float("finished_s", item["finished_s"]),
                )
            for item in state["devices"]:
                key = str(item["key"])
                if key not in ledger._pods:
                    raise LedgerStateError(f"device totals for unknown pod {key!r}")
                ledger._devices[(key, str(item["device"]))] = _Device(
                    str(item["container"]),
                    checked_int("energy_mj", item["energy_mj"]),
                    checked_float("gpu_seconds", item["gpu_seconds"]),
                )
            for uuid, totals in dict(state["gpus"]).items():
                ledger._gpus[str(uuid)] = _Gpu(
                    checked_int("measured_mj", totals["measured_mj"]),
                    checked_int("unallocated_mj", totals["unallocated_mj"]),
                    None if totals.get("power_w") is None else checked_float("power_w", totals["power_w"]),
                )
        except (KeyError, TypeError, AttributeError, InvalidValueError) as error:
            raise LedgerStateError(f"malformed ledger state: {error}") from error
        finished = [pod.finished_s for pod in ledger._pods.values() if pod.finished_s is not None]
        ledger._next_expiry_s = min(finished) + retention_s if finished else None
        ledger._known_s = ledger.t_s
        return ledger

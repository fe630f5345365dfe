"""The agent's cumulative counters: energy and GPU-seconds per pod and device, measured and unallocated energy
per GPU, and the pods that held a device, kept for a retention window after they finish.

Counters only ever grow while a pod is retained; a pod leaves the ledger (and ``/metrics``) once it has been
finished for ``retention_s``, so exposition grows with live pods only. The whole state round-trips through a
plain JSON-serialisable dict for the checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jouleledger.core.accounting import IntervalResult
from jouleledger.core.integration import Method
from jouleledger.core.model import NodeHeader, Owner, PodInfo
from jouleledger.core.snapshot import GpuTotals, LedgerSnapshot, PodDeviceTotals, PodRecord
from jouleledger.core.units import MAX_COUNTER_MJ, InvalidValueError, checked_float, checked_int

__all__ = ["DEFAULT_RETENTION_S", "LedgerStateError", "PodCounters"]

DEFAULT_RETENTION_S: Final = 3600.0
"""How long a finished pod's counters stay exported by default (so that the operator reads their final value)."""

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before the energy from power integration was counted apart (read as 0)


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
    slot: int
    energy_mj: int = 0
    gpu_seconds: float = 0.0
    from_power_mj: int = 0


@dataclass(slots=True)
class _Gpu:
    measured_mj: int = 0
    unallocated_mj: int = 0
    power_w: float | None = None
    from_power_mj: int = 0


@dataclass(slots=True)
class PodCounters:
    """Cumulative per-pod and per-GPU counters of one node."""

    header: NodeHeader
    retention_s: float = DEFAULT_RETENTION_S
    t_s: float = 0.0
    _pods: dict[str, _Pod] = field(default_factory=dict)
    _devices: dict[tuple[str, str], _Device] = field(default_factory=dict)
    _gpus: dict[str, _Gpu] = field(default_factory=dict)
    _last_pods: Sequence[PodInfo] | None = None
    _tracked: int = 0
    _next_expiry_s: float | None = None
    _known_s: float = 0.0
    _dirty_pods: set[str] = field(default_factory=set)
    _dirty_devices: set[tuple[str, str]] = field(default_factory=set)
    _dirty_gpus: set[str] = field(default_factory=set)
    _expired: list[str] = field(default_factory=list)
    _slots: dict[int, tuple[str, str]] = field(default_factory=dict)
    _defined: set[int] = field(default_factory=set)
    _next_slot: int = 0
    _seen: dict[str, PodInfo] = field(default_factory=dict)

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
        dirty_devices = self._dirty_devices
        for interval in result.gpus:
            self._dirty_gpus.add(interval.gpu.uuid)
            totals = self._gpus.setdefault(interval.gpu.uuid, _Gpu())
            totals.measured_mj += interval.split.energy_mj
            totals.unallocated_mj += interval.split.unallocated_mj
            from_power = interval.measurement.method is Method.POWER
            if from_power:
                totals.from_power_mj += interval.split.energy_mj
            seconds = interval.measurement.interval_s
            for share in interval.split.shares:
                pod = share.pod
                key = pod.key
                if key not in self._pods:
                    self._pods[key] = _Pod(pod.namespace, pod.name, pod.uid, dict(pod.labels), pod.owner, t_s, t_s)
                    self._dirty_pods.add(key)
                device_key = (key, share.device)
                dirty_devices.add(device_key)
                device = self._devices.get(device_key)
                if device is None:
                    device = self._devices[device_key] = _Device(share.container, self._next_slot)
                    self._slots[self._next_slot] = device_key
                    self._next_slot += 1
                device.energy_mj += share.energy_mj
                device.gpu_seconds += float(share.fraction) * seconds
                if from_power:
                    device.from_power_mj += share.energy_mj
        for uuid, power_mw in result.power_mw.items():
            self._gpus.setdefault(uuid, _Gpu()).power_w = power_mw / 1000
            self._dirty_gpus.add(uuid)
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
        seen = self._seen
        for key, state in self._pods.items():
            pod = present.get(key)
            if pod is None:
                if state.finished_s is None:
                    state.finished_s = t_s
                    state.last_seen_s = max(state.last_seen_s, previous_known_s)
                    self._dirty_pods.add(key)
                    expiry = t_s + self.retention_s
                    if self._next_expiry_s is None or expiry < self._next_expiry_s:
                        self._next_expiry_s = expiry
                continue
            state.last_seen_s = t_s
            if state.finished_s is not None:
                state.finished_s = None
                self._dirty_pods.add(key)
            if seen.get(key) is pod:
                continue  # the very same object as last time: nothing about the pod changed
            seen[key] = pod
            if pod.owner is not None and pod.owner != state.owner:
                state.owner = pod.owner
                self._dirty_pods.add(key)
            if pod.labels and pod.labels != state.labels:
                state.labels = dict(pod.labels)
                self._dirty_pods.add(key)

    def _expire(self, t_s: float) -> None:
        if self._next_expiry_s is None or t_s < self._next_expiry_s:
            return
        expired = [
            key
            for key, state in self._pods.items()
            if state.finished_s is not None and t_s - state.finished_s >= self.retention_s
        ]
        gone = set(expired)
        self._expired.extend(expired)
        self._dirty_pods -= gone
        self._dirty_devices = {device_key for device_key in self._dirty_devices if device_key[0] not in gone}
        for key in expired:
            del self._pods[key]
            self._seen.pop(key, None)
        for device_key in [device_key for device_key in self._devices if device_key[0] in gone]:
            del self._slots[self._devices.pop(device_key).slot]
        finished = [state.finished_s for state in self._pods.values() if state.finished_s is not None]
        self._next_expiry_s = min(finished) + self.retention_s if finished else None

    def snapshot(self, rejected: Mapping[tuple[str, str], int] | None = None) -> LedgerSnapshot:
        """An immutable copy of every counter, for exporters."""
        models = {gpu.uuid: gpu.model for gpu in self.header.gpus}
        limits_w = {gpu.uuid: gpu.power_limit_w for gpu in self.header.gpus}
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
                device.from_power_mj,
            )
            for (key, device_id), device in self._devices.items()
        )
        gpus = tuple(
            GpuTotals(
                uuid,
                models.get(uuid, "unknown"),
                totals.measured_mj,
                totals.unallocated_mj,
                totals.power_w,
                totals.from_power_mj,
                limits_w.get(uuid),
            )
            for uuid, totals in self._gpus.items()
        )
        return LedgerSnapshot(self.header.node, self.t_s, pods, devices, gpus, dict(rejected or {}))

    # --- checkpoint state ----------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume counting exactly, as plain JSON types."""
        self.drain_delta()  # a full state supersedes the pending changes
        self._defined = set(self._slots)
        return {
            "version": STATE_VERSION,
            "node": self.header.node,
            "t_s": self.t_s,
            "pods": [_pod_entry(key, state) for key, state in self._pods.items()],
            "devices": [_device_entry(key, device) for key, device in self._devices.items()],
            "gpus": {uuid: _gpu_entry(totals) for uuid, totals in self._gpus.items()},
        }

    def discard_changes(self) -> None:
        """Forget what changed since the last :meth:`drain_delta`: for a ledger nobody journals (no checkpoint),
        whose change tracking would otherwise grow with every pod that ever passed."""
        self._dirty_pods = set()
        self._dirty_devices = set()
        self._dirty_gpus = set()
        self._expired = []

    def drain_delta(self) -> dict[str, Any]:
        """What changed since the last call (or :meth:`to_state`), as absolute values: applying it twice is
        harmless. The agent appends it to its journal every tick instead of rewriting the whole state."""
        new_devices: list[list[Any]] = []
        slots_energy = array("q")
        seconds = array("d")
        from_power = array("q")
        for key in self._dirty_devices:
            device = self._devices[key]
            if device.slot in self._defined:  # named earlier in this generation: its numbers, packed
                slots_energy.append(device.slot)
                slots_energy.append(device.energy_mj)
                seconds.append(device.gpu_seconds)
                from_power.append(device.from_power_mj)
            else:
                self._defined.add(device.slot)
                new_devices.append(_device_entry(key, device))
        if sys.byteorder != "little":  # pragma: no cover - the packed counters are little-endian everywhere
            slots_energy.byteswap()
            seconds.byteswap()
            from_power.byteswap()
        delta = {
            "t_s": self.t_s,
            "pods": [_pod_entry(key, self._pods[key]) for key in self._dirty_pods],
            "devices": new_devices,
            "counters": base64.b64encode(slots_energy.tobytes()).decode("ascii"),
            "seconds": base64.b64encode(seconds.tobytes()).decode("ascii"),
            "from_power": base64.b64encode(from_power.tobytes()).decode("ascii"),
            "gpus": {uuid: _gpu_entry(self._gpus[uuid]) for uuid in self._dirty_gpus},
            "expired": self._expired,
        }
        self._dirty_pods = set()
        self._dirty_devices = set()
        self._dirty_gpus = set()
        self._expired = []
        return delta

    @classmethod
    def from_state(cls, header: NodeHeader, retention_s: float, state: Mapping[str, Any]) -> PodCounters:
        """Rebuild a ledger saved by :meth:`to_state`; raises :class:`LedgerStateError` on any inconsistency."""
        version = state.get("version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise LedgerStateError(f"unsupported ledger state version {version!r}")
        if state.get("node") != header.node:
            raise LedgerStateError(f"state is for node {state.get('node')!r}, not {header.node!r}")
        ledger = cls(header, retention_s)
        ledger.apply_delta({**state, "expired": []})
        ledger.drain_delta()
        return ledger

    def apply_delta(self, delta: Mapping[str, Any]) -> None:
        """Fold in a :meth:`drain_delta` (or a whole state); raises :class:`LedgerStateError` when malformed.

        The whole delta is validated before anything is changed: a rejected one leaves the ledger as it was.
        """
        try:
            t_s = checked_float("t_s", delta["t_s"])
            pods = {str(item["key"]): _load_pod(item) for item in delta["pods"]}
            devices = [self._load_device(entry, pods) for entry in delta["devices"]]
            new_slots = {slot: device_key for slot, device_key, _ in devices}
            packed = (
                self._load_packed(delta["counters"], delta["seconds"], delta.get("from_power"), new_slots)
                if "counters" in delta
                else []
            )
            gpus = {
                str(uuid): _Gpu(
                    _checked_mj("measured_mj", totals["measured_mj"]),
                    _checked_mj("unallocated_mj", totals["unallocated_mj"]),
                    None if totals.get("power_w") is None else checked_float("power_w", totals["power_w"]),
                    _checked_mj("from_power_mj", totals.get("from_power_mj", 0)),
                )
                for uuid, totals in dict(delta["gpus"]).items()
            }
            gone = {str(key) for key in delta["expired"]}
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as error:
            if isinstance(error, LedgerStateError):
                raise
            raise LedgerStateError(f"malformed ledger state: {error}") from error
        # Valid as a whole: apply it.
        self.t_s = max(self.t_s, t_s)
        self._pods.update(pods)
        for slot, device_key, device in devices:
            self._devices[device_key] = device
            self._slots[slot] = device_key
            self._next_slot = max(self._next_slot, slot + 1)
        for slot, energy_mj, gpu_seconds, from_power_mj in packed:
            device = self._devices[self._slots[slot]]
            device.energy_mj, device.gpu_seconds = energy_mj, gpu_seconds
            if from_power_mj is not None:
                device.from_power_mj = from_power_mj
        self._gpus.update(gpus)
        for key in gone:
            self._pods.pop(key, None)
        for device_key in [device_key for device_key in self._devices if device_key[0] in gone]:
            del self._slots[self._devices.pop(device_key).slot]
        finished = [pod.finished_s for pod in self._pods.values() if pod.finished_s is not None]
        self._next_expiry_s = min(finished) + self.retention_s if finished else None
        self._known_s = self.t_s
        self._last_pods = None

    def _load_packed(
        self, counters_b64: str, seconds_b64: str, from_power_b64: str | None, new_slots: Mapping[int, object]
    ) -> list[tuple[int, int, float, int | None]]:
        """Counters of devices named earlier: little-endian int64 (slot, energy_mj) pairs, float64 seconds and
        (version 2) int64 energy from power integration. Returns ``(slot, energy_mj, seconds, from_power_mj)``."""
        slots_energy = array("q", base64.b64decode(counters_b64, validate=True))
        seconds = array("d", base64.b64decode(seconds_b64, validate=True))
        from_power = array("q", base64.b64decode(from_power_b64, validate=True)) if from_power_b64 is not None else None
        if sys.byteorder != "little":  # pragma: no cover
            slots_energy.byteswap()
            seconds.byteswap()
            if from_power is not None:
                from_power.byteswap()
        if len(slots_energy) != 2 * len(seconds):
            raise LedgerStateError("packed device counters and seconds differ in length")
        if from_power is not None and len(from_power) != len(seconds):
            raise LedgerStateError("packed device energy from power and seconds differ in length")
        updates: list[tuple[int, int, float, int | None]] = []
        for index, gpu_seconds in enumerate(seconds):
            slot, energy_mj = slots_energy[2 * index], slots_energy[2 * index + 1]
            if slot not in self._slots and slot not in new_slots:
                raise LedgerStateError(f"journal names device slot {slot}, which was never defined")
            updates.append(
                (
                    slot,
                    _checked_mj("energy_mj", energy_mj),
                    checked_float("gpu_seconds", gpu_seconds),
                    None if from_power is None else _checked_mj("from_power_mj", from_power[index]),
                )
            )
        return updates

    def _load_device(
        self, entry: Sequence[Any], new_pods: Mapping[str, object]
    ) -> tuple[int, tuple[str, str], _Device]:
        if len(entry) == 6:  # version 1
            raw_slot, raw_key, device_id, container, energy_mj, gpu_seconds = entry
            from_power_mj: object = 0
        else:
            raw_slot, raw_key, device_id, container, energy_mj, gpu_seconds, from_power_mj = entry
        slot, key = checked_int("slot", raw_slot, maximum=MAX_COUNTER_MJ), str(raw_key)
        if key not in self._pods and key not in new_pods:
            raise LedgerStateError(f"device totals for unknown pod {key!r}")
        device = _Device(
            str(container),
            slot,
            _checked_mj("energy_mj", energy_mj),
            checked_float("gpu_seconds", gpu_seconds),
            _checked_mj("from_power_mj", from_power_mj),
        )
        return slot, (key, str(device_id)), device


def _checked_mj(what: str, value: object) -> int:
    """A saved energy total: a non-negative integer that fits the journal's int64 packing."""
    return checked_int(what, value, maximum=MAX_COUNTER_MJ)


def _pod_entry(key: str, state: _Pod) -> dict[str, Any]:
    owner = state.owner
    return {
        "key": key,
        "namespace": state.namespace,
        "name": state.name,
        "uid": state.uid,
        "labels": state.labels,
        "owner": None if owner is None else {"kind": owner.kind, "name": owner.name, "uid": owner.uid},
        "first_seen_s": state.first_seen_s,
        "last_seen_s": state.last_seen_s,
        "finished_s": state.finished_s,
    }


def _load_pod(item: Mapping[str, Any]) -> _Pod:
    owner = item["owner"]
    return _Pod(
        str(item["namespace"]),
        str(item["name"]),
        str(item["uid"]),
        {str(k): str(v) for k, v in dict(item["labels"]).items()},
        None if owner is None else Owner(str(owner["kind"]), str(owner["name"]), str(owner["uid"])),
        checked_float("first_seen_s", item["first_seen_s"]),
        checked_float("last_seen_s", item["last_seen_s"]),
        None if item["finished_s"] is None else checked_float("finished_s", item["finished_s"]),
    )


def _device_entry(key: tuple[str, str], device: _Device) -> list[Any]:
    # Positional, to keep the per-tick journal small: [slot, pod key, device, container, energy_mj, gpu_seconds,
    # from_power_mj] (version 1: without the last); later entries of the same generation name the device by its
    # slot alone.
    return [device.slot, key[0], key[1], device.container, device.energy_mj, device.gpu_seconds, device.from_power_mj]


def _gpu_entry(totals: _Gpu) -> dict[str, Any]:
    return {
        "measured_mj": totals.measured_mj,
        "unallocated_mj": totals.unallocated_mj,
        "power_w": totals.power_w,
        "from_power_mj": totals.from_power_mj,
    }

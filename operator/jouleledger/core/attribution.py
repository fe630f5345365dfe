"""Rules 2-6 of attribution: splitting one GPU's measured interval energy across the pods that held it.

Every split is exact: shares are whole millijoules by the largest-remainder method (ties to the pod listed
first), so ``sum(shares) + unallocated == delta`` for every device and interval. The split itself is exact
integer arithmetic (utilisations that are not whole numbers are scaled to integers without rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from jouleledger.core.model import REPLICA_SEPARATOR, GpuInfo, GpuReading, PodInfo, base_device_id

__all__ = ["DeviceSplit", "GpuSplit", "HolderIndex", "Share", "largest_remainder", "split_gpu"]


class Share(NamedTuple):
    """One pod's part of one device's interval energy.

    ``fraction`` is the pod's fraction of the *physical* GPU (for a MIG instance, the instance's slice fraction
    times the pod's fraction of the instance); GPU-seconds are ``fraction x interval``.
    """

    pod: PodInfo
    container: str
    device: str
    energy_mj: int
    fraction: float


@dataclass(frozen=True, slots=True)
class DeviceSplit:
    """One device (a whole GPU or a MIG instance) in one interval."""

    device: str
    energy_mj: int
    shares: tuple[Share, ...]
    unallocated_mj: int


@dataclass(frozen=True, slots=True)
class GpuSplit:
    """One physical GPU in one interval: its devices' splits."""

    uuid: str
    energy_mj: int
    devices: tuple[DeviceSplit, ...]

    @property
    def unallocated_mj(self) -> int:
        return sum(device.unallocated_mj for device in self.devices)

    @property
    def shares(self) -> tuple[Share, ...]:
        return tuple(share for device in self.devices for share in device.shares)


def _as_integers(weights: Sequence[int | float | Fraction]) -> list[int]:
    """Exact integer weights with the same ratios (floats and fractions scaled by a common denominator)."""
    if all(type(weight) is int for weight in weights):
        return list(weights)  # type: ignore[arg-type]
    ratios = [Fraction(weight) for weight in weights]
    denominator = math.lcm(*(ratio.denominator for ratio in ratios))
    return [ratio.numerator * (denominator // ratio.denominator) for ratio in ratios]


def largest_remainder(total: int, weights: Sequence[int | float | Fraction]) -> list[int]:
    """Split ``total`` into whole parts proportional to ``weights`` that add up to ``total`` exactly.

    Each part is the floor of its exact quota; the units left over go to the largest fractional remainders,
    ties to the earlier weight. All-zero weights split equally. ``total`` must be non-negative. The arithmetic
    is exact (integers throughout), whatever the weights' type.
    """
    if total < 0:
        raise ValueError(f"cannot split a negative total ({total})")
    if not weights:
        raise ValueError("cannot split across no weights")
    integers = _as_integers(weights)
    if any(weight < 0 for weight in integers):
        raise ValueError("weights must be non-negative")
    weight_sum = sum(integers)
    if weight_sum == 0:
        integers = [1] * len(integers)
        weight_sum = len(integers)
    parts: list[int] = []
    remainders: list[int] = []
    for weight in integers:
        part, remainder = divmod(total * weight, weight_sum)
        parts.append(part)
        remainders.append(remainder)
    left = total - sum(parts)
    if left:
        order = sorted(range(len(parts)), key=lambda i: (-remainders[i], i))
        for i in order[:left]:
            parts[i] += 1
    return parts


class _Holder(NamedTuple):
    pod: PodInfo
    container: str
    weight: int


@dataclass(frozen=True, slots=True)
class _PodSummary:
    """One pod's devices (base ids, once each) and process ids, each with the container that lists it."""

    pod: PodInfo
    devices: tuple[tuple[str, str], ...]
    pids: tuple[tuple[int, str], ...]

    @classmethod
    def of(cls, pod: PodInfo) -> _PodSummary:
        devices: list[tuple[str, str]] = []
        seen: set[str] = set()
        pids: list[tuple[int, str]] = []
        for container in pod.containers:
            for listed in container.devices:
                device = base_device_id(listed) if REPLICA_SEPARATOR in listed else listed
                if device not in seen:
                    seen.add(device)
                    devices.append((device, container.name))
            pids.extend((pid, container.name) for pid in container.pids)
        return cls(pod, tuple(devices), tuple(pids))


class HolderIndex:
    """Who holds what in one sample: built once per sample, shared by every GPU's split.

    ``by_device`` maps a base device id to its holders in pod order; ``by_pid`` maps a process id to the pod
    (and container) that owns it (the first pod listing it); ``order`` gives each pod's position for ties.
    """

    __slots__ = ("by_device", "by_pid", "order", "pods", "summaries")

    def __init__(self, pods: Sequence[PodInfo], previous: HolderIndex | None = None) -> None:
        """Index ``pods``; ``previous`` (the index of an earlier sample) lends its per-pod summaries, so that
        pods that are the same objects as before are not walked again."""
        self.pods = pods
        self.by_device: dict[str, list[tuple[PodInfo, str]]] = {}
        self.by_pid: dict[int, tuple[PodInfo, str]] = {}
        self.order: dict[int, int] = {}
        self.summaries: dict[int, _PodSummary] = {}
        known = previous.summaries if previous is not None else {}
        by_device, by_pid = self.by_device, self.by_pid
        for position, pod in enumerate(pods):
            marker = id(pod)
            if marker in self.order:
                continue
            self.order[marker] = position
            summary = known.get(marker)
            if summary is None or summary.pod is not pod:
                summary = _PodSummary.of(pod)
            self.summaries[marker] = summary
            for device, container_name in summary.devices:
                by_device.setdefault(device, []).append((pod, container_name))
            for pid, container_name in summary.pids:
                by_pid.setdefault(pid, (pod, container_name))

    def _weighted_exact(self, holders: list[tuple[PodInfo, str]], reading: GpuReading) -> list[_Holder]:
        """Utilisations that are not whole numbers: summed as exact rationals, then scaled to integers."""
        totals: dict[int, Fraction] = {}
        for process in reading.processes:
            owner = self.by_pid.get(process.pid)
            if owner is not None:
                marker = id(owner[0])
                totals[marker] = totals.get(marker, Fraction(0)) + Fraction(process.sm_util)
        weights = _as_integers([totals.get(id(pod), Fraction(0)) for pod, _ in holders])
        return [_Holder(pod, name, weight) for (pod, name), weight in zip(holders, weights, strict=True)]

    def device_holders(self, device: str) -> list[tuple[PodInfo, str]]:
        """Pods whose containers list ``device`` (replicas ``::n`` count as the device), in pod order."""
        return self.by_device.get(device, [])

    def process_holders(self, reading: GpuReading) -> list[tuple[PodInfo, str]]:
        """Pods that own a process running on the GPU (by pid), in pod order."""
        owners: dict[int, tuple[PodInfo, str]] = {}
        for process in reading.processes:
            owner = self.by_pid.get(process.pid)
            if owner is not None:
                owners.setdefault(id(owner[0]), owner)
        return sorted(owners.values(), key=lambda owner: self.order[id(owner[0])])

    def weighted(self, holders: list[tuple[PodInfo, str]], reading: GpuReading) -> list[_Holder]:
        """Attach to each holder the summed SM utilisation of its processes on the GPU of ``reading``."""
        if len(holders) == 1:
            pod, name = holders[0]
            return [_Holder(pod, name, 0)]
        by_pid = self.by_pid
        totals: dict[int, int] = {}
        for process in reading.processes:
            owner = by_pid.get(process.pid)
            if owner is None:
                continue
            util = process.sm_util
            if type(util) is not int:
                if not util.is_integer():
                    return self._weighted_exact(holders, reading)
                util = int(util)
            marker = id(owner[0])
            totals[marker] = totals.get(marker, 0) + util
        weights = [totals.get(id(pod), 0) for pod, _ in holders]
        return [_Holder(pod, name, weight) for (pod, name), weight in zip(holders, weights, strict=True)]


def _split_device(device: str, energy_mj: int, device_fraction: float, holders: list[_Holder]) -> DeviceSplit:
    if not holders:
        return DeviceSplit(device, energy_mj, (), energy_mj)
    weights = [holder.weight for holder in holders]
    parts = largest_remainder(energy_mj, weights)
    weight_sum = sum(weights)
    count = len(holders)
    shares = tuple(
        Share(
            holder.pod,
            holder.container,
            device,
            part,
            device_fraction * (holder.weight / weight_sum if weight_sum else 1 / count),
        )
        for holder, part in zip(holders, parts, strict=True)
    )
    return DeviceSplit(device, energy_mj, shares, 0)


def split_gpu(gpu: GpuInfo, energy_mj: int, reading: GpuReading, index: HolderIndex) -> GpuSplit:
    """Split ``energy_mj`` measured on ``gpu`` over one interval across the pods holding it (rules 2-6).

    ``reading`` supplies the processes and their SM utilisation for the interval; ``index`` the sample's holders,
    in the pod order that breaks largest-remainder ties.
    """
    if gpu.mig:
        slices = [instance.slices for instance in gpu.mig]
        total_slices = sum(slices)
        instance_mj = largest_remainder(energy_mj, slices)
        devices = []
        for instance, part, instance_slices in zip(gpu.mig, instance_mj, slices, strict=True):
            # Held only through the kubelet's device list; processes (reported per physical GPU) weight the
            # split between several holders of one instance, as on a whole GPU.
            holders = index.weighted(index.device_holders(instance.uuid), reading)
            devices.append(_split_device(instance.uuid, part, instance_slices / total_slices, holders))
        return GpuSplit(gpu.uuid, energy_mj, tuple(devices))
    pods = index.device_holders(gpu.uuid) or index.process_holders(reading)
    device = _split_device(gpu.uuid, energy_mj, 1.0, index.weighted(pods, reading))
    return GpuSplit(gpu.uuid, energy_mj, (device,))

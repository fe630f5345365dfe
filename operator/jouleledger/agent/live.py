"""A real node as a :class:`~jouleledger.hardware.base.NodeSource`: NVML readings, the kubelet's pods, and the
``/proc`` map that ties each GPU process to its pod.

Each sample is stamped with wall-clock (unix) seconds, so that intervals survive an agent restart (the checkpoint
keeps the last reading of each GPU) and timestamps mean the same to the operator and to Prometheus.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable

from jouleledger.agent.runner import SourceHealth
from jouleledger.core.model import GpuInfo, NodeHeader, PodInfo, Sample, base_device_id
from jouleledger.hardware.base import GpuMeter, PodSource, PodSourceError
from jouleledger.hardware.proc import ContainerRef, ProcMap

__all__ = ["LiveNodeSource", "attach_pids", "gpus_needing_processes"]

log = logging.getLogger(__name__)


def attach_pids(pods: tuple[PodInfo, ...], owners: dict[int, ContainerRef]) -> tuple[PodInfo, ...]:
    """Give each pod's containers the GPU process ids whose cgroup names that pod (and container, where known).

    A pid whose container id matches no container of its pod goes to the pod's first container, so that the pod
    is still found as the process's owner.
    """
    by_uid: dict[str, list[tuple[int, str]]] = {}
    for pid, ref in owners.items():
        by_uid.setdefault(ref.pod_uid, []).append((pid, ref.container_id))
    if not by_uid:
        return pods
    result = []
    for pod in pods:
        pids = by_uid.get(pod.uid) if pod.uid else None
        if not pids or not pod.containers:
            result.append(pod)
            continue
        assigned: dict[str, list[int]] = {container.name: list(container.pids) for container in pod.containers}
        by_container_id = {c.container_id: c.name for c in pod.containers if c.container_id}
        for pid, container_id in sorted(pids):
            assigned[by_container_id.get(container_id, pod.containers[0].name)].append(pid)
        containers = tuple(
            dataclasses.replace(container, pids=tuple(assigned[container.name])) for container in pod.containers
        )
        result.append(dataclasses.replace(pod, containers=containers))
    return tuple(result)


def gpus_needing_processes(gpus: tuple[GpuInfo, ...], pods: tuple[PodInfo, ...]) -> frozenset[str]:
    """The GPUs whose processes the attribution uses: a whole GPU held by no pod (its holders are then the owners
    of its processes) or by several (they share by SM utilisation), a MIG GPU where one instance has several
    holders. An exclusive GPU is split without them, so the meter need not query them."""
    holders: dict[str, int] = {}
    for pod in pods:
        devices = {base_device_id(device) for container in pod.containers for device in container.devices}
        for device in devices:
            holders[device] = holders.get(device, 0) + 1
    needed: set[str] = set()
    for gpu in gpus:
        if gpu.mig:
            if any(holders.get(instance.uuid, 0) > 1 for instance in gpu.mig):
                needed.add(gpu.uuid)
        elif holders.get(gpu.uuid, 0) != 1:
            needed.add(gpu.uuid)
    return frozenset(needed)


class LiveNodeSource:
    """Samples a real GPU node. The pod source may fail: energy is then measured and left unallocated.

    The pods are read before the meter, so that the meter queries processes only for the GPUs that this tick's
    holders make need them (:func:`gpus_needing_processes`): a GPU that becomes shared is weighted by utilisation
    from its first shared interval on.
    """

    def __init__(
        self,
        node: str,
        meter: GpuMeter,
        pods: PodSource | None,
        procs: ProcMap,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self._meter = meter
        self._pods = pods
        self._procs = procs
        self._clock = clock
        self._header = NodeHeader(node, meter.gpus())
        self._pods_known = pods is not None
        self._pod_errors = 0
        self._reading_errors: Counter[tuple[str, str]] = Counter()

    @property
    def simulated(self) -> bool:
        return False

    def header(self) -> NodeHeader:
        return self._header

    def sample(self) -> Sample:
        pods: tuple[PodInfo, ...] = ()
        if self._pods is not None:
            try:
                pods = self._pods.pods()
                if not self._pods_known:
                    log.info("pod source reachable again")
                self._pods_known = True
            except PodSourceError as error:
                self._pod_errors += 1
                if self._pods_known:
                    log.error("pod source unreachable, energy goes to unallocated until it is back: %s", error)
                self._pods_known = False
        readout = self._meter.read(processes_for=gpus_needing_processes(self._header.gpus, pods))
        t_s = self._clock()
        for failed in readout.errors:
            self._reading_errors[(failed.uuid, failed.kind)] += 1
            log.warning("GPU %s not read this tick: %s", failed.uuid, failed.detail)
        gpu_pids = {process.pid for reading in readout.readings for process in reading.processes}
        if gpu_pids and pods:
            pods = attach_pids(pods, self._procs.lookup(gpu_pids))
        return Sample(t_s=t_s, gpus=readout.readings, pods=pods)

    def health(self) -> SourceHealth:
        rejected = getattr(self._meter, "rejected", {})
        return SourceHealth(
            pods_known=self._pods_known,
            pod_source_errors_total=self._pod_errors,
            reading_errors=dict(self._reading_errors),
            rejected=dict(rejected),
        )

    def close(self) -> None:
        self._meter.close()
        if self._pods is not None:
            self._pods.close()

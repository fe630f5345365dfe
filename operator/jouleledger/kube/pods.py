"""The pod source of a real node: the kubelet's device view joined with the API server's pod metadata.

:class:`KubeletPodSource` implements :class:`~jouleledger.hardware.base.PodSource`. Each call asks the kubelet
(:class:`~jouleledger.kube.podresources.PodResourcesClient`) which container holds which GPU device, keeps the
pods that hold at least one, and completes them from :class:`~jouleledger.kube.podmeta.PodMetadataCache` by
namespace and name: UID, labels, controller owner and runtime container ids. Pods whose phase is ``Succeeded``
or ``Failed`` are dropped (the kubelet may still list a finished pod's devices). A pod the metadata does not
know (API server unreachable, or the pod is brand new) still appears, with UID ``""`` and no labels or owner,
so its energy is attributed rather than lost. Pods come sorted by namespace and name; containers keep the
kubelet's order. ``pids`` are left empty: the ``/proc`` map fills them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from jouleledger.core.model import ContainerDevices, PodInfo
from jouleledger.kube.podmeta import PodKey, PodMeta
from jouleledger.kube.podresources import ContainerAllocation

__all__ = ["FINISHED_PHASES", "KubeletPodSource", "PodMetadataView", "PodResourcesLister"]

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


class PodResourcesLister(Protocol):
    """What the pod source needs of :class:`~jouleledger.kube.podresources.PodResourcesClient`."""

    def list(self) -> tuple[ContainerAllocation, ...]: ...

    def close(self) -> None: ...


class PodMetadataView(Protocol):
    """What the pod source needs of :class:`~jouleledger.kube.podmeta.PodMetadataCache`."""

    def lookup(self, keys: Collection[PodKey] = ()) -> Mapping[PodKey, PodMeta]: ...


class KubeletPodSource:
    """Running pods holding GPU devices on this node; raises PodSourceError when the kubelet is unreachable.

    ``metadata`` may be None (no API access): every pod then has UID ``""`` and no labels, owner or
    container ids, and no pod can be recognised as finished.
    """

    def __init__(self, client: PodResourcesLister, metadata: PodMetadataView | None = None) -> None:
        self.client = client
        self.metadata = metadata

    def pods(self) -> tuple[PodInfo, ...]:
        """Join the kubelet's GPU allocations with the pod metadata (see the module docstring)."""
        grouped: dict[PodKey, dict[str, dict[str, None]]] = {}  # container -> ordered set of device ids
        for allocation in self.client.list():
            containers = grouped.setdefault((allocation.namespace, allocation.pod), {})
            containers.setdefault(allocation.container, {}).update(dict.fromkeys(allocation.device_ids))
        holding = {
            key: containers for key, containers in grouped.items() if any(devices for devices in containers.values())
        }
        view = self.metadata.lookup(holding.keys()) if self.metadata is not None and holding else {}
        pods: list[PodInfo] = []
        for key in sorted(holding):
            meta = view.get(key)
            if meta is not None and meta.phase in FINISHED_PHASES:
                continue
            pods.append(_pod_info(key, holding[key], meta))
        return tuple(pods)

    def close(self) -> None:
        self.client.close()


def _pod_info(key: PodKey, containers: Mapping[str, Mapping[str, None]], meta: PodMeta | None) -> PodInfo:
    namespace, name = key
    container_ids: Mapping[str, str] = meta.container_ids if meta is not None else {}
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=meta.uid if meta is not None else "",
        labels=meta.labels if meta is not None else {},
        owner=meta.owner if meta is not None else None,
        containers=tuple(
            ContainerDevices(name=container, devices=tuple(devices), container_id=container_ids.get(container, ""))
            for container, devices in containers.items()
        ),
    )

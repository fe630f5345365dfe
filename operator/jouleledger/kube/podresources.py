"""The kubelet PodResources v1 client: which container holds which GPU device on this node.

The kubelet serves ``v1.PodResourcesLister`` on a unix socket
(``/var/lib/kubelet/pod-resources/kubelet.sock``, mounted into the agent). :class:`PodResourcesClient` calls
``List`` over a synchronous gRPC channel and returns plain :class:`ContainerAllocation` records that keep only
GPU resources (``nvidia.com/gpu``, ``nvidia.com/mig-*`` and configured extra resource names). Device ids are
kept exactly as the kubelet reports them: ``GPU-<uuid>``, ``GPU-<uuid>::<replica>`` for a time-sliced
replica, ``MIG-<uuid>`` for a MIG instance.

Every failure (socket missing, kubelet down, deadline, malformed answer) becomes a
:class:`~jouleledger.hardware.base.PodSourceError` with a message that says what to check; the channel is then
dropped and a fresh one opened on the next call, so a restarted kubelet is picked up at once instead of after
gRPC's reconnect back-off. Nothing connects before the first :meth:`PodResourcesClient.list`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

import grpc

from jouleledger.core.units import positive
from jouleledger.hardware.base import PodSourceError
from jouleledger.kube import KUBELET_SOCKET
from jouleledger.kube._podresources import podresources_v1_pb2 as pb

__all__ = [
    "GPU_RESOURCE",
    "MAX_MESSAGE_BYTES",
    "MIG_RESOURCE_PREFIX",
    "ContainerAllocation",
    "PodResourcesClient",
    "is_gpu_resource",
    "socket_path",
]

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the kubelet's own limit for PodResources answers
MAX_DEVICE_ID_CHARS = 256
LIST_METHOD = "/v1.PodResourcesLister/List"

if TYPE_CHECKING:  # typed by grpc-stubs only; not subscriptable at run time
    _ListCall: TypeAlias = grpc.UnaryUnaryMultiCallable[pb.ListPodResourcesRequest, pb.ListPodResourcesResponse]
_EMPTY_DEVICES: Mapping[str, tuple[str, ...]] = MappingProxyType({})


def is_gpu_resource(resource_name: str, extra_resources: Iterable[str] = ()) -> bool:
    """True for ``nvidia.com/gpu``, any ``nvidia.com/mig-<profile>`` and the configured extra resources."""
    return (
        resource_name == GPU_RESOURCE
        or (resource_name.startswith(MIG_RESOURCE_PREFIX) and len(resource_name) > len(MIG_RESOURCE_PREFIX))
        or resource_name in extra_resources
    )


def socket_path(target: str) -> str | None:
    """The filesystem path of a unix gRPC target (``unix:///p``, ``unix:/p`` or a bare ``/p``), else None."""
    if target.startswith("unix://"):
        return target[len("unix://") :]
    if target.startswith("unix:"):
        return target[len("unix:") :]
    if target.startswith("/"):
        return target
    return None


@dataclass(frozen=True, slots=True)
class ContainerAllocation:
    """One container the kubelet reports and the GPU devices it holds, by resource name (possibly none)."""

    namespace: str
    pod: str
    container: str
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY_DEVICES)

    @property
    def device_ids(self) -> tuple[str, ...]:
        """Every GPU device id of the container, in the kubelet's order, without duplicates."""
        return tuple(dict.fromkeys(device for ids in self.devices.values() for device in ids))


def _valid_device_id(device_id: str) -> bool:
    return 0 < len(device_id) <= MAX_DEVICE_ID_CHARS and device_id.isprintable() and " " not in device_id


class PodResourcesClient:
    """A synchronous client of the kubelet PodResources v1 ``List`` call, keeping only GPU resources.

    ``socket`` is a gRPC target (``unix:///path`` or a bare path); ``timeout_s`` bounds each call;
    ``extra_resources`` names further extended resources that are GPUs (e.g. a renamed time-slicing resource
    ``nvidia.com/gpu.shared``). Device ids that cannot be real ids (empty, too long, with blanks or control
    characters) are dropped, logged and counted in :attr:`rejected_device_ids_total`.
    """

    def __init__(
        self,
        socket: str = KUBELET_SOCKET,
        *,
        timeout_s: float = 5.0,
        extra_resources: Iterable[str] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if not socket:
            raise ValueError("the PodResources socket must not be empty")
        positive("timeout_s", timeout_s)
        positive("max_message_bytes", max_message_bytes)
        path = socket_path(socket)
        self.target = f"unix://{path}" if path is not None else socket
        self.path = path
        self.timeout_s = float(timeout_s)
        self.extra_resources = frozenset(extra_resources)
        self.max_message_bytes = max_message_bytes
        self.rejected_device_ids_total = 0
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._list: _ListCall | None = None

    def list(self) -> tuple[ContainerAllocation, ...]:
        """Every container the kubelet reports, with its GPU devices; raises PodSourceError on any failure."""
        with self._lock:
            if self.path is not None and not os.path.exists(self.path):
                self._drop_channel()
                raise PodSourceError(
                    f"kubelet PodResources socket {self.path} does not exist: mount the host folder "
                    f"{os.path.dirname(self.path) or '/'} into the agent and check that the kubelet runs"
                )
            call = self._callable()
            try:
                response = call(pb.ListPodResourcesRequest(), timeout=self.timeout_s)
            except grpc.RpcError as error:
                self._drop_channel()
                raise PodSourceError(self._describe(error)) from error
            except Exception as error:  # a broken channel or a malformed answer must not crash the agent
                self._drop_channel()
                raise PodSourceError(
                    f"kubelet PodResources List on {self.target} failed: {type(error).__name__}: {error}"
                ) from error
        return self._convert(response)

    def close(self) -> None:
        """Close the channel; a later :meth:`list` opens a new one."""
        with self._lock:
            self._drop_channel()

    def __enter__(self) -> PodResourcesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _callable(self) -> _ListCall:
        if self._list is None:
            options = [
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.enable_retries", 0),
            ]
            self._channel = grpc.insecure_channel(self.target, options=options)
            self._list = self._channel.unary_unary(
                LIST_METHOD,
                request_serializer=pb.ListPodResourcesRequest.SerializeToString,
                response_deserializer=pb.ListPodResourcesResponse.FromString,
            )
        return self._list

    def _drop_channel(self) -> None:
        channel, self._channel, self._list = self._channel, None, None
        if channel is not None:
            channel.close()

    def _describe(self, error: grpc.RpcError) -> str:
        # grpc.RpcError itself has no code()/details(); the errors a channel raises are also grpc.Call.
        code_of, details_of = getattr(error, "code", None), getattr(error, "details", None)
        code = code_of() if callable(code_of) else None
        details = str((details_of() if callable(details_of) else None) or error)
        name = code.name if code is not None else "ERROR"
        hint = ""
        if code == grpc.StatusCode.UNAVAILABLE:
            hint = "; is the kubelet running and the socket mounted"
            if "ermission denied" in details:
                hint = "; the agent needs read/write access to the socket (run as root or adjust the mount)"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            hint = f"; no answer within {self.timeout_s:g} s"
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            hint = "; the kubelet does not serve the v1 PodResources API (Kubernetes 1.20 or newer needed)"
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            hint = f"; the answer exceeds {self.max_message_bytes} bytes"
        return f"kubelet PodResources List on {self.target} failed: {name}: {details}{hint}"

    def _convert(self, response: pb.ListPodResourcesResponse) -> tuple[ContainerAllocation, ...]:
        allocations: list[ContainerAllocation] = []
        for pod in response.pod_resources:
            if not pod.namespace or not pod.name:
                log.warning(
                    "kubelet reported a pod without namespace or name (%r/%r); ignored", pod.namespace, pod.name
                )
                continue
            for container in pod.containers:
                devices: dict[str, dict[str, None]] = {}  # resource -> ordered set of ids
                for group in container.devices:
                    if not is_gpu_resource(group.resource_name, self.extra_resources):
                        continue
                    ids = devices.setdefault(group.resource_name, {})
                    for device_id in group.device_ids:
                        if _valid_device_id(device_id):
                            ids[device_id] = None
                        else:
                            self.rejected_device_ids_total += 1
                            log.warning(
                                "kubelet reported an invalid %s device id %r for %s/%s container %s; ignored",
                                group.resource_name,
                                device_id[:MAX_DEVICE_ID_CHARS],
                                pod.namespace,
                                pod.name,
                                container.name,
                            )
                by_resource = {name: tuple(ids) for name, ids in devices.items() if ids}
                allocations.append(
                    ContainerAllocation(
                        namespace=pod.namespace,
                        pod=pod.name,
                        container=container.name,
                        devices=MappingProxyType(by_resource) if by_resource else _EMPTY_DEVICES,
                    )
                )
        return tuple(allocations)

"""Fakes for the kube tests: a real gRPC kubelet on a unix socket, a fake CoreV1Api, a fake clock."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from kubernetes import client as k8s

from jouleledger.kube._podresources import podresources_v1_pb2 as pb
from jouleledger.kube._podresources import podresources_v1_pb2_grpc as pb_grpc


def devices(resource_name: str, *device_ids: str) -> pb.ContainerDevices:
    return pb.ContainerDevices(resource_name=resource_name, device_ids=list(device_ids))


def container(name: str, *groups: pb.ContainerDevices, cpu_ids: tuple[int, ...] = ()) -> pb.ContainerResources:
    return pb.ContainerResources(name=name, devices=list(groups), cpu_ids=list(cpu_ids))


def pod(namespace: str, name: str, *containers: pb.ContainerResources) -> pb.PodResources:
    return pb.PodResources(namespace=namespace, name=name, containers=list(containers))


class FakeKubelet(pb_grpc.PodResourcesListerServicer):
    """Serves ``pods`` from List; ``abort_with`` makes List fail; ``block`` makes List wait until it is set."""

    def __init__(self) -> None:
        self.pods: list[pb.PodResources] = []
        self.abort_with: tuple[grpc.StatusCode, str] | None = None
        self.block: threading.Event | None = None
        self.calls = 0

    def List(self, request: pb.ListPodResourcesRequest, context: grpc.ServicerContext) -> Any:
        self.calls += 1
        if self.block is not None:
            self.block.wait(5)
        if self.abort_with is not None:
            context.abort(*self.abort_with)
        return pb.ListPodResourcesResponse(pod_resources=self.pods)

    def GetAllocatableResources(self, request: pb.AllocatableResourcesRequest, context: grpc.ServicerContext) -> Any:
        return pb.AllocatableResourcesResponse()

    def Get(self, request: pb.GetPodResourcesRequest, context: grpc.ServicerContext) -> Any:
        for candidate in self.pods:
            if (candidate.namespace, candidate.name) == (request.pod_namespace, request.pod_name):
                return pb.GetPodResourcesResponse(pod_resources=candidate)
        context.abort(grpc.StatusCode.NOT_FOUND, "pod not found")
        return None


class KubeletServer:
    """A gRPC server on ``socket``, restartable with the same servicer."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.kubelet = FakeKubelet()
        self._server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PodResourcesListerServicer_to_server(self.kubelet, server)
        server.add_insecure_port(self.target)
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            if self.kubelet.block is not None:
                self.kubelet.block.set()
            self._server.stop(grace=None).wait()
            self._server = None


class FakeCoreV1Api:
    """``list_pod_for_all_namespaces`` over a list of V1Pod objects; ``error`` makes it raise."""

    def __init__(self, pods: list[k8s.V1Pod] | None = None) -> None:
        self.pods = list(pods or [])
        self.error: Exception | None = None
        self.calls: list[dict[str, Any]] = []

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> k8s.V1PodList:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return k8s.V1PodList(items=list(self.pods))


def api_pod(
    namespace: str,
    name: str,
    uid: str,
    *,
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    owners: list[k8s.V1OwnerReference] | None = None,
    container_ids: dict[str, str | None] | None = None,
    init_container_ids: dict[str, str | None] | None = None,
) -> k8s.V1Pod:
    def statuses(ids: dict[str, str | None] | None) -> list[k8s.V1ContainerStatus] | None:
        if ids is None:
            return None
        return [
            k8s.V1ContainerStatus(
                name=container_name, container_id=runtime_id, image="img", image_id="", ready=True, restart_count=0
            )
            for container_name, runtime_id in ids.items()
        ]

    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(namespace=namespace, name=name, uid=uid, labels=labels, owner_references=owners),
        status=k8s.V1PodStatus(
            phase=phase,
            container_statuses=statuses(container_ids),
            init_container_statuses=statuses(init_container_ids),
        ),
    )


def owner_ref(kind: str, name: str, uid: str, *, controller: bool | None = True) -> k8s.V1OwnerReference:
    return k8s.V1OwnerReference(api_version="batch/v1", kind=kind, name=name, uid=uid, controller=controller)


class FakeClock:
    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds

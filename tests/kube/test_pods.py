"""KubeletPodSource: the kubelet's GPU view joined with the API server's pod metadata."""

from __future__ import annotations

import pytest

from jouleledger.core.model import ContainerDevices, Owner, PodInfo
from jouleledger.hardware.base import PodSource, PodSourceError
from jouleledger.kube.podmeta import PodMetadataCache
from jouleledger.kube.podresources import ContainerAllocation, PodResourcesClient
from jouleledger.kube.pods import KubeletPodSource
from tests.kube._fakes import FakeClock, FakeCoreV1Api, KubeletServer, api_pod, container, devices, owner_ref, pod

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-000000000002"
MIG_1 = "MIG-cccccccc-0000-0000-0000-000000000003"


class FakeLister:
    def __init__(self, allocations: list[ContainerAllocation]) -> None:
        self.allocations = allocations
        self.error: PodSourceError | None = None
        self.closed = False

    def list(self) -> tuple[ContainerAllocation, ...]:
        if self.error is not None:
            raise self.error
        return tuple(self.allocations)

    def close(self) -> None:
        self.closed = True


def gpu(namespace: str, pod_name: str, container_name: str, *ids: str) -> ContainerAllocation:
    return ContainerAllocation(namespace, pod_name, container_name, {"nvidia.com/gpu": ids} if ids else {})


def metadata(*pods: object, clock: FakeClock | None = None) -> tuple[PodMetadataCache, FakeCoreV1Api]:
    api = FakeCoreV1Api(list(pods))  # type: ignore[arg-type]
    return PodMetadataCache(api, "gpu-node-1", clock=clock or FakeClock()), api


def test_is_a_pod_source() -> None:
    source: PodSource = KubeletPodSource(FakeLister([]))
    assert source.pods() == ()


def test_join_with_metadata() -> None:
    lister = FakeLister(
        [
            gpu("team-a", "train-0", "main", GPU_A, GPU_B),
            gpu("team-a", "train-0", "sidecar"),
        ]
    )
    cache, _ = metadata(
        api_pod(
            "team-a",
            "train-0",
            "uid-1",
            labels={"team": "a"},
            owners=[owner_ref("Job", "train", "job-uid")],
            container_ids={"main": "containerd://c-main", "sidecar": "containerd://c-side"},
        )
    )

    assert KubeletPodSource(lister, cache).pods() == (
        PodInfo(
            namespace="team-a",
            name="train-0",
            uid="uid-1",
            labels={"team": "a"},
            owner=Owner("Job", "train", "job-uid"),
            containers=(
                ContainerDevices("main", (GPU_A, GPU_B), pids=(), container_id="c-main"),
                ContainerDevices("sidecar", (), pids=(), container_id="c-side"),
            ),
        ),
    )


def test_pods_without_gpu_devices_are_omitted_and_order_is_sorted() -> None:
    lister = FakeLister(
        [
            gpu("team-b", "infer", "main", f"{GPU_A}::1"),
            gpu("web", "nginx", "nginx"),
            gpu("team-a", "z-last", "main", MIG_1),
            gpu("team-a", "a-first", "main", f"{GPU_A}::0"),
        ]
    )
    pods = KubeletPodSource(lister).pods()

    assert [(p.namespace, p.name, p.containers[0].devices) for p in pods] == [
        ("team-a", "a-first", (f"{GPU_A}::0",)),
        ("team-a", "z-last", (MIG_1,)),
        ("team-b", "infer", (f"{GPU_A}::1",)),
    ]


@pytest.mark.parametrize(
    ("phase", "kept"), [("Running", True), ("Pending", True), ("Succeeded", False), ("Failed", False)]
)
def test_finished_pods_are_filtered(phase: str, kept: bool) -> None:
    lister = FakeLister([gpu("team-a", "job-0", "main", GPU_A), gpu("team-a", "other", "main", GPU_B)])
    cache, _ = metadata(api_pod("team-a", "job-0", "u0", phase=phase), api_pod("team-a", "other", "u1"))

    names = [p.name for p in KubeletPodSource(lister, cache).pods()]

    assert names == (["job-0", "other"] if kept else ["other"])


def test_pods_unknown_to_the_metadata_still_appear_without_uid() -> None:
    lister = FakeLister([gpu("team-a", "new", "main", GPU_A)])
    cache, api = metadata()
    api.error = OSError("API server unreachable")

    (info,) = KubeletPodSource(lister, cache).pods()

    assert (info.uid, dict(info.labels), info.owner, info.containers[0].container_id) == ("", {}, None, "")
    assert info.key == "team-a/new"


def test_without_a_metadata_source() -> None:
    (info,) = KubeletPodSource(FakeLister([gpu("team-a", "p", "main", GPU_A)])).pods()
    assert info == PodInfo("team-a", "p", "", containers=(ContainerDevices("main", (GPU_A,)),))


def test_api_down_keeps_the_last_known_metadata() -> None:
    lister = FakeLister([gpu("team-a", "train-0", "main", GPU_A)])
    clock = FakeClock()
    cache, api = metadata(api_pod("team-a", "train-0", "uid-1"), clock=clock)
    source = KubeletPodSource(lister, cache)
    assert source.pods()[0].uid == "uid-1"

    api.error = OSError("API server unreachable")
    clock.advance(60.0)

    assert source.pods()[0].uid == "uid-1"
    assert not cache.up


def test_metadata_is_not_asked_when_no_pod_holds_a_gpu() -> None:
    cache, api = metadata()
    assert KubeletPodSource(FakeLister([gpu("web", "nginx", "nginx")]), cache).pods() == ()
    assert api.calls == []


def test_duplicate_entries_are_merged() -> None:
    lister = FakeLister([gpu("team-a", "p", "main", GPU_A), gpu("team-a", "p", "main", GPU_A, GPU_B)])

    (info,) = KubeletPodSource(lister).pods()

    assert info.containers == (ContainerDevices("main", (GPU_A, GPU_B)),)


def test_kubelet_errors_propagate_and_close_closes_the_client() -> None:
    lister = FakeLister([])
    lister.error = PodSourceError("kubelet down")
    source = KubeletPodSource(lister)

    with pytest.raises(PodSourceError, match="kubelet down"):
        source.pods()
    source.close()
    assert lister.closed


def test_end_to_end_over_the_kubelet_socket(kubelet_server: KubeletServer) -> None:
    kubelet_server.kubelet.pods = [
        pod("team-a", "train-0", container("main", devices("nvidia.com/gpu", GPU_A)), container("init-data")),
        pod("team-b", "infer", container("server", devices("nvidia.com/mig-1g.10gb", MIG_1))),
        pod("team-a", "done", container("main", devices("nvidia.com/gpu", GPU_B))),
        pod("web", "nginx", container("nginx", devices("example.com/nic", "nic-0"), cpu_ids=(1,))),
    ]
    cache, _ = metadata(
        api_pod("team-a", "train-0", "u-train", labels={"team": "a"}, container_ids={"main": "containerd://c1"}),
        api_pod("team-a", "done", "u-done", phase="Succeeded"),
        api_pod("web", "nginx", "u-web"),
    )
    source = KubeletPodSource(PodResourcesClient(kubelet_server.target, timeout_s=2.0), cache)
    try:
        pods = source.pods()
    finally:
        source.close()

    assert pods == (
        PodInfo(
            "team-a",
            "train-0",
            "u-train",
            labels={"team": "a"},
            containers=(ContainerDevices("main", (GPU_A,), container_id="c1"), ContainerDevices("init-data")),
        ),
        PodInfo("team-b", "infer", "", containers=(ContainerDevices("server", (MIG_1,)),)),
    )

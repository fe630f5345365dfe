"""PodResourcesClient against a real gRPC server serving the PodResources v1 API on a unix socket."""

from __future__ import annotations

import socket as socketlib
import threading
from pathlib import Path

import grpc
import pytest

from jouleledger.hardware.base import PodSourceError
from jouleledger.kube import KUBELET_SOCKET
from jouleledger.kube.podresources import (
    MAX_MESSAGE_BYTES,
    ContainerAllocation,
    PodResourcesClient,
    is_gpu_resource,
    socket_path,
)
from tests.kube._fakes import KubeletServer, container, devices, pod

GPU_A = "GPU-4a3e0b1c-7f0d-4c2e-9d8a-0123456789ab"
GPU_B = "GPU-5b4f1c2d-8a1e-4d3f-8e9b-123456789abc"
MIG_1 = "MIG-1c2d3e4f-0a1b-5c6d-7e8f-9a0b1c2d3e4f"
MIG_2 = "MIG-2d3e4f5a-1b2c-6d7e-8f9a-0b1c2d3e4f5a"


def _stale_socket(path: Path) -> None:
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the file stays, nobody accepts


@pytest.fixture
def client(kubelet_server: KubeletServer) -> PodResourcesClient:
    lister = PodResourcesClient(kubelet_server.target, timeout_s=2.0)
    yield lister
    lister.close()


def test_exclusive_gpus_are_listed_per_container(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [
        pod("team-a", "train-0", container("main", devices("nvidia.com/gpu", GPU_A, GPU_B))),
    ]

    assert client.list() == (ContainerAllocation("team-a", "train-0", "main", {"nvidia.com/gpu": (GPU_A, GPU_B)}),)


def test_time_sliced_replicas_keep_the_kubelet_ids(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [
        pod("team-a", "infer-a", container("main", devices("nvidia.com/gpu", f"{GPU_A}::0"))),
        pod("team-b", "infer-b", container("main", devices("nvidia.com/gpu", f"{GPU_A}::1"))),
    ]

    allocations = client.list()

    assert [(a.namespace, a.pod, a.device_ids) for a in allocations] == [
        ("team-a", "infer-a", (f"{GPU_A}::0",)),
        ("team-b", "infer-b", (f"{GPU_A}::1",)),
    ]


def test_mig_devices_of_every_profile(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [
        pod(
            "team-c",
            "notebook",
            container("lab", devices("nvidia.com/mig-1g.10gb", MIG_1), devices("nvidia.com/mig-3g.40gb", MIG_2)),
        ),
    ]

    (allocation,) = client.list()

    assert dict(allocation.devices) == {"nvidia.com/mig-1g.10gb": (MIG_1,), "nvidia.com/mig-3g.40gb": (MIG_2,)}
    assert allocation.device_ids == (MIG_1, MIG_2)


def test_non_gpu_resources_are_ignored(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [
        pod(
            "team-a",
            "mixed",
            container(
                "main",
                devices("nvidia.com/gpu", GPU_A),
                devices("example.com/fpga", "fpga-0"),
                devices("nvidia.com/mig-", "MIG-not-a-profile"),
                cpu_ids=(2, 3),
            ),
            container("sidecar", devices("example.com/fpga", "fpga-1"), cpu_ids=(4,)),
        ),
        pod("web", "nginx", container("nginx", cpu_ids=(0,))),
    ]

    assert client.list() == (
        ContainerAllocation("team-a", "mixed", "main", {"nvidia.com/gpu": (GPU_A,)}),
        ContainerAllocation("team-a", "mixed", "sidecar", {}),
        ContainerAllocation("web", "nginx", "nginx", {}),
    )


def test_extra_resource_names_count_as_gpus(kubelet_server: KubeletServer) -> None:
    kubelet_server.kubelet.pods = [
        pod("team-a", "shared", container("main", devices("nvidia.com/gpu.shared", f"{GPU_B}::3"))),
    ]
    plain = PodResourcesClient(kubelet_server.target)
    extended = PodResourcesClient(kubelet_server.target, extra_resources=["nvidia.com/gpu.shared"])
    try:
        assert plain.list()[0].device_ids == ()
        assert extended.list()[0].devices == {"nvidia.com/gpu.shared": (f"{GPU_B}::3",)}
    finally:
        plain.close()
        extended.close()


def test_invalid_device_ids_are_dropped_and_counted(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [
        pod(
            "team-a",
            "odd",
            container("main", devices("nvidia.com/gpu", "", GPU_A, "GPU-a b", "G" * 300, "GPU-\x00", GPU_A)),
        ),
    ]

    (allocation,) = client.list()

    assert allocation.device_ids == (GPU_A,)  # the duplicate is folded, not counted as invalid
    assert client.rejected_device_ids_total == 4


def test_pods_without_namespace_or_name_are_skipped(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [
        pod("", "nameless-ns", container("main", devices("nvidia.com/gpu", GPU_A))),
        pod("team-a", "ok", container("main", devices("nvidia.com/gpu", GPU_B))),
    ]

    assert [a.pod for a in client.list()] == ["ok"]


def test_missing_socket_names_the_path(socket_dir: Path) -> None:
    missing = socket_dir / "no-kubelet.sock"
    client = PodResourcesClient(f"unix://{missing}")

    with pytest.raises(PodSourceError, match=rf"socket {missing} does not exist: mount the host folder"):
        client.list()


def test_socket_without_a_listener_is_unavailable(socket_dir: Path) -> None:
    stale = socket_dir / "stale.sock"
    _stale_socket(stale)
    client = PodResourcesClient(str(stale), timeout_s=2.0)

    with pytest.raises(PodSourceError, match=r"UNAVAILABLE: .*is the kubelet running") as raised:
        client.list()
    assert f"unix://{stale}" in str(raised.value)
    client.close()


def test_server_errors_carry_the_status(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.abort_with = (grpc.StatusCode.INTERNAL, "device manager not ready")

    with pytest.raises(PodSourceError, match=r"List on unix://.* failed: INTERNAL: device manager not ready"):
        client.list()


def test_unimplemented_hints_at_the_kubelet_version(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.abort_with = (grpc.StatusCode.UNIMPLEMENTED, "unknown service v1.PodResourcesLister")

    with pytest.raises(PodSourceError, match=r"UNIMPLEMENTED: .*Kubernetes 1\.20 or newer"):
        client.list()


def test_deadline(kubelet_server: KubeletServer) -> None:
    kubelet_server.kubelet.block = threading.Event()
    client = PodResourcesClient(kubelet_server.target, timeout_s=0.2)
    try:
        with pytest.raises(PodSourceError, match=r"DEADLINE_EXCEEDED: .*no answer within 0\.2 s"):
            client.list()
    finally:
        kubelet_server.kubelet.block.set()
        client.close()


def test_server_restart_client_recovers(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.pods = [pod("team-a", "train-0", container("main", devices("nvidia.com/gpu", GPU_A)))]
    assert client.list()[0].device_ids == (GPU_A,)

    kubelet_server.stop()
    with pytest.raises(PodSourceError):
        client.list()

    kubelet_server.kubelet.pods = [pod("team-a", "train-1", container("main", devices("nvidia.com/gpu", GPU_B)))]
    kubelet_server.start()
    # At once: the broken channel was dropped, so gRPC's reconnect back-off does not delay the next call.
    assert [(a.pod, a.device_ids) for a in client.list()] == [("train-1", (GPU_B,))]


def test_client_recovers_when_the_socket_outlived_the_kubelet(
    kubelet_server: KubeletServer, client: PodResourcesClient
) -> None:
    kubelet_server.kubelet.pods = [pod("team-a", "train-0", container("main", devices("nvidia.com/gpu", GPU_A)))]
    assert client.list()[0].pod == "train-0"
    kubelet_server.stop()
    _stale_socket(kubelet_server.socket)  # the file exists, nobody accepts: the error comes from gRPC itself

    with pytest.raises(PodSourceError, match="UNAVAILABLE"):
        client.list()

    kubelet_server.start()
    # At once: the failed channel was dropped, so gRPC's reconnect back-off (1 s and more) does not apply.
    assert client.list()[0].pod == "train-0"


def test_close_then_list_reconnects(kubelet_server: KubeletServer) -> None:
    kubelet_server.kubelet.pods = [pod("team-a", "train-0", container("main", devices("nvidia.com/gpu", GPU_A)))]
    with PodResourcesClient(kubelet_server.target) as client:
        client.list()
        client.close()
        assert client.list()[0].pod == "train-0"
    assert kubelet_server.kubelet.calls == 2


def test_answers_above_grpc_default_4_mib_are_accepted(kubelet_server: KubeletServer) -> None:
    many = [f"GPU-{index:0246d}" for index in range(20_000)]  # 20 000 x 252 bytes: about 5 MB
    kubelet_server.kubelet.pods = [pod("team-a", "huge", container("main", devices("nvidia.com/gpu", *many)))]

    with PodResourcesClient(kubelet_server.target) as client:
        assert len(client.list()[0].device_ids) == 20_000
    small = PodResourcesClient(kubelet_server.target, max_message_bytes=4 * 1024 * 1024)
    with small, pytest.raises(PodSourceError, match=r"RESOURCE_EXHAUSTED: .*exceeds 4194304 bytes"):
        small.list()


def test_a_client_made_before_the_kubelet_socket_exists_works_once_it_does(socket_dir: Path) -> None:
    later = KubeletServer(socket_dir / "later.sock")
    client = PodResourcesClient(later.target)  # nothing connects yet: the agent may start before the kubelet
    assert not later.socket.exists()
    later.kubelet.pods = [pod("team-a", "train-0", container("main", devices("nvidia.com/gpu", "GPU-a")))]
    later.start()
    try:
        with client:
            (listed,) = client.list()
    finally:
        later.stop()
    assert (listed.namespace, listed.pod, listed.container) == ("team-a", "train-0", "main")
    assert listed.device_ids == ("GPU-a",)


def test_is_gpu_resource() -> None:
    assert is_gpu_resource("nvidia.com/gpu")
    assert is_gpu_resource("nvidia.com/mig-1g.5gb")
    assert not is_gpu_resource("nvidia.com/mig-")
    assert not is_gpu_resource("nvidia.com/gpu.shared")
    assert is_gpu_resource("nvidia.com/gpu.shared", {"nvidia.com/gpu.shared"})
    assert not is_gpu_resource("amd.com/gpu")


def test_socket_path() -> None:
    assert socket_path(KUBELET_SOCKET) == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert socket_path("unix:/run/k.sock") == "/run/k.sock"
    assert socket_path("/run/k.sock") == "/run/k.sock"
    assert socket_path("localhost:10250") is None
    assert PodResourcesClient("/run/k.sock").target == "unix:///run/k.sock"


def test_defaults() -> None:
    client = PodResourcesClient()
    assert client.target == KUBELET_SOCKET
    assert client.max_message_bytes == MAX_MESSAGE_BYTES == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"socket": ""}, "must not be empty"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
        ({"timeout_s": float("nan")}, "timeout_s must be positive"),
        ({"max_message_bytes": 0}, "max_message_bytes must be positive"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PodResourcesClient(**kwargs)  # type: ignore[arg-type]


def test_permission_denied_hints_at_socket_access(kubelet_server: KubeletServer, client: PodResourcesClient) -> None:
    kubelet_server.kubelet.abort_with = (grpc.StatusCode.UNAVAILABLE, "connect: Permission denied")

    with pytest.raises(PodSourceError, match="needs read/write access to the socket"):
        client.list()


def test_unexpected_channel_failures_become_pod_source_errors(
    kubelet_server: KubeletServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenChannel:
        def unary_unary(self, *args: object, **kwargs: object) -> object:
            def call(*args: object, **kwargs: object) -> object:
                raise ValueError("Cannot invoke RPC on closed channel!")

            return call

        def close(self) -> None:
            self.closed = True

    channels: list[BrokenChannel] = []
    monkeypatch.setattr(grpc, "insecure_channel", lambda *a, **k: channels.append(BrokenChannel()) or channels[-1])
    client = PodResourcesClient(kubelet_server.target)

    with pytest.raises(PodSourceError, match="failed: ValueError: Cannot invoke RPC on closed channel"):
        client.list()
    assert channels[0].closed  # dropped: the next call opens a fresh channel

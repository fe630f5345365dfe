"""Fuzzing what the kubelet's PodResources answer can hold, at the Python level: any decodable message converts
without an exception, and only plausible device ids (non-empty, printable, no blanks, at most 256 characters) of GPU
resources are kept."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.kube._podresources import podresources_v1_pb2 as pb
from jouleledger.kube.podresources import MAX_DEVICE_ID_CHARS, ContainerAllocation, PodResourcesClient

RESOURCES = ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared", "cpu", "example.com/fpga", ""]

device_ids = st.text(max_size=20) | st.sampled_from(["GPU-a", "GPU-a::1", "MIG-x", "a b", "x" * 300, "\x00", ""])
groups = st.builds(
    lambda resource, ids: pb.ContainerDevices(resource_name=resource, device_ids=ids),
    st.sampled_from(RESOURCES) | st.text(max_size=30),
    st.lists(device_ids, max_size=4),
)
containers = st.builds(
    lambda name, devices: pb.ContainerResources(name=name, devices=devices),
    st.text(max_size=20),
    st.lists(groups, max_size=3),
)
pods = st.builds(
    lambda namespace, name, containers: pb.PodResources(namespace=namespace, name=name, containers=containers),
    st.text(max_size=20) | st.just("ns"),
    st.text(max_size=20) | st.just("pod"),
    st.lists(containers, max_size=3),
)


def _client() -> PodResourcesClient:
    return PodResourcesClient("unix:///nonexistent/kubelet.sock", extra_resources=("nvidia.com/gpu.shared",))


def _check(allocations: tuple[ContainerAllocation, ...]) -> None:
    for allocation in allocations:
        assert allocation.namespace
        assert allocation.pod
        for resource, ids in allocation.devices.items():
            assert resource.startswith("nvidia.com/")
            for device_id in ids:
                assert 0 < len(device_id) <= MAX_DEVICE_ID_CHARS
                assert device_id.isprintable()
                assert " " not in device_id


@settings(max_examples=300, deadline=None)
@given(st.lists(pods, max_size=4))
def test_any_answer_converts_without_an_exception(pod_list: list[pb.PodResources]) -> None:
    client = _client()
    _check(client._convert(pb.ListPodResourcesResponse(pod_resources=pod_list)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    try:
        response = pb.ListPodResourcesResponse.FromString(data)
    except DecodeError:
        return  # grpc reports this as a failed call, which the client turns into PodSourceError
    _check(_client()._convert(response))

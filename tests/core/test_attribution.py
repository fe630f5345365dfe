"""Rules 2-6: splitting a device's energy across its holders, exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouleledger.core.attribution import HolderIndex, largest_remainder, split_gpu
from jouleledger.core.model import ContainerDevices, GpuInfo, GpuReading, MigInstance, PodInfo, ProcessUsage

GPU = GpuInfo("GPU-x", "NVIDIA H100 80GB HBM3", True, 700)
MIG = GpuInfo("GPU-m", "NVIDIA H100 80GB HBM3", True, 700, (MigInstance("MIG-1", 3), MigInstance("MIG-2", 4)))


def pod(name: str, devices: tuple[str, ...] = (), pids: tuple[int, ...] = ()) -> PodInfo:
    return PodInfo("ns", name, f"uid-{name}", containers=(ContainerDevices("c", devices, pids),))


def reading(*processes: tuple[int, float], uuid: str = "GPU-x") -> GpuReading:
    return GpuReading(uuid, 0, 0, tuple(ProcessUsage(pid, util) for pid, util in processes))


def shares(split: object) -> dict[str, int]:
    return {share.pod.name: share.energy_mj for share in split.shares}  # type: ignore[attr-defined]


def test_largest_remainder_ties_go_to_the_first() -> None:
    assert largest_remainder(10, [Fraction(1)] * 3) == [4, 3, 3]
    assert largest_remainder(2, [Fraction(1)] * 3) == [1, 1, 0]
    assert largest_remainder(7, [Fraction(0), Fraction(0)]) == [4, 3]
    assert largest_remainder(100, [Fraction(1), Fraction(2)]) == [33, 67]


def test_largest_remainder_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="negative total"):
        largest_remainder(-1, [Fraction(1)])
    with pytest.raises(ValueError, match="no weights"):
        largest_remainder(1, [])
    with pytest.raises(ValueError, match="non-negative"):
        largest_remainder(1, [Fraction(-1), Fraction(2)])


def test_single_holder_takes_all_whatever_the_utilisation() -> None:
    split = split_gpu(GPU, 1000, reading((7, 0)), HolderIndex([pod("a", ("GPU-x",), (7,))]))
    assert shares(split) == {"a": 1000}
    assert split.unallocated_mj == 0
    assert split.shares[0].fraction == 1


def test_time_sliced_holders_split_by_sm_util() -> None:
    pods = [pod("a", ("GPU-x::0",), (1, 2)), pod("b", ("GPU-x::1",), (3,))]
    split = split_gpu(GPU, 1000, reading((1, 10), (2, 20), (3, 10)), HolderIndex(pods))
    assert shares(split) == {"a": 750, "b": 250}
    assert [s.fraction for s in split.shares] == [0.75, 0.25]


def test_zero_utilisation_splits_equally_ties_to_first_listed() -> None:
    pods = [pod("a", ("GPU-x::0",)), pod("b", ("GPU-x::1",)), pod("c", ("GPU-x::2",))]
    assert shares(split_gpu(GPU, 1001, reading(), HolderIndex(pods))) == {"a": 334, "b": 334, "c": 333}


def test_processes_hold_only_when_no_pod_lists_the_device() -> None:
    pods = [pod("lister", ("GPU-x",)), pod("runner", (), (9,))]
    assert shares(split_gpu(GPU, 10, reading((9, 100)), HolderIndex(pods))) == {"lister": 10}
    assert shares(split_gpu(GPU, 10, reading((9, 100)), HolderIndex([pods[1]]))) == {"runner": 10}


def test_no_holder_means_unallocated() -> None:
    split = split_gpu(GPU, 500, reading((99, 50)), HolderIndex([pod("other", ("GPU-y",))]))
    assert split.shares == ()
    assert split.unallocated_mj == 500


def test_mig_split_by_slices_and_never_through_processes() -> None:
    pods = [pod("m2", ("MIG-2",)), pod("proc", (), (5,))]
    split = split_gpu(MIG, 700, reading((5, 90), uuid="GPU-m"), HolderIndex(pods))
    assert shares(split) == {"m2": 400}
    assert split.unallocated_mj == 300
    assert split.shares[0].fraction == pytest.approx(4 / 7)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[GpuInfo, int, GpuReading, list[PodInfo]]:
    mig = draw(st.booleans())
    gpu = MIG if mig else GPU
    devices = ["MIG-1", "MIG-2", "GPU-other"] if mig else ["GPU-x", "GPU-x::1", "GPU-x::2", "GPU-other"]
    n_pods = draw(st.integers(0, 6))
    pods = []
    for i in range(n_pods):
        held = tuple(draw(st.lists(st.sampled_from(devices), max_size=2)))
        pids = tuple(draw(st.lists(st.integers(1, 12), max_size=3, unique=True)))
        pods.append(pod(f"p{i}", held, pids))
    processes = draw(
        st.lists(
            st.tuples(st.integers(1, 12), st.floats(0, 100, allow_nan=False)), max_size=8, unique_by=lambda p: p[0]
        )
    )
    energy = draw(st.integers(0, 10**12))
    return gpu, energy, reading(*processes, uuid=gpu.uuid), pods


@given(scenarios())
def test_conservation_is_exact(scenario: tuple[GpuInfo, int, GpuReading, list[PodInfo]]) -> None:
    gpu, energy, gpu_reading, pods = scenario
    split = split_gpu(gpu, energy, gpu_reading, HolderIndex(pods))
    assert sum(s.energy_mj for s in split.shares) + split.unallocated_mj == energy
    assert all(s.energy_mj >= 0 for s in split.shares)
    fractions = sum(s.fraction for s in split.shares)
    assert 0 <= fractions <= 1 + 1e-9
    for device in split.devices:
        assert sum(s.energy_mj for s in device.shares) + device.unallocated_mj == device.energy_mj
        names = [s.pod.name for s in device.shares]
        assert len(names) == len(set(names)), "a pod is one holder however many replicas it lists"


@given(st.integers(0, 10**15), st.lists(st.fractions(min_value=0, max_value=1000), min_size=1, max_size=20))
def test_largest_remainder_properties(total: int, weights: list[Fraction]) -> None:
    parts = largest_remainder(total, weights)
    assert sum(parts) == total
    weight_sum = sum(weights, Fraction(0)) or Fraction(len(weights))
    effective = weights if sum(weights) else [Fraction(1)] * len(weights)
    for part, weight in zip(parts, effective, strict=True):
        assert abs(part - total * weight / weight_sum) < 1

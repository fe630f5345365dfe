"""The simulated node's pods: device ids, processes, MIG, churn, owners and object reuse."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from statistics import mean

import pytest

from jouleledger.core.model import PodInfo, Sample
from jouleledger.hardware.simulated import SimulatedNode
from tests.hardware._simulated import Devices, take

HOST_PID_MAX = 9_999  # stray host processes take pids below the pods' range


@pytest.fixture(scope="module")
def bench_samples() -> tuple[SimulatedNode, list[Sample]]:
    node = SimulatedNode.benchmark(seed=11, stray_processes=True, mixed_models=True)
    return node, take(node, 2000)


def check_devices_and_processes(devices: Devices, sample: Sample, *, strays_allowed: bool) -> None:
    """Every device id is in the header and held once; every pid is in exactly one container on its GPU."""
    holders: Counter[str] = Counter()
    pid_gpus: dict[int, set[str]] = {}
    pid_owners: Counter[int] = Counter()
    for pod in sample.pods:
        assert pod.labels["team"] in {"a", "b", "research"}
        for container in pod.containers:
            gpus = set()
            for device in container.devices:
                holders[device] += 1
                gpus.add(devices.gpu_of(device))
            for pid in container.pids:
                pid_owners[pid] += 1
                pid_gpus[pid] = gpus
    assert all(count == 1 for count in holders.values()), "a device is held by two pods at once"
    assert all(count == 1 for count in pid_owners.values()), "a pid is listed by two containers"
    for reading in sample.gpus:
        pids = [process.pid for process in reading.processes]
        assert len(pids) == len(set(pids))
        assert sum(process.sm_util for process in reading.processes) <= 100
        for process in reading.processes:
            assert 0 <= process.sm_util <= 100
            if process.pid in pid_gpus:
                assert reading.uuid in pid_gpus[process.pid], "a pid runs on a GPU its container does not hold"
            else:
                assert strays_allowed
                assert process.pid <= HOST_PID_MAX
        if reading.uuid in devices.mig_gpus:
            assert reading.processes == ()


@pytest.mark.parametrize("seed", [0, 1])
def test_demo_node_devices_and_processes_are_consistent(seed: int) -> None:
    node = SimulatedNode(seed=seed, mean_lifetime_s=30.0, mean_idle_s=10.0)
    devices = Devices.of(node.header())
    for sample in take(node, 1000):
        check_devices_and_processes(devices, sample, strays_allowed=False)


def test_benchmark_node_devices_and_processes_are_consistent(
    bench_samples: tuple[SimulatedNode, list[Sample]],
) -> None:
    node, samples = bench_samples
    header = node.header()
    assert len(header.gpus) == 8
    assert sum(1 for gpu in header.gpus if gpu.mig) == 2
    devices = Devices.of(header)
    strays = 0
    for sample in samples:
        check_devices_and_processes(devices, sample, strays_allowed=True)
        strays += sum(1 for r in sample.gpus for p in r.processes if p.pid <= HOST_PID_MAX)
    assert strays > 0


def test_mig_pods_never_own_processes(bench_samples: tuple[SimulatedNode, list[Sample]]) -> None:
    node, samples = bench_samples
    devices = Devices.of(node.header())
    mig_pods = 0
    for sample in samples[::10]:
        for pod in sample.pods:
            if any(device in devices.mig for c in pod.containers for device in c.devices):
                mig_pods += 1
                assert all(not container.pids for container in pod.containers)
    assert mig_pods > 0


def test_live_pod_count_stays_near_target_while_pods_come_and_go(
    bench_samples: tuple[SimulatedNode, list[Sample]],
) -> None:
    _, samples = bench_samples
    counts = [len(sample.pods) for sample in samples]
    assert 185 <= mean(counts) <= 215
    assert min(counts) >= 170
    assert max(counts) <= 230
    first = {pod.uid for pod in samples[0].pods}
    last = {pod.uid for pod in samples[-1].pods}
    # Mean life 300 s: after 2000 s nearly every first pod has finished (e^-6.7 of them remain on average).
    assert len(first & last) < 10
    seen = {pod.uid for sample in samples for pod in sample.pods}
    assert len(seen) > 1000


def test_owners_namespaces_and_labels(bench_samples: tuple[SimulatedNode, list[Sample]]) -> None:
    _, samples = bench_samples
    pods = {pod.uid: pod for sample in samples for pod in sample.pods}.values()
    kinds = Counter(pod.owner.kind if pod.owner else None for pod in pods)
    assert set(kinds) == {"Job", "ReplicaSet", None}
    assert {pod.namespace for pod in pods} == {"team-a", "team-b", "research"}
    for pod in pods:
        assert pod.labels["team"] == pod.namespace.removeprefix("team-")
        if pod.owner is not None:
            assert pod.name.startswith(pod.owner.name + "-")
    # Owners are shared: some Job or ReplicaSet has several pods.
    per_owner = Counter(pod.owner.uid for pod in pods if pod.owner)
    assert max(per_owner.values()) > 1
    assert len({pod.uid for pod in pods}) == len(pods)
    # Pods holding no GPU, and time-sliced GPUs shared by many pods, both occur.
    assert any(not pod.containers[0].devices for pod in pods)
    sharing = max(
        Counter(
            d.partition("::")[0] for p in sample.pods for c in p.containers for d in c.devices if "::" in d
        ).most_common(1)[0][1]
        for sample in samples[::100]
    )
    assert sharing >= 10


def test_pods_spanning_two_exclusive_gpus_have_a_process_on_each() -> None:
    node = SimulatedNode(seed=14, gpus=4, mig_gpus=0, timeslice_gpus=0, mean_lifetime_s=20.0, mean_idle_s=10.0)
    two_gpu_pods = 0
    for sample in take(node, 1000):
        gpus_of_pid = {p.pid: r.uuid for r in sample.gpus for p in r.processes}
        for pod in sample.pods:
            (main, *_) = pod.containers
            if len(main.devices) == 2:
                two_gpu_pods += 1
                assert {gpus_of_pid[pid] for pid in main.pids} == set(main.devices)
    assert two_gpu_pods > 0


def test_unheld_gpus_appear() -> None:
    node = SimulatedNode(seed=12, mean_lifetime_s=30.0, mean_idle_s=15.0)
    header = node.header()
    unheld = 0
    for sample in take(node, 500):
        held = {d.partition("::")[0] for p in sample.pods for c in p.containers for d in c.devices}
        held |= {next(g.uuid for g in header.gpus if any(m.uuid == d for m in g.mig)) for d in held if "MIG" in d}
        unheld += sum(1 for gpu in header.gpus if gpu.uuid not in held)
    assert unheld > 20


def test_pod_objects_are_reused_while_the_pod_lives() -> None:
    node = SimulatedNode.benchmark(seed=13)
    samples = take(node, 300)
    reused = 0
    unchanged_tuples = 0
    for previous, current in pairwise(samples):
        before: dict[str, PodInfo] = {pod.uid: pod for pod in previous.pods}
        for pod in current.pods:
            if pod.uid in before:
                assert pod is before[pod.uid]
                reused += 1
        if previous.pods is current.pods:
            unchanged_tuples += 1
    assert reused > 200 * 250
    assert unchanged_tuples > 0

"""The live node composition: NVML readings + kubelet pods + /proc map -> samples, with a kubelet outage."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from jouleledger.agent.live import LiveNodeSource, attach_pids, gpus_needing_processes
from jouleledger.agent.runner import AgentRunner
from jouleledger.core.model import ContainerDevices, GpuInfo, GpuReading, MigInstance, PodInfo, ProcessUsage
from jouleledger.hardware.base import GpuLostError, MeterReadout, PodSourceError
from jouleledger.hardware.proc import ContainerRef, ProcMap

GPU = GpuInfo("GPU-a", "NVIDIA H100 80GB HBM3", True, 700)
UID_A = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
UID_B = "6fa459ea-ee8a-3ca4-894e-db77e160355e"
CID_MAIN = "a" * 64
CID_SIDE = "b" * 64


class FakeMeter:
    def __init__(self, readouts: list[MeterReadout]) -> None:
        self.readouts = readouts
        self.rejected = {("GPU-a", "power_above_limit"): 2}
        self.closed = False
        self.processes_for: list[frozenset[str] | None] = []

    def gpus(self) -> tuple[GpuInfo, ...]:
        return (GPU,)

    def read(self, processes_for: Collection[str] | None = None) -> MeterReadout:
        self.processes_for.append(None if processes_for is None else frozenset(processes_for))
        return self.readouts.pop(0)

    def close(self) -> None:
        self.closed = True


class FakePods:
    def __init__(self, answers: list[tuple[PodInfo, ...] | None]) -> None:
        self.answers = answers

    def pods(self) -> tuple[PodInfo, ...]:
        answer = self.answers.pop(0)
        if answer is None:
            raise PodSourceError("kubelet socket /var/lib/kubelet/pod-resources/kubelet.sock: connection refused")
        return answer

    def close(self) -> None:
        pass


def write_proc(root: Path, pid: int, cgroup: str, start: int = 100) -> None:
    directory = root / str(pid)
    directory.mkdir(parents=True)
    (directory / "cgroup").write_text(cgroup)
    fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 20
    (directory / "stat").write_text(f"{pid} (python) " + " ".join(fields) + "\n")


def pod(name: str, uid: str, *containers: ContainerDevices) -> PodInfo:
    return PodInfo("ns", name, uid, containers=containers)


def test_attach_pids_by_container_id_and_fallback_to_first_container() -> None:
    a = pod(
        "a", UID_A, ContainerDevices("side", (), (), CID_SIDE), ContainerDevices("main", ("GPU-a::0",), (), CID_MAIN)
    )
    b = pod("b", UID_B, ContainerDevices("only", ("GPU-a::1",)))
    owners = {10: ContainerRef(UID_A, CID_MAIN), 11: ContainerRef(UID_A, "unknown"), 12: ContainerRef(UID_B, "")}
    result = attach_pids((a, b), owners)
    assert result[0].containers[1].pids == (10,)
    assert result[0].containers[0].pids == (11,)
    assert result[1].containers[0].pids == (12,)


def test_live_source_maps_processes_and_survives_a_kubelet_outage(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write_proc(
        proc, 4242, f"0::/kubepods.slice/kubepods-pod{UID_A.replace('-', '_')}.slice/cri-containerd-{CID_MAIN}.scope\n"
    )
    write_proc(
        proc,
        4343,
        "0::/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{UID_B.replace('-', '_')}.slice/cri-containerd-{CID_SIDE}.scope\n",
    )
    a = pod("a", UID_A, ContainerDevices("main", ("GPU-a::0",), (), CID_MAIN))
    b = pod("b", UID_B, ContainerDevices("main", ("GPU-a::1",), (), CID_SIDE))
    processes = (ProcessUsage(4242, 75), ProcessUsage(4343, 25))
    meter = FakeMeter(
        [
            MeterReadout((GpuReading("GPU-a", 0, 200_000, processes),)),
            MeterReadout((GpuReading("GPU-a", 400_000, 200_000, processes),)),
            MeterReadout((), (GpuLostError("GPU-a", "fell off the bus"),)),
            MeterReadout((GpuReading("GPU-a", 1_000_000, 200_000, processes),)),
        ]
    )
    clock = iter([10.0, 11.0, 12.0, 13.0])
    source = LiveNodeSource(
        "node-1", meter, FakePods([(a, b), (a, b), (a, b), None]), ProcMap(proc), clock=lambda: next(clock)
    )
    runner = AgentRunner(source, backend="nvml", wall_clock=lambda: 20.0)
    for _ in range(4):
        assert runner.tick()
    view = runner.view()
    by_pod = {device.pod: device.energy_mj for device in view.ledger.devices}
    # 10 -> 11: 400,000 mJ split 75:25 by SM utilisation; 11 -> 13 (GPU lost at 12): 600,000 mJ with the kubelet
    # unreachable, so it is unallocated rather than guessed.
    assert by_pod == {"a": 300_000, "b": 100_000}
    assert view.ledger.unallocated_mj == 600_000
    assert view.ledger.measured_mj == 1_000_000
    assert view.status.pod_source_up is False
    assert view.status.pod_source_errors_total == 1
    assert view.status.reading_errors == {("GPU-a", "gpu_lost"): 1}
    assert view.ledger.rejected[("GPU-a", "power_above_limit")] == 2
    # GPU-a is shared by a and b (time-slicing), and held by nobody while the kubelet is unreachable
    assert meter.processes_for == [frozenset({"GPU-a"})] * 4
    source.close()
    assert meter.closed


def test_processes_are_needed_only_for_shared_or_unheld_gpus() -> None:
    gpus = (
        GpuInfo("GPU-solo", "H100", True, 700),
        GpuInfo("GPU-shared", "H100", True, 700),
        GpuInfo("GPU-free", "H100", True, 700),
        GpuInfo("GPU-mig", "A100", True, 400, (MigInstance("MIG-1", 3), MigInstance("MIG-2", 4))),
        GpuInfo("GPU-mig-shared", "A100", True, 400, (MigInstance("MIG-3", 3), MigInstance("MIG-4", 4))),
    )
    pods = (
        # one pod listing two replicas of a GPU still holds it alone
        pod("a", UID_A, ContainerDevices("main", ("GPU-solo::0",)), ContainerDevices("side", ("GPU-solo::1",))),
        pod("b", UID_B, ContainerDevices("main", ("GPU-shared::0", "MIG-1", "MIG-3"))),
        pod("c", "c", ContainerDevices("main", ("GPU-shared::1", "MIG-3"))),
    )
    # a MIG instance held by nobody is unallocated (never held through processes): GPU-mig needs none
    assert gpus_needing_processes(gpus, pods) == {"GPU-shared", "GPU-free", "GPU-mig-shared"}
    assert gpus_needing_processes(gpus, ()) == {"GPU-solo", "GPU-shared", "GPU-free"}

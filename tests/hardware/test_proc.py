"""``/proc/<pid>/cgroup`` parsing against real-world layouts, and ProcMap over a fake proc root."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouleledger.hardware.proc import ContainerRef, ProcMap, parse_cgroup, parse_start_time

UID = "5f0c1d2e-aaaa-4bbb-8ccc-0123456789ab"
UID_ = UID.replace("-", "_")  # as systemd slice names spell it
CID = "3b5c0a7f9e1d2c4b6a8f0e2d4c6b8a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b"
HOST_CID = "aa" * 32
STATIC_UID = "6e1d6a7c5d3e4b2c1a9f8e7d6c5b4a39"  # a static pod: the kubelet hashes its manifest
SYSTEMD_QOS = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"

V1_CGROUPFS = f"""\
12:hugetlb:/kubepods/besteffort/pod{UID}/{CID}
11:memory:/kubepods/besteffort/pod{UID}/{CID}
10:devices:/kubepods/besteffort/pod{UID}/{CID}
9:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{CID}
8:pids:/kubepods/besteffort/pod{UID}/{CID}
7:net_cls,net_prio:/kubepods/besteffort/pod{UID}/{CID}
6:freezer:/kubepods/besteffort/pod{UID}/{CID}
5:blkio:/kubepods/besteffort/pod{UID}/{CID}
4:cpuset:/kubepods/besteffort/pod{UID}/{CID}
3:perf_event:/kubepods/besteffort/pod{UID}/{CID}
2:rdma:/
1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}
0::/
"""

V1_SYSTEMD_HYBRID = f"""\
11:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope
10:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope
9:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope
1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope
0::/
"""

POD_AND_CONTAINER = [
    pytest.param(f"0::{SYSTEMD_QOS}/cri-containerd-{CID}.scope\n", id="v2-systemd-containerd-burstable"),
    pytest.param(
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
        id="v2-systemd-containerd-besteffort",
    ),
    pytest.param(f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", id="v2-systemd-guaranteed"),
    pytest.param(f"0::{SYSTEMD_QOS}/crio-{CID}.scope", id="v2-systemd-crio"),
    pytest.param(f"0::{SYSTEMD_QOS}/crio-{CID}.scope/container", id="v2-systemd-crio-container-subgroup"),
    pytest.param(f"0::{SYSTEMD_QOS}/docker-{CID}.scope", id="v2-systemd-docker"),
    pytest.param(f"0::{SYSTEMD_QOS}/cri-containerd-{CID}.scope/system.slice/x.service", id="v2-nested-below-container"),
    pytest.param(f"0::/kubepods/burstable/pod{UID}/{CID}", id="v2-cgroupfs-containerd-burstable"),
    pytest.param(f"0::/kubepods/pod{UID}/{CID}", id="v2-cgroupfs-guaranteed"),
    pytest.param(f"0::/kubepods/besteffort/pod{UID}/crio-{CID}", id="v2-cgroupfs-crio"),
    pytest.param(V1_CGROUPFS, id="v1-cgroupfs-all-controllers"),
    pytest.param(V1_SYSTEMD_HYBRID, id="v1-systemd-hybrid-empty-unified"),
    pytest.param(
        f"0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
        id="v2-seen-from-another-cgroup-namespace",
    ),
    pytest.param(
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
        id="v2-kind-cgroup-root",
    ),
    pytest.param(f"11:memory:/docker/{HOST_CID}/kubepods/besteffort/pod{UID}/{CID}", id="v1-kind-inside-docker"),
    pytest.param(
        f"0::/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}",
        id="v2-containerd-colon-notation",
    ),
]


@pytest.mark.parametrize("text", POD_AND_CONTAINER)
def test_pod_uid_and_container_id(text: str) -> None:
    assert parse_cgroup(text) == ContainerRef(UID, CID)


def test_static_pod_uid_without_dashes() -> None:
    text = f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/crio-{CID}.scope"
    assert parse_cgroup(text) == ContainerRef(STATIC_UID, CID)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"0::{SYSTEMD_QOS}", id="pod-cgroup-itself"),
        pytest.param(f"0::{SYSTEMD_QOS}/crio-conmon-{CID}.scope", id="crio-conmon"),
        pytest.param(f"0::/kubepods/burstable/pod{UID}", id="cgroupfs-pod-cgroup"),
        pytest.param(f"0::/kubepods/burstable/pod{UID}/not-a-container", id="unknown-child"),
    ],
)
def test_pod_without_a_container(text: str) -> None:
    assert parse_cgroup(text) == ContainerRef(UID, "")


def test_a_line_with_a_container_wins_over_a_pod_only_line() -> None:
    text = f"2:cpuset:/kubepods/burstable/pod{UID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
    assert parse_cgroup(text) == ContainerRef(UID, CID)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("0::/init.scope\n", id="init"),
        pytest.param("0::/user.slice/user-1000.slice/session-3.scope\n", id="login-session"),
        pytest.param("0::/system.slice/containerd.service\n", id="runtime-daemon"),
        pytest.param(f"0::/system.slice/docker-{CID}.scope\n", id="docker-outside-kubernetes"),
        pytest.param("0::/kubepods.slice/kubepods-burstable.slice\n", id="qos-level-only"),
        pytest.param(f"0::/kubepods/burstable/podnot-a-uid/{CID}\n", id="pod-segment-without-uid"),
        pytest.param(f"0::/system.slice/mypod{UID}.service\n", id="uid-in-an-unrelated-name"),
        pytest.param(f"garbage without colons {UID}\n", id="garbage"),
        pytest.param(V1_CGROUPFS.replace("kubepods/besteffort/", "").replace(f"pod{UID}/", ""), id="v1-no-pod"),
    ],
)
def test_processes_outside_pods(text: str) -> None:
    assert parse_cgroup(text) is None


# --- /proc/<pid>/stat --------------------------------------------------------------------------------------------


def stat_line(pid: int, comm: str, start_ticks: int) -> str:
    """A /proc/<pid>/stat line: fields 4-21 are filler, field 22 the start time, then 30 more fields."""
    filler = " ".join(str(n) for n in range(4, 22))
    tail = " ".join("0" for _ in range(30))
    return f"{pid} ({comm}) S {filler} {start_ticks} {tail}\n"


@pytest.mark.parametrize("comm", ["python3", "pt_main_thread", "a b) c (d", ") 1 2 3"])
def test_start_time_is_field_22_even_with_odd_command_names(comm: str) -> None:
    assert parse_start_time(stat_line(77, comm, 987654)) == 987654


@pytest.mark.parametrize("text", ["", "77 (x) S 1 2 3\n", "77 x S " + " ".join(["1"] * 30), stat_line(1, "x", -4)])
def test_malformed_stat_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_start_time(text)


# --- ProcMap -----------------------------------------------------------------------------------------------------


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, pid: int, cgroup: str, start_ticks: int = 1000, comm: str = "python3") -> None:
        directory = self.root / str(pid)
        directory.mkdir(exist_ok=True)
        (directory / "stat").write_text(stat_line(pid, comm, start_ticks))
        (directory / "cgroup").write_text(cgroup)


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def in_pod(uid: str, cid: str) -> str:
    return f"0::/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope\n"


OTHER_UID = "11111111-2222-4333-8444-555555555555"
OTHER_CID = "c" * 64


def test_lookup_maps_only_the_pids_in_pods(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID))
    proc.add(200, in_pod(OTHER_UID, OTHER_CID))
    proc.add(300, "0::/system.slice/sshd.service\n")
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100, 200, 300]) == {100: ContainerRef(UID, CID), 200: ContainerRef(OTHER_UID, OTHER_CID)}
    assert proc_map.failures == {}


def test_lookup_reads_only_the_requested_pids(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID))
    (proc.root / "555").write_text("not a directory")  # any read of pid 555 would count a failure
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100]) == {100: ContainerRef(UID, CID)}
    assert proc_map.failures == {}


def test_results_are_cached_by_pid_and_start_time(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID), start_ticks=5000)
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100]) == {100: ContainerRef(UID, CID)}
    # same process (same start time): the cgroup file is not read again
    (proc.root / "100" / "cgroup").write_text(in_pod(OTHER_UID, OTHER_CID))
    assert proc_map.lookup([100]) == {100: ContainerRef(UID, CID)}
    # the pid was reused by a new process: read again
    proc.add(100, in_pod(OTHER_UID, OTHER_CID), start_ticks=9000)
    assert proc_map.lookup([100]) == {100: ContainerRef(OTHER_UID, OTHER_CID)}


def test_a_pid_reused_to_a_host_process_is_no_longer_attributed(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID), start_ticks=5000)
    proc_map = ProcMap(proc.root)
    assert 100 in proc_map.lookup([100])
    proc.add(100, "0::/user.slice\n", start_ticks=5001)
    assert proc_map.lookup([100]) == {}


def test_vanished_pids_are_unknown_and_counted(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID))
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100, 4242]) == {100: ContainerRef(UID, CID)}
    (proc.root / "100" / "stat").unlink()
    (proc.root / "100" / "cgroup").unlink()
    (proc.root / "100").rmdir()
    assert proc_map.lookup([100]) == {}
    assert proc_map.failures == {"vanished": 2}


def test_a_process_exiting_between_stat_and_cgroup_is_unknown(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID))
    (proc.root / "100" / "cgroup").unlink()
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100]) == {}
    assert proc_map.failures == {"vanished": 1}


def test_a_pid_reused_while_it_is_read_is_not_trusted(proc: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID), start_ticks=5000)
    original = Path.read_text

    def read_text(path: Path, *args: object, **kwargs: object) -> str:
        text = original(path, *args, **kwargs)  # type: ignore[arg-type]
        if path.name == "cgroup":  # the process exits and a new one takes its pid right after this read
            (path.parent / "stat").write_text(stat_line(100, "new", 5001))
        return text

    monkeypatch.setattr(Path, "read_text", read_text)
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100]) == {}
    assert proc_map.failures == {"vanished": 1}


@pytest.mark.parametrize(
    ("error", "reason"),
    [(PermissionError(13, "Permission denied"), "permission"), (OSError(5, "Input/output error"), "unreadable")],
)
def test_unreadable_cgroup_files_are_unknown_and_counted(
    proc: FakeProc, monkeypatch: pytest.MonkeyPatch, error: OSError, reason: str
) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID))
    proc.add(200, in_pod(OTHER_UID, OTHER_CID))
    original = Path.read_text

    def read_text(path: Path, *args: object, **kwargs: object) -> str:
        if path.parent.name == "100" and path.name == "cgroup":
            raise error
        return original(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100, 200]) == {200: ContainerRef(OTHER_UID, OTHER_CID)}
    assert proc_map.failures == {reason: 1}


def test_malformed_stat_and_invalid_pids_are_counted(proc: FakeProc) -> None:
    proc.root.mkdir()
    proc.add(100, in_pod(UID, CID))
    (proc.root / "100" / "stat").write_text("100 (truncated")
    proc_map = ProcMap(proc.root)
    assert proc_map.lookup([100, 0, -1, True]) == {}
    assert proc_map.failures == {"malformed": 4}


def test_the_cache_is_bounded(proc: FakeProc) -> None:
    proc.root.mkdir()
    for pid in (1, 2, 3):
        proc.add(pid, in_pod(UID, CID))
    proc_map = ProcMap(proc.root, max_entries=2)
    proc_map.lookup([1, 2, 3])  # pid 1, least recently used, is evicted
    for pid in (1, 2, 3):
        (proc.root / str(pid) / "cgroup").write_text(in_pod(OTHER_UID, OTHER_CID))
    assert proc_map.lookup([2, 3]) == {2: ContainerRef(UID, CID), 3: ContainerRef(UID, CID)}  # still cached
    assert proc_map.lookup([1]) == {1: ContainerRef(OTHER_UID, OTHER_CID)}  # read again

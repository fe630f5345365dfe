"""Which pod and container a host process belongs to, from ``/proc/<pid>/cgroup``.

The kubelet puts every container in a cgroup named after its pod UID, and the container runtime names the
container's own cgroup after its container id. :func:`parse_cgroup` reads both out of the text of
``/proc/<pid>/cgroup`` for cgroup v1 and v2, the ``systemd`` and ``cgroupfs`` cgroup drivers, the three QoS classes
and the containerd, CRI-O and Docker runtimes, for example::

    0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f0c1d2e_aaaa_bbbb_cccc_0123456789ab.slice/cri-containerd-<id>.scope
    11:memory:/kubepods/besteffort/pod5f0c1d2e-aaaa-bbbb-cccc-0123456789ab/<id>

Paths may carry a prefix (a kubelet ``--cgroup-root``, a nested container runtime) or start with ``/..`` where the
reader sits in its own cgroup namespace; only the pod and container components count.

:class:`ProcMap` applies it to the GPU processes NVML reports, reading ``<proc_root>/<pid>/cgroup`` (the host's
``/proc`` is mounted at ``/host/proc`` in the agent's pod). Entries are cached by pid and process start time, so a
pid the kernel hands to a new process is read again. A process that has exited, or cannot be read, is unknown:
left out of the result and counted in :attr:`ProcMap.failures`, never an exception.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

__all__ = ["ContainerRef", "ProcMap", "parse_cgroup", "parse_start_time"]

_log = logging.getLogger(__name__)

_HEX = "0-9a-fA-F"
# A pod UID: an RFC 4122 UUID, with dashes (cgroupfs) or underscores (systemd slice names), or a static pod's
# 32-hex-digit config hash.
_UID = rf"[{_HEX}]{{8}}[-_][{_HEX}]{{4}}[-_][{_HEX}]{{4}}[-_][{_HEX}]{{4}}[-_][{_HEX}]{{12}}|[{_HEX}]{{32}}"
# ``pod<uid>`` (cgroupfs) and ``kubepods[-<qos>]-pod<uid>.slice`` (systemd, possibly under a ``--cgroup-root``
# prefix such as ``kubelet-kubepods-besteffort-pod<uid>.slice``).
_CGROUPFS_POD = re.compile(rf"^pod(?P<uid>{_UID})$")
_SYSTEMD_POD = re.compile(rf"^(?:[\w.]+-)?kubepods(?:-[a-z]+)?-pod(?P<uid>{_UID})\.slice$")
# A container's cgroup: ``cri-containerd-<id>.scope``, ``crio-<id>.scope``, ``docker-<id>.scope`` (systemd), or a
# bare ``<id>`` (cgroupfs; CRI-O writes ``crio-<id>`` there).
_RUNTIMES = ("cri-containerd", "crio", "docker")
_CONTAINER_SEGMENT = re.compile(rf"^(?:(?:{'|'.join(_RUNTIMES)})-)?(?P<id>[{_HEX}]{{12,128}})(?:\.scope)?$")
_CONMON_SEGMENT = re.compile(rf"^crio-conmon-[{_HEX}]+(?:\.scope)?$")


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """The pod (UID, lower-case with dashes) and container (runtime id, no ``containerd://`` prefix) of a process.

    ``container_id`` is empty when the process sits in the pod's cgroup but not in a container's (CRI-O's conmon).
    """

    pod_uid: str
    container_id: str


def _normalise_uid(raw: str) -> str:
    return raw.replace("_", "-").lower()


def _parse_path(path: str) -> ContainerRef | None:
    # containerd with the systemd driver on some distributions writes ``<slice>:<prefix>:<id>`` as one component
    segments = [part for segment in path.split("/") for part in segment.split(":") if part]
    for position, segment in enumerate(segments):
        pod = _CGROUPFS_POD.match(segment) or _SYSTEMD_POD.match(segment)
        if pod is None:
            continue
        uid = _normalise_uid(pod.group("uid"))
        rest = segments[position + 1 :]
        if len(rest) > 1 and rest[0] in _RUNTIMES:
            rest = rest[1:]  # ``...-pod<uid>.slice:cri-containerd:<id>``
        if not rest or _CONMON_SEGMENT.match(rest[0]):
            return ContainerRef(uid, "")
        container = _CONTAINER_SEGMENT.match(rest[0])
        return ContainerRef(uid, container.group("id").lower() if container else "")
    return None


def parse_cgroup(text: str) -> ContainerRef | None:
    """The pod and container in the text of ``/proc/<pid>/cgroup``; None for a process outside any pod.

    Lines are ``<hierarchy>:<controllers>:<path>`` (v1) or ``0::<path>`` (v2). The first line that names a pod
    and a container wins; a line that names only a pod is kept in case no line names both.
    """
    pod_only: ContainerRef | None = None
    for line in text.splitlines():
        fields = line.strip().split(":", 2)
        if len(fields) != 3:
            continue
        ref = _parse_path(fields[2])
        if ref is None:
            continue
        if ref.container_id:
            return ref
        pod_only = pod_only or ref
    return pod_only


def parse_start_time(stat: str) -> int:
    """Field 22 of ``/proc/<pid>/stat``: the process start time in clock ticks after boot.

    Field 2, the command name, is in parentheses and may itself contain spaces and parentheses, so fields are
    counted from the last ``)``. Raises ValueError on malformed text.
    """
    _, paren, after = stat.rpartition(")")
    if not paren:
        raise ValueError("no ')' after the command name")
    fields = after.split()
    # ``after`` starts at field 3 (state), so field 22 is at index 19.
    if len(fields) < 20:
        raise ValueError(f"only {len(fields) + 2} fields")
    start = int(fields[19])
    if start < 0:
        raise ValueError(f"negative start time {start}")
    return start


class ProcMap:
    """Maps host pids to the pod and container they run in, reading only the pids asked about.

    ``proc_root`` is where the host's ``/proc`` is mounted. At most ``max_entries`` pids are cached (least
    recently used first out). :attr:`failures` counts unknown pids by reason: ``vanished`` (the process exited),
    ``permission`` (the agent may not read it), ``unreadable`` (any other I/O error) and ``malformed`` (a stat
    line that does not parse). A process outside any pod is not a failure; it is just absent from the result.
    """

    def __init__(self, proc_root: str | Path = "/proc", *, max_entries: int = 4096) -> None:
        self._root = Path(proc_root)
        self._max_entries = max_entries
        self._cache: OrderedDict[int, tuple[int, ContainerRef | None]] = OrderedDict()
        self._failures: dict[str, int] = {}

    @property
    def failures(self) -> Mapping[str, int]:
        """Cumulative count of pids that could not be mapped, by reason (a read-only live view)."""
        return MappingProxyType(self._failures)

    def lookup(self, pids: Iterable[int]) -> dict[int, ContainerRef]:
        """The pod and container of each pid that runs in one; other pids are left out."""
        found: dict[int, ContainerRef] = {}
        for pid in pids:
            if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
                self._fail("malformed", pid, "not a pid")
                continue
            ref = self._lookup_one(pid)
            if ref is not None:
                found[pid] = ref
        return found

    def _fail(self, reason: str, pid: object, detail: object) -> None:
        self._failures[reason] = self._failures.get(reason, 0) + 1
        _log.debug("pid %r: %s (%s)", pid, reason, detail)

    def _start_time(self, pid: int) -> int | None:
        try:
            return parse_start_time((self._root / str(pid) / "stat").read_text(errors="replace"))
        except ValueError as err:
            self._fail("malformed", pid, err)
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError) as err:
            self._fail("vanished", pid, err)
        except PermissionError as err:
            self._fail("permission", pid, err)
        except OSError as err:
            self._fail("unreadable", pid, err)
        return None

    def _lookup_one(self, pid: int) -> ContainerRef | None:
        start = self._start_time(pid)
        if start is None:
            self._cache.pop(pid, None)
            return None
        cached = self._cache.get(pid)
        if cached is not None and cached[0] == start:
            self._cache.move_to_end(pid)
            return cached[1]
        try:
            text = (self._root / str(pid) / "cgroup").read_text(errors="replace")
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError) as err:
            self._fail("vanished", pid, err)
            return None
        except PermissionError as err:
            self._fail("permission", pid, err)
            return None
        except OSError as err:
            self._fail("unreadable", pid, err)
            return None
        # The pid may have been reused between the two reads: trust the cgroup only if the start time held.
        again = self._start_time(pid)
        if again != start:
            if again is not None:
                self._fail("vanished", pid, "pid reused while it was read")
            self._cache.pop(pid, None)
            return None
        ref = parse_cgroup(text)
        self._cache[pid] = (start, ref)
        self._cache.move_to_end(pid)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return ref

"""A simulated GPU node: the backend of ``jouleledger demo`` and of the benchmarks.

:class:`SimulatedNode` implements :class:`~jouleledger.hardware.base.NodeSource` and yields samples exactly as a
real node appears in a version-1 trace: NVML-style energy counters (integer mJ) and power readings, processes with
SM utilisation, and the pods the kubelet reports, with their device ids (``GPU-<uuid>`` for a whole GPU,
``GPU-<uuid>::<n>`` for a time-sliced replica, ``MIG-<uuid>`` for a MIG instance) and their GPU process ids.

The node is laid out as exclusive GPUs first, then time-sliced GPUs (``timeslice_replicas`` replicas each), then
MIG GPUs (a 3-slice and a 4-slice instance each). Pods come and go: every device slot is held by one pod at a
time for an exponentially distributed lifetime, then stays free (idle, so its energy is unallocated) for an
exponentially distributed gap. Pods that hold no GPU fill the rest of ``pods_target``. Owners are Jobs,
ReplicaSets of Deployments, or none (bare pods), in the namespaces ``team-a``, ``team-b`` and ``research``.

The physics respects what the attribution rules check: power stays between the GPU's idle power and its power
limit, the energy counter grows by the trapezoid of the power over each interval (never more than the power limit
times the interval), and MIG instances never own processes (NVML reports no per-process utilisation in MIG mode).

Everything is driven by a virtual clock (``t_s`` advances by ``interval_s`` per sample; wall time is never read)
and seeded :class:`random.Random` streams: the same arguments give the same samples. Pod objects are built once
when a pod starts and reused (the same instance) for as long as the pod lives, so a sample is cheap to make.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from jouleledger.core.model import (
    ContainerDevices,
    GpuInfo,
    GpuReading,
    MigInstance,
    NodeHeader,
    Owner,
    PodInfo,
    ProcessUsage,
    Sample,
)
from jouleledger.core.units import PID_MAX, checked_float, checked_int
from jouleledger.hardware.base import BackendError

__all__ = [
    "H100_MODEL",
    "T4_MODEL",
    "SimulatedNode",
]

H100_MODEL: Final = "NVIDIA H100 80GB HBM3"
T4_MODEL: Final = "Tesla T4"

_EXCLUSIVE: Final = "exclusive"
_TIMESLICE: Final = "timeslice"
_MIG: Final = "mig"
_CPU: Final = "cpu"

_MIG_SLICES: Final = (3, 4)  # a 3g and a 4g instance: the 7 compute slices of an H100
_S_PER_DAY: Final = 86_400.0
_POD_PID_FIRST: Final = 10_000
_HOST_PIDS: Final = (300, 9_999)  # stray host processes (not in any pod) take pids from this range
_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated names


@dataclass(frozen=True, slots=True)
class _ModelSpec:
    model: str
    power_limit_w: float
    idle_w: tuple[float, float]  # range the idle power of one card is drawn from
    energy_counter: bool


_H100 = _ModelSpec(H100_MODEL, 700.0, (62.0, 88.0), True)
_T4 = _ModelSpec(T4_MODEL, 70.0, (9.0, 14.0), False)


@dataclass(frozen=True, slots=True)
class _Profile:
    """How busy a workload keeps its GPU: SM utilisation ``base ± jitter``, with occasional bursts."""

    base: tuple[float, float]  # range the pod's mean utilisation is drawn from
    jitter: float
    burst_p: float = 0.0  # chance per sample of a burst to ``burst_util``
    burst_util: float = 0.0


_PROFILES: Final = {
    "train": _Profile(base=(80.0, 97.0), jitter=6.0),
    "batch": _Profile(base=(55.0, 85.0), jitter=15.0),
    "serve": _Profile(base=(15.0, 55.0), jitter=20.0, burst_p=0.05, burst_util=90.0),
    "notebook": _Profile(base=(0.0, 6.0), jitter=3.0, burst_p=0.08, burst_util=85.0),
    "cpu": _Profile(base=(0.0, 0.0), jitter=0.0),
}


@dataclass(frozen=True, slots=True)
class _Workload:
    namespace: str
    team: str
    name: str
    kind: str  # "Job", "Deployment" or "" (bare pods)
    profile: str
    modes: frozenset[str]


def _workload(namespace: str, name: str, kind: str, profile: str, *modes: str) -> _Workload:
    team = namespace.removeprefix("team-")
    return _Workload(namespace, team, name, kind, profile, frozenset(modes))


_WORKLOADS: Final = (
    _workload("team-a", "train-resnet", "Job", "train", _EXCLUSIVE),
    _workload("team-a", "finetune-llama", "Job", "train", _EXCLUSIVE, _MIG),
    _workload("team-a", "serve-chat", "Deployment", "serve", _EXCLUSIVE, _TIMESLICE, _MIG),
    _workload("team-a", "data-prep", "Job", "cpu", _CPU),
    _workload("team-b", "embed-docs", "Job", "batch", _TIMESLICE, _MIG),
    _workload("team-b", "rerank", "Deployment", "serve", _TIMESLICE, _MIG),
    _workload("team-b", "vision-api", "Deployment", "serve", _EXCLUSIVE, _TIMESLICE),
    _workload("team-b", "api-gateway", "Deployment", "cpu", _CPU),
    _workload("research", "sweep-lr", "Job", "train", _EXCLUSIVE, _TIMESLICE, _MIG),
    _workload("research", "notebook", "", "notebook", _TIMESLICE, _MIG, _EXCLUSIVE),
    _workload("research", "rl-agent", "", "batch", _TIMESLICE),
    _workload("research", "tensorboard", "", "cpu", _CPU),
)


@dataclass(eq=False, slots=True)
class _Gpu:
    """Mutable state of one physical GPU."""

    info: GpuInfo
    mode: str
    idle_mw: int
    limit_mw: int
    power_mw: int
    energy_mj: int
    slots: list[_Slot] = field(default_factory=list)
    stray: ProcessUsage | None = None
    stray_until: int = 0


@dataclass(eq=False, slots=True)
class _Slot:
    """One device the kubelet can hand to one pod: a whole GPU, a time-sliced replica or a MIG instance.

    Pods that hold no GPU occupy slots too (``gpu`` None), so that their number stays at the target.
    """

    gpu: _Gpu | None
    device_id: str
    mode: str
    weight: float  # MIG: the instance's fraction of the GPU's compute slices; otherwise 1
    pod: _LivePod | None = None
    generation: int = 0  # bumps when the slot is taken, so stale "ready" events are ignored


@dataclass(eq=False, slots=True)
class _Process:
    """A GPU process of a live pod, with its usages built on first need and reused (index: ``sm_util``)."""

    gpu: _Gpu
    pid: int
    share: float  # of the pod's utilisation on that GPU
    usages: list[ProcessUsage | None] = field(default_factory=lambda: [None] * 101)

    def usage(self, sm_util: int) -> ProcessUsage:
        cached = self.usages[sm_util]
        if cached is None:
            cached = self.usages[sm_util] = ProcessUsage(self.pid, sm_util)
        return cached


@dataclass(eq=False, slots=True)
class _LivePod:
    info: PodInfo
    profile: _Profile
    slots: tuple[_Slot, ...]
    procs: tuple[_Process, ...]
    base: float
    demand: float = 0.0


@dataclass(eq=False, slots=True)
class _OwnerState:
    owner: Owner
    pods_left: int  # how many more pods may join this Job or ReplicaSet before a new one is made


def _uuid_from(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _suffix(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_NAME_ALPHABET) for _ in range(length))


class SimulatedNode:
    """A GPU node with pods, processes and energy counters, driven by a virtual clock and a seed.

    All arguments are keyword-only:

    - ``node``: the node name; ``gpus``: number of physical GPUs (H100s).
    - ``seed``: the same seed (and arguments) gives the same header and samples.
    - ``interval_s``: virtual seconds between samples; ``start_s``: ``t_s`` of the first sample (also the
      simulated time of day for the grid intensity: 0 is midnight).
    - ``mig_gpus`` / ``timeslice_gpus``: how many GPUs are MIG-partitioned (a 3- and a 4-slice instance each) or
      time-sliced into ``timeslice_replicas`` replicas; the rest are exclusive. ``None`` picks a quarter of the
      GPUs each (at least one from four GPUs up, a time-sliced one from two GPUs up).
    - ``pods_target``: the number of live pods to aim for; pods that hold no GPU make up the difference between
      it and the expected number of GPU pods (it cannot go below the latter). ``None``: the GPU pods plus two.
    - ``mean_lifetime_s`` / ``mean_idle_s``: mean life of a pod and mean time a freed device stays unheld
      (at least one sample; ``mean_lifetime_s=None``: pods never finish).
    - ``multi_gpu_p``: chance that a pod starting on an exclusive GPU also takes another free one.
    - ``mixed_models``: the first exclusive (else time-sliced) GPU is a Tesla T4 without an energy counter.
    - ``grid``: report a grid carbon intensity that varies over the simulated day.
    - ``stray_processes``: processes that belong to no pod appear now and then on non-MIG GPUs.
    - ``drop_gpu_every``: every n-th sample one GPU (in turn) is missing, as if it could not be read.
    - ``counter_reset_at``: sample indices (0-based) at which the driver was reloaded: every energy counter
      restarts near zero.
    - ``max_samples``: ``sample()`` returns None after this many samples (default: never).
    """

    def __init__(
        self,
        *,
        node: str = "sim-gpu-node",
        gpus: int = 4,
        seed: int = 0,
        interval_s: float = 1.0,
        start_s: float = 0.0,
        mig_gpus: int | None = None,
        timeslice_gpus: int | None = None,
        timeslice_replicas: int = 3,
        pods_target: int | None = None,
        mean_lifetime_s: float | None = 300.0,
        mean_idle_s: float = 30.0,
        multi_gpu_p: float = 0.25,
        mixed_models: bool = False,
        grid: bool = True,
        stray_processes: bool = False,
        drop_gpu_every: int | None = None,
        counter_reset_at: int | Iterable[int] | None = None,
        max_samples: int | None = None,
    ) -> None:
        if not node:
            raise ValueError("node: must not be empty")
        n_gpus = checked_int("gpus", gpus, minimum=1, maximum=1024)
        self._interval_s = checked_float("interval_s", interval_s, minimum=1e-6, maximum=86_400.0)
        self._start_s = checked_float("start_s", start_s, minimum=0.0, maximum=1e12)
        if mig_gpus is None:
            mig_gpus = max(1, n_gpus // 4) if n_gpus >= 4 else 0
        if timeslice_gpus is None:
            timeslice_gpus = max(1, n_gpus // 4) if n_gpus >= 2 else 0
        n_mig = checked_int("mig_gpus", mig_gpus, maximum=n_gpus)
        n_ts = checked_int("timeslice_gpus", timeslice_gpus, maximum=n_gpus - n_mig)
        replicas = checked_int("timeslice_replicas", timeslice_replicas, minimum=1, maximum=1024)
        if mean_lifetime_s is not None:
            checked_float("mean_lifetime_s", mean_lifetime_s, minimum=1e-6)
        checked_float("mean_idle_s", mean_idle_s)
        self._multi_gpu_p = checked_float("multi_gpu_p", multi_gpu_p, maximum=1.0)
        if drop_gpu_every is not None:
            checked_int("drop_gpu_every", drop_gpu_every, minimum=1)
        if counter_reset_at is None:
            resets: frozenset[int] = frozenset()
        elif isinstance(counter_reset_at, int):
            resets = frozenset((checked_int("counter_reset_at", counter_reset_at),))
        else:
            resets = frozenset(checked_int("counter_reset_at", index) for index in counter_reset_at)
        if max_samples is not None:
            checked_int("max_samples", max_samples)
        n_exclusive = n_gpus - n_mig - n_ts
        if mixed_models and n_exclusive + n_ts == 0:
            raise ValueError("mixed_models: needs an exclusive or time-sliced GPU for the Tesla T4")

        self._mean_lifetime_s = mean_lifetime_s
        self._mean_idle_s = float(mean_idle_s)
        self._grid = grid
        self._stray_processes = stray_processes
        self._drop_gpu_every = drop_gpu_every
        self._resets = resets
        self._max_samples = max_samples
        self._closed = False
        self._tick = 0

        # Independent streams, so that e.g. enabling stray processes does not change the pods or the header.
        gpu_rng = random.Random(f"jouleledger-sim:{seed}:gpus")
        self._pod_rng = random.Random(f"jouleledger-sim:{seed}:pods")
        self._load_rng = random.Random(f"jouleledger-sim:{seed}:load")

        modes = [_EXCLUSIVE] * n_exclusive + [_TIMESLICE] * n_ts + [_MIG] * n_mig
        t4_index = 0 if mixed_models else -1
        self._gpus: list[_Gpu] = []
        for index, mode in enumerate(modes):
            spec = _T4 if index == t4_index else _H100
            gpu_uuid = f"GPU-{_uuid_from(gpu_rng)}"
            mig = (
                tuple(MigInstance(f"MIG-{_uuid_from(gpu_rng)}", slices) for slices in _MIG_SLICES)
                if mode == _MIG
                else ()
            )
            info = GpuInfo(gpu_uuid, spec.model, spec.energy_counter, spec.power_limit_w, mig)
            idle_mw = round(gpu_rng.uniform(*spec.idle_w) * 1000)
            energy_mj = gpu_rng.randrange(10**9, 10**11)  # energy since the driver loaded
            gpu = _Gpu(info, mode, idle_mw, round(spec.power_limit_w * 1000), idle_mw, energy_mj)
            if mode == _EXCLUSIVE:
                gpu.slots.append(_Slot(gpu, gpu_uuid, mode, 1.0))
            elif mode == _TIMESLICE:
                gpu.slots.extend(_Slot(gpu, f"{gpu_uuid}::{n}", mode, 1.0) for n in range(replicas))
            else:
                total = info.total_slices
                gpu.slots.extend(_Slot(gpu, m.uuid, mode, m.slices / total) for m in mig)
            self._gpus.append(gpu)
        self._header = NodeHeader(node, tuple(gpu.info for gpu in self._gpus))

        gpu_slots = [slot for gpu in self._gpus for slot in gpu.slots]
        occupancy = self._occupancy()
        expected_gpu_pods = round(occupancy * len(gpu_slots))
        if pods_target is None:
            pods_target = expected_gpu_pods + 2
        target = checked_int("pods_target", pods_target, maximum=1_000_000)
        cpu_slots = [_Slot(None, "", _CPU, 0.0) for _ in range(max(0, target - expected_gpu_pods))]
        self._slots = gpu_slots + cpu_slots

        # (tick, sequence, what): a pod that ends, or a free slot (and its generation then) that is ready again.
        self._events: list[tuple[int, int, _LivePod | tuple[_Slot, int]]] = []
        self._seq = 0
        self._live: dict[int, _LivePod] = {}  # by start order, so that pods keep their place in samples
        self._pods: tuple[PodInfo, ...] = ()
        self._pods_dirty = True
        self._live_names: set[tuple[str, str]] = set()
        self._live_pids: set[int] = set()
        self._next_pid = _POD_PID_FIRST + self._pod_rng.randrange(0, 20_000)
        self._owners: dict[str, _OwnerState] = {}

        for slot in self._slots:
            if slot.mode == _CPU or self._pod_rng.random() < occupancy:
                self._start_pod(slot, now=0, allow_pair=False)
            else:
                self._schedule(self._gap_ticks(), (slot, slot.generation))

    @classmethod
    def benchmark(
        cls, *, seed: int = 0, interval_s: float = 1.0, mixed_models: bool = False, stray_processes: bool = False
    ) -> SimulatedNode:
        """The benchmark node: 8 GPUs (2 exclusive, 4 time-sliced with 32 replicas each, 2 MIG), ~200 pods."""
        return cls(
            node="bench-gpu-node",
            gpus=8,
            seed=seed,
            interval_s=interval_s,
            mig_gpus=2,
            timeslice_gpus=4,
            timeslice_replicas=32,
            pods_target=200,
            mixed_models=mixed_models,
            stray_processes=stray_processes,
        )

    # -- NodeSource ---------------------------------------------------------------------------------------------

    @property
    def simulated(self) -> bool:
        return True

    def header(self) -> NodeHeader:
        return self._header

    def sample(self) -> Sample | None:
        """The next sample; None once ``max_samples`` samples were given. Raises after :meth:`close`."""
        if self._closed:
            raise BackendError("simulated node: closed")
        tick = self._tick
        if self._max_samples is not None and tick >= self._max_samples:
            return None
        self._tick = tick + 1
        if tick > 0:
            self._run_events(tick)
        rng_random = self._load_rng.random
        for pod in self._live.values():
            if pod.procs or pod.slots[0].mode == _MIG:
                profile = pod.profile
                if profile.burst_p and rng_random() < profile.burst_p:
                    demand = profile.burst_util
                else:
                    demand = pod.base + profile.jitter * (2.0 * rng_random() - 1.0)
                pod.demand = 0.0 if demand < 0.0 else 100.0 if demand > 100.0 else demand

        dropped = -1
        every = self._drop_gpu_every
        if every is not None and tick > 0 and tick % every == every - 1:
            dropped = (tick // every) % len(self._gpus)
        reset = tick in self._resets
        readings: list[GpuReading] = []
        for index, gpu in enumerate(self._gpus):
            processes, load = self._gpu_load(gpu, tick)
            self._step_energy(gpu, load, tick=tick, reset=reset)
            if index != dropped:  # a GPU that could not be read still drew energy: its counter moved on
                energy_mj = gpu.energy_mj if gpu.info.energy_counter else None
                readings.append(GpuReading(gpu.info.uuid, energy_mj, gpu.power_mw, processes))
        if self._pods_dirty:
            self._pods = tuple(pod.info for pod in self._live.values())
            self._pods_dirty = False
        return Sample(
            t_s=self._t_s(tick),
            gpus=tuple(readings),
            pods=self._pods,
            grid_g_per_kwh=self._grid_g_per_kwh(tick) if self._grid else None,
        )

    def close(self) -> None:
        self._closed = True

    def _t_s(self, tick: int) -> float:
        return self._start_s + tick * self._interval_s

    # -- pods ---------------------------------------------------------------------------------------------------

    def _occupancy(self) -> float:
        """Long-run fraction of time a GPU slot is held."""
        if self._mean_lifetime_s is None:
            return 1.0
        return self._mean_lifetime_s / (self._mean_lifetime_s + self._mean_idle_s)

    def _schedule(self, tick: int, what: _LivePod | tuple[_Slot, int]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (tick, self._seq, what))

    def _lifetime_ticks(self) -> int:
        if self._mean_lifetime_s is None:
            return -1
        return max(1, round(self._pod_rng.expovariate(1.0 / self._mean_lifetime_s) / self._interval_s))

    def _gap_ticks(self) -> int:
        if self._mean_idle_s <= 0.0:
            return 1
        return max(1, round(self._pod_rng.expovariate(1.0 / self._mean_idle_s) / self._interval_s))

    def _run_events(self, now: int) -> None:
        events = self._events
        while events and events[0][0] <= now:
            _, _, what = heapq.heappop(events)
            if isinstance(what, _LivePod):
                self._end_pod(what, now)
            else:
                slot, generation = what
                if slot.pod is None and slot.generation == generation:
                    self._start_pod(slot, now=now, allow_pair=True)

    def _end_pod(self, pod: _LivePod, now: int) -> None:
        del self._live[id(pod)]
        self._pods_dirty = True
        self._live_names.discard((pod.info.namespace, pod.info.name))
        for proc in pod.procs:
            self._live_pids.discard(proc.pid)
        for slot in pod.slots:
            slot.pod = None
            slot.generation += 1
            if slot.mode == _CPU:
                self._start_pod(slot, now=now, allow_pair=False)  # GPU-less pods are replaced at once
            else:
                self._schedule(now + self._gap_ticks(), (slot, slot.generation))

    def _start_pod(self, slot: _Slot, *, now: int, allow_pair: bool) -> None:
        rng = self._pod_rng
        slots = [slot]
        if (
            allow_pair
            and slot.mode == _EXCLUSIVE
            and self._multi_gpu_p
            and rng.random() < self._multi_gpu_p
            and slot.gpu is not None
        ):
            model = slot.gpu.info.model
            free = [
                other
                for gpu in self._gpus
                for other in gpu.slots
                if other.mode == _EXCLUSIVE and other.pod is None and other is not slot and gpu.info.model == model
            ]
            if free:
                slots.append(rng.choice(free))
        candidates = [w for w in _WORKLOADS if slot.mode in w.modes]
        if len(slots) > 1:
            candidates = [w for w in candidates if w.profile == "train"] or candidates
        workload = rng.choice(candidates)
        profile = _PROFILES[workload.profile]
        owner = self._owner_for(workload)
        namespace = workload.namespace
        while True:
            prefix = owner.name if owner is not None else workload.name
            name = f"{prefix}-{_suffix(rng, 5)}"
            if (namespace, name) not in self._live_names:
                break
        self._live_names.add((namespace, name))
        labels = {"team": workload.team, "app": workload.name}
        if owner is not None and owner.kind == "Job":
            labels["job-name"] = owner.name

        procs: list[_Process] = []
        for held in slots:
            gpu = held.gpu
            if gpu is None or held.mode == _MIG:
                continue  # no GPU, or MIG: NVML reports no processes
            if held.mode == _EXCLUSIVE and len(slots) == 1 and workload.profile == "train" and rng.random() < 0.5:
                procs.append(_Process(gpu, self._new_pid(), 0.85))  # the trainer and a helper with its own context
                procs.append(_Process(gpu, self._new_pid(), 0.15))
            else:
                procs.append(_Process(gpu, self._new_pid(), 1.0))
        devices = tuple(held.device_id for held in slots if held.gpu is not None)
        main = ContainerDevices(
            name="main",
            devices=devices,
            pids=tuple(proc.pid for proc in procs),
            container_id=f"{rng.getrandbits(256):064x}",
        )
        containers: tuple[ContainerDevices, ...] = (main,)
        if rng.random() < 0.3:
            containers = (main, ContainerDevices(name="log-shipper", container_id=f"{rng.getrandbits(256):064x}"))
        info = PodInfo(
            namespace=namespace,
            name=name,
            uid=_uuid_from(rng),
            labels=labels,
            owner=owner,
            containers=containers,
        )
        pod = _LivePod(info, profile, tuple(slots), tuple(procs), rng.uniform(*profile.base))
        for held in slots:
            held.pod = pod
            held.generation += 1
        self._live[id(pod)] = pod
        self._pods_dirty = True
        lifetime = self._lifetime_ticks()
        if lifetime > 0:
            self._schedule(now + lifetime, pod)

    def _owner_for(self, workload: _Workload) -> Owner | None:
        """A Job or ReplicaSet that a few pods in a row share (parallel Jobs, Deployment replicas)."""
        if not workload.kind:
            return None
        rng = self._pod_rng
        key = f"{workload.namespace}/{workload.name}"
        state = self._owners.get(key)
        if state is None or state.pods_left <= 0:
            if workload.kind == "Job":
                name = f"{workload.name}-{_suffix(rng, 5)}"
                pods = rng.choice((1, 1, 2, 4))
            else:
                name = f"{workload.name}-{rng.getrandbits(40):010x}"
                pods = rng.randrange(3, 12)
            kind = "Job" if workload.kind == "Job" else "ReplicaSet"
            state = _OwnerState(Owner(kind, name, _uuid_from(rng)), pods)
            self._owners[key] = state
        state.pods_left -= 1
        return state.owner

    def _new_pid(self) -> int:
        pid = self._next_pid
        while True:
            pid += self._pod_rng.randrange(1, 40)
            if pid >= PID_MAX:
                pid = _POD_PID_FIRST
            if pid not in self._live_pids:
                break
        self._next_pid = pid
        self._live_pids.add(pid)
        return pid

    # -- physics ------------------------------------------------------------------------------------------------

    def _gpu_load(self, gpu: _Gpu, tick: int) -> tuple[tuple[ProcessUsage, ...], float]:
        """The processes on ``gpu`` this interval and its load (0-1) that drives the power."""
        slots = gpu.slots
        if gpu.mode == _MIG:
            busy = 0.0
            for slot in slots:
                if slot.pod is not None:
                    busy += slot.pod.demand * slot.weight
            return (), busy / 100.0
        total = 0.0
        for slot in slots:
            if slot.pod is not None:
                total += slot.pod.demand
        # Time-sliced processes share the SMs: their utilisations add up to at most 100.
        scale = 100.0 / total if total > 100.0 else 1.0
        processes: list[ProcessUsage] = []
        for slot in slots:
            pod = slot.pod
            if pod is None:
                continue
            factor = pod.demand * scale
            for proc in pod.procs:
                if proc.gpu is gpu:
                    processes.append(proc.usage(int(factor * proc.share)))  # floor: the sum stays <= 100
        load = total * scale / 100.0
        if self._stray_processes:
            stray = self._stray(gpu, tick)
            if stray is not None:
                processes.append(stray)
                load = min(1.0, load + stray.sm_util / 100.0)
        return tuple(processes), load

    def _stray(self, gpu: _Gpu, tick: int) -> ProcessUsage | None:
        """A host process (in no pod) that now and then opens a context on the GPU, like a monitoring tool."""
        rng = self._load_rng
        if gpu.stray is not None and tick >= gpu.stray_until:
            gpu.stray = None
        if gpu.stray is None and rng.random() < 0.01:
            gpu.stray = ProcessUsage(rng.randint(*_HOST_PIDS), rng.randint(0, 3))
            gpu.stray_until = tick + max(1, round(rng.expovariate(1.0 / 30.0) / self._interval_s))
        return gpu.stray

    def _step_energy(self, gpu: _Gpu, load: float, *, tick: int, reset: bool) -> None:
        """Move the power towards what ``load`` draws, then add the interval's energy to the counter."""
        idle_mw = gpu.idle_mw
        limit_mw = gpu.limit_mw
        noise = 2.0 * self._load_rng.random() - 1.0
        if load < 0.005:
            target_mw = idle_mw + 500.0 * noise
        else:
            target_mw = idle_mw + (limit_mw - idle_mw) * (0.12 + 0.83 * load) + 0.01 * limit_mw * noise
        previous_mw = gpu.power_mw
        power_mw = round(previous_mw + 0.7 * (target_mw - previous_mw))
        floor_mw = (idle_mw * 97) // 100
        power_mw = floor_mw if power_mw < floor_mw else limit_mw if power_mw > limit_mw else power_mw
        gpu.power_mw = power_mw
        if tick == 0:
            return  # the first sample only sets the baseline
        # The interval as a reader computes it from the samples' times (floating point included).
        dt_s = self._t_s(tick) - self._t_s(tick - 1)
        # Trapezoid of the power: both ends are within the limit, so the delta is too (the floor keeps rounding in).
        delta_mj = min(round((previous_mw + power_mw) * dt_s / 2.0), math.floor(limit_mw * dt_s))
        if reset:
            # Driver reload during the interval: the counter restarted and holds only what came after.
            gpu.energy_mj = round(delta_mj * self._load_rng.uniform(0.2, 0.8))
        else:
            gpu.energy_mj += delta_mj

    def _grid_g_per_kwh(self, tick: int) -> float:
        """Grid intensity over a simulated day: a solar dip around 13:00 and an evening peak around 19:00."""
        hour = (self._t_s(tick) % _S_PER_DAY) / 3600.0
        value = (
            300.0
            - 120.0 * math.exp(-(((hour - 13.0) / 3.0) ** 2))
            + 70.0 * math.exp(-(((hour - 19.0) / 2.5) ** 2))
            + 6.0 * (2.0 * self._load_rng.random() - 1.0)
        )
        return round(value, 1)

"""Operator load benchmark: 10,000 live GPU pods and 200 Job completions per minute against a mock API.

This process runs a Kubernetes API emulator (kmock) and fake agents (one HTTP server answering for every node on
its own loopback address, 127.0.x.y); the operator runs as it does in a cluster, ``jouleledger operator``, in a
subprocess with a kubeconfig that points at the emulator. Measured: the operator process's CPU and RSS (from
/proc) and the delay from each Job's completion to the request that annotates it, against the target
p99 < 2 scrape intervals.

Time compression: the scrape interval defaults to 5 s (15 s in production); Job completions run at the real rate.
Both processes share this machine's cores, so the figures are an upper bound for the operator alone. Printed
figures are medians/percentiles and ratios, never assertions.

    .venv/bin/python -m bench.operator_load [--pods 10000] [--nodes 1250] [--jobs-per-minute 200]
        [--scrape-interval-s 5] [--duration-s 90] [--warmup-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
from prometheus_client.parser import text_string_to_metric_families
from tests._kube_emulator import (
    AGENT_NAMESPACE,
    IndexedEmulator,
    agent_pod,
    node_object,
    register_resources,
    rfc3339,
    send_bookmarks,
)
from tests._prometheus import SCRAPE_ACCEPT

from jouleledger.core.contract import (
    OPERATOR_COMPLETION_READS,
    OPERATOR_LAST_PASS_PHASE,
    OPERATOR_OLDEST_TICK_AGE,
    OPERATOR_PASS_DURATION,
)

POWER_W = 300.0
EPOCH = "00000000be4c4001"


@dataclass
class SimPod:
    namespace: str
    name: str
    uid: str
    node: str
    owner_kind: str
    owner_name: str
    owner_uid: str
    started_s: float
    finished_s: float | None = None

    def energy_j(self, now_s: float) -> float:
        end = self.finished_s if self.finished_s is not None else now_s
        return max(0.0, end - self.started_s) * POWER_W

    def gpu_seconds(self, now_s: float) -> float:
        end = self.finished_s if self.finished_s is not None else now_s
        return max(0.0, end - self.started_s)


@dataclass
class Simulation:
    nodes: list[str]
    ips: dict[str, str]
    by_node: dict[str, dict[str, SimPod]] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)
    scrapes: int = 0
    folded_scrapes: int = 0  # scrapes that asked to leave out folded pods (?folded_until=)
    exported_lines: int = 0
    started_s: float = 0.0
    retention_s: float = 3600.0

    def exposition(self, node: str, now_s: float, folded_until_s: float | None = None) -> str:
        """What the node's agent serves at ``now_s``; with ``folded_until_s`` (``?folded_until=``, as real agents
        honour it) without the pods that finished at or before it, unless it is later than the last tick."""
        tick = float(int(now_s))  # the agent ticks every second
        lines = [
            "# TYPE jouleledger_agent_info gauge",
            f'jouleledger_agent_info{{backend="nvml",epoch="{EPOCH}",node="{node}",simulated="false",'
            'version="0.1.0"} 1.0',
            "# TYPE jouleledger_agent_last_tick_timestamp_seconds gauge",
            f'jouleledger_agent_last_tick_timestamp_seconds{{node="{node}"}} {tick}',
            "# TYPE jouleledger_agent_ticks counter",
            f'jouleledger_agent_ticks_total{{node="{node}"}} {tick - self.started_s:.0f}',
            "# TYPE jouleledger_gpu_energy_joules counter",
            f'jouleledger_gpu_energy_joules_total{{gpu="GPU-0",model="NVIDIA H100 80GB HBM3",node="{node}"}} 1.0',
            "# TYPE jouleledger_pod_info gauge",
        ]
        pods = list(self.by_node.get(node, {}).values())
        if folded_until_s is not None and folded_until_s <= tick:
            pods = [p for p in pods if p.finished_s is None or float(int(p.finished_s)) > folded_until_s]
        for pod in pods:
            lines.append(
                f'jouleledger_pod_info{{label_team="t{hash(pod.namespace) % 7}",namespace="{pod.namespace}",'
                f'node="{node}",owner_kind="{pod.owner_kind}",owner_name="{pod.owner_name}",'
                f'owner_uid="{pod.owner_uid}",pod="{pod.name}",uid="{pod.uid}"}} 1.0'
            )
        lines.append("# TYPE jouleledger_pod_gpu_energy_joules counter")
        for index, pod in enumerate(pods):
            lines.append(
                f'jouleledger_pod_gpu_energy_joules_total{{container="main",gpu="GPU-{index % 8}",'
                f'namespace="{pod.namespace}",node="{node}",pod="{pod.name}"}} {pod.energy_j(tick):.3f}'
            )
        lines.append("# TYPE jouleledger_pod_gpu_seconds counter")
        for index, pod in enumerate(pods):
            lines.append(
                f'jouleledger_pod_gpu_seconds_total{{container="main",gpu="GPU-{index % 8}",'
                f'namespace="{pod.namespace}",node="{node}",pod="{pod.name}"}} {pod.gpu_seconds(tick):.3f}'
            )
        # As real agents do: a finished pod's final totals stay exported for the retention window, with the time it
        # was first seen gone.
        lines.append("# TYPE jouleledger_pod_finished_timestamp_seconds gauge")
        for pod in pods:
            if pod.finished_s is not None:
                lines.append(
                    f'jouleledger_pod_finished_timestamp_seconds{{namespace="{pod.namespace}",node="{node}",'
                    f'pod="{pod.name}"}} {float(int(pod.finished_s))}'
                )
        return "\n".join(lines) + "\n"


def pod_object(pod: SimPod) -> dict[str, Any]:
    api_version = "batch/v1" if pod.owner_kind == "Job" else "apps/v1"
    return {
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "resourceVersion": "1",
            "labels": {"team": f"t{hash(pod.namespace) % 7}"},
            "ownerReferences": [
                {
                    "apiVersion": api_version,
                    "kind": pod.owner_kind,
                    "name": pod.owner_name,
                    "uid": pod.owner_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {"nodeName": pod.node},
        "status": {"phase": "Running"},
    }


def populate(api: IndexedEmulator, sim: Simulation, pods: int, live_jobs: int, now_s: float) -> list[SimPod]:
    """Nodes and their agents, ``pods - live_jobs`` pods in Deployments of 40, and ``live_jobs`` one-pod Jobs."""
    for node in sim.nodes:
        api.objects["v1/nodes", None, node] = node_object(node, "z1")
        api.objects["v1/pods", AGENT_NAMESPACE, f"agent-{node}"] = agent_pod(node, sim.ips[node])
    rng = random.Random(7)
    jobs: list[SimPod] = []
    for index in range(pods):
        node = sim.nodes[index % len(sim.nodes)]
        namespace = f"team-{index % 20}"
        if index < pods - live_jobs:
            rs = index // 40
            namespace = f"team-{rs % 20}"  # a Deployment's pods share its namespace (its ReplicaSet is found there)
            rs_uid = f"rs-{rs}"
            pod = SimPod(
                namespace, f"svc-{rs}-{index}", f"pod-{index}", node, "ReplicaSet", f"svc-{rs}-rs", rs_uid, now_s
            )
            if index % 40 == 0:
                api.objects["apps/v1/replicasets", namespace, f"svc-{rs}-rs"] = {
                    "metadata": {
                        "name": f"svc-{rs}-rs",
                        "namespace": namespace,
                        "uid": rs_uid,
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": f"svc-{rs}",
                                "uid": f"dep-{rs}-{namespace}",
                                "controller": True,
                            }
                        ],
                    }
                }
        else:
            job = f"job-{index}"
            pod = SimPod(
                namespace, f"{job}-p", f"pod-{index}", node, "Job", job, f"uid-{job}", now_s - rng.uniform(0, 600)
            )
            api.objects["batch/v1/jobs", namespace, job] = {
                "metadata": {"name": job, "namespace": namespace, "uid": f"uid-{job}", "resourceVersion": "1"},
                "status": {},
            }
            jobs.append(pod)
        api.objects["v1/pods", pod.namespace, pod.name] = pod_object(pod)
        sim.by_node.setdefault(node, {})[pod.uid] = pod
    return jobs


async def drive_jobs(
    api: IndexedEmulator, sim: Simulation, jobs: list[SimPod], per_minute: float, stop: asyncio.Event
) -> None:
    """Complete the oldest running Job at ``per_minute`` and start a replacement on a random node."""
    rng = random.Random(11)
    counter = 10**6
    period = 60.0 / per_minute
    next_at = time.time()
    session = api.servers[0].client
    while not stop.is_set():
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.time()))
        pod = jobs.pop(0)
        now = time.time()
        pod.finished_s = now
        sim.completed_at[pod.owner_name] = now
        # As the Job controller writes it: the pod counted, none active or uncounted.
        status = {
            "status": {
                "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": rfc3339(now)}],
                "succeeded": 1,
                "uncountedTerminatedPods": {},
            }
        }
        async with session.patch(
            f"/apis/batch/v1/namespaces/{pod.namespace}/jobs/{pod.owner_name}/status", json=status
        ) as r:
            await r.read()
        counter += 1
        node = rng.choice(sim.nodes)
        job = f"job-{counter}"
        new = SimPod(pod.namespace, f"{job}-p", f"pod-{counter}", node, "Job", job, f"uid-{job}", now)
        body = {
            "metadata": {"name": job, "namespace": new.namespace, "uid": new.owner_uid, "resourceVersion": "1"},
            "status": {},
        }
        async with session.post(f"/apis/batch/v1/namespaces/{new.namespace}/jobs", json=body) as r:
            await r.read()
        async with session.post(f"/api/v1/namespaces/{new.namespace}/pods", json=pod_object(new)) as r:
            await r.read()
        sim.by_node.setdefault(node, {})[new.uid] = new
        jobs.append(new)
        # The agent forgets a finished pod after its retention window (real agents: 3600 s).
        for pods in sim.by_node.values():
            expired = [
                uid for uid, p in pods.items() if p.finished_s is not None and now - p.finished_s > sim.retention_s
            ]
            for uid in expired:
                del pods[uid]


@dataclass
class OperatorProcess:
    """``jouleledger operator`` in a subprocess against the emulator, its stderr kept (first 5,000 lines)."""

    process: asyncio.subprocess.Process
    stderr_lines: list[bytes]
    drainer: asyncio.Task[None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class HarnessLoop:
    """This benchmark process (the API emulator, the fake agents, the Job driver) kept responsive, and watched.

    Its heap holds every pod, Job, node and footprint the emulator stores (millions of containers at 100,000 pods):
    at CPython's default thresholds each full collection traversed all of it, 1-8 s at 100,000 pods during which the
    emulator answered nothing and the fake agents served no scrape, and the Jobs then waiting were charged to the
    operator's completion latency. So the heap is frozen (``gc.freeze``: reference counting still frees it, the
    collector no longer traverses it) after the cluster is seeded and every ``freeze_every_s`` after; what was frozen
    is unfrozen at the end. Every stall of the event loop over ``report_s`` is recorded with its time, so that a run
    whose delays the harness set shows it."""

    freeze_every_s: float = 30.0
    tick_s: float = 0.1
    report_s: float = 0.5
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds late)

    async def run(self, stop: asyncio.Event) -> None:
        gc.freeze()
        frozen_at = time.monotonic()
        try:
            while not stop.is_set():
                before = time.monotonic()
                await asyncio.sleep(self.tick_s)
                late = time.monotonic() - before - self.tick_s
                if late > self.report_s:
                    self.stalls.append((time.time() - late, late))
                if time.monotonic() - frozen_at >= self.freeze_every_s:
                    gc.freeze()
                    frozen_at = time.monotonic()
        finally:
            gc.unfreeze()

    def summary(self, since_s: float, until_s: float) -> str:
        window = [late for at, late in self.stalls if since_s <= at <= until_s]
        worst = f", the longest {max(window):.2f} s" if window else ""
        return (
            f"  benchmark process: {len(window)} event-loop stalls over {self.report_s:g} s in the window{worst} "
            f"(its heap frozen every {self.freeze_every_s:g} s)"
        )


@dataclass
class SelfMetrics:
    """The operator's own ``/metrics`` read every ``every_s`` during the measured window: its lag behind the oldest
    agent tick, its latest pass by phase, and its pass-duration histogram's sum and count at the first and last
    read (the mean pass time of the window). Each read asks as Prometheus' scrapes do (OpenMetrics preferred), so the
    operator's CPU includes what serving them costs."""

    port: int
    every_s: float
    lag_s: list[float] = field(default_factory=list)
    phases_s: dict[str, list[float]] = field(default_factory=dict)
    passes: list[tuple[float, float]] = field(default_factory=list)  # (sum, count) at each read
    completion_reads: list[float] = field(default_factory=list)  # the counter at each read
    errors: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    async with session.get(
                        f"http://127.0.0.1:{self.port}/metrics", headers={"Accept": SCRAPE_ACCEPT}
                    ) as response:
                        self._read(await response.text())
                except (aiohttp.ClientError, ValueError):
                    self.errors += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every_s)

    WANTED = (OPERATOR_OLDEST_TICK_AGE, OPERATOR_LAST_PASS_PHASE, OPERATOR_PASS_DURATION, OPERATOR_COMPLETION_READS)

    def _read(self, text: str) -> None:
        # Only the lines of the families read here go to the parser: at 12,500 nodes the exposition is about 50,000
        # lines, whose parsing stalled this process (the API emulator, the fake agents) for a second every read.
        wanted = "\n".join(
            line
            for line in text.splitlines()
            if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(self.WANTED)
        )
        total = {"sum": math.nan, "count": math.nan}
        for family in text_string_to_metric_families(wanted + "\n"):
            for sample in family.samples:
                if sample.name == OPERATOR_OLDEST_TICK_AGE:
                    self.lag_s.append(sample.value)
                elif sample.name == OPERATOR_LAST_PASS_PHASE:
                    self.phases_s.setdefault(sample.labels["phase"], []).append(sample.value)
                elif sample.name in (f"{OPERATOR_PASS_DURATION}_sum", f"{OPERATOR_PASS_DURATION}_count"):
                    total[sample.name.rsplit("_", 1)[1]] = sample.value
                elif sample.name == f"{OPERATOR_COMPLETION_READS}_total":
                    self.completion_reads.append(sample.value)
        self.passes.append((total["sum"], total["count"]))

    def summary(self) -> str:
        parts = []
        if self.lag_s:
            parts.append(
                f"lag behind the oldest agent tick median {statistics.median(self.lag_s):.1f} s "
                f"(max {max(self.lag_s):.1f} s)"
            )
        if self.phases_s:
            phases = ", ".join(f"{phase} {statistics.median(v):.2f} s" for phase, v in self.phases_s.items())
            parts.append(f"latest pass by phase, median: {phases}")
        if len(self.passes) >= 2 and self.passes[-1][1] > self.passes[0][1]:
            (sum0, count0), (sum1, count1) = self.passes[0], self.passes[-1]
            parts.append(f"mean pass {(sum1 - sum0) / (count1 - count0):.2f} s over {count1 - count0:.0f} passes")
        if len(self.completion_reads) >= 2:
            made = self.completion_reads[-1] - self.completion_reads[0]
            span_s = self.every_s * (len(self.completion_reads) - 1)
            parts.append(f"completion reads {made:.0f} ({made / span_s:.2f}/s)")
        reads = f"{len(self.passes)} reads every {self.every_s:g} s" + (
            f", {self.errors} failed" if self.errors else ""
        )
        return f"  operator's own metrics ({reads}): " + ("; ".join(parts) or "none")


async def start_operator_process(
    api: Any, tmp: str, args: argparse.Namespace, interval_s: float, extra: list[str], *, port: int = 0
) -> OperatorProcess:
    """Write a kubeconfig pointing at ``api`` and the operator's config into ``tmp``, start the operator with the
    common flags plus ``extra`` (``args.profile``: under cProfile), serving ``/metrics`` on ``port`` (0: any)."""
    kubeconfig = Path(tmp) / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\n"
        f"clusters: [{{name: bench, cluster: {{server: '{str(api.url).rstrip('/')}'}}}}]\n"
        "users: [{name: bench, user: {}}]\n"
        "contexts: [{name: bench, context: {cluster: bench, user: bench}}]\n"
    )
    config = Path(tmp) / "config.yaml"
    config.write_text(
        "pue: 1.2\nprice: {defaultPerKwh: 0.15}\nintensity: {provider: static, defaultGramsPerKwh: 400}\n"
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    command = [sys.executable, *profile, "-m", "jouleledger", "--log-level", args.operator_log_level]
    command += ["operator", "--config", str(config), "--listen-address", "127.0.0.1", "--port", str(port)]
    command += ["--agent-namespace", AGENT_NAMESPACE, "--standalone", "--scrape-interval-s", str(interval_s), *extra]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    lines: list[bytes] = []

    async def drain() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            if len(lines) < 5000:
                lines.append(line)

    return OperatorProcess(process, lines, asyncio.create_task(drain()))


RESULTS: dict[str, float] = {}
"""Figures of the latest run of :func:`main` (for bench/operator_curves.py)."""


def read_proc(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user + system), RSS and peak RSS in bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    rss = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu_s, rss, peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def main(args: argparse.Namespace) -> int:
    nodes = [f"gpu-{i:04d}" for i in range(args.nodes)]
    sim = Simulation(nodes, {node: f"127.{1 + i // 250}.{i % 250}.1" for i, node in enumerate(nodes)})
    sim.started_s, sim.retention_s = time.time(), args.agent_retention_s
    by_ip = {ip: node for node, ip in sim.ips.items()}

    async def metrics(request: aiohttp.web.Request) -> aiohttp.web.Response:
        local = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        sim.scrapes += 1
        raw = request.query.get("folded_until")
        if raw is not None:
            sim.folded_scrapes += 1
        text = sim.exposition(by_ip.get(local, ""), time.time(), None if raw is None else float(raw))
        sim.exported_lines += text.count("\n")
        return aiohttp.web.Response(text=text, content_type="text/plain")

    agent_app = aiohttp.web.Application()
    agent_app.router.add_get("/metrics", metrics)
    runner = aiohttp.web.AppRunner(agent_app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    agent_port = runner.addresses[0][1]

    async with IndexedEmulator() as api, kmock.Server(api):
        register_resources(api)  # the same API surface as the operator's tests
        live_jobs = max(1, int(args.jobs_per_minute * args.job_minutes))
        started = time.time()
        jobs = populate(api, sim, args.pods, min(live_jobs, args.pods), started)
        with tempfile.TemporaryDirectory() as tmp:
            self_metrics = SelfMetrics(free_port(), args.scrape_interval_s)
            launched = await start_operator_process(
                api, tmp, args, args.scrape_interval_s, ["--agent-port", str(agent_port)], port=self_metrics.port
            )
            operator, stderr_lines = launched.process, launched.stderr_lines
            stop, window_over = asyncio.Event(), asyncio.Event()
            driver = asyncio.create_task(drive_jobs(api, sim, jobs, args.jobs_per_minute, stop))
            bookmarks = asyncio.create_task(send_bookmarks(api, stop))
            harness = HarnessLoop()
            watcher = asyncio.create_task(harness.run(stop))
            await asyncio.sleep(args.warmup_s)
            cpu0, _, _ = read_proc(operator.pid)
            t0 = time.time()
            scrapes0, folded0, lines0 = sim.scrapes, sim.folded_scrapes, sim.exported_lines
            sampler = asyncio.create_task(self_metrics.run(window_over))
            await asyncio.sleep(args.duration_s)
            cpu1, rss, peak = read_proc(operator.pid)
            t1 = time.time()
            scrapes1, folded1, lines1 = sim.scrapes, sim.folded_scrapes, sim.exported_lines
            window_over.set()
            await sampler
            stop.set()
            driver.cancel()
            bookmarks.cancel()
            await watcher
            operator.terminate()
            await operator.wait()
            launched.drainer.cancel()

    await runner.cleanup()
    delays = [
        api.annotated_at[job] - done
        for job, done in sim.completed_at.items()
        if t0 <= done <= t1 - 2 * args.scrape_interval_s and job in api.annotated_at
    ]
    considered = [job for job, done in sim.completed_at.items() if t0 <= done <= t1 - 2 * args.scrape_interval_s]
    wall = t1 - t0
    passes = (scrapes1 - scrapes0) / max(1, args.nodes)
    print("Joule Ledger operator load benchmark (mock API: kmock; agents: fake expositions on loopback)")
    print(f"  pods live: {args.pods} on {args.nodes} nodes; Job completions: {args.jobs_per_minute:g}/min (real time)")
    compressed = "time-compressed; " if args.scrape_interval_s < 15 else ""
    print(f"  scrape interval: {args.scrape_interval_s:g} s ({compressed}production default 15 s)")
    print(f"  measured window: {wall:.0f} s after {args.warmup_s:g} s warm-up; passes in window: {passes:.1f}")
    cpu_s = cpu1 - cpu0
    print(f"  operator CPU: {100 * cpu_s / wall:.1f} % of one core ({cpu_s / max(passes, 1):.2f} s per pass)")
    print(f"  operator RSS: {rss / 2**20:.0f} MiB (peak {peak / 2**20:.0f} MiB)")
    exported = sum(len(pods) for pods in sim.by_node.values())
    finished = sum(1 for pods in sim.by_node.values() for p in pods.values() if p.finished_s is not None)
    retention = f"kept {args.agent_retention_s:g} s"
    print(f"  pods retained by the agents at the end: {exported} ({finished} finished, {retention})")
    window_scrapes = max(1, scrapes1 - scrapes0)
    print(
        f"  exposition lines per scrape in window: {(lines1 - lines0) / window_scrapes:.0f}; "
        f"scrapes with ?folded_until=: {100 * (folded1 - folded0) / window_scrapes:.0f} %"
    )
    RESULTS.update(cpu_per_pass_s=cpu_s / max(passes, 1), exported=exported, finished=finished)
    if delays:
        p50, p99 = statistics.median(delays), percentile(delays, 99)
        print(f"  completion -> annotation delay: p50 {p50:.2f} s, p99 {p99:.2f} s over {len(delays)} Jobs")
        print(f"  p99 / scrape interval: {p99 / args.scrape_interval_s:.2f} (target < 2)")
    print(f"  Jobs annotated in window: {len(delays)}/{len(considered)}")
    print(self_metrics.summary())
    print(harness.summary(t0, t1))
    print(f"  API writes by the operator: {dict(sorted(api.writes.items()))}")
    print(f"  watch events sent to the operator: {dict(sorted(api.watch_events.items()))}")
    if args.show_watches:
        for request in api._requests:
            if request.params.get("watch") == "true" or (
                request.method.value == "GET"
                and "limit" not in request.params
                and request.name is None
                and request.resource is not None
                and request.resource.plural
            ):
                print("   ", request.method.value, request.url.path_qs)
    if len(delays) < len(considered) or args.operator_log_level != "WARNING":
        print_operator_stderr(stderr_lines, 60)
    return 0


def print_operator_stderr(lines: list[bytes], count: int) -> None:
    """The last ``count`` lines the operator wrote to stderr (when Jobs went unannotated, or asked for)."""
    print("  operator stderr (last lines):")
    for line in lines[-count:]:
        print("   ", line.decode(errors="replace").rstrip())


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both operator benchmarks share: the Job churn, the agents' retention, the operator's profile and
    log level."""
    parser.add_argument("--jobs-per-minute", type=float, default=200.0)
    parser.add_argument("--job-minutes", type=float, default=10.0, help="how long a Job's pod runs (live Jobs)")
    parser.add_argument(
        "--agent-retention-s", type=float, default=3600.0, help="how long agents export a finished pod (real: 3600)"
    )
    parser.add_argument("--profile", default="", help="write a cProfile of the operator process to this file")
    parser.add_argument("--operator-log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_250)
    parser.add_argument("--scrape-interval-s", type=float, default=5.0)
    parser.add_argument("--duration-s", type=float, default=90.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--show-watches", action="store_true", help="print the list and watch requests served")
    add_workload_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

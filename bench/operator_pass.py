"""CPU of the accounting pass itself, in-process: parsing every agent's exposition, the deltas, owner checks and the
fold, without HTTP, the API or kopf.

``bench/operator_load.py`` measures the whole operator process against an emulated API and fake agents over the
network; this benchmark takes the network and the API out, so the pure accounting cost of one pass at size can be
profiled and compared before and after a change. The cluster is ``bench/operator_load.py``'s (Deployments of 40
pods, one-pod Jobs, 8 pods a node by default, finished pods exported as real agents do); each pass serves every
agent's exposition at a tick one interval later, and the accountant (``--dry-run``: footprints are not written)
runs ``run_pass`` over it. The expositions are rendered before the timing starts.

Printed: CPU per pass (process time), median of ``--passes`` passes after ``--warmup`` passes, per node and per
pod, and the garbage collections during the measured passes (count and CPU, from ``gc.callbacks``). ``--profile
FILE`` writes a cProfile of the measured passes.

``--source prometheus`` reads the same counters as ``--source prometheus`` does: one instant-query answer (built
from the expositions, as Prometheus returns them) decoded, regrouped by node and parsed by the real source.

    .venv/bin/python -m bench.operator_pass [--nodes 2500] [--pods 20000] [--passes 5] [--profile FILE]
        [--source direct|prometheus]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from tests._kube_emulator import AGENT_NAMESPACE
from tests.controller._operator import FIXTURE_CONFIG, ScriptedIntensity

from bench.operator_load import Simulation, populate
from bench.promsource_parse import vector_body
from jouleledger.controller.accountant import Accountant
from jouleledger.controller.cluster import AgentTarget, ClusterState
from jouleledger.controller.main import GC_THRESHOLDS
from jouleledger.controller.promsource import PrometheusSource
from jouleledger.controller.scrape import OK, ScrapeOutcome
from jouleledger.core.deltas import ParseMemo, parse_agent_samples
from jouleledger.kube.api import KubeApi
from jouleledger.metrics.operator_collector import LabelsCache, parse_exposition
from jouleledger.promapi import PrometheusApi

INTERVAL_S = 15.0


class Objects:
    """What ``populate`` writes: the emulator's object table only."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}


class RenderedSource:
    """An accounting source that parses pre-rendered expositions, as the direct scraper parses what it fetched."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self._labels: dict[str, LabelsCache] = {}
        self._memos: dict[str, ParseMemo] = {}

    async def scrape_all(
        self, targets: Sequence[AgentTarget], folded_until: Mapping[str, float] | None = None
    ) -> list[ScrapeOutcome]:
        outcomes = []
        for target in targets:
            samples = parse_exposition(self.texts[target.node], self._labels.setdefault(target.node, {}))
            memo = self._memos.setdefault(target.node, ParseMemo())
            scrape = parse_agent_samples(samples, expected_node=target.node, memo=memo)
            outcomes.append(ScrapeOutcome(target, OK, scrape))
        return outcomes


class PrometheusAnswer:
    """``--source prometheus``: the instant-query answer Prometheus would give for the rendered expositions
    (compact JSON, with ``job`` and ``instance`` as ``agent_query`` returns them), served to the real
    :class:`PrometheusSource` through an ``httpx.MockTransport``. The answer is built before each pass's timing
    starts."""

    def __init__(self) -> None:
        self.body = b""

    def render(self, texts: Mapping[str, str], now_s: float) -> None:
        self.body, _ = vector_body(texts.values(), now_s)

    def source(self, cluster: ClusterState, clock: Callable[[], float]) -> PrometheusSource:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, content=self.body))
        api = PrometheusApi(httpx.Client(base_url="http://prometheus", transport=transport))
        return PrometheusSource(api, clock=clock, live_pods=cluster.pods)


class Collections:
    """The garbage collections during the measured passes, and the CPU they took (from gc.callbacks)."""

    def __init__(self) -> None:
        self.measuring = False
        self.count = 0
        self.cpu_s = 0.0
        self._started_s = 0.0

    def record(self, phase: str, info: Mapping[str, Any]) -> None:
        if not self.measuring:
            return
        if phase == "start":
            self._started_s = time.process_time()
        else:
            self.count += 1
            self.cpu_s += time.process_time() - self._started_s


def cluster_of(objects: Objects) -> ClusterState:
    cluster = ClusterState(
        team_label="team",
        agent_namespace=AGENT_NAMESPACE,
        agent_selector={"app.kubernetes.io/component": "agent"},
        agent_port=9400,
        zone_of=FIXTURE_CONFIG.zone_of,
    )
    order = {"v1/nodes": 0, "apps/v1/replicasets": 1, "batch/v1/jobs": 2, "v1/pods": 3}
    plural = {"v1/nodes": "nodes", "apps/v1/replicasets": "replicasets", "batch/v1/jobs": "jobs", "v1/pods": "pods"}
    for (resource, _, _), body in sorted(objects.objects.items(), key=lambda item: order[item[0][0]]):
        cluster.apply(plural[resource], None, body)
    return cluster


async def measure(args: argparse.Namespace) -> tuple[list[float], int]:
    nodes = [f"node-{index:05d}" for index in range(args.nodes)]
    ips = {node: f"10.{index // 65536}.{index // 256 % 256}.{index % 256}" for index, node in enumerate(nodes)}
    sim = Simulation(nodes, ips)
    start_s = time.time() - 3600
    sim.started_s = start_s - 600
    objects = Objects()
    jobs = populate(objects, sim, args.pods, args.live_jobs, start_s)  # type: ignore[arg-type]
    for pod in jobs[: len(jobs) // 10]:  # finished Jobs' pods, still exported as real agents keep them
        pod.finished_s = start_s - 60
    rendered = RenderedSource()
    answer = PrometheusAnswer()
    clock = [start_s]
    cluster = cluster_of(objects)
    source = answer.source(cluster, lambda: clock[0]) if args.source == "prometheus" else rendered
    accountant = Accountant(
        config=FIXTURE_CONFIG,
        provider=ScriptedIntensity(),
        api=KubeApi.__new__(KubeApi),  # dry run: never called
        scraper=source,
        cluster=cluster,
        scrape_interval_s=INTERVAL_S,
        dry_run=True,
        clock=lambda: clock[0],
    )
    accountant.restored = True
    times: list[float] = []
    profile = cProfile.Profile() if args.profile else None
    collecting = Collections()
    gc.callbacks.append(collecting.record)
    for index in range(args.warmup + args.passes):
        clock[0] += INTERVAL_S
        rendered.texts = {node: sim.exposition(node, clock[0]) for node in nodes}
        if args.source == "prometheus":
            answer.render(rendered.texts, clock[0])
        measured = index >= args.warmup
        if measured and profile is not None:
            profile.enable()
        began = time.process_time()
        collecting.measuring = measured
        await accountant.run_pass()
        collecting.measuring = False
        if measured:
            times.append(time.process_time() - began)
            if profile is not None:
                profile.disable()
    if profile is not None:
        profile.dump_stats(args.profile)
    gc.callbacks.remove(collecting.record)
    return times, sum(len(pods) for pods in sim.by_node.values()), collecting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=2500)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--live-jobs", type=int, default=2000, help="one-pod Jobs among the pods (10%% finished)")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="passes before the measured ones (footprints created)")
    parser.add_argument("--profile", default="", help="write a cProfile of the measured passes to this file")
    parser.add_argument(
        "--source", choices=("direct", "prometheus"), default="direct", help="parse expositions, or a query answer"
    )
    args = parser.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    times, exported, collections = asyncio.run(measure(args))
    median = statistics.median(times)
    print(f"Joule Ledger accounting pass, in-process (no HTTP, no API writes, no kopf); source: {args.source}")
    print(f"  nodes: {args.nodes}; pods exported: {exported} ({args.pods} live)")
    print(f"  CPU per pass: median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}, {len(times)} passes)")
    print(f"  per node: {1e3 * median / args.nodes:.3f} ms; per exported pod: {1e6 * median / exported:.1f} us")
    print(
        f"  garbage collections in the measured passes: {collections.count / len(times):.1f} a pass, "
        f"{collections.cpu_s / len(times):.3f} s of CPU a pass"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU the Prometheus accounting source spends per series of its query result, apart from Prometheus and the API.

Builds the instant-query answer Prometheus gives for ``--nodes`` agents of ``bench/operator_load.py``'s simulation
(8 pods each by default; the agents' own labels, plus ``job`` and ``instance`` with ``--with-target-labels`` as
``agent_query`` returns them), and runs what one pass of ``--source prometheus`` runs on it: the client's JSON
decoding (through an ``httpx.MockTransport``), the regrouping by node (``samples_by_node``) and the agent-sample
parser of every node.
Printed: CPU (process time, so other processes on the machine count less) per pass and per series, median of
``--repeat`` passes (the first decodes every label set, the next ones find them in the client's and the source's
memos, as the operator's passes do), under CPython's default garbage-collector thresholds and under the operator's
(``jouleledger.controller.main.GC_THRESHOLDS``, which ``jouleledger operator`` sets), and the ratio. The previous
pass's result stays alive while the next is decoded, as the operator's ledger does.

    .venv/bin/python -m bench.promsource_parse [--nodes 3000] [--pods-per-node 8] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Iterable

import httpx

from bench.operator_load import SimPod, Simulation
from jouleledger.controller.main import GC_THRESHOLDS
from jouleledger.core.deltas import ParseMemo, parse_agent_samples
from jouleledger.core.promsource import RegroupMemo, samples_by_node
from jouleledger.metrics.operator_collector import parse_exposition
from jouleledger.promapi import PrometheusApi


def answer(nodes: list[str], pods_per_node: int, now_s: float, *, lean: bool) -> tuple[bytes, int]:
    """The JSON body of the source's instant query over ``nodes`` (with ``job`` and ``instance``, as ``agent_query``
    returns them; ``lean``: without them), and its number of series."""
    sim = Simulation(nodes, {})
    sim.started_s = now_s - 1000
    for i, node in enumerate(nodes):
        for k in range(pods_per_node):
            index = i * pods_per_node + k
            pod = SimPod(
                f"team-{index % 20}", f"svc-{index}", f"pod-{index}", node, "ReplicaSet", "svc-rs", "rs-1", now_s - 500
            )
            sim.by_node.setdefault(node, {})[pod.uid] = pod
    return vector_body([sim.exposition(node, now_s) for node in nodes], now_s, target_labels=not lean)


def vector_body(expositions: Iterable[str], now_s: float, *, target_labels: bool = True) -> tuple[bytes, int]:
    """The instant-query answer Prometheus gives for these agents' expositions (one per node), as it writes it:
    compact UTF-8 JSON, labels sorted, with ``job`` and ``instance`` (64 targets) unless ``target_labels`` is
    False; and its number of series."""
    result = []
    for i, text in enumerate(expositions):
        target = {"instance": f"slice-{i % 64}", "job": "agents"} if target_labels else {}
        for name, labels, value in parse_exposition(text):
            metric = dict(sorted({"__name__": name, **labels, **target}.items()))
            result.append({"metric": metric, "value": [now_s, repr(value)]})
    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), len(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--pods-per-node", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--without-target-labels", action="store_true", help="an answer without job and instance")
    args = parser.parse_args(argv)
    nodes = [f"gpu-{i:05d}" for i in range(args.nodes)]
    now = time.time()
    body, series = answer(nodes, args.pods_per_node, now, lean=args.without_target_labels)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    api = PrometheusApi(httpx.Client(base_url="http://prometheus", transport=httpx.MockTransport(handler)))
    print("Joule Ledger Prometheus source: CPU per pass on a synthetic query result (process time, medians)")
    labels = "without target labels" if args.without_target_labels else "with job and instance (agent_query's answer)"
    size = f"{len(body) / 2**20:.1f} MiB of JSON {labels}"
    print(f"  {args.nodes} nodes x {args.pods_per_node} pods: {series} series, {size}")
    totals: dict[str, float] = {}
    before = gc.get_threshold()
    try:
        for name, thresholds in (("default", (700, 10, 10)), ("operator", GC_THRESHOLDS)):
            whose = "CPython default" if name == "default" else "the operator"
            gc.set_threshold(*thresholds)
            phases = _run(api, nodes, now, args.repeat)
            print(f"  garbage-collector thresholds {thresholds} ({whose}):")
            for phase, values in phases.items():
                median = statistics.median(values)
                print(f"    {phase:>6}: {median:.2f} s per pass, {1e6 * median / series:.1f} us per series")
            totals[name] = statistics.median(phases["total"])
    finally:
        gc.set_threshold(*before)
    print(f"  total, default / operator's thresholds: {totals['default'] / totals['operator']:.2f}x")
    return 0


def _run(api: PrometheusApi, nodes: list[str], now: float, repeat: int) -> dict[str, list[float]]:
    phases: dict[str, list[float]] = {"decode": [], "group": [], "parse": [], "total": []}
    kept: object = None  # the previous pass's samples, alive while the next is decoded
    regroup = RegroupMemo()  # as the source keeps them from pass to pass
    memos = {node: ParseMemo() for node in nodes}
    for _ in range(repeat):
        started = time.process_time()
        result = api.query("q", now)
        decoded = time.process_time()
        by_node = samples_by_node(result, regroup)
        grouped = time.process_time()
        for node in nodes:
            parse_agent_samples(by_node[node], expected_node=node, memo=memos[node])
        parsed = time.process_time()
        kept = (result, by_node)
        phases["decode"].append(decoded - started)
        phases["group"].append(grouped - decoded)
        phases["parse"].append(parsed - grouped)
        phases["total"].append(parsed - started)
    del kept
    return phases


if __name__ == "__main__":
    sys.exit(main())

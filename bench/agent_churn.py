"""Agent churn soak: a stream of short-lived pods through one agent (default 100,000 pods), then the figures.

Prints figures; asserts nothing (this machine is shared and noisy). What it shows: the exposition's per-pod series
stay bounded by the live pods plus those inside the retention window, nothing is exported after its retention, and
memory does not grow with the number of pods that have passed.

    python -m bench.agent_churn [--pods 100000] [--lifetime-s 20] [--retention-s 120] [--checkpoint]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bench.agent_tick import rss_mib
from jouleledger.agent.runner import AgentRunner
from jouleledger.core.contract import POD_ENERGY
from jouleledger.hardware.simulated import SimulatedNode
from jouleledger.metrics.agent import AgentCollector

SERIES_PREFIX = f"{POD_ENERGY}_total{{".encode()


class CountingSource:
    """The simulated node, counting the pods that appear (memory bounded by the live pods, not all seen)."""

    def __init__(self, node: SimulatedNode) -> None:
        self.node = node
        self.seen = 0
        self._previous: set[str] = set()

    @property
    def simulated(self) -> bool:
        return True

    def header(self):  # type: ignore[no-untyped-def]
        return self.node.header()

    def sample(self):  # type: ignore[no-untyped-def]
        sample = self.node.sample()
        if sample is not None:
            current = {pod.key for pod in sample.pods}
            self.seen += len(current - self._previous)
            self._previous = current
        return sample

    def close(self) -> None:
        self.node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=100_000, help="pods to pass through the agent")
    parser.add_argument("--lifetime-s", type=float, default=20.0, help="mean pod lifetime (simulated seconds)")
    parser.add_argument("--retention-s", type=float, default=120.0, help="how long finished pods stay exported")
    parser.add_argument("--checkpoint", action="store_true", help="keep the checkpoint and journal as the DaemonSet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    node = SimulatedNode(
        node="churn-gpu-node",
        gpus=8,
        seed=args.seed,
        mig_gpus=2,
        timeslice_gpus=4,
        timeslice_replicas=32,
        pods_target=200,
        mean_lifetime_s=args.lifetime_s,
        mean_idle_s=1.0,
    )
    source = CountingSource(node)
    with tempfile.TemporaryDirectory() as tmp:
        runner = AgentRunner(
            source,  # type: ignore[arg-type]
            backend="simulated",
            retention_s=args.retention_s,
            checkpoint_path=Path(tmp) / "ck.json" if args.checkpoint else None,
        )
        registry = CollectorRegistry()
        registry.register(AgentCollector(runner.view))
        ticks = 0
        series: list[int] = []
        rss: list[float] = []
        start = time.perf_counter()
        while source.seen < args.pods:
            runner.tick()
            ticks += 1
            if ticks % 500 == 0:
                body = generate_latest(registry)
                series.append(sum(1 for line in body.splitlines() if line.startswith(SERIES_PREFIX)))
                gc.collect()
                rss.append(rss_mib())
        wall = time.perf_counter() - start
        snapshot = runner.view().ledger
        stale = sum(
            1
            for pod in snapshot.pods.values()
            if pod.finished_s is not None and snapshot.t_s - pod.finished_s >= args.retention_s
        )
        runner.close()

    half = len(rss) // 2
    first, last = rss[half], rss[-1]
    print(
        f"agent churn soak: {source.seen} pods through one agent in {ticks} ticks "
        f"(mean lifetime {args.lifetime_s:g} s, retention {args.retention_s:g} s"
        f"{', checkpoint' if args.checkpoint else ''}), wall {wall:.1f} s"
    )
    print(f"  per-pod energy series per scrape: max {max(series)}, last {series[-1]} (sampled every 500 ticks)")
    print(f"  retained pods at the end: {len(snapshot.pods)}; exported after their retention: {stale}")
    print(f"  RSS (MiB) every 500 ticks: {', '.join(f'{value:.1f}' for value in rss)}")
    print(f"  RSS growth over the second half: {last - first:+.1f} MiB ({(last - first) / first * 100:+.1f} %)")


if __name__ == "__main__":
    main()

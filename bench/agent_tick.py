"""Agent tick benchmark: CPU per tick and memory over a long run on the simulated 8-GPU, ~200-pod node.

Prints figures; asserts nothing (this machine is shared and noisy: medians and ratios are what to compare).

    python -m bench.agent_tick [--ticks 100000] [--no-checkpoint]

What one tick costs is split into: generating the simulated sample (stands in for NVML + kubelet + /proc reads,
which on a real node are driver and syscall time), and the rest: attribution, counters and the checkpoint (a
journal line per tick, the full file every 300 ticks), as the DaemonSet runs it. Scrape cost is measured
separately: it is per scrape (every 15-60 s), not per tick.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import tempfile
import time
from array import array
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from jouleledger.agent.runner import AgentRunner
from jouleledger.hardware.simulated import SimulatedNode
from jouleledger.metrics.agent import AgentCollector


class TimedSource:
    """Wraps the simulated node to take its own sample-generation time out of the tick figure."""

    def __init__(self, node: SimulatedNode, ticks: int) -> None:
        self.node = node
        # Preallocated, so that the benchmark's own bookkeeping does not show up as RSS growth.
        self.sample_cpu_s = array("d", bytes(8 * ticks))
        self.count = 0

    @property
    def simulated(self) -> bool:
        return True

    def header(self):  # type: ignore[no-untyped-def]
        return self.node.header()

    def sample(self):  # type: ignore[no-untyped-def]
        start = time.process_time()
        sample = self.node.sample()
        self.sample_cpu_s[self.count] = time.process_time() - start
        self.count += 1
        return sample

    def close(self) -> None:
        self.node.close()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=100_000)
    parser.add_argument(
        "--no-checkpoint", dest="checkpoint", action="store_false", help="leave out the checkpoint/journal writes"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    source = TimedSource(SimulatedNode.benchmark(seed=args.seed), args.ticks)
    with tempfile.TemporaryDirectory() as tmp:
        runner = AgentRunner(
            source,  # type: ignore[arg-type]
            backend="simulated",
            retention_s=600.0,
            checkpoint_path=Path(tmp) / "ck.json" if args.checkpoint else None,
        )
        registry = CollectorRegistry()
        registry.register(AgentCollector(runner.view))
        tick_cpu = array("d", bytes(8 * args.ticks))
        rss_points: list[tuple[int, float]] = []
        scrape_cpu: list[float] = []
        scrape_bytes = 0
        live_pods: list[int] = []
        gc.collect()
        start_wall = time.perf_counter()
        for tick in range(1, args.ticks + 1):
            start = time.process_time()
            runner.tick()
            tick_cpu[tick - 1] = time.process_time() - start
            if tick % 1000 == 0:
                snapshot = runner.view().ledger
                live_pods.append(sum(1 for pod in snapshot.pods.values() if pod.finished_s is None))
            if tick % 15 == 0 and len(scrape_cpu) < 200:
                start = time.process_time()
                body = generate_latest(registry)
                scrape_cpu.append(time.process_time() - start)
                scrape_bytes = len(body)
            if tick % max(1, args.ticks // 10) == 0:
                gc.collect()
                rss_points.append((tick, rss_mib()))
        wall = time.perf_counter() - start_wall

    sample_cpu = source.sample_cpu_s
    pipeline_cpu = [total - gen for total, gen in zip(tick_cpu, sample_cpu, strict=False)]
    ms = 1000.0
    print(f"agent tick benchmark: {args.ticks} ticks, 8 GPUs (2 exclusive, 4 time-sliced x32, 2 MIG), churn")
    print(f"  live pods: median {statistics.median(live_pods):.0f} (min {min(live_pods)}, max {max(live_pods)})")
    print(f"  pipeline CPU per tick (attribution + counters{' + checkpoint' if args.checkpoint else ''}):")
    print(
        f"    median {statistics.median(pipeline_cpu) * ms:.3f} ms, p90 "
        f"{statistics.quantiles(pipeline_cpu, n=10)[-1] * ms:.3f} ms, mean {statistics.fmean(pipeline_cpu) * ms:.3f} ms"
        f"  -> {statistics.fmean(pipeline_cpu) * 100:.3f} % of a core at 1 Hz"
    )
    print(f"  sample generation (stands in for driver reads): median {statistics.median(sample_cpu) * ms:.3f} ms")
    print(f"  scrape: median {statistics.median(scrape_cpu) * ms:.2f} ms CPU, {scrape_bytes / 1024:.0f} KiB exposition")
    print("  RSS (MiB) by tick: " + ", ".join(f"{tick}: {rss:.1f}" for tick, rss in rss_points))
    first_half = rss_points[len(rss_points) // 2][1]
    print(f"  RSS growth over the second half of the run: {rss_points[-1][1] - first_half:+.1f} MiB")
    print(f"  wall time {wall:.1f} s")


if __name__ == "__main__":
    main()

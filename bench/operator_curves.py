"""Cost curves of the operator: CPU per pass against nodes (pods fixed per node) and against pods (nodes fixed),
three sizes each, from bench/operator_load.py runs; prints the figures and a least-squares line per curve.

Small sizes so that the six runs finish in a few minutes on a shared 2-core machine; the lines extrapolate them.

    .venv/bin/python -m bench.operator_curves [--duration-s 20] [--warmup-s 12] [--scrape-interval-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench import operator_load


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x``: ``(a, b)``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def run(nodes: int, pods: int, args: argparse.Namespace) -> float:
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--duration-s", str(args.duration_s)]
    argv += ["--warmup-s", str(args.warmup_s), "--scrape-interval-s", str(args.scrape_interval_s)]
    argv += ["--jobs-per-minute", str(args.jobs_per_minute)]
    asyncio.run(operator_load.main(operator_load.parse_args(argv)))
    return operator_load.RESULTS["cpu_per_pass_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=12.0)
    parser.add_argument("--scrape-interval-s", type=float, default=5.0)
    parser.add_argument("--jobs-per-minute", type=float, default=200.0)
    parser.add_argument("--nodes", type=int, nargs=3, default=[32, 64, 128], help="node sizes (8 pods a node)")
    parser.add_argument("--pods", type=int, nargs=3, default=[250, 500, 1000], help="pod sizes (on 32 nodes)")
    args = parser.parse_args(argv)
    by_nodes = [(float(n), run(n, 8 * n, args)) for n in args.nodes]
    by_pods = [(float(p), run(args.nodes[0], p, args)) for p in args.pods]
    print("\nOperator CPU per pass (s), direct mode, realistic agents (finished pods kept 3600 s)")
    print("  nodes (8 pods each):  " + "  ".join(f"{int(n)}: {c:.3f}" for n, c in by_nodes))
    print(f"  pods (on {args.nodes[0]} nodes):  " + "  ".join(f"{int(p)}: {c:.3f}" for p, c in by_pods))
    a, b = fit(by_nodes)
    print(f"  fit against nodes: {a:.3f} s + {1000 * b:.3f} ms per node (8 pods each)")
    a2, b2 = fit(by_pods)
    print(f"  fit against pods: {a2:.3f} s + {1000 * b2:.4f} ms per pod (nodes fixed)")
    for nodes in (1250, 2500, 12500):
        print(f"  extrapolated to {nodes} nodes / {8 * nodes} pods: {a + b * nodes:.2f} s per pass (linear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

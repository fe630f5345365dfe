"""CPU of one scrape of the operator's ``/metrics`` against the number of nodes, as Prometheus scrapes it.

The operator exports a few series per node (idle energy, its carbon and cost, the grid intensity applied), so its
exposition grows with the cluster: at 12,500 nodes about 50,000 lines. Prometheus 2.x asks for OpenMetrics first;
prometheus_client writes that format about twice as slowly as the classic text format for the same series, so the
operator's server answers in the text format whenever the request accepts it (``MetricsServer(prefer_text=True)``).
This benchmark serves one synthetic :class:`~jouleledger.core.operator_stats.OperatorView` of each size from two
real servers, one negotiating as prometheus_client does and one preferring text, and scrapes each with
Prometheus' ``Accept`` header and gzip over HTTP on 127.0.0.1.

Printed per size: the median process CPU of ``--scrapes`` scrapes from each server (the server thread and the
client both run in this process; the client's share is the same for both), the ratio, and the body size.

    .venv/bin/python -m bench.operator_metrics [--nodes 1250,5000,12500] [--scrapes 7]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
import urllib.request
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from tests._prometheus import SCRAPE_ACCEPT

from jouleledger.core.footprints import RollupSnapshot, Totals
from jouleledger.core.operator_stats import NodeIntensity, OperatorView
from jouleledger.metrics.operator_collector import OperatorCollector
from jouleledger.metrics.server import MetricsServer

ZONES = ("DE", "FR", "US-CAL-CISO", "SE-SE3")


def view_of(nodes: int) -> OperatorView:
    """A view of a cluster of ``nodes`` GPU nodes in four zones, 40 namespaces and 10 teams."""
    names = [f"gpu-node-{index:05d}.cluster.local" for index in range(nodes)]
    totals = Totals(123_456_789, 3_600.5, 12.25, 3.5, 0.75, 0)
    rollups = RollupSnapshot(
        namespaces={f"ns-{index}": totals for index in range(40)},
        teams={f"team-{index}": totals for index in range(10)},
        unallocated_mj={name: 1_000_003 * (index + 1) for index, name in enumerate(names)},
        currency="EUR",
        unallocated_g={name: 0.375 * (index + 1) for index, name in enumerate(names)},
        unallocated_cost={name: 0.0125 * (index + 1) for index, name in enumerate(names)},
    )
    intensity = {
        name: NodeIntensity(ZONES[index % len(ZONES)], "electricitymaps", 120.0 + index % 300)
        for index, name in enumerate(names)
    }
    return OperatorView(rollups=rollups, node_intensity=intensity, agents=nodes, scrapes={"ok": nodes})


def constant(view: OperatorView) -> Callable[[], OperatorView]:
    """The collector's view provider: always ``view``."""
    return lambda: view


def scrape_cpu_s(server: MetricsServer, scrapes: int) -> tuple[float, int, str]:
    """Median CPU of one scrape, the uncompressed body's bytes, and the answer's content type."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics", headers={"Accept": SCRAPE_ACCEPT, "Accept-Encoding": "gzip"}
    )
    cpu_s: list[float] = []
    size, content_type = 0, ""
    for _ in range(scrapes):
        started = time.process_time()
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            content_type = response.headers["Content-Type"]
        cpu_s.append(time.process_time() - started)
        size = len(gzip.decompress(body))
    return statistics.median(cpu_s), size, content_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1250,5000,12500", help="comma-separated cluster sizes")
    parser.add_argument("--scrapes", type=int, default=7)
    args = parser.parse_args()
    print("Joule Ledger operator /metrics, one scrape as Prometheus asks for it (OpenMetrics preferred, gzip)")
    for nodes in (int(part) for part in args.nodes.split(",")):
        view = view_of(nodes)
        registry = CollectorRegistry()
        registry.register(OperatorCollector(constant(view)))
        figures = []
        for prefer_text in (False, True):
            server = MetricsServer(registry, lambda: (True, {}), request_timeout_s=60.0, prefer_text=prefer_text)
            server.start("127.0.0.1", 0)
            try:
                figures.append(scrape_cpu_s(server, args.scrapes))
            finally:
                server.stop()
        (negotiated_s, negotiated_bytes, negotiated_type), (text_s, text_bytes, text_type) = figures
        print(
            f"  {nodes:>6} nodes: negotiated ({negotiated_type.split(';')[0]}) {negotiated_s:.3f} s, "
            f"{negotiated_bytes / 2**20:.1f} MiB; text preferred ({text_type.split(';')[0]}) {text_s:.3f} s, "
            f"{text_bytes / 2**20:.1f} MiB; ratio {text_s / negotiated_s:.2f}"
        )


if __name__ == "__main__":
    main()

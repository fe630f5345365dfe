"""Operator load benchmark in Prometheus mode (``--source prometheus``): a real Prometheus in front of the agents.

This process runs a Kubernetes API emulator (kmock, the indexed variant) holding the pods, Jobs, nodes and one agent
pod per node; a few fake exporters (aiohttp, one port each) that together serve the expositions of every node's agent
(``bench/operator_load.py``'s simulation: labels as real agents export them, finished pods kept for the agents'
retention), each exporter the concatenation of its share of nodes, grouped by metric family; a real Prometheus
(Debian's ``prometheus`` binary) scraping those exporters every 15 s with ``honor_labels``; and, between the operator
and Prometheus, a pass-through proxy that measures each query (bytes on the wire, duration). The operator runs as in a
cluster, ``jouleledger operator --source prometheus``, in a subprocess.

Printed: the operator's CPU (% of one core, seconds per pass) and RSS; the delay from each Job's completion to the
request that annotates it (p50, p99, p99 / interval: target < 2); Prometheus' own CPU, RSS and head series; the
query's size and duration per pass. Everything shares this machine's cores: the figures are upper bounds.

    .venv/bin/python -m bench.operator_prometheus [--pods 100000] [--nodes 12500] [--exporters 4]
        [--jobs-per-minute 200] [--interval-s 15] [--duration-s 180] [--warmup-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiohttp.web
import kmock
from tests._kube_emulator import IndexedEmulator, register_resources, send_bookmarks
from tests._prometheus import logged_process

from bench.operator_load import (
    HarnessLoop,
    SelfMetrics,
    Simulation,
    add_workload_arguments,
    drive_jobs,
    free_port,
    percentile,
    populate,
    print_operator_stderr,
    read_proc,
    start_operator_process,
)
from jouleledger.core.footprints import CLOCK_SKEW_ALLOWANCE_S
from jouleledger.core.promsource import TARGET_LABELS, agent_query

JOB = 'job="jouleledger-agent"'


def grouped(texts: list[str]) -> str:
    """Several agents' expositions as one, each metric family once (its ``# TYPE`` line, then every agent's
    samples of it), as an exporter of many nodes must write them."""
    families: dict[str, list[str]] = {}
    current: list[str] = []
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                current = families.setdefault(line, [])
            elif line and not line.startswith("#"):
                current.append(line)
    out: list[str] = []
    for header, lines in families.items():
        out.append(header)
        out.extend(lines)
    return "\n".join(out) + "\n"


@dataclass
class Exporters:
    """``count`` HTTP servers on 127.0.0.1 that together serve every node's agent exposition: ``targets`` slices of
    the nodes, each scraped by Prometheus as one target (``/metrics?slice=k``, spread over the servers) and serving
    the grouped expositions of every ``targets``-th node. Several targets per server give Prometheus' scrapes the
    spread of start times that many agents have (Prometheus offsets each target by a hash of its labels)."""

    sim: Simulation
    count: int
    targets: int
    ports: list[int] = field(default_factory=list)
    scrapes: int = 0
    generate_s: list[float] = field(default_factory=list)
    bytes_out: list[int] = field(default_factory=list)
    # Per slice, (when its exposition was written, when its answer was handed to Prometheus) of every scrape: when
    # a node's tick after a completion reached Prometheus (served_after).
    served: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    _runner: aiohttp.web.AppRunner | None = None

    def served_after(self, node: str, tick_s: float) -> float | None:
        """When the first exposition of ``node`` with a tick at or after ``tick_s`` was handed to Prometheus; None
        if none was before the end."""
        if node not in self.sim.nodes:
            return None
        for written_s, handed_s in self.served.get(self.sim.nodes.index(node) % self.targets, []):
            if float(int(written_s)) >= tick_s:  # the simulation's tick: the whole second
                return handed_s
        return None

    async def start(self) -> None:
        shares = [self.sim.nodes[index :: self.targets] for index in range(self.targets)]

        async def metrics(request: aiohttp.web.Request) -> aiohttp.web.Response:
            index = int(request.query.get("slice", "0"))
            started = time.perf_counter()
            now = time.time()
            body = grouped([self.sim.exposition(node, now) for node in shares[index]]).encode()
            self.scrapes += 1
            self.generate_s.append(time.perf_counter() - started)
            self.bytes_out.append(len(body))
            response = aiohttp.web.Response(body=body, content_type="text/plain", charset="utf-8")
            await response.prepare(request)
            await response.write_eof()  # the answer is with Prometheus now (its socket buffer at least)
            self.served.setdefault(index, []).append((now, time.time()))
            return response

        app = aiohttp.web.Application()
        app.router.add_get("/metrics", metrics)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for _ in range(self.count):
            port = free_port()
            await aiohttp.web.TCPSite(self._runner, "127.0.0.1", port).start()
            self.ports.append(port)

    def target_urls(self) -> list[tuple[str, int]]:
        """``(host:port, slice)`` of every target, the slices dealt round-robin over the servers."""
        return [(f"127.0.0.1:{self.ports[k % self.count]}", k) for k in range(self.targets)]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class QueryProxy:
    """Forwards the operator's queries to Prometheus unchanged (compression included) and times each one: the
    passes' queries apart from the completion reads' (those name their nodes: ``node=~``)."""

    upstream: str
    port: int = 0
    durations_s: list[float] = field(default_factory=list)
    wire_bytes: list[int] = field(default_factory=list)
    encodings: set[str] = field(default_factory=set)
    at: list[float] = field(default_factory=list)
    completion_s: list[float] = field(default_factory=list)  # the completion reads' queries
    completion_bytes: list[int] = field(default_factory=list)
    _runner: aiohttp.web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))

        async def forward(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
            assert self._session is not None
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            started = time.perf_counter()
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as upstream:
                payload = await upstream.read()
                elapsed = time.perf_counter() - started
                query = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("query", [""])[0]
                if request.path.endswith("/api/v1/query") and "node=~" in query:
                    self.completion_s.append(elapsed)
                    self.completion_bytes.append(len(payload))
                elif request.path.endswith("/api/v1/query"):
                    self.durations_s.append(elapsed)
                    self.wire_bytes.append(len(payload))
                    self.encodings.add(upstream.headers.get("Content-Encoding", "identity"))
                    self.at.append(time.time() - elapsed)  # when the pass asked
                keep = ("Content-Type", "Content-Encoding")
                return aiohttp.web.Response(
                    body=payload,
                    status=upstream.status,
                    headers={k: upstream.headers[k] for k in keep if k in upstream.headers},
                )

        app = aiohttp.web.Application(client_max_size=2**30)
        app.router.add_route("*", "/{tail:.*}", forward)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await aiohttp.web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@contextlib.contextmanager
def prometheus(
    where: Path, targets: list[tuple[str, int]], interval_s: float
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Debian's Prometheus scraping the exporters every ``interval_s`` (agent labels kept: honor_labels)."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("operator_prometheus: no prometheus binary on PATH (Debian: apt-get install prometheus)")
    port = free_port()
    static = "".join(
        f"      - {{targets: ['{target}'], labels: {{__param_slice: '{k}', instance: 'slice-{k}'}}}}\n"
        for target, k in targets
    )
    config = where / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {interval_s:g}s, scrape_timeout: {max(1.0, interval_s - 1):g}s}}\n"
        "scrape_configs:\n"
        "  - job_name: jouleledger-agent\n"
        "    honor_labels: true\n"
        "    static_configs:\n" + static
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={where / 'tsdb'}",
        "--storage.tsdb.retention.time=2h",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    # A large TSDB takes a while to close: 30 s before it is killed.
    with logged_process(command, where / "prometheus.log", stop_timeout_s=30.0) as process:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"prometheus exited with {process.returncode}: see {where / 'prometheus.log'}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("prometheus not ready within 120 s")
            time.sleep(0.5)
        yield process, url


def instant(url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """A small instant query from the benchmark itself (for Prometheus' own figures)."""
    import json

    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/query", data=data, timeout=120) as response:
        body = json.loads(response.read())
    return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]


async def wait_scraped(url: str, nodes: int, deadline_s: float) -> float:
    """Seconds until Prometheus holds every node's last tick."""
    started = time.monotonic()
    expr = "count(jouleledger_agent_last_tick_timestamp_seconds)"
    while time.monotonic() - started < deadline_s:
        with contextlib.suppress(OSError, KeyError, ValueError):
            result = await asyncio.to_thread(instant, url, expr)
            if result and result[0][1] >= nodes:
                return time.monotonic() - started
        await asyncio.sleep(1.0)
    raise SystemExit(f"Prometheus did not hold all {nodes} nodes' series within {deadline_s:.0f} s")


def own_metric(url: str, name: str) -> float:
    """One of Prometheus' own metrics, read from its /metrics (it does not scrape itself here), summed over its
    labels (``prometheus_tsdb_head_samples_appended_total{type="float"}``)."""
    total, found = 0.0, False
    with urllib.request.urlopen(f"{url}/metrics", timeout=60) as response:
        for line in response.read().decode().splitlines():
            if line.startswith((name + " ", name + "{")):
                total += float(line.rsplit(" ", 1)[1])
                found = True
    return total if found else float("nan")


def directory_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file()) if path.exists() else 0


def without_targets(selector: str) -> str:
    """The source's query with the target labels removed in Prometheus (``label_replace`` to empty): printed for
    comparison, the answer's size against Prometheus' time to compute it."""
    expr = agent_query(selector)
    for label in sorted(TARGET_LABELS):
        expr = f'label_replace({expr}, "{label}", "", "{label}", ".*")'
    return expr


def uncompressed_result_bytes(url: str, expr: str) -> tuple[int, float]:
    """The query result's JSON size without compression, and how long Prometheus took to answer it."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(f"{url}/api/v1/query", data=data, headers={"Accept-Encoding": "identity"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        size = len(response.read())
    return size, time.perf_counter() - started


async def main(args: argparse.Namespace) -> int:
    nodes = [f"gpu-{i:05d}" for i in range(args.nodes)]
    sim = Simulation(nodes, {node: f"127.{1 + i // 250}.{i % 250}.1" for i, node in enumerate(nodes)})
    sim.started_s, sim.retention_s = time.time(), args.agent_retention_s
    exporters = Exporters(sim, args.exporters, max(args.exporters, min(args.targets, args.nodes)))
    await exporters.start()
    async with IndexedEmulator() as api, kmock.Server(api):
        register_resources(api)
        live_jobs = max(1, int(args.jobs_per_minute * args.job_minutes))
        jobs = populate(api, sim, args.pods, min(live_jobs, args.pods), time.time())
        with (
            tempfile.TemporaryDirectory() as tmp,
            prometheus(Path(tmp), exporters.target_urls(), args.scrape_s or args.interval_s) as (
                prom,
                prom_url,
            ),
        ):
            scraped_after_s = await wait_scraped(prom_url, args.nodes, 10 * args.interval_s + 120)
            proxy = QueryProxy(prom_url)
            await proxy.start()
            source = ["--source", "prometheus", "--prometheus-url", f"http://127.0.0.1:{proxy.port}"]
            source += ["--prometheus-selector", JOB, "--prometheus-timeout-s", "120"]
            self_metrics = SelfMetrics(free_port(), args.interval_s)
            launched = await start_operator_process(api, tmp, args, args.interval_s, source, port=self_metrics.port)
            operator, stderr_lines = launched.process, launched.stderr_lines
            stop, window_over = asyncio.Event(), asyncio.Event()
            driver = asyncio.create_task(drive_jobs(api, sim, jobs, args.jobs_per_minute, stop))
            bookmarks = asyncio.create_task(send_bookmarks(api, stop))
            harness = HarnessLoop()
            watcher = asyncio.create_task(harness.run(stop))
            await asyncio.sleep(args.warmup_s)
            cpu0, _, _ = read_proc(operator.pid)
            pcpu0, _, _ = read_proc(prom.pid)
            t0 = time.time()
            queries0 = len(proxy.durations_s)
            completions0 = len(proxy.completion_s)
            scrapes0 = exporters.scrapes
            sampler = asyncio.create_task(self_metrics.run(window_over))
            await asyncio.sleep(args.duration_s)
            cpu1, rss, peak = read_proc(operator.pid)
            pcpu1, prss, ppeak = read_proc(prom.pid)
            t1 = time.time()
            window_over.set()
            await sampler
            stop.set()
            driver.cancel()
            bookmarks.cancel()
            await watcher
            operator.terminate()  # its shutdown flushes the ledger at the API write rate: not waited for long
            try:
                await asyncio.wait_for(operator.wait(), args.stop_timeout_s)
            except TimeoutError:
                operator.kill()
                await operator.wait()
            launched.drainer.cancel()
            head = await asyncio.to_thread(own_metric, prom_url, "prometheus_tsdb_head_series")
            appended = await asyncio.to_thread(own_metric, prom_url, "prometheus_tsdb_head_samples_appended_total")
            chunks_bytes = directory_bytes(Path(tmp) / "tsdb" / "chunks_head")
            wal_bytes = directory_bytes(Path(tmp) / "tsdb" / "wal")
            samples = await asyncio.to_thread(instant, prom_url, f"sum(scrape_samples_scraped{{{JOB}}})")
            scrape_s = await asyncio.to_thread(instant, prom_url, f"max(scrape_duration_seconds{{{JOB}}})")
            plain_bytes, plain_s = await asyncio.to_thread(uncompressed_result_bytes, prom_url, agent_query(JOB))
            lean_bytes, lean_s = await asyncio.to_thread(uncompressed_result_bytes, prom_url, without_targets(JOB))
            await proxy.stop()
    await exporters.stop()

    interval = args.interval_s
    considered = [job for job, done in sim.completed_at.items() if t0 <= done <= t1 - 2 * interval]
    delays = [api.annotated_at[job] - sim.completed_at[job] for job in considered if job in api.annotated_at]
    wall = t1 - t0
    passes = len(proxy.durations_s) - queries0
    cpu_s = cpu1 - cpu0
    window_q = proxy.durations_s[queries0:]
    window_b = proxy.wire_bytes[queries0:]
    exported = sum(len(pods) for pods in sim.by_node.values())
    finished = sum(1 for pods in sim.by_node.values() for p in pods.values() if p.finished_s is not None)
    print("Joule Ledger operator benchmark, Prometheus mode (mock API: kmock; agents: fake exporters; real Prometheus)")
    print(f"  pods live: {args.pods} on {args.nodes} nodes; Job completions: {args.jobs_per_minute:g}/min (real time)")
    print(
        f"  exporters: {args.exporters} servers, {exporters.targets} targets of {args.nodes / exporters.targets:.0f} "
        f"nodes each; Prometheus scrapes them every {args.scrape_s or interval:g} s (honor_labels)"
    )
    print(f"  the operator accounts every {interval:g} s (production default, no time compression)")
    print(f"  Prometheus held every node's series {scraped_after_s:.0f} s after start")
    print(f"  measured window: {wall:.0f} s after {args.warmup_s:g} s warm-up; passes (queries) in window: {passes}")
    print(f"  operator CPU: {100 * cpu_s / wall:.1f} % of one core ({cpu_s / max(passes, 1):.2f} s per pass)")
    print(f"  operator RSS: {rss / 2**20:.0f} MiB (peak {peak / 2**20:.0f} MiB)")
    if delays:
        p50, p99 = statistics.median(delays), percentile(delays, 99)
        print(f"  completion -> annotation delay: p50 {p50:.2f} s, p99 {p99:.2f} s over {len(delays)} Jobs")
        print(f"  p99 / interval: {p99 / interval:.2f} (target < 2)")
    print(f"  Jobs annotated in window: {len(delays)}/{len(considered)}")
    print_split(exporters, sim, api.annotated_at, considered)
    print(self_metrics.summary())
    print(harness.summary(t0, t1))
    if window_q:
        print(
            f"  query per pass: median {statistics.median(window_q):.2f} s (max {max(window_q):.2f} s), "
            f"{statistics.median(window_b) / 2**20:.1f} MiB on the wire ({'/'.join(sorted(proxy.encodings))}); "
            f"uncompressed: {plain_bytes / 2**20:.1f} MiB of JSON, answered in {plain_s:.2f} s after the run "
            f"({lean_bytes / 2**20:.1f} MiB and {lean_s:.2f} s with the target labels removed by label_replace)"
        )
    window_c = proxy.completion_s[completions0:]
    if window_c:
        print(
            f"  completion reads' queries: {len(window_c)} in window, median {statistics.median(window_c):.3f} s "
            f"(max {max(window_c):.3f} s), {statistics.median(proxy.completion_bytes[completions0:]) / 2**10:.1f} KiB "
            "on the wire"
        )
    gaps = [later - earlier for earlier, later in zip(proxy.at[queries0:], proxy.at[queries0 + 1 :], strict=False)]
    if gaps:
        print(
            f"  time between pass starts: median {statistics.median(gaps):.1f} s, max {max(gaps):.1f} s "
            f"(the interval, or the pass's wall time when longer)"
        )
    print(
        f"  Prometheus: CPU {100 * (pcpu1 - pcpu0) / wall:.1f} % of one core, RSS {prss / 2**20:.0f} MiB "
        f"(peak {ppeak / 2**20:.0f} MiB), head series {head:.0f}, "
        f"samples per scrape round {samples[0][1] if samples else float('nan'):.0f}, "
        f"slowest target scrape {scrape_s[0][1] if scrape_s else float('nan'):.2f} s"
    )
    if appended > 0:
        print(
            f"  Prometheus TSDB: {appended:.0f} samples appended; head chunks on disk {chunks_bytes / 2**20:.1f} MiB "
            f"({chunks_bytes / appended:.2f} bytes per sample, the open chunks still in memory), "
            f"WAL {wal_bytes / 2**20:.1f} MiB ({wal_bytes / appended:.2f} bytes per sample)"
        )
    generate = exporters.generate_s[-args.exporters * 4 :]
    print(
        f"  exporters: {exporters.scrapes - scrapes0} scrapes in window, median {statistics.median(generate):.2f} s "
        f"and {statistics.median(exporters.bytes_out) / 2**20:.1f} MiB per exposition"
    )
    print(f"  pods exported at the end: {exported} ({finished} finished, kept {args.agent_retention_s:g} s)")
    print(f"  API writes by the operator: {dict(sorted(api.writes.items()))}")
    if len(delays) < len(considered) or args.operator_log_level != "WARNING":
        print_operator_stderr(stderr_lines, 40)
    return 0


def print_split(exporters: Exporters, sim: Simulation, annotated_at: dict[str, float], considered: list[str]) -> None:
    """The completion -> annotation delay in two parts: until the first exposition of the node with a tick the Job
    waits for (later than its completion by the operator's clock-skew allowance) was handed to Prometheus, which the
    scrape interval sets; and from then to the annotating request, which Prometheus' ingestion, the operator's
    completion reads and the API set."""
    node_of = {pod.owner_name: node for node, pods in sim.by_node.items() for pod in pods.values()}
    waits, rests = [], []
    for job in considered:
        node, done, annotated = node_of.get(job), sim.completed_at[job], annotated_at.get(job)
        served = exporters.served_after(node, done + CLOCK_SKEW_ALLOWANCE_S) if node is not None else None
        if served is None or annotated is None:
            continue
        waits.append(served - done)
        rests.append(annotated - served)
    if waits:
        print(
            f"  of which: until the node's next tick was with Prometheus p50 {statistics.median(waits):.2f} s, "
            f"p99 {percentile(waits, 99):.2f} s, max {max(waits):.2f} s; from then to the annotation "
            f"p50 {statistics.median(rests):.2f} s, p99 {percentile(rests, 99):.2f} s, max {max(rests):.2f} s "
            f"({len(waits)} Jobs)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=12_500)
    parser.add_argument("--exporters", type=int, default=4, help="fake exporter servers")
    parser.add_argument("--targets", type=int, default=64, help="Prometheus targets (node slices) over them")
    parser.add_argument("--interval-s", type=float, default=15.0, help="the operator's accounting interval")
    parser.add_argument(
        "--scrape-s", type=float, default=0.0, help="Prometheus' scrape interval of the agents (default: --interval-s)"
    )
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--stop-timeout-s", type=float, default=20.0, help="how long the operator may take to stop")
    add_workload_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

"""CPU per agent request: the operator's agent client against the general clients it could use instead.

Fake agents in a subprocess (one server on each of ``--agents`` loopback addresses, 127.0.0.x, so their CPU is
not this process's) answer ``GET /metrics`` with the exposition of one node of ``bench/operator_load.py`` (8 pods,
finished ones included). This process asks every agent once per round, ``--concurrency`` requests at a time, over
kept-alive connections (the first round opens them and is not measured), through:

- ``jouleledger.controller.agent_http.AgentHttpClient``, the scraper's client;
- ``aiohttp.ClientSession`` as the scraper used it before (a ``TCPConnector`` of that many connections kept alive,
  ``auto_decompress`` off, the body read in 64 KiB chunks under one ``asyncio.timeout``);
- the agent client again with ``keep_alive=False``: a new TCP connection per request.

Printed: CPU of this process per request (median of ``--rounds`` rounds, min and max) and the ratios to the
agent client. The machine is shared: compare the ratios.

    .venv/bin/python -m bench.agent_requests [--agents 200] [--rounds 7] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bench.operator_load import Simulation, populate
from bench.operator_pass import Objects  # the benchmark's cluster, without an API
from jouleledger.controller.agent_http import AgentHttpClient

PORT = 19400
SERVER = """
import asyncio, sys
BODY = sys.stdin.buffer.read()
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain; version=0.0.4\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY)
class Agent(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while b"\\r\\n\\r\\n" in self.buffer:
            request, self.buffer = self.buffer.split(b"\\r\\n\\r\\n", 1)
            self.transport.write(HEAD + BODY)
            if b"Connection: close" in request:
                self.transport.close()
async def main(count, port):
    loop = asyncio.get_running_loop()
    for index in range(count):
        await loop.create_server(Agent, f"127.0.0.{index + 1}", port)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def exposition() -> bytes:
    nodes = ["node-00000"]
    sim = Simulation(nodes, {"node-00000": "127.0.0.1"})
    now_s = time.time()
    sim.started_s = now_s - 600
    jobs = populate(Objects(), sim, 8, 2, now_s - 3600)  # type: ignore[arg-type]
    for pod in jobs[:1]:
        pod.finished_s = now_s - 60
    return sim.exposition("node-00000", now_s).encode()


Request = Callable[[int], Awaitable[bytes]]


async def rounds(request: Request, agents: int, concurrency: int, count: int) -> list[float]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> int:
        async with semaphore, asyncio.timeout(10):
            return len(await request(index))

    await asyncio.gather(*(one(index) for index in range(agents)))  # opens the connections
    cpu_per_request_s = []
    for _ in range(count):
        began = time.process_time()
        sizes = await asyncio.gather(*(one(index) for index in range(agents)))
        cpu_per_request_s.append((time.process_time() - began) / agents)
        assert min(sizes) > 0
    return cpu_per_request_s


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}

    def host(index: int) -> str:
        return f"127.0.0.{index + 1}"

    async with AgentHttpClient() as ours:

        async def agent_client(index: int) -> bytes:
            status, body = await ours.get(host(index), PORT, "/metrics", headers={}, max_body_bytes=1 << 26)
            assert status == 200
            return body

        results["agent client (controller/agent_http.py)"] = await rounds(
            agent_client, args.agents, args.concurrency, args.rounds
        )

        async def new_connection(index: int) -> bytes:
            status, body = await ours.get(
                host(index), PORT, "/metrics", headers={}, max_body_bytes=1 << 26, keep_alive=False
            )
            assert status == 200
            return body

        results["agent client, a new connection each"] = await rounds(
            new_connection, args.agents, args.concurrency, args.rounds
        )

    connector = aiohttp.TCPConnector(limit=args.agents, keepalive_timeout=120.0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False) as session:

        async def with_aiohttp(index: int) -> bytes:
            async with session.get(
                f"http://{host(index)}:{PORT}/metrics",
                headers={"Accept-Encoding": "gzip"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as response:
                chunks = [chunk async for chunk in response.content.iter_chunked(64 * 1024)]
                return b"".join(chunks)

        results["aiohttp (the scraper's client before)"] = await rounds(
            with_aiohttp, args.agents, args.concurrency, args.rounds
        )

    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=16, help="requests at once (the scraper's default)")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 254:
        parser.error("--agents must be 1..254 (one loopback address each)")
    body = exposition()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.agents), str(PORT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdin is not None
        assert server.stdout is not None
        server.stdin.write(body)
        server.stdin.close()
        if server.stdout.readline().strip() != b"ready":
            raise SystemExit("the fake agents did not start")
        results = asyncio.run(measure(args))
    finally:
        server.kill()
        server.wait()
    print("Joule Ledger agent requests: CPU of the operator's side per GET /metrics")
    print(f"  agents: {args.agents} (one exposition of {len(body)} bytes); {args.concurrency} at once")
    ours = statistics.median(next(iter(results.values())))
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"  {name}: median {median * 1e6:.0f} us (min {min(values) * 1e6:.0f}, max {max(values) * 1e6:.0f}),"
            f" {median / ours:.2f}x the agent client"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

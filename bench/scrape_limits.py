"""Scrape limits benchmark: what a hostile agent costs the operator.

Prints figures; asserts nothing.

    python -m bench.scrape_limits [--body-mb 300] [--cap-mb 64] [--timeout-s 2]

1. An agent that answers with an endless body (``--body-mb``, no Content-Length): the operator's peak RSS growth
   and the bytes it read before aborting at the cap (``--cap-mb``, the operator's default is 64).
2. An agent that drips one byte every 100 ms: how long one scrape holds the pass (the deadline is ``--timeout-s``).

Measured in this process with ``ru_maxrss`` (the fake agent runs in the same event loop; it keeps one 64 KiB block).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import AgentClientConfig, AgentScraper, build_agent_client

_Serve = Callable[[asyncio.StreamWriter], Awaitable[None]]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.asynccontextmanager
async def _agent(serve: _Serve) -> AsyncIterator[AgentTarget]:
    tasks: list[asyncio.Task[None]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            await serve(writer)
        writer.close()

    server = await asyncio.start_server(lambda r, w: tasks.append(asyncio.create_task(answer(r, w))), "127.0.0.1", 0)
    try:
        yield AgentTarget(node="n", pod="hostile", ip="127.0.0.1", port=server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _main(body_mb: int, cap_mb: int, timeout_s: float) -> None:
    block = b"# padding\n" * 6553

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        for _ in range(body_mb * 1024 * 1024 // len(block)):
            writer.write(block)
            await writer.drain()

    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 600\r\n\r\n")
        for _ in range(600):
            writer.write(b"#")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with build_agent_client(AgentClientConfig()) as client:
        scraper = AgentScraper(
            client,
            timeout_s=max(timeout_s, 60.0),
            concurrency=1,
            backoff_base_s=0.0,
            backoff_max_s=0.0,
            max_body_bytes=cap_mb * 1024 * 1024,
        )
        before = _rss_mb()
        async with _agent(endless) as target:
            started = time.monotonic()
            [outcome] = await scraper.scrape_all([target])
        print(
            f"endless {body_mb} MB body, cap {cap_mb} MiB: result={outcome.result},"
            f" read {client.received_bytes / 2**20:.1f} MiB"
            f" in {time.monotonic() - started:.2f} s, peak RSS {before:.0f} -> {_rss_mb():.0f} MB"
            f" (+{_rss_mb() - before:.0f} MB)"
        )
        dripper = AgentScraper(client, timeout_s=timeout_s, concurrency=1, backoff_base_s=0.0, backoff_max_s=0.0)
        async with _agent(drip) as target:
            started = time.monotonic()
            [outcome] = await dripper.scrape_all([target])
        print(
            f"dripping agent (1 byte / 100 ms for 60 s), deadline {timeout_s:g} s: result={outcome.result}"
            f" after {time.monotonic() - started:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-mb", type=int, default=300)
    parser.add_argument("--cap-mb", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(_main(args.body_mb, args.cap_mb, args.timeout_s))


if __name__ == "__main__":
    main()

"""Test helpers for the intensity providers: a fixed clock value and a recording fake HTTP API
(httpx.MockTransport). Imported by the tests and by conftest.py's fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx

__all__ = ["NOW_S", "FakeApi", "settle"]

# 2026-05-21 10:20:00 UTC; every test clock is an offset from here.
NOW_S = datetime(2026, 5, 21, 10, 20, tzinfo=UTC).timestamp()

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


class FakeApi:
    """Records every request and answers with ``handler`` (sync or async)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = lambda request: httpx.Response(500)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.handler(request)
        if isinstance(answer, httpx.Response):
            return answer
        return await answer

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)

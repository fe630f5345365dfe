"""The operator's agent HTTP client (controller/agent_http.py) against scripted agents on loopback: the framings
it reads (length, chunked, read to close, 1xx first), gzip and deflate, what it keeps alive and what it closes,
the retry of a kept-alive connection the agent closed, and every malformed answer refused by name."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jouleledger.controller.agent_http import AgentHttpClient, AgentHttpError, BodyTooLargeError
from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import ERROR, AgentClientConfig, AgentScraper

BODY = b'jouleledger_agent_info{node="n1"} 1\n' * 20


@dataclass
class _Script:
    """Answers in order, one per request (``close``: the agent closes the connection after that answer)."""

    answers: list[tuple[bytes, bool]]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0


@contextlib.asynccontextmanager
async def _agent(*answers: bytes | tuple[bytes, bool]) -> AsyncIterator[_Script]:
    script = _Script([answer if isinstance(answer, tuple) else (answer, False) for answer in answers])
    tasks: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        try:
            while script.answers:
                script.requests.append(await reader.readuntil(b"\r\n\r\n"))
                raw, close = script.answers.pop(0)
                writer.write(raw)
                await writer.drain()
                if close:
                    return
            await reader.read()  # hold the connection until the client closes it
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(lambda r, w: tasks.append(asyncio.create_task(serve(r, w))), "127.0.0.1", 0)
    script.port = server.sockets[0].getsockname()[1]
    try:
        yield script
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ok(body: bytes = BODY, *headers: str, version: str = "HTTP/1.1") -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return f"{version} 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def _chunked(body: bytes, *headers: str, size: int = 7) -> bytes:
    pieces = [body[start : start + size] for start in range(0, len(body), size)]
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    head = "".join(f"{header}\r\n" for header in headers)
    return (
        f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{head}\r\n".encode() + chunks + b"0\r\nX-Trailer: 1\r\n\r\n"
    )


async def _get(client: AgentHttpClient, script: _Script, *, cap: int = 1 << 20, **options: object) -> tuple[int, bytes]:
    async with asyncio.timeout(5):
        return await client.get("127.0.0.1", script.port, "/metrics", headers={}, max_body_bytes=cap, **options)  # type: ignore[arg-type]


async def test_two_gets_share_one_kept_alive_connection_and_send_a_plain_request() -> None:
    async with _agent(_ok(), _ok(b"second")) as script, AgentHttpClient() as client:
        assert await client.get(
            "127.0.0.1",
            script.port,
            "/metrics?folded_until=1.5",
            headers={"Authorization": "Bearer t"},
            max_body_bytes=1 << 20,
        ) == (200, BODY)
        assert await _get(client, script) == (200, b"second")
    assert client.connections_opened == script.connections == 1
    first, second = script.requests
    assert first.startswith(b"GET /metrics?folded_until=1.5 HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{script.port}\r\n".encode() in first
    assert b"\r\nAccept-Encoding: gzip\r\n" in first
    assert b"\r\nConnection: keep-alive\r\n" in first
    assert b"\r\nAuthorization: Bearer t\r\n" in first
    assert b"Authorization" not in second
    assert client.received_bytes == len(_ok()) + len(_ok(b"second"))


@pytest.mark.parametrize(
    "answer",
    [
        _chunked(BODY),
        _chunked(gzip.compress(BODY), "Content-Encoding: gzip", size=5),
        _ok(gzip.compress(BODY), "Content-Encoding: gzip"),
        _ok(zlib.compress(BODY), "Content-Encoding: deflate"),
        b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(),
        _ok(BODY, "connection: Keep-Alive", version="HTTP/1.0"),
    ],
    ids=["chunked", "chunked-gzip", "gzip", "deflate", "interim-100", "http10-keep-alive"],
)
async def test_every_framing_and_encoding_reads_the_same_body_and_keeps_the_connection(answer: bytes) -> None:
    async with _agent(answer, answer) as script, AgentHttpClient() as client:
        assert await _get(client, script) == (200, BODY)
        assert await _get(client, script) == (200, BODY)
    assert client.connections_opened == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\n\r\n" + BODY,  # no length: the body ends when the agent closes
        _ok(BODY, "Connection: close"),
        _ok(BODY, version="HTTP/1.0"),
        _ok() + b"HTTP/1.1 200 OK\r\n",  # bytes nobody asked for after the answer
    ],
    ids=["read-to-close", "connection-close", "http10", "unasked-bytes"],
)
async def test_an_answer_that_ends_the_connection_is_read_and_the_next_get_opens_a_new_one(answer: bytes) -> None:
    async with _agent((answer, True), (answer, True)) as script, AgentHttpClient() as client:
        assert await _get(client, script) == (200, BODY)
        assert await _get(client, script) == (200, BODY)
    assert client.connections_opened == script.connections == 2


async def test_a_non_200_answer_is_returned_without_its_body_and_its_connection_closed() -> None:
    async with (
        _agent(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", _ok()) as script,
        AgentHttpClient() as client,
    ):
        assert await _get(client, script) == (503, b"")
        assert await _get(client, script) == (200, BODY)
    assert client.connections_opened == 2


async def test_a_kept_alive_connection_the_agent_closed_is_retried_once_on_a_new_one() -> None:
    async with _agent((_ok(), True), _ok(b"again")) as script, AgentHttpClient() as client:
        assert await _get(client, script) == (200, BODY)
        await asyncio.sleep(0.05)  # the agent's close arrives: noticed before the next request
        assert await _get(client, script) == (200, b"again")
    assert client.connections_opened == 2

    # The close races the request (the connection still looks open; the agent closes it without answering): the
    # GET is sent again on a new connection.
    async with _agent(_ok(), (b"", True), _ok(b"again")) as script, AgentHttpClient() as client:
        assert await _get(client, script) == (200, BODY)
        assert await _get(client, script) == (200, b"again")
    assert client.connections_opened == script.connections == 2
    assert len(script.requests) == 3

    # A new connection closed without an answer is an error, not retried.
    async with _agent((b"", True)) as script, AgentHttpClient() as client:
        with pytest.raises(AgentHttpError, match="closed before a complete answer head"):
            await _get(client, script)
    assert client.connections_opened == 1


async def test_idle_connections_expire() -> None:
    now = [0.0]
    async with _agent(_ok(), _ok(), _ok()) as script:
        client = AgentHttpClient(keepalive_s=120.0, monotonic=lambda: now[0])
        await _get(client, script)
        now[0] = 100.0
        assert client.close_idle() == 0
        await _get(client, script)  # reused, idle since 100 s
        now[0] = 221.0
        assert client.close_idle() == 1
        await _get(client, script)
        await client.aclose()
    assert client.connections_opened == 2


async def test_an_interrupted_get_closes_its_connection() -> None:
    async with _agent(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", _ok()) as script:
        client = AgentHttpClient()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.get("127.0.0.1", script.port, "/metrics", headers={}, max_body_bytes=1 << 20)
        assert await _get(client, script) == (200, BODY)  # on a new connection: the old answer is never read on
        await client.aclose()
    assert client.connections_opened == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\nabcde", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n", "longer than its size"),
        (_ok(BODY, "Content-Encoding: br"), "unsupported Content-Encoding 'br'"),
        (_ok(BODY, "Content-Encoding: gzip"), "invalid gzip body"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, "headers longer than"),
    ],
    ids=[
        "http2",
        "status",
        "header",
        "two-lengths",
        "negative-length",
        "transfer-encoding",
        "chunk-size",
        "chunk-overrun",
        "brotli",
        "not-gzip",
        "101",
        "huge-head",
    ],
)
async def test_a_malformed_answer_is_refused_by_name(answer: bytes, message: str) -> None:
    async with _agent(answer, _ok()) as script, AgentHttpClient() as client:
        with pytest.raises(AgentHttpError, match=message):
            await _get(client, script)
        assert await _get(client, script) == (200, BODY)  # a new connection: the broken one is closed
    assert client.connections_opened == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n" + BODY,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9",
    ],
    ids=["short-body", "cut-chunk"],
)
async def test_an_answer_cut_short_by_the_agent_is_an_error(answer: bytes) -> None:
    async with _agent((answer, True)) as script, AgentHttpClient() as client:
        with pytest.raises(AgentHttpError, match="connection closed"):
            await _get(client, script)


async def test_the_cap_counts_decoded_bytes_and_a_declared_length_over_it_is_refused_unread() -> None:
    bomb = gzip.compress(b"\n" * (8 << 20))
    async with _agent(_ok(bomb, "Content-Encoding: gzip"), _ok(b"x" * 5000)) as script, AgentHttpClient() as client:
        with pytest.raises(BodyTooLargeError, match="aborted after"):
            await _get(client, script, cap=1 << 20)
        with pytest.raises(BodyTooLargeError, match="declared 5000 bytes"):
            await _get(client, script, cap=4096)


async def test_a_header_or_path_with_a_line_break_is_never_sent() -> None:
    async with _agent(_ok()) as script, AgentHttpClient() as client:
        with pytest.raises(ValueError, match="line break"):
            await client.get(
                "127.0.0.1", script.port, "/metrics", headers={"Authorization": "a\r\nX: y"}, max_body_bytes=1024
            )
        with pytest.raises(ValueError, match="space or a line break"):
            await client.get("127.0.0.1", script.port, "/metrics HTTP/1.0\r\n", headers={}, max_body_bytes=1024)
    assert script.requests == []


async def test_a_bearer_token_with_a_line_break_fails_the_scrape_as_a_credentials_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\nX-Injected: 1\n", encoding="utf-8")
    config = AgentClientConfig(bearer_token_file=token)
    async with _agent(_ok()) as script, AgentHttpClient() as client:
        scraper = AgentScraper(
            client, timeout_s=5.0, concurrency=1, backoff_base_s=0.0, backoff_max_s=0.0, agent_client=config
        )
        [outcome] = await scraper.scrape_all([AgentTarget(node="n1", pod="agent", ip="127.0.0.1", port=script.port)])
    assert outcome.result == ERROR
    assert "line break" in outcome.error
    assert script.requests == []


def test_an_http_client_for_https_agents_is_refused() -> None:
    with pytest.raises(ValueError, match="an http agent client for https agents"):
        AgentScraper(
            AgentHttpClient(),
            timeout_s=5.0,
            concurrency=1,
            backoff_base_s=0.0,
            backoff_max_s=0.0,
            agent_client=AgentClientConfig(scheme="https"),
        )

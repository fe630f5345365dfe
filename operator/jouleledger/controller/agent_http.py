"""The operator's HTTP/1.1 client for the agents' ``/metrics``: GETs over kept-alive connections, nothing else.

A pass sends one small GET to every agent; through a general client (aiohttp) each cost about 160 us of CPU
before the body was read (URL and header objects, cookie jar, connector pools, tracing hooks), which at thousands
of agents was a fifth of a pass. This client does only what the scrape needs: one connection per agent kept
between passes (closed after :data:`KEEPALIVE_EXPIRY_S` idle), the request written as one byte string,
the answer read by an ``asyncio.Protocol`` (status line, headers, a ``Content-Length``, chunked or
read-to-close body), decoded from gzip or deflate chunk by chunk under a cap on the decoded size, and TLS through
the event loop's own ``ssl`` support.

Everything else is refused with :class:`AgentHttpError` (a malformed status line or header, an unsupported
``Content-Encoding``, a body that ends early, a 101), :class:`BodyTooLargeError` (over the cap) or ``OSError``
(connecting, resets); the caller bounds the whole request in time (``asyncio.timeout``), and a connection whose
answer was not read to its end, for any reason, is closed, never reused. An idle connection the agent closed
meanwhile is noticed before use, and a reused connection that closes before the first byte of its answer (the
agent closed it as the request went out) is retried once on a new one: a GET of ``/metrics`` changes nothing.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["KEEPALIVE_EXPIRY_S", "AgentConnection", "AgentHttpClient", "AgentHttpError", "BodyTooLargeError"]

KEEPALIVE_EXPIRY_S: Final = 120.0
"""Idle agent connections are kept this long: longer than the scrape interval, so a pass reuses the last one's."""
MAX_HEAD_BYTES: Final = 64 * 1024
"""The most a status line with its headers (or a chunk-size line, or trailers) may take."""
PAUSE_READING_BYTES: Final = 1024 * 1024
"""Unread bytes at which the connection stops reading from the socket until the answer's reader catches up."""
USER_AGENT: Final = "jouleledger-operator"
_DECODERS: Final[Mapping[str, int]] = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class AgentHttpError(Exception):
    """An answer that is not the HTTP/1.1 the scrape accepts, or a connection closed in the middle of it."""


class BodyTooLargeError(Exception):
    """The answer's body (decoded) is larger than the cap: abandoned while reading."""


class _StaleConnectionError(AgentHttpError):
    """A reused connection closed before any byte of the answer arrived."""


class AgentConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to an agent, the protocol of its transport: what arrived and is not yet read,
    and whether the peer is gone. :meth:`AgentHttpClient._open` makes one per connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.received_bytes = 0
        self.idle_since_s = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received_bytes += len(data)
        if len(self.buffer) >= PAUSE_READING_BYTES and self.transport is not None and not self._paused:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> None:
        """Wait until more bytes arrive or the peer closes (returns at once when it is closed already)."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self.closed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body:
    """A body's bytes decoded (gzip, deflate or as they are) into chunks, never past ``cap`` decoded bytes."""

    __slots__ = ("cap", "chunks", "decoder", "encoding", "size")

    def __init__(self, encoding: str, cap: int) -> None:
        wbits = _DECODERS.get(encoding)
        if encoding != "identity" and wbits is None:
            raise AgentHttpError(f"unsupported Content-Encoding {encoding!r}")
        self.encoding = encoding
        self.decoder = None if wbits is None else zlib.decompressobj(wbits)
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, raw: bytes) -> None:
        data = raw
        while data:
            try:
                chunk = data if self.decoder is None else self.decoder.decompress(data, self.cap + 1 - self.size)
            except zlib.error as error:  # a body that is not what its Content-Encoding says
                raise AgentHttpError(f"invalid {self.encoding} body: {error}") from error
            self._keep(chunk)
            data = b"" if self.decoder is None else self.decoder.unconsumed_tail

    def finish(self) -> bytes:
        if self.decoder is not None:
            try:
                tail = self.decoder.flush()
            except zlib.error as error:
                raise AgentHttpError(f"invalid {self.encoding} body: {error}") from error
            self._keep(tail)
        return b"".join(self.chunks)

    def _keep(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise BodyTooLargeError(f"aborted after {self.size} bytes")
        self.chunks.append(chunk)


def _header_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"the {name} header holds a line break")
    return value


async def _line(connection: AgentConnection, *, what: str) -> bytes:
    """The next CRLF-terminated line of the answer (taken from the buffer)."""
    buffer = connection.buffer
    while True:
        end = buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            return line
        if len(buffer) > MAX_HEAD_BYTES:
            raise AgentHttpError(f"{what} longer than {MAX_HEAD_BYTES} bytes")
        if connection.closed:
            raise AgentHttpError(f"connection closed in the {what}")
        await connection.more()


async def _exactly(connection: AgentConnection, count: int, body: _Body) -> None:
    """Feed the next ``count`` bytes of the answer to ``body``."""
    remaining = count
    buffer = connection.buffer
    while remaining:
        if not buffer:
            if connection.closed:
                raise AgentHttpError(f"connection closed with {remaining} bytes of the body missing")
            await connection.more()
            continue
        take = min(remaining, len(buffer))
        body.add(bytes(buffer[:take]))
        del buffer[:take]
        remaining -= take


async def _head(connection: AgentConnection, *, reused: bool) -> tuple[int, bool, dict[str, str]]:
    """Status, whether HTTP/1.1, and the headers (names lowercase, repeated ones joined by ``, ``) of the answer,
    after any 1xx interim answers."""
    buffer = connection.buffer
    while True:
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > MAX_HEAD_BYTES:
                raise AgentHttpError(f"answer headers longer than {MAX_HEAD_BYTES} bytes")
            if connection.closed:
                if reused and not buffer:
                    raise _StaleConnectionError("the kept-alive connection was closed")
                raise AgentHttpError("connection closed before a complete answer head")
            await connection.more()
        lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]
        status_line = lines[0].decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not (code.isdigit() and len(code) == 3):
            raise AgentHttpError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, colon, value = raw.decode("latin-1").partition(":")
            name = name.strip().lower()
            if not colon or not name or " " in name or "\t" in name:
                raise AgentHttpError(f"malformed header line {raw[:80]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if status == 101:
            raise AgentHttpError("the agent switched protocols (101)")
        if status >= 200:
            return status, version == "HTTP/1.1", headers
        # 1xx: an interim answer; the real one follows


async def _answer(connection: AgentConnection, max_body_bytes: int, *, reused: bool) -> tuple[int, bytes, bool]:
    """Read one answer: ``(status, body, reusable)``; the body only for a 200 (other answers close the
    connection unread)."""
    status, http11, headers = await _head(connection, reused=reused)
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    reusable = "close" not in tokens and (http11 or "keep-alive" in tokens)
    if status != 200:
        return status, b"", False
    encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
    body = _Body(encoding, max_body_bytes)
    transfer = headers.get("transfer-encoding", "").strip().lower()
    declared = headers.get("content-length")
    if transfer:
        if transfer != "chunked":
            raise AgentHttpError(f"unsupported Transfer-Encoding {transfer!r}")
        while True:
            size_line = (await _line(connection, what="chunk size line")).split(b";", 1)[0].strip()
            if not size_line or size_line.strip(b"0123456789abcdefABCDEF") or len(size_line) > 16:
                raise AgentHttpError(f"malformed chunk size {size_line[:40]!r}")
            size = int(size_line, 16)
            if size == 0:
                while await _line(connection, what="trailers"):
                    pass
                break
            await _exactly(connection, size, body)
            if await _line(connection, what="chunk end") != b"":
                raise AgentHttpError("a chunk longer than its size line says")
    elif declared is not None:
        values = {value.strip() for value in declared.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise AgentHttpError(f"malformed Content-Length {declared[:40]!r}")
        length = int(values.pop())
        if encoding == "identity" and length > max_body_bytes:
            raise BodyTooLargeError(f"declared {length} bytes")
        await _exactly(connection, length, body)
    else:  # the body is what comes until the agent closes the connection
        reusable = False
        while True:
            if connection.buffer:
                chunk = bytes(connection.buffer)
                connection.buffer.clear()
                body.add(chunk)
            elif connection.closed:
                break
            else:
                await connection.more()
    data = body.finish()
    return 200, data, reusable and not connection.buffer and not connection.closed


class AgentHttpClient:
    """GETs to the agents (``http``, or ``https`` with ``ssl_context``), one kept-alive connection per agent.

    ``get`` is safe to call concurrently (the scraper bounds how many run at once); an agent asked twice at once
    gets a second connection, and only one is kept afterwards. ``close_idle`` closes the connections idle longer
    than the expiry (the scraper calls it once a pass); ``aclose`` closes them all.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = KEEPALIVE_EXPIRY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssl = ssl_context
        self._keepalive_s = keepalive_s
        self._monotonic = monotonic
        self._idle: dict[tuple[str, int, str], AgentConnection] = {}
        self.connections_opened = 0
        """Connections opened since the client was made (each TCP connect, TLS included)."""
        self.received_bytes = 0
        """Bytes received from the agents so far, before decoding (updated when each request ends)."""

    @property
    def scheme(self) -> str:
        return "http" if self._ssl is None else "https"

    async def get(
        self,
        host: str,
        port: int,
        path: str,
        *,
        headers: Mapping[str, str],
        max_body_bytes: int,
        server_name: str = "",
        keep_alive: bool = True,
    ) -> tuple[int, bytes]:
        """GET ``path`` (with its query) from ``host:port``: ``(status, body)``, the body read only for a 200 and
        only up to ``max_body_bytes`` once decoded. ``keep_alive=False`` closes the connection after the answer.
        Bound it in time with ``asyncio.timeout``: whatever interrupts it closes its connection."""
        request = self._request(host, port, path, headers, keep_alive)
        key = (host, port, server_name)
        connection = self._take_idle(key)
        if connection is not None:
            try:
                return await self._exchange(key, connection, request, max_body_bytes, keep_alive, reused=True)
            except _StaleConnectionError:
                pass  # the agent closed it as the request went out: once more, on a new connection
        connection = await self._open(host, port, server_name)
        return await self._exchange(key, connection, request, max_body_bytes, keep_alive, reused=False)

    def close_idle(self) -> int:
        """Close the connections idle for longer than the expiry; how many were closed."""
        now_s = self._monotonic()
        expired = [
            key for key, conn in self._idle.items() if conn.closed or now_s - conn.idle_since_s > self._keepalive_s
        ]
        for key in expired:
            self._idle.pop(key).close()
        return len(expired)

    async def aclose(self) -> None:
        """Close every idle connection (requests still running close theirs when they end)."""
        idle, self._idle = self._idle, {}
        for connection in idle.values():
            connection.close()
        await asyncio.sleep(0)  # let the transports finish closing

    async def __aenter__(self) -> AgentHttpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _request(self, host: str, port: int, path: str, headers: Mapping[str, str], keep_alive: bool) -> bytes:
        if "\r" in path or "\n" in path or " " in path:
            raise ValueError(f"request path {path[:80]!r} holds a space or a line break")
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        extra = "".join(f"{name}: {_header_value(name, value)}\r\n" for name, value in headers.items())
        return (
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\nAccept: text/plain\r\n"
            f"Accept-Encoding: gzip\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n{extra}\r\n"
        ).encode("latin-1")

    def _take_idle(self, key: tuple[str, int, str]) -> AgentConnection | None:
        connection = self._idle.pop(key, None)
        if connection is None:
            return None
        if connection.closed or connection.buffer or self._monotonic() - connection.idle_since_s > self._keepalive_s:
            connection.close()  # closed by the agent, sent something unasked, or idle too long
            return None
        return connection

    async def _open(self, host: str, port: int, server_name: str) -> AgentConnection:
        loop = asyncio.get_running_loop()
        if self._ssl is None:
            _, connection = await loop.create_connection(AgentConnection, host, port)
        else:
            _, connection = await loop.create_connection(
                AgentConnection, host, port, ssl=self._ssl, server_hostname=server_name or host
            )
        self.connections_opened += 1
        return connection

    async def _exchange(
        self,
        key: tuple[str, int, str],
        connection: AgentConnection,
        request: bytes,
        max_body_bytes: int,
        keep_alive: bool,
        *,
        reused: bool,
    ) -> tuple[int, bytes]:
        before = connection.received_bytes
        done = False
        try:
            connection.write(request)
            status, body, reusable = await _answer(connection, max_body_bytes, reused=reused)
            done = True
        finally:
            self.received_bytes += connection.received_bytes - before
            if not done:
                connection.abort()  # interrupted (timeout, cap, a bad answer): the rest of it is never read
        if keep_alive and reusable and key not in self._idle:
            connection.idle_since_s = self._monotonic()
            self._idle[key] = connection
        else:
            connection.close()
        return status, body

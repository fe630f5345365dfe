"""The operator's scrape of the agents: one deadline for the whole request, the body cap enforced while reading,
and TLS with client certificates and basic auth against the agent's real ``/metrics`` server."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from jouleledger.controller.agent_http import PAUSE_READING_BYTES, AgentHttpClient
from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import (
    ERROR,
    OK,
    RESULTS,
    TIMEOUT,
    TOO_LARGE,
    AgentClientConfig,
    AgentScraper,
    build_agent_client,
)
from jouleledger.controller.serving import MAX_BODY_BYTES as SERVING_MAX_BODY_BYTES
from jouleledger.controller.serving import ServingAccounting, serving_target
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.metrics.agent import AgentCollector
from jouleledger.metrics.server import MetricsServer
from jouleledger.metrics.webconfig import load_web_config
from tests._tls import PASSWORD, SERVER_NAME, USER, Pki, make_pki
from tests.metrics._views import NODE, example_view

CHUNK_BYTES = 64 * 1024  # what the hostile agents write at a time
SOCKET_READ_BYTES = 256 * 1024  # the most asyncio reads from a socket at a time


class _CountingTransport(httpx.AsyncBaseTransport):
    """The real httpx transport (the serving pods' scrape), counting the body bytes received from the socket."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.read_bytes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        inner_stream = response.stream
        assert isinstance(inner_stream, httpx.AsyncByteStream)
        transport = self

        class Counting(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in inner_stream:
                    transport.read_bytes += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await inner_stream.aclose()

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Counting(), extensions=response.extensions
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _client() -> AgentHttpClient:
    return build_agent_client(AgentClientConfig())


@dataclass
class _Agent:
    """A hostile agent on 127.0.0.1: ``serve`` writes the answer; ``sent`` counts what it managed to write."""

    port: int = 0
    sent: int = 0
    finished: bool = False

    def target(self) -> AgentTarget:
        return AgentTarget(node=NODE, pod="agent-x", ip="127.0.0.1", port=self.port)


@contextlib.asynccontextmanager
async def _agent(serve: Callable[[_Agent, asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[_Agent]:
    agent = _Agent()
    handlers: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await serve(agent, writer)
            agent.finished = True
        except ConnectionError:
            pass
        finally:
            writer.close()

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append((asyncio.create_task(answer(reader, writer)), writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    agent.port = server.sockets[0].getsockname()[1]
    try:
        yield agent
    finally:
        server.close()
        for task, writer in handlers:
            task.cancel()
            writer.close()
        await asyncio.gather(*(task for task, _ in handlers), return_exceptions=True)
        for _, writer in handlers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def _scraper(client: AgentHttpClient, *, timeout_s: float = 5.0, max_body_bytes: int = 1 << 20) -> AgentScraper:
    return AgentScraper(
        client,
        timeout_s=timeout_s,
        concurrency=4,
        backoff_base_s=15.0,
        backoff_max_s=120.0,
        max_body_bytes=max_body_bytes,
    )


async def _drip(agent: _Agent, writer: asyncio.StreamWriter) -> None:
    """A valid-looking answer that sends one byte every 100 ms for 30 s: each read is quick, the whole is not."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300\r\n\r\n")
    for _ in range(300):
        writer.write(b"#")
        await writer.drain()
        agent.sent += 1
        await asyncio.sleep(0.1)


async def test_a_dripping_agent_is_cut_at_the_total_timeout() -> None:
    async with _agent(_drip) as agent, _client() as client:
        [outcome] = await _scraper(client, timeout_s=0.5).scrape_all([agent.target()])
    assert outcome.result == TIMEOUT
    assert "0.5 s" in outcome.error
    assert not agent.finished
    assert agent.sent < 300


def _endless(total_bytes: int, *, declare: bool) -> Callable[[_Agent, asyncio.StreamWriter], Awaitable[None]]:
    async def serve(agent: _Agent, writer: asyncio.StreamWriter) -> None:
        length = f"Content-Length: {total_bytes}\r\n" if declare else "Connection: close\r\n"
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{length}\r\n".encode())
        line = b"# a comment line that the parser would skip, repeated until the operator gives up\n"
        block = line * (CHUNK_BYTES // len(line))
        while agent.sent < total_bytes:
            writer.write(block)
            await writer.drain()
            agent.sent += len(block)

    return serve


@pytest.mark.parametrize("declare", [False, True], ids=["streamed", "declared-length"])
async def test_a_300_mb_body_is_aborted_at_the_cap_without_reading_it(declare: bool) -> None:
    cap = 1 << 20
    async with _agent(_endless(300 * 1024 * 1024, declare=declare)) as agent, _client() as client:
        [outcome] = await _scraper(client, max_body_bytes=cap).scrape_all([agent.target()])
    assert outcome.result == TOO_LARGE
    assert str(cap) in outcome.error
    # What the client read from the socket: at most the cap, the unread bytes at which it stops reading and one
    # read more (with a declared length over the cap, only what came with the headers).
    assert 0 < client.received_bytes <= cap + PAUSE_READING_BYTES + SOCKET_READ_BYTES
    assert not agent.finished


async def test_a_gzip_bomb_is_capped_on_its_decoded_size() -> None:
    body = gzip.compress(b"\n" * (64 << 20), compresslevel=9)  # 64 MiB of newlines in about 64 KiB

    async def serve(agent: _Agent, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async with _agent(serve) as agent, _client() as client:
        [outcome] = await _scraper(client, max_body_bytes=1 << 20).scrape_all([agent.target()])
    assert outcome.result == TOO_LARGE


async def test_a_body_that_is_not_utf8_is_an_error_not_a_crash() -> None:
    async def serve(agent: _Agent, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\n")
        await writer.drain()

    async with _agent(serve) as agent, _client() as client:
        [outcome] = await _scraper(client).scrape_all([agent.target()])
    assert outcome.result == ERROR
    assert "utf-8" in outcome.error


def test_every_result_is_counted_by_the_operator() -> None:
    assert set(OperatorStats().scrapes) == set(RESULTS) == {OK, ERROR, TIMEOUT, TOO_LARGE}


# --- TLS, client certificates and credentials against the agent's real /metrics server ------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def _secure_agent(pki: Pki) -> Iterator[AgentTarget]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(example_view))
    web_config = load_web_config(pki.web_config(client_auth=True))
    server = MetricsServer(registry, lambda: (True, {}), request_timeout_s=5.0, web_config=web_config)
    port = server.start("127.0.0.1", 0)
    try:
        yield AgentTarget(node=NODE, pod="agent-0", ip="127.0.0.1", port=port)
    finally:
        server.stop()


async def _scrape_with(config: AgentClientConfig, target: AgentTarget) -> tuple[str, str]:
    async with build_agent_client(config) as client:
        scraper = AgentScraper(
            client, timeout_s=5.0, concurrency=2, backoff_base_s=15.0, backoff_max_s=120.0, agent_client=config
        )
        [outcome] = await scraper.scrape_all([target])
    return outcome.result, outcome.error


async def test_the_operator_scrapes_a_tls_agent_with_client_certificate_and_basic_auth(pki: Pki) -> None:
    password_file = pki.folder / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    wrong_file = pki.folder / "wrong-password"
    wrong_file.write_text("guess", encoding="utf-8")
    tls = {"scheme": "https", "ca_file": pki.ca, "server_name": SERVER_NAME}
    mine = {"cert_file": pki.client_cert, "key_file": pki.client_key}
    with _secure_agent(pki) as target:
        good = AgentClientConfig(**tls, **mine, username=USER, password_file=password_file)  # type: ignore[arg-type]
        assert await _scrape_with(good, target) == (OK, "")
        by_ip = AgentClientConfig(
            scheme="https", ca_file=pki.ca, **mine, username=USER, password_file=password_file
        )  # the certificate also names 127.0.0.1
        assert (await _scrape_with(by_ip, target))[0] == OK
        wrong = AgentClientConfig(**tls, **mine, username=USER, password_file=wrong_file)  # type: ignore[arg-type]
        assert await _scrape_with(wrong, target) == (ERROR, "HTTP 401")
        anonymous = AgentClientConfig(**tls, **mine)  # type: ignore[arg-type]
        assert await _scrape_with(anonymous, target) == (ERROR, "HTTP 401")
        no_cert = AgentClientConfig(**tls, username=USER, password_file=password_file)  # type: ignore[arg-type]
        assert (await _scrape_with(no_cert, target))[0] == ERROR
        stranger = AgentClientConfig(
            **tls,  # type: ignore[arg-type]
            cert_file=pki.stranger_cert,
            key_file=pki.stranger_key,
            username=USER,
            password_file=password_file,
        )
        assert (await _scrape_with(stranger, target))[0] == ERROR
        plain = AgentClientConfig()
        assert (await _scrape_with(plain, target))[0] == ERROR
        wrong_name = AgentClientConfig(scheme="https", ca_file=pki.ca, server_name="someone-else.example", **mine)  # type: ignore[arg-type]
        result, error = await _scrape_with(wrong_name, target)
        assert result == ERROR
        assert "CERTIFICATE_VERIFY_FAILED" in error
        gone = AgentClientConfig(**tls, **mine, username=USER, password_file=pki.folder / "nope")  # type: ignore[arg-type]
        result, error = await _scrape_with(gone, target)
        assert result == ERROR
        assert "credentials" in error


def test_a_bearer_token_is_read_from_its_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t\n", encoding="utf-8")
    assert AgentClientConfig(bearer_token_file=token).headers() == {"Authorization": "Bearer s3cr3t"}
    token.write_text("rotated", encoding="utf-8")
    assert AgentClientConfig(bearer_token_file=token).headers() == {"Authorization": "Bearer rotated"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scheme": "ftp"}, "http or https"),
        ({"scheme": "https", "cert_file": Path("c")}, "both a certificate file and a key file"),
        ({"username": "u"}, "both a username and a password file"),
        ({"username": "u", "password_file": Path("p"), "bearer_token_file": Path("t")}, "exclusive"),
        ({"username": "a:b", "password_file": Path("p")}, "cannot hold a colon"),
        ({"ca_file": Path("ca")}, "need the https scheme"),
    ],
)
def test_inconsistent_agent_client_options_are_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AgentClientConfig(**options)  # type: ignore[arg-type]


# --- serving pods (a tenant's pod, read by the operator each pass) get the same bounds --------------------------


def _serving_pod(port: int) -> dict[str, object]:
    return {
        "metadata": {
            "name": "chat-0",
            "namespace": "tenant",
            "uid": "uid-chat-0",
            "labels": {"jouleledger.io/serving": "vllm"},
            "annotations": {"jouleledger.io/serving-port": str(port)},
        },
        "status": {"podIP": "127.0.0.1", "phase": "Running"},
    }


async def _read_serving(agent: _Agent, transport: httpx.AsyncBaseTransport | None = None) -> str:
    serving = ServingAccounting(timeout_s=0.5)
    target = serving_target(_serving_pod(agent.port))
    assert target is not None
    client = httpx.AsyncClient(transport=transport, trust_env=False)
    try:
        return await serving._read(client, target, now=1.0)
    finally:
        await client.aclose()


async def test_a_dripping_serving_pod_is_cut_at_the_timeout() -> None:
    async with _agent(_drip) as agent:
        assert await _read_serving(agent) == "timeout"
    assert not agent.finished
    assert agent.sent < 300


async def test_a_huge_serving_pod_body_is_abandoned_at_the_cap() -> None:
    transport = _CountingTransport()
    async with _agent(_endless(300 * 1024 * 1024, declare=False)) as agent:
        assert await _read_serving(agent, transport) == "error"
    assert transport.read_bytes <= SERVING_MAX_BODY_BYTES + CHUNK_BYTES
    assert not agent.finished

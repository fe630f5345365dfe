"""Scraping the agents: bounded concurrency, a deadline per request, a streamed body cap, backoff per agent.

Each request, from connecting to the last byte of the body, must finish within ``timeout_s`` (``timeout``
otherwise: a dripping agent cannot hold a pass longer than that); the body is read in chunks and the request is
aborted as soon as it exceeds ``max_body_bytes`` once decoded (``too_large``: a huge or gzip-bombed body never sits
in memory). After ``k`` consecutive failures an agent is skipped until ``base_s * (2**(k-1) - 1)`` seconds (capped
at ``max_s``) have passed since its last failure: a single failure is retried at the next pass, a persistent one
every 1, 3, 7... intervals.

:class:`AgentClientConfig` is how the operator reaches agents whose ``/metrics`` needs TLS and/or credentials (the
agent's web config file): a CA to verify them, a client certificate, basic auth or a bearer token read from files
at every pass (so rotated secrets are picked up).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import resource
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from jouleledger.controller.agent_http import AgentHttpClient, AgentHttpError, BodyTooLargeError
from jouleledger.controller.cluster import AgentTarget
from jouleledger.core.contract import FOLDED_UNTIL_PARAM
from jouleledger.core.deltas import AgentScrape, ParseMemo, ScrapeFormatError, parse_agent_samples
from jouleledger.core.frozen import quick_init
from jouleledger.core.units import positive
from jouleledger.metrics.operator_collector import ExpositionError, LabelsCache, parse_exposition

__all__ = [
    "AgentClientConfig",
    "AgentScraper",
    "BodyTooLargeError",
    "ScrapeOutcome",
    "build_agent_client",
    "fetch_bounded",
    "open_file_budget",
]

log = logging.getLogger(__name__)

OK: Final = "ok"
ERROR: Final = "error"
TIMEOUT: Final = "timeout"
TOO_LARGE: Final = "too_large"
BACKOFF: Final = "backoff"
RESULTS: Final = (OK, ERROR, TIMEOUT, TOO_LARGE)
"""Every result a tried scrape can have (``backoff`` means not tried)."""
MAX_BODY_BYTES: Final = 64 * 1024 * 1024


@quick_init
@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """``result`` is ``ok`` (``scrape`` set), ``error``, ``timeout``, ``too_large`` or ``backoff`` (not tried)."""

    target: AgentTarget
    result: str
    scrape: AgentScrape | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class AgentClientConfig:
    """How to reach the agents' ``/metrics``: ``http`` (the default) or ``https`` with the options below.

    ``ca_file`` verifies the agents' certificates (default: the system CAs); ``server_name`` is the name their
    certificate is checked against (agents are reached by pod IP: a shared certificate names a DNS name instead);
    ``cert_file``/``key_file`` is the client certificate; ``username`` with ``password_file`` is basic auth,
    ``bearer_token_file`` a bearer token (one of the two).
    """

    scheme: str = "http"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""
    username: str = ""
    password_file: Path | None = None
    bearer_token_file: Path | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"agent scheme must be http or https, got {self.scheme!r}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("an agent client certificate needs both a certificate file and a key file")
        if bool(self.username) != (self.password_file is not None):
            raise ValueError("agent basic auth needs both a username and a password file")
        if ":" in self.username:
            raise ValueError("an agent basic-auth username cannot hold a colon (it ends the username)")
        if self.username and self.bearer_token_file is not None:
            raise ValueError("agent basic auth and a bearer token are exclusive: give one of them")
        if self.scheme == "http" and (self.ca_file or self.cert_file or self.server_name):
            raise ValueError("agent TLS options (CA, client certificate, server name) need the https scheme")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``https`` (raises ``OSError``/``ssl.SSLError`` naming the bad file), else None."""
        if self.scheme != "https":
            return None
        context = ssl.create_default_context(cafile=None if self.ca_file is None else str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header, read from its file now (raises ``OSError`` when it cannot be read,
        ``ValueError`` when a bearer token holds a line break)."""
        if self.password_file is not None:
            password = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            token = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        if self.bearer_token_file is not None:
            token = self.bearer_token_file.read_text(encoding="utf-8").strip()
            if "\n" in token or "\r" in token:
                raise ValueError(f"the bearer token in {self.bearer_token_file} holds a line break")
            return {"Authorization": f"Bearer {token}"}
        return {}


def build_agent_client(config: AgentClientConfig) -> AgentHttpClient:
    """The HTTP client of the scraper, one for the operator's lifetime (:mod:`jouleledger.controller.agent_http`:
    about a quarter of a general client's CPU per request, which is most of a pass at thousands of agents); it
    keeps the connection to each agent alive across passes (see :class:`AgentScraper` for the bound on idle
    connections), so that a pass skips TCP and TLS setup. Never the environment's proxies: agents are pod IPs."""
    return AgentHttpClient(ssl_context=config.ssl_context())


def open_file_budget() -> int:
    """How many agent connections may stay open between passes: half the open-file limit, raised to its hard
    maximum first (as Go programs do), so that sockets never starve the process of file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(0, soft // 2 - 64)


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    last_failure_s: float = 0.0


async def fetch_bounded(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout_s: float,
    max_body_bytes: int,
    headers: dict[str, str] | None = None,
    extensions: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """GET ``url``: ``(status, body)``, the body read only for a 200 and only up to ``max_body_bytes`` (decoded).

    The whole request, from connecting to the body's last byte, must finish within ``timeout_s`` (``TimeoutError``
    otherwise); a body over the cap raises :class:`BodyTooLargeError` as soon as it is known; transport failures
    raise ``httpx.HTTPError`` or ``OSError``. For every scrape of outside HTTP endpoints (agents, serving pods).
    """
    async with asyncio.timeout(timeout_s):
        request = client.build_request(
            "GET", url, headers=headers, timeout=httpx.Timeout(timeout_s), extensions=extensions
        )
        response = await client.send(request, stream=True)
        try:
            if response.status_code != 200:
                return response.status_code, b""
            declared = response.headers.get("Content-Length", "")
            plain = "Content-Encoding" not in response.headers  # else the decoded size is what counts
            if plain and declared.isdigit() and int(declared) > max_body_bytes:
                raise BodyTooLargeError(f"declared {declared} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body_bytes:
                    raise BodyTooLargeError(f"aborted after {size} bytes")
                chunks.append(chunk)
            return 200, b"".join(chunks)
        finally:
            await response.aclose()


class AgentScraper:
    """Scrapes agent ``/metrics`` endpoints through an injected :class:`AgentHttpClient`
    (:func:`build_agent_client`).

    The connections to the first ``keep_alive_agents`` agents stay open between passes; the others are closed
    after each answer, so that idle sockets stay within the process's open-file limit (:func:`open_file_budget`,
    the default).
    """

    def __init__(
        self,
        client: AgentHttpClient,
        *,
        timeout_s: float,
        concurrency: int,
        backoff_base_s: float,
        backoff_max_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        max_body_bytes: int = MAX_BODY_BYTES,
        agent_client: AgentClientConfig | None = None,
        keep_alive_agents: int | None = None,
    ) -> None:
        positive("scrape timeout", timeout_s)
        self._agent_client = agent_client if agent_client is not None else AgentClientConfig()
        if client.scheme != self._agent_client.scheme:
            raise ValueError(f"an {client.scheme} agent client for {self._agent_client.scheme} agents")
        self._client = client
        self._timeout_s = timeout_s
        self._semaphore = asyncio.Semaphore(concurrency)
        self._base_s = backoff_base_s
        self._max_s = backoff_max_s
        self._monotonic = monotonic
        self._max_body_bytes = max_body_bytes
        self._backoff: dict[str, _Backoff] = {}
        self._labels: dict[str, LabelsCache] = {}  # per node: its agent's label sets, parsed once
        self._memos: dict[str, ParseMemo] = {}  # per node: identities and series keys of those label sets
        self._keep_alive_agents = open_file_budget() if keep_alive_agents is None else keep_alive_agents

    def _due(self, node: str, now_s: float) -> bool:
        state = self._backoff.get(node)
        if state is None or state.failures == 0:
            return True
        wait_s = min(self._max_s, self._base_s * float(2 ** min(state.failures - 1, 30) - 1))
        return now_s - state.last_failure_s >= wait_s

    async def scrape_all(
        self, targets: Sequence[AgentTarget], folded_until: Mapping[str, float] | None = None
    ) -> list[ScrapeOutcome]:
        """One scrape of every agent that is not backing off, concurrently (bounded); an agent whose node has a
        ``folded_until`` value (:mod:`jouleledger.core.folded`) is asked to leave out the pods finished by then."""
        until = folded_until or {}
        now_s = self._monotonic()
        due = [target for target in targets if self._due(target.node, now_s)]
        skipped = [ScrapeOutcome(target, BACKOFF) for target in targets if not self._due(target.node, now_s)]
        self._client.close_idle()
        try:
            headers = self._agent_client.headers()
        except (OSError, ValueError) as error:
            log.error("cannot read the agents' scrape credentials: %s", error)
            outcomes = [ScrapeOutcome(target, ERROR, error=f"credentials: {error}") for target in due]
        else:
            keep = self._keep_alive_agents
            outcomes = await asyncio.gather(
                *(
                    self._scrape(target, headers, until.get(target.node), keep_alive=index < keep)
                    for index, target in enumerate(due)
                )
            )
        for outcome in outcomes:
            state = self._backoff.setdefault(outcome.target.node, _Backoff())
            if outcome.result == OK:
                state.failures = 0
            else:
                state.failures += 1
                state.last_failure_s = self._monotonic()
        live = {target.node for target in targets}
        for node in [node for node in self._backoff if node not in live]:
            del self._backoff[node]
        for node in [node for node in self._labels if node not in live]:
            del self._labels[node]
            self._memos.pop(node, None)
        return [*outcomes, *skipped]

    @staticmethod
    def _path(folded_until_s: float | None) -> str:
        """``/metrics``, with ``?folded_until=`` when the operator has folded the node's finished pods."""
        if folded_until_s is None:
            return "/metrics"
        # repr() is the shortest text that reads back as the same float: the agent compares finish times exactly.
        return f"/metrics?{FOLDED_UNTIL_PARAM}={urllib.parse.quote(repr(float(folded_until_s)))}"

    async def _scrape(
        self,
        target: AgentTarget,
        headers: dict[str, str],
        folded_until_s: float | None = None,
        *,
        keep_alive: bool = True,
    ) -> ScrapeOutcome:
        async with self._semaphore:
            try:
                async with asyncio.timeout(self._timeout_s):
                    status, body = await self._client.get(
                        target.ip,
                        target.port,
                        self._path(folded_until_s),
                        headers=headers,
                        max_body_bytes=self._max_body_bytes,
                        server_name=self._agent_client.server_name,
                        keep_alive=keep_alive,
                    )
            except TimeoutError:
                log.warning("agent %s on %s: timed out after %.3g s", target.pod, target.node, self._timeout_s)
                return ScrapeOutcome(target, TIMEOUT, error=f"no complete answer within {self._timeout_s:g} s")
            except BodyTooLargeError as error:
                log.warning(
                    "agent %s on %s: exposition over %d bytes (%s)",
                    target.pod,
                    target.node,
                    self._max_body_bytes,
                    error,
                )
                return ScrapeOutcome(target, TOO_LARGE, error=f"exposition larger than {self._max_body_bytes} bytes")
            except (AgentHttpError, OSError) as error:  # OSError: a TLS alert can surface after the handshake
                log.warning("agent %s on %s: %s: %s", target.pod, target.node, type(error).__name__, error)
                return ScrapeOutcome(target, ERROR, error=f"{type(error).__name__}: {error}")
        if status != 200:
            log.warning("agent %s on %s: HTTP %d", target.pod, target.node, status)
            return ScrapeOutcome(target, ERROR, error=f"HTTP {status}")
        try:
            text = body.decode("utf-8")
            samples = parse_exposition(text, self._labels.setdefault(target.node, {}))
            memo = self._memos.setdefault(target.node, ParseMemo())
            scrape = parse_agent_samples(samples, expected_node=target.node, memo=memo)
        except (UnicodeDecodeError, ExpositionError, ScrapeFormatError) as error:
            log.warning("agent %s on %s: %s", target.pod, target.node, error)
            return ScrapeOutcome(target, ERROR, error=str(error))
        return ScrapeOutcome(target, OK, scrape)

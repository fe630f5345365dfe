"""A small threaded HTTP server for ``/metrics`` and ``/healthz``, shared by the agent and the operator.

``/metrics`` renders an injected ``CollectorRegistry`` (never the global default one), in OpenMetrics when the
scraper asks for it (``Accept: application/openmetrics-text``) and in the Prometheus text format otherwise,
gzip-compressed when the scraper accepts it. A request with a query string renders the registry that the
optional ``scoped`` callable builds from its parameters instead (the agent's ``?folded_until=``); a
:class:`ValueError` from it is a 400 with its message. ``/healthz`` asks an injected health check: 200 and
``{"status": "ok", "details": {...}}`` when healthy, 503 and ``{"status": "unhealthy", "details": {...}}``
(the reasons) when not. Every other path is 404.

Nothing starts at import or construction; :meth:`MetricsServer.start` binds and serves from a daemon thread,
:meth:`MetricsServer.stop` shuts it down.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["HealthCheck", "MetricsServer", "ScopedRegistry"]

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]
"""Returns ``(healthy, details)``; ``details`` should be JSON-serialisable (other values become text)."""

ScopedRegistry = Callable[[Mapping[str, list[str]]], CollectorRegistry]
"""Builds the registry for one ``/metrics`` request from its query parameters; raises ``ValueError`` when bad."""

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_GZIP_MIN_BYTES = 1024


class MetricsServer:
    """Serves ``/metrics`` from ``registry`` and ``/healthz`` from ``health`` on a background daemon thread.

    ``request_timeout_s`` bounds how long one connection may hold a worker thread (slow or idle clients).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthCheck,
        *,
        request_timeout_s: float = 10.0,
        scoped: ScopedRegistry | None = None,
    ) -> None:
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s!r}")
        self._registry = registry
        self._scoped = scoped
        self._health = health
        self._request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while serving, else None."""
        httpd = self._httpd
        return None if httpd is None else int(httpd.server_address[1])

    def start(self, host: str = "0.0.0.0", port: int = 0) -> int:
        """Bind ``host:port`` (port 0: an ephemeral one) and serve in a daemon thread; returns the bound port.

        Raises ``OSError`` when the address cannot be bound and ``RuntimeError`` when already started.
        """
        with self._lock:
            if self._httpd is not None:
                raise RuntimeError(f"metrics server already serving on port {self.port}")
            httpd = _HTTPServer(host, port, self)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"metrics-http-{httpd.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
            bound = int(httpd.server_address[1])
        log.info("serving %s and %s on %s:%d", METRICS_PATH, HEALTH_PATH, host, bound)
        return bound

    def stop(self) -> None:
        """Stop serving and release the port; a no-op when not started."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join()

    # --- request handling (called from the handler threads) ------------------------------------------------

    def _metrics(self, accept: str, accept_encoding: str, query: str = "") -> tuple[int, str, bytes, dict[str, str]]:
        encoder, content_type = choose_encoder(accept)
        registry = self._registry
        if query and self._scoped is not None:
            try:
                registry = self._scoped(parse_qs(query, keep_blank_values=True))
            except ValueError as error:
                return _error(HTTPStatus.BAD_REQUEST, f"bad query {query!r}: {error}")
        try:
            body = encoder(registry)
        except Exception as error:
            log.exception("rendering %s failed", METRICS_PATH)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"rendering metrics failed: {error}")
        headers: dict[str, str] = {}
        if len(body) >= _GZIP_MIN_BYTES and _accepts_gzip(accept_encoding):
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept, Accept-Encoding"
        return HTTPStatus.OK, content_type, body, headers

    def _healthz(self) -> tuple[int, str, bytes, dict[str, str]]:
        try:
            healthy, details = self._health()
            body = _health_body(bool(healthy), details)
        except Exception as error:
            log.exception("health check failed")
            healthy = False
            body = _health_body(False, {"error": f"health check failed: {type(error).__name__}: {error}"})
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return status, _JSON, body, {"Cache-Control": "no-store"}

    def _route(
        self, path: str, accept: str, accept_encoding: str, query: str = ""
    ) -> tuple[int, str, bytes, dict[str, str]]:
        if path == METRICS_PATH:
            return self._metrics(accept, accept_encoding, query)
        if path == HEALTH_PATH:
            return self._healthz()
        return _error(HTTPStatus.NOT_FOUND, f"not found; try {METRICS_PATH} or {HEALTH_PATH}")


def _health_body(healthy: bool, details: Mapping[str, Any]) -> bytes:
    document = {"status": "ok" if healthy else "unhealthy", "details": dict(details)}
    return (json.dumps(document, sort_keys=True, default=str) + "\n").encode("utf-8")


def _error(status: HTTPStatus, message: str) -> tuple[int, str, bytes, dict[str, str]]:
    return status, _TEXT, (message + "\n").encode("utf-8"), {}


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str, port: int, owner: MetricsServer) -> None:
        self.owner = owner
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "jouleledger"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(cast(_HTTPServer, self.server).owner._request_timeout_s)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        owner = cast(_HTTPServer, self.server).owner
        try:
            url = urlsplit(self.path)
            status, content_type, body, headers = owner._route(
                url.path,
                self.headers.get("Accept", ""),
                self.headers.get("Accept-Encoding", ""),
                url.query,
            )
        except Exception as error:  # a bug must cost one request, not the connection without an answer
            log.exception("serving %s failed", self.path)
            status, content_type, body, headers = _error(HTTPStatus.INTERNAL_SERVER_ERROR, str(error))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
        log.debug("%s %s", self.address_string(), format % args)

"""The ``/metrics`` and ``/healthz`` server shared by the agent and the operator.

``/metrics`` is prometheus_client's own WSGI exposition of an injected ``CollectorRegistry`` (content negotiation,
OpenMetrics, gzip), every label value passed through :func:`~jouleledger.core.labels.safe_label_value` (printable,
encodable, at most 256 characters); only ``/healthz`` is ours: 200 and ``{"status": "ok", "details": {...}}``
when healthy, 503 and ``{"status": "unhealthy", "details": {...}}`` (the reasons) when not. Every other path is
404. An optional :class:`~jouleledger.metrics.webconfig.WebConfig` adds TLS (with client certificates) and basic
auth to ``/metrics``; ``/healthz`` stays open (the kubelet probes it without credentials; it says nothing about
pods). A ``/metrics`` request with a query string may render another registry: the one the optional ``scoped``
callable builds from its parameters (the agent's ``?folded_until=``), where it returns one; a
:class:`ValueError` from it is a 400 with its message.

With ``prefer_text`` (the operator's server) ``/metrics`` answers in the classic text format whenever the request
accepts it, even where it prefers OpenMetrics (as Prometheus' scrapes do): the series are the same (no exemplars,
units or ``_created`` samples are exported), and prometheus_client takes about twice as long to write OpenMetrics
(``bench.operator_metrics``: 0.87 against 0.47 s of CPU per scrape at 12,500 nodes).

Nothing starts at import or construction; :meth:`MetricsServer.start` binds and serves from a daemon thread,
:meth:`MetricsServer.stop` shuts it down.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric

from jouleledger.core.labels import MAX_LABEL_VALUE_CHARS, safe_label_value
from jouleledger.core.units import positive
from jouleledger.metrics.webconfig import TlsFiles, WebConfig

__all__ = ["HealthCheck", "MetricsServer", "ScopedRegistry", "accepts_text", "safe_labels"]

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]
"""Returns ``(healthy, details)``; ``details`` should be JSON-serialisable (other values become text)."""

ScopedRegistry = Callable[[Mapping[str, list[str]]], CollectorRegistry | None]
"""The registry for one ``/metrics`` request from its query parameters (None: the server's own); raises
``ValueError`` when they are bad."""

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_TEXT_FORMAT = "text/plain; version=0.0.4"  # prometheus_client's classic text format
_Answer = tuple[HTTPStatus, list[tuple[str, str]], bytes]


class MetricsServer:
    """Serves ``/metrics`` from ``registry`` and ``/healthz`` from ``health`` on a background daemon thread.

    ``request_timeout_s`` bounds how long one connection (TLS handshake included) may hold a worker thread.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthCheck,
        *,
        request_timeout_s: float = 10.0,
        web_config: WebConfig | None = None,
        scoped: ScopedRegistry | None = None,
        prefer_text: bool = False,
    ) -> None:
        positive("request_timeout_s", request_timeout_s)
        self._prefer_text = prefer_text
        self._metrics_app = make_wsgi_app(safe_labels(registry))
        self._scoped = scoped
        self._health = health
        self._request_timeout_s = request_timeout_s
        self._web_config = web_config
        self._lock = threading.Lock()
        self._httpd: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while serving, else None."""
        httpd = self._httpd
        return None if httpd is None else int(httpd.server_address[1])

    @property
    def scheme(self) -> str:
        """``https`` when the web config has TLS, else ``http``."""
        return "https" if self._web_config is not None and self._web_config.tls is not None else "http"

    def start(self, host: str = "0.0.0.0", port: int = 0) -> int:
        """Bind ``host:port`` (port 0: an ephemeral one) and serve in a daemon thread; returns the bound port.

        Raises ``OSError`` when the address cannot be bound and ``RuntimeError`` when already started.
        """
        tls_files = None if self._web_config is None else self._web_config.tls

        class Server(_Server):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            tls = tls_files

        class Handler(_Handler):
            timeout = self._request_timeout_s

        with self._lock:
            if self._httpd is not None:
                raise RuntimeError(f"metrics server already serving on port {self.port}")
            httpd = make_server(host, port, self._app, server_class=Server, handler_class=Handler)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"metrics-http-{httpd.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
            bound = int(httpd.server_address[1])
        log.info("serving %s and %s on %s://%s:%d", METRICS_PATH, HEALTH_PATH, self.scheme, host, bound)
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

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            return _send(start_response, environ, self._healthz())
        if path != METRICS_PATH:
            return _send(start_response, environ, _error(HTTPStatus.NOT_FOUND, f"not found; try {METRICS_PATH}"))
        if self._web_config is not None and not self._web_config.authorized(environ.get("HTTP_AUTHORIZATION")):
            status, headers, body = _error(HTTPStatus.UNAUTHORIZED, "unauthorized")
            headers.append(("WWW-Authenticate", 'Basic realm="jouleledger"'))
            return _send(start_response, environ, (status, headers, body))
        metrics_app = self._metrics_app
        query = environ.get("QUERY_STRING", "")
        if query and self._scoped is not None:
            try:
                registry = self._scoped(parse_qs(query, keep_blank_values=True))
            except ValueError as error:
                return _send(start_response, environ, _error(HTTPStatus.BAD_REQUEST, f"bad query {query!r}: {error}"))
            if registry is not None:
                metrics_app = make_wsgi_app(safe_labels(registry))
        if self._prefer_text and accepts_text(environ.get("HTTP_ACCEPT", "")):
            environ = {**environ, "HTTP_ACCEPT": _TEXT_FORMAT}
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if head:  # prometheus_client answers GET only; HEAD is the GET without its body
            environ = {**environ, "REQUEST_METHOD": "GET"}
        try:
            captured: list[tuple[str, list[tuple[str, str]]]] = []
            body = b"".join(metrics_app(environ, lambda status, headers, *_: captured.append((status, headers))))
        except Exception as error:
            log.exception("rendering %s failed", METRICS_PATH)
            return _send(
                start_response, environ, _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"rendering failed: {error}")
            )
        status_line, headers = captured[0]
        headers = [*headers, ("Content-Length", str(len(body))), ("Vary", "Accept, Accept-Encoding")]
        start_response(status_line, headers)
        return [] if head else [body]

    def _healthz(self) -> _Answer:
        try:
            healthy, details = self._health()
            body = _health_body(bool(healthy), details)
        except Exception as error:
            log.exception("health check failed")
            healthy = False
            body = _health_body(False, {"error": f"health check failed: {type(error).__name__}: {error}"})
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return status, [("Content-Type", _JSON), ("Cache-Control", "no-store")], body


class _SafeLabels:
    """Collects ``registry`` with every label value made safe (a new sample only where one had to change)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            if any(_unsafe(value) for sample in metric.samples for value in sample.labels.values()):
                metric.samples = [
                    sample._replace(labels={name: safe_label_value(value) for name, value in sample.labels.items()})
                    for sample in metric.samples
                ]
            yield metric


def accepts_text(accept: str) -> bool:
    """Whether an ``Accept`` header admits the classic text format (``text/plain``, ``text/*`` or ``*/*`` with a
    non-zero quality, or no header at all)."""
    if not accept.strip():
        return True
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if media.lower() not in ("text/plain", "text/*", "*/*"):
            continue
        quality = next((param[2:].strip() for param in params if param.lower().startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            continue
    return False


def _unsafe(value: str) -> bool:
    return len(value) > MAX_LABEL_VALUE_CHARS or not value.isprintable()


def safe_labels(registry: CollectorRegistry) -> CollectorRegistry:
    """A registry that renders ``registry`` with safe label values (what ``/metrics`` serves)."""
    safe = CollectorRegistry(auto_describe=False)
    safe.register(_SafeLabels(registry))
    return safe


def _send(start_response: StartResponse, environ: WSGIEnvironment, answer: _Answer) -> list[bytes]:
    status, headers, body = answer
    start_response(f"{status.value} {status.phrase}", [*headers, ("Content-Length", str(len(body)))])
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _health_body(healthy: bool, details: Mapping[str, Any]) -> bytes:
    document = {"status": "ok" if healthy else "unhealthy", "details": dict(details)}
    return (json.dumps(document, sort_keys=True, default=str) + "\n").encode("utf-8")


def _error(status: HTTPStatus, message: str) -> _Answer:
    return status, [("Content-Type", _TEXT)], (message + "\n").encode("utf-8")


class _Server(ThreadingWSGIServer):
    """prometheus_client's threaded WSGI server; with TLS, the handshake runs in the connection's own thread."""

    tls: TlsFiles | None = None
    block_on_close = False

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.tls is None:
            return sock, address
        context = self.tls.context()  # the current certificate (re-read when its files change)
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a client that went away: one debug line, never a traceback on stderr.
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()  # applies ``timeout`` to the connection
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
        log.debug("%s %s", self.address_string(), format % args)

"""A small asynchronous Kubernetes API client over httpx: list, get, create, merge-patch, events.

kopf watches what the operator observes; this client does the operator's own reads and writes (footprints, Job
annotations, Events). Transient failures (HTTP 429 with ``Retry-After``, 500/502/503/504, connection errors and
timeouts) are retried with exponential backoff; anything else raises :class:`ApiError` at once. The credentials
are kopf's (:class:`kopf.ConnectionInfo`), so both talk to the same API server as the same identity.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

__all__ = [
    "ApiError",
    "ConflictError",
    "KubeApi",
    "NotFoundError",
    "RotatingTokenAuth",
    "build_http_client",
    "format_time",
    "object_path",
    "parse_time",
]

log = logging.getLogger(__name__)

RETRIED_STATUS: Final = frozenset({429, 500, 502, 503, 504})
MERGE_PATCH: Final = "application/merge-patch+json"
LIST_PAGE_SIZE: Final = 500


class ApiError(RuntimeError):
    """The API server refused a request (after retries where the failure was transient)."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """True when trying again later may succeed: no answer (0), 401 (a token being rotated), 429, or a server
        error (5xx)."""
        return self.status in (0, 401, 429) or self.status >= 500


class NotFoundError(ApiError):
    """HTTP 404."""


class ConflictError(ApiError):
    """HTTP 409: the object exists already, or its resourceVersion changed."""


def _error(method: str, path: str, response: httpx.Response) -> ApiError:
    reason, message = response.reason_phrase, response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or message)
    kind = NotFoundError if response.status_code == 404 else ConflictError if response.status_code == 409 else ApiError
    return kind(method, path, response.status_code, reason, message)


class KubeApi:
    """Requests against one API server through an injected ``httpx.AsyncClient`` (its base URL is the server)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        attempts: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self._client = client
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self.retries = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request with retries; the decoded JSON body."""
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                response = await self._client.request(
                    method,
                    path,
                    params=params,
                    json=body,
                    headers={"Content-Type": content_type, "Accept": "application/json"} if body is not None else None,
                )
            except (httpx.TransportError, httpx.TimeoutException) as error:
                if last:
                    raise ApiError(method, path, 0, type(error).__name__, str(error)) from error
                log.debug("%s %s failed (%s); retrying in %.2fs", method, path, error, delay)
            else:
                if response.status_code < 400:
                    return response.json() if response.content else {}
                if response.status_code not in RETRIED_STATUS or last:
                    raise _error(method, path, response)
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), self._max_backoff_s))
                log.debug("%s %s: HTTP %d; retrying in %.2fs", method, path, response.status_code, delay)
            self.retries += 1
            await self._sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)
        raise AssertionError("unreachable")  # pragma: no cover

    async def list(self, path: str, *, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """All items of a list, page by page."""
        items: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": str(LIST_PAGE_SIZE)}
        while True:
            page = await self.request("GET", path, params=query)
            items.extend(item for item in page.get("items") or () if isinstance(item, dict))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query = {**query, "continue": str(token)}

    async def get(self, path: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            result = await self.request("GET", path)
        except NotFoundError:
            return None
        return result if isinstance(result, dict) else None

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object (ConflictError when it exists)."""
        result = await self.request("POST", path, body=dict(body))
        return result if isinstance(result, dict) else {}

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386)."""
        result = await self.request("PATCH", path, body=dict(body), content_type=MERGE_PATCH)
        return result if isinstance(result, dict) else {}


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    """The REST path of a namespaced object of a kind whose plural is its lower-cased name + ``s`` (every kind a
    pod's controller owner is in practice: StatefulSet, DaemonSet, Job, ReplicaSet, JobSet, PyTorchJob...)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{kind.lower()}s/{name}"


def parse_time(value: object) -> float | None:
    """An RFC 3339 time (as Kubernetes writes them) as Unix seconds; None when absent or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def format_time(unix_s: float) -> str:
    """RFC 3339 UTC with microseconds (``""`` for 0: never)."""
    if not unix_s:
        return ""
    return dt.datetime.fromtimestamp(unix_s, tz=dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


SERVICE_ACCOUNT_TOKEN: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class RotatingTokenAuth(httpx.Auth):
    """Bearer auth that re-reads a projected service-account token when the kubelet rotates the file.

    The file is read again only when its modification time changes; if it cannot be read, the last token stays.
    """

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token = token
        self._mtime_ns = self._stat()

    def _stat(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    def token(self) -> str:
        mtime_ns = self._stat()
        if mtime_ns != self._mtime_ns:
            try:
                fresh = self.path.read_text(encoding="utf-8").strip()
            except OSError as error:
                log.warning("cannot re-read the service-account token %s: %s", self.path, error)
            else:
                if fresh:
                    self._token = fresh
                    self._mtime_ns = mtime_ns
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request


def build_http_client(
    info: Any,
    *,
    timeout_s: float = 30.0,
    token_path: Path = SERVICE_ACCOUNT_TOKEN,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for a :class:`kopf.ConnectionInfo`: its server, authorization headers and TLS
    context (CA, client certificate, ``insecure``), exactly as kopf itself connects. In a pod, where the token
    came from the projected service-account file, the token follows that file as it is rotated."""
    server = str(info.server).rstrip("/")
    verify: ssl.SSLContext | bool = info.as_ssl_context() if server.startswith("https") else True
    headers = dict(info.as_http_headers())
    auth: httpx.Auth | None = None
    token = getattr(info, "token", None)
    if token and _file_holds(token_path, token):
        headers.pop("Authorization", None)
        auth = RotatingTokenAuth(token_path, token)
    return httpx.AsyncClient(
        base_url=server,
        headers=headers,
        auth=auth,
        verify=verify,
        timeout=timeout_s,
        trust_env=bool(getattr(info, "trust_env", False)),
        transport=transport,
    )


def _file_holds(path: Path, token: str) -> bool:
    try:
        return path.read_text(encoding="utf-8").strip() == token
    except OSError:
        return False

"""The operator's Kubernetes API client: list, get, create, merge-patch and Events over the official client.

kopf watches what the operator observes; this module does the operator's own reads and writes (footprints, Job
annotations, Events), through ``kubernetes.client.ApiClient`` (urllib3), the one Kubernetes client besides kopf.
That client is synchronous: each request runs in a bounded thread pool, so the event loop never blocks. Transient
failures (HTTP 429 with ``Retry-After``, 500/502/503/504, connection errors and timeouts) are retried here with
exponential backoff; anything else raises :class:`ApiError` at once. The credentials are kopf's
(:class:`kopf.ConnectionInfo`), so both talk to the same API server as the same identity; a token read from the
projected service-account file follows that file as the kubelet rotates it.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import kopf
    from kubernetes.client import ApiClient, Configuration

__all__ = [
    "ApiError",
    "ConflictError",
    "KubeApi",
    "NotFoundError",
    "RotatingToken",
    "build_api_client",
    "format_time",
    "load_api_client",
    "object_path",
    "parse_time",
]

log = logging.getLogger(__name__)

RETRIED_STATUS: Final = frozenset({429, 500, 502, 503, 504})
MERGE_PATCH: Final = "application/merge-patch+json"
LIST_PAGE_SIZE: Final = 500
METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
"""``Accept`` of a list that needs only its items' metadata (the server sends PartialObjectMetadata; one that
cannot falls back to whole objects)."""
DEFAULT_CONCURRENCY: Final = 16
"""Requests in flight at once (threads, and connections kept open to the API server)."""
SERVICE_ACCOUNT_TOKEN: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


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


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str
    retry_after: str
    data: bytes


def _error(method: str, path: str, answer: _Answer) -> ApiError:
    reason, message = answer.reason, answer.data[:500].decode("utf-8", "replace")
    try:
        body = json.loads(answer.data)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or message)
    kind = NotFoundError if answer.status == 404 else ConflictError if answer.status == 409 else ApiError
    return kind(method, path, answer.status, reason, message)


class KubeApi:
    """Requests against one API server through an injected ``kubernetes.client.ApiClient``
    (:func:`build_api_client`), ``concurrency`` of them at once in a thread pool.

    ``sleep`` waits between retries (injected in tests); :meth:`aclose` (or leaving ``async with``) closes the
    pool and the connections.
    """

    def __init__(
        self,
        client: ApiClient,
        *,
        attempts: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        timeout_s: float = 30.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._client = client
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="kube-api")
        self.retries = 0

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        *,
        accept: str = "application/json",
    ) -> _Answer:
        """One HTTP exchange, in a pool thread; the official client adds the server, TLS and the credentials.

        ``body`` is JSON data (dicts, lists, strings, numbers, booleans, None), which the client's JSON encoding
        writes as is; it is not handed to the client's model serialisation, which rebuilds every dict and list in
        Python first (three times the cost of the encoding itself for a footprint's status)."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        http_method, url, header_params, _, post_params = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(params.items()) if params else None,
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(
            http_method, url, header_params, body, post_params, _request_timeout=self._timeout_s
        )
        data = response.read()  # type: ignore[no-untyped-call]
        return _Answer(
            status=int(response.status),
            reason=str(response.reason or ""),
            retry_after=str(response.headers.get("Retry-After") or ""),
            data=bytes(data or b""),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        """One request with retries; the decoded JSON body."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        loop = asyncio.get_running_loop()
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                send = functools.partial(self._send, method, path, params, body, content_type, accept=accept)
                answer = await loop.run_in_executor(self._pool, send)
            except (HTTPError, OSError, ApiException) as error:  # no answer: connection, TLS, timeout
                if last:
                    raise ApiError(method, path, 0, type(error).__name__, str(error)[:500]) from error
                log.debug("%s %s failed (%s); retrying in %.2fs", method, path, error, delay)
            else:
                if answer.status < 400:
                    return json.loads(answer.data) if answer.data else {}
                if answer.status not in RETRIED_STATUS or last:
                    raise _error(method, path, answer)
                if answer.retry_after.isdigit():
                    delay = max(delay, min(float(answer.retry_after), self._max_backoff_s))
                log.debug("%s %s: HTTP %d; retrying in %.2fs", method, path, answer.status, delay)
            self.retries += 1
            await self._sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)
        raise AssertionError("unreachable")  # pragma: no cover

    async def list(
        self, path: str, *, params: Mapping[str, str] | None = None, metadata_only: bool = False
    ) -> list[dict[str, Any]]:
        """All items of a list, page by page (``metadata_only``: each item's ``metadata`` is what the caller needs,
        asked for as PartialObjectMetadata)."""
        items: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": str(LIST_PAGE_SIZE)}
        accept = METADATA_LIST if metadata_only else "application/json"
        while True:
            page = await self.request("GET", path, params=query, accept=accept)
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

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections and the thread pool (requests still running finish first)."""
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        self._client.close()  # type: ignore[no-untyped-call]


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


# --- credentials -------------------------------------------------------------------------------------------------


class RotatingToken:
    """A projected service-account token that follows its file as the kubelet rotates it: installed as the
    official client's ``Configuration.refresh_api_key_hook``, which the client calls before every request.

    The file is read again only when its modification time changes; if it cannot be read, the last token stays.
    (The client's own in-cluster loader re-reads the file once a minute by the wall clock and fails the request
    when the read fails; this one is driven by the file alone.)
    """

    def __init__(self, path: Path, token: str, scheme: str = "Bearer") -> None:
        self.path = path
        self.scheme = scheme
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

    def __call__(self, configuration: Configuration) -> None:
        configuration.api_key["BearerToken"] = f"{self.scheme} {self.token()}"


def build_api_client(
    info: kopf.ConnectionInfo,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    token_path: Path = SERVICE_ACCOUNT_TOKEN,
) -> ApiClient:
    """A ``kubernetes.client.ApiClient`` for a :class:`kopf.ConnectionInfo`: its server, ``Authorization`` (token,
    scheme or basic auth, as kopf sends it), TLS (CA file or data, client certificate and key as files or data,
    ``insecure``) and proxy, exactly as kopf itself connects. In a pod, where the token came from the projected
    service-account file, the token follows that file as it is rotated (:class:`RotatingToken`). Retries are this
    module's, not urllib3's."""
    from kubernetes import client

    configuration = client.Configuration(host=str(info.server).rstrip("/"))
    configuration.verify_ssl = not info.insecure
    configuration.ssl_ca_cert = os.fsdecode(info.ca_path) if info.ca_path else None
    if info.ca_data:
        configuration.ca_cert_data = _pem(info.ca_data)
    configuration.cert_file = _file(info.certificate_path, info.certificate_data)
    configuration.key_file = _file(info.private_key_path, info.private_key_data)
    configuration.retries = False
    configuration.connection_pool_maxsize = concurrency
    if info.proxy_url or not info.trust_env:
        configuration.proxy = info.proxy_url  # the environment's proxy only where kopf's trust_env says so
    authorization = info.as_http_headers().get("Authorization")
    if authorization:
        configuration.api_key["BearerToken"] = authorization
    if info.token and not (info.username and info.password) and _file_holds(token_path, info.token):
        hook: Any = RotatingToken(token_path, info.token, info.scheme or "Bearer")  # typed None by the client
        configuration.refresh_api_key_hook = hook
    return client.ApiClient(configuration)


def load_api_client(kubeconfig: Path | None = None, *, concurrency: int = DEFAULT_CONCURRENCY) -> ApiClient:
    """A ``kubernetes.client.ApiClient`` from the client's own loaders, for the commands that are not the operator
    (``jouleledger report``): ``kubeconfig`` when given, else the in-cluster service account, else the default
    kubeconfig (``$KUBECONFIG``, ``~/.kube/config``). The library's global default configuration is left alone.
    Raises ``kubernetes.config.ConfigException`` or ``OSError`` when there is no usable configuration."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.retries = False
    configuration.connection_pool_maxsize = concurrency
    return client.ApiClient(configuration)


def _pem(data: str | bytes) -> str:
    """PEM text from kubeconfig-style data: PEM already, or base64 of PEM."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    return text if text.startswith("-----BEGIN ") else base64.b64decode(text).decode("ascii")


def _file(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None, data: str | bytes | None) -> str | None:
    """A file name for a certificate or key given as a path or as data (urllib3 loads them from files only:
    data goes to a private temporary file, removed when the process exits)."""
    if path:
        return os.fsdecode(path)
    if not data:
        return None
    handle, name = tempfile.mkstemp(prefix="jouleledger-kube-", suffix=".pem")
    with os.fdopen(handle, "w", encoding="ascii") as file:
        file.write(_pem(data))
    atexit.register(_remove, name)
    return name


def _remove(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def _file_holds(path: Path, token: str) -> bool:
    try:
        return path.read_text(encoding="utf-8").strip() == token
    except OSError:
        return False

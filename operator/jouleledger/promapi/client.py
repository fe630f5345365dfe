"""A small synchronous client for the Prometheus HTTP API (``/api/v1/query`` and ``/api/v1/query_range``).

It works unchanged against Thanos Querier and Grafana Mimir: Mimir needs the tenant in ``X-Scope-OrgID`` and
serves the API under a prefix (``https://mimir/prometheus``), which is part of the base URL; both usually sit behind
a bearer token or basic auth and a private CA.
"""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from jouleledger import __version__
from jouleledger.core.memo import trim_text_cache

__all__ = ["Connection", "PrometheusApi", "PrometheusError", "RangeSeries", "build_client"]

USER_AGENT: Final = f"jouleledger/{__version__}"


class PrometheusError(Exception):
    """A query could not be answered; the message is one line that names the server or the query."""


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series of a range query: its labels (``__name__`` included when Prometheus returns it) and its points
    as ``(unix seconds, value)`` in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the API is and how to authenticate. Secrets are read from files, never taken on the command line."""

    base_url: str
    org_id: str | None = None
    bearer_token_file: Path | None = None
    basic_auth_user: str | None = None
    basic_auth_password_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 60.0
    extra_headers: Mapping[str, str] = field(default_factory=dict)


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise PrometheusError(f"cannot read {what} {path}: {error.strerror or error}") from error
    if not value:
        raise PrometheusError(f"{what} {path} is empty")
    return value


def build_client(connection: Connection, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An ``httpx.Client`` for ``connection``; ``transport`` is the test seam (``httpx.MockTransport``)."""
    base = connection.base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise PrometheusError(f"--prometheus {connection.base_url!r}: expected an http:// or https:// URL")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **connection.extra_headers}
    if connection.org_id:
        headers["X-Scope-OrgID"] = connection.org_id
    if connection.bearer_token_file is not None:
        if connection.basic_auth_user is not None:
            raise PrometheusError("use either a bearer token or basic auth, not both")
        headers["Authorization"] = "Bearer " + _read_secret(connection.bearer_token_file, "bearer token file")
    auth: httpx.BasicAuth | None = None
    if connection.basic_auth_user is not None:
        if connection.basic_auth_password_file is None:
            raise PrometheusError("--basic-auth-user needs --basic-auth-password-file")
        password = _read_secret(connection.basic_auth_password_file, "basic auth password file")
        auth = httpx.BasicAuth(connection.basic_auth_user, password)
    verify: ssl.SSLContext | bool = True
    if connection.insecure_skip_verify:
        verify = False
    elif connection.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(connection.ca_file))
        except (OSError, ssl.SSLError) as error:
            raise PrometheusError(f"cannot load CA file {connection.ca_file}: {error}") from error
    return httpx.Client(
        base_url=base,
        headers=headers,
        auth=auth,
        verify=verify,
        timeout=connection.timeout_s,
        transport=transport,
        follow_redirects=False,
    )


def _value(raw: Any, expr: str, *, finite: bool = True) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError) as error:
        raise PrometheusError(f"query {expr!r} returned a sample that is not a number: {_shown(raw)}") from error
    except OverflowError:  # an integer beyond float64
        value = math.inf
    if finite and not math.isfinite(value):
        raise PrometheusError(f"query {expr!r} returned a non-finite sample ({_shown(raw)}); refusing to report on it")
    return value


def _point(raw: Any, expr: str, *, finite: bool = True) -> tuple[float, float]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise PrometheusError(f"query {expr!r}: malformed sample {_shown(raw)}")
    stamp = raw[0]
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(_finite_or_inf(stamp)):
        raise PrometheusError(f"query {expr!r}: malformed sample time {_shown(stamp)}")
    return float(stamp), _value(raw[1], expr, finite=finite)


def _finite_or_inf(number: float) -> float:
    try:
        return float(number)
    except OverflowError:  # an integer beyond float64
        return math.inf


def _shown(raw: Any, limit: int = 80) -> str:
    """A piece of an answer for an error message: its repr, cut to ``limit`` characters."""
    try:
        text = repr(raw)
    except ValueError:  # an integer of more digits than Python converts to text
        return "(a huge number)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate: the only way a decoded answer can hold a string that is not valid Unicode."""
_STR: Final = frozenset({str})


def _labels(item: Any, expr: str, *, escapes: bool = True) -> dict[str, str]:
    """The ``metric`` object of one series: string names and values, valid Unicode (as Prometheus writes them).
    ``escapes`` False: the answer spelled no surrogate escape, so every string in it is valid Unicode already (the
    per-string check, most of the decoding cost of a large result, is skipped)."""
    if not isinstance(item, dict):
        raise PrometheusError(f"query {expr!r}: malformed series {_shown(item)}")
    metric = item.get("metric") or {}
    if not isinstance(metric, dict):
        raise PrometheusError(f"query {expr!r}: malformed labels {_shown(metric)}")
    if not escapes and _STR.issuperset(map(type, metric.values())):
        return metric  # every value a string (JSON keys always are), none can hold a lone surrogate
    for key, value in metric.items():
        if not isinstance(value, str) or not _valid_text(key) or not _valid_text(value):
            raise PrometheusError(f"query {expr!r}: malformed label {_shown(key)}={_shown(value)}")
    return metric


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON can spell one, UTF-8 cannot hold it)
        return False
    return True


_VECTOR_HEAD: Final = b'{"status":"success","data":{"resultType":"vector","result":['
_VECTOR_TAIL: Final = b"]}}"
_VECTOR_ITEM: Final = re.compile(
    rb'\{"metric":\{([^}]*)\},"value":\[(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?),"([^"]*)"\]\}'
)
"""One series of a vector as Prometheus writes it (compact JSON, ``metric`` then ``value``), in an answer without
a backslash (so no quote is escaped: a ``}`` inside a label value ends the labels' text inside an open string,
which then fails to decode)."""


def fast_vector(
    content: bytes, *, finite: bool, labels: dict[bytes, dict[str, str]] | None = None
) -> list[tuple[Mapping[str, str], float]] | None:
    """The samples of an instant-vector answer in Prometheus' own compact layout, read without decoding the whole
    JSON document: labels by their text from ``labels`` (decoded once, with :func:`json.loads`, and the same
    read-only mapping at every query while the series is unchanged), values with
    ``float``. None when the answer is anything else (another layout, an escape, a warning, a sample time or value
    it does not take as is, a non-finite value with ``finite``): the caller then decodes it in full, and that
    path has the last word on what is valid."""
    if not content.startswith(_VECTOR_HEAD) or not content.endswith(_VECTOR_TAIL) or b"\\" in content:
        return None
    cache = labels if labels is not None else {}
    match = _VECTOR_ITEM.match
    isfinite = math.isfinite
    pos, end = len(_VECTOR_HEAD), len(content) - len(_VECTOR_TAIL)
    result: list[tuple[Mapping[str, str], float]] = []
    append = result.append
    while pos < end:
        item = match(content, pos, end)
        if item is None:
            return None
        text, stamp, raw = item.groups()
        metric = cache.get(text)
        if metric is None:
            try:
                decoded = json.loads(b"{" + text + b"}")
            except ValueError:
                return None
            if not isinstance(decoded, dict) or not _STR.issuperset(map(type, decoded.values())):
                return None
            metric = cache[text] = decoded
        try:
            value = float(raw)
        except ValueError:
            return None
        if not isfinite(float(stamp)) or (finite and not isfinite(value)):
            return None
        append((metric, value))
        pos = item.end()
        if pos < end:
            if content[pos] != 0x2C or pos + 1 == end:  # "," between series, none after the last
                return None
            pos += 1
    trim_text_cache(cache, len(result))
    return result


class PrometheusApi:
    """Instant and range queries; ``client`` comes from :func:`build_client`."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self.requests = 0
        self._labels: dict[bytes, dict[str, str]] = {}  # label sets of the last answers, by their JSON text

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    @property
    def timeout_s(self) -> float | None:
        """How long a query waits for Prometheus (to connect, and then for each part of the answer)."""
        return self._client.timeout.read

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, params: Mapping[str, str]) -> httpx.Response:
        self.requests += 1
        where = f"{self.base_url.rstrip('/')}{path}"
        try:
            response = self._client.post(path, data=dict(params))
        except httpx.TimeoutException as error:
            raise PrometheusError(f"Prometheus at {where} did not answer in time ({type(error).__name__})") from error
        except httpx.HTTPError as error:
            raise PrometheusError(f"cannot reach Prometheus at {where}: {error or type(error).__name__}") from error
        if response.status_code in (401, 403):
            raise PrometheusError(
                f"Prometheus at {where} refused the request ({response.status_code} "
                f"{'unauthorized' if response.status_code == 401 else 'forbidden'}): check the credentials"
                " and --org-id"
            )
        return response

    def _get(self, path: str, params: Mapping[str, str], expr: str) -> tuple[Any, bool]:
        """The answer's ``data``, and whether the answer spelled a surrogate escape (see :func:`_labels`)."""
        return self._decode(self._post(path, params), path, expr)

    def _decode(self, response: httpx.Response, path: str, expr: str) -> tuple[Any, bool]:
        where = f"{self.base_url.rstrip('/')}{path}"
        try:
            # From the bytes: JSON is UTF-8 (json detects UTF-16/32 too); httpx's .json() first decodes the whole
            # body to text, which doubled the cost of a large answer.
            body = json.loads(response.content)
        except (ValueError, RecursionError) as error:  # RecursionError: JSON nested thousands deep
            raise PrometheusError(
                f"Prometheus at {where} answered {response.status_code} with a body that is not JSON"
            ) from error
        if not isinstance(body, dict):
            raise PrometheusError(f"Prometheus at {where} answered {response.status_code} with an unexpected body")
        if body.get("status") != "success":
            message = str(body.get("error") or body.get("errorType") or f"HTTP {response.status_code}")
            first = message.splitlines()[0] if message.strip() else f"HTTP {response.status_code}"
            raise PrometheusError(f"query {expr!r} failed: {first[:200]}")
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise PrometheusError(f"query {expr!r}: Prometheus answered without a result list")
        return data, _SURROGATE_ESCAPE.search(response.content) is not None

    def query_range(self, expr: str, start_s: float, end_s: float, step_s: float) -> list[RangeSeries]:
        """``expr`` evaluated at ``start_s``, ``start_s + step_s``, ... up to ``end_s`` (a matrix)."""
        params = {"query": expr, "start": repr(float(start_s)), "end": repr(float(end_s)), "step": repr(float(step_s))}
        data, escapes = self._get("/api/v1/query_range", params, expr)
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"query {expr!r}: expected a matrix, got {_shown(data.get('resultType'))}")
        series: list[RangeSeries] = []
        for item in data["result"]:
            labels = _labels(item, expr, escapes=escapes)
            values = item.get("values") or []
            if not isinstance(values, list):
                raise PrometheusError(f"query {expr!r}: malformed points {_shown(values)}")
            series.append(RangeSeries(labels, tuple(_point(raw, expr) for raw in values)))
        return series

    def query(self, expr: str, time_s: float, *, finite: bool = True) -> list[tuple[Mapping[str, str], float]]:
        """``expr`` at one instant (a vector). A NaN or infinite sample is an error unless ``finite`` is False
        (the operator's source: it rejects and counts each such sample as a direct scrape does). Label mappings
        are read-only: an unchanged series returns the same mapping at every query (:func:`fast_vector`)."""
        path = "/api/v1/query"
        response = self._post(path, {"query": expr, "time": repr(float(time_s))})
        if response.status_code == 200:
            fast = fast_vector(response.content, finite=finite, labels=self._labels)
            if fast is not None:
                return fast
        data, escapes = self._decode(response, path, expr)
        if data.get("resultType") != "vector":
            raise PrometheusError(f"query {expr!r}: expected a vector, got {_shown(data.get('resultType'))}")
        result: list[tuple[Mapping[str, str], float]] = []
        for item in data["result"]:
            labels = _labels(item, expr, escapes=escapes)
            result.append((labels, _point(item.get("value"), expr, finite=finite)[1]))
        return result

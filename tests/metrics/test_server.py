"""The ``/metrics`` and ``/healthz`` server on 127.0.0.1, ephemeral ports, real HTTP through urllib."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from jouleledger.metrics.server import MetricsServer

pytestmark = pytest.mark.slow


class _Collector:
    """``rows`` gauge samples of ``demo_value``, or an error when ``fail`` is set."""

    def __init__(self, rows: int = 1) -> None:
        self.rows = rows
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        if self.fail:
            raise RuntimeError("ledger unavailable")
        family = GaugeMetricFamily("demo_value", "A demo gauge.", labels=["i"])
        for index in range(self.rows):
            family.add_metric([str(index)], index * 0.5)
        yield family


class _Health:
    def __init__(self) -> None:
        self.result: tuple[bool, Any] = (True, {"last_tick_age_s": 1.5})
        self.error: Exception | None = None

    def __call__(self) -> tuple[bool, Any]:
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture(scope="module")
def _shared() -> Iterator[tuple[MetricsServer, _Collector, _Health]]:
    """One server for the module (starting and stopping one per test costs a poll interval each)."""
    collector, health = _Collector(), _Health()
    registry = CollectorRegistry()
    registry.register(collector)
    metrics_server = MetricsServer(registry, health, request_timeout_s=5.0)
    metrics_server.start("127.0.0.1", 0)
    yield metrics_server, collector, health
    metrics_server.stop()


@pytest.fixture
def server(_shared: tuple[MetricsServer, _Collector, _Health], collector: _Collector, health: _Health) -> MetricsServer:
    """The shared server, its collector and health check reset."""
    return _shared[0]


@pytest.fixture
def collector(_shared: tuple[MetricsServer, _Collector, _Health]) -> _Collector:
    """The shared server's collector, reset for each test."""
    collector = _shared[1]
    collector.rows, collector.fail = 1, False
    return collector


@pytest.fixture
def health(_shared: tuple[MetricsServer, _Collector, _Health]) -> _Health:
    """The shared server's health check, reset for each test."""
    health = _shared[2]
    health.result, health.error = (True, {"last_tick_age_s": 1.5}), None
    return health


def _get(
    server: MetricsServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def test_metrics_in_the_prometheus_text_format(server: MetricsServer) -> None:
    status, headers, body = _get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'demo_value{i="0"} 0.0\n' in body.decode()
    assert "# EOF" not in body.decode()


def test_metrics_in_openmetrics_when_asked(server: MetricsServer) -> None:
    accept = "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5"
    status, headers, body = _get(server, "/metrics", {"Accept": accept})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


def test_large_metrics_are_gzipped_when_accepted(server: MetricsServer, collector: _Collector) -> None:
    collector.rows = 500
    plain_status, plain_headers, plain = _get(server, "/metrics")
    status, headers, body = _get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert (plain_status, status) == (200, 200)
    assert plain_headers["Content-Encoding"] is None
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == plain
    assert len(body) < len(plain)
    _, refused_headers, _ = _get(server, "/metrics", {"Accept-Encoding": "gzip;q=0"})
    assert refused_headers["Content-Encoding"] is None


def test_head_sends_headers_only(server: MetricsServer) -> None:
    status, headers, body = _get(server, "/metrics", method="HEAD")
    assert status == 200
    assert int(headers["Content-Length"]) > 0
    assert body == b""


def test_failing_collector_is_a_500_not_a_dead_server(server: MetricsServer, collector: _Collector) -> None:
    collector.fail = True
    status, _, body = _get(server, "/metrics")
    assert status == 500
    assert b"ledger unavailable" in body
    collector.fail = False
    assert _get(server, "/metrics")[0] == 200


def test_healthz_when_healthy(server: MetricsServer) -> None:
    status, headers, body = _get(server, "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "details": {"last_tick_age_s": 1.5}}


def test_healthz_when_unhealthy_gives_the_reasons(server: MetricsServer, health: _Health) -> None:
    health.result = (False, {"last_tick_age_s": 300.0, "reason": "no tick for 300 s"})
    status, _, body = _get(server, "/healthz")
    assert status == 503
    assert json.loads(body) == {
        "status": "unhealthy",
        "details": {"last_tick_age_s": 300.0, "reason": "no tick for 300 s"},
    }


def test_healthz_when_the_check_raises(server: MetricsServer, health: _Health) -> None:
    health.error = OSError("kubelet socket gone")
    status, _, body = _get(server, "/healthz")
    assert status == 503
    document = json.loads(body)
    assert document["status"] == "unhealthy"
    assert "kubelet socket gone" in document["details"]["error"]


def test_healthz_with_details_that_are_not_a_mapping(server: MetricsServer, health: _Health) -> None:
    health.result = (True, ["not", "a", "mapping"])
    status, _, body = _get(server, "/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "unhealthy"


def test_healthz_renders_odd_detail_values_as_text(server: MetricsServer, health: _Health) -> None:
    health.result = (False, {"since": b"bytes", "gpus": ("GPU-a",)})
    status, _, body = _get(server, "/healthz")
    assert status == 503
    assert json.loads(body)["details"] == {"since": "b'bytes'", "gpus": ["GPU-a"]}


@pytest.mark.parametrize("path", ["/", "/metrics/", "/health", "/favicon.ico"])
def test_other_paths_are_404(server: MetricsServer, path: str) -> None:
    assert _get(server, path)[0] == 404


def test_query_strings_are_ignored(server: MetricsServer) -> None:
    assert _get(server, "/metrics?debug=1")[0] == 200
    assert _get(server, "/healthz?verbose")[0] == 200


def test_start_twice_is_an_error_and_stop_releases_the_port() -> None:
    health = _Health()
    registry = CollectorRegistry()
    registry.register(_Collector())
    first = MetricsServer(registry, health)
    port = first.start("127.0.0.1", 0)
    try:
        assert port > 0
        assert first.port == port
        with pytest.raises(RuntimeError, match="already serving"):
            first.start("127.0.0.1", 0)
        with pytest.raises(OSError, match="in use"):
            MetricsServer(registry, health).start("127.0.0.1", port)
    finally:
        first.stop()
    assert first.port is None
    first.stop()  # a second stop is a no-op
    second = MetricsServer(registry, health)
    assert second.start("127.0.0.1", port) == port
    try:
        assert _get(second, "/healthz")[0] == 200
    finally:
        second.stop()


def test_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="request_timeout_s"):
        MetricsServer(CollectorRegistry(), lambda: (True, {}), request_timeout_s=0)

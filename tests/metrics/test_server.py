"""The ``/metrics`` and ``/healthz`` server on 127.0.0.1, ephemeral ports, real HTTP through urllib."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.core.footprints import RollupSnapshot, Totals
from jouleledger.core.labels import MAX_LABEL_VALUE_CHARS, safe_label_value
from jouleledger.core.model import Owner
from jouleledger.core.operator_stats import NodeIntensity, OperatorStats
from jouleledger.core.snapshot import AgentStatus, ExportView, LedgerSnapshot, PodDeviceTotals, PodRecord
from jouleledger.metrics.agent import AgentCollector
from jouleledger.metrics.operator_collector import OperatorCollector
from jouleledger.metrics.server import MetricsServer, accepts_text
from jouleledger.metrics.webconfig import WebConfig, WebConfigError, load_web_config
from tests._prometheus import SCRAPE_ACCEPT
from tests._tls import PASSWORD, USER, Pki, make_pki
from tests._tools import require_tool

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


def test_a_server_preferring_text_answers_a_prometheus_scrape_in_the_text_format(collector: _Collector) -> None:
    """The operator's server: the same series in the format prometheus_client writes about twice as fast; a client
    that accepts OpenMetrics only still gets it."""
    registry = CollectorRegistry()
    registry.register(collector)
    text_server = MetricsServer(registry, _Health(), request_timeout_s=5.0, prefer_text=True)
    text_server.start("127.0.0.1", 0)
    try:
        _, plain_headers, plain = _get(text_server, "/metrics")
        status, headers, body = _get(text_server, "/metrics", {"Accept": SCRAPE_ACCEPT})
        assert status == 200
        assert headers["Content-Type"] == plain_headers["Content-Type"]
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert body == plain
        accept = "application/openmetrics-text;version=1.0.0"
        status, headers, body = _get(text_server, "/metrics", {"Accept": accept})
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.decode().endswith("# EOF\n")
    finally:
        text_server.stop()


@pytest.mark.parametrize(
    ("accept", "admitted"),
    [
        ("", True),
        (SCRAPE_ACCEPT, True),
        ("text/plain", True),
        ("TEXT/*; q=0.2", True),
        ("*/*", True),
        ("application/openmetrics-text;version=1.0.0", False),
        ("application/openmetrics-text;version=1.0.0, text/plain;q=0", False),
        ("application/json", False),
        ("text/plain;q=x", False),
    ],
)
def test_accepts_text(accept: str, admitted: bool) -> None:
    assert accepts_text(accept) is admitted


def test_large_metrics_are_gzipped_when_accepted(server: MetricsServer, collector: _Collector) -> None:
    collector.rows = 500
    plain_status, plain_headers, plain = _get(server, "/metrics")
    status, headers, body = _get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert (plain_status, status) == (200, 200)
    assert plain_headers["Content-Encoding"] is None
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == plain
    assert len(body) < len(plain)


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


# --- TLS and basic auth from an exporter-toolkit web config file ---------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _client_context(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


@contextlib.contextmanager
def _serving(web_config: WebConfig) -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    registry.register(_Collector())
    metrics_server = MetricsServer(registry, _Health(), request_timeout_s=5.0, web_config=web_config)
    metrics_server.start("127.0.0.1", 0)
    try:
        yield metrics_server
    finally:
        metrics_server.stop()


def _https(
    server: MetricsServer, path: str, context: ssl.SSLContext, auth: tuple[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(verify=context, trust_env=False, timeout=5.0) as client:
        return client.get(f"https://127.0.0.1:{server.port}{path}", auth=auth)


def test_basic_auth_over_tls_wrong_or_no_credentials_are_401(pki: Pki) -> None:
    with _serving(load_web_config(pki.web_config())) as server:
        assert server.scheme == "https"
        context = _client_context(pki)
        nothing = _https(server, "/metrics", context)
        assert nothing.status_code == 401
        assert nothing.headers["WWW-Authenticate"].startswith("Basic")
        assert b"demo_value" not in nothing.content
        assert _https(server, "/metrics", context, (USER, "wrong")).status_code == 401
        assert _https(server, "/metrics", context, ("stranger", PASSWORD)).status_code == 401
        good = _https(server, "/metrics", context, (USER, PASSWORD))
        assert good.status_code == 200
        assert 'demo_value{i="0"} 0.0' in good.text
        assert _https(server, "/metrics", context, (USER, PASSWORD)).status_code == 200  # cached check
        assert _https(server, "/healthz", context).status_code == 200  # the kubelet probes it without credentials
        assert _https(server, "/nothing", context).status_code == 404


def test_tls_server_is_verified_with_the_ca_and_refuses_plain_http(pki: Pki) -> None:
    with _serving(load_web_config(pki.web_config(users=False))) as server:
        assert _https(server, "/metrics", _client_context(pki)).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _https(server, "/metrics", ssl.create_default_context())  # the system CAs do not know ours
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/metrics", trust_env=False, timeout=5.0)
        assert _https(server, "/metrics", _client_context(pki)).status_code == 200  # still serving


def test_client_certificates_are_required_and_verified(pki: Pki) -> None:
    with _serving(load_web_config(pki.web_config(client_auth=True))) as server:
        with pytest.raises(httpx.HTTPError):
            _https(server, "/metrics", _client_context(pki), (USER, PASSWORD))  # no client certificate
        with pytest.raises(httpx.HTTPError):
            _https(server, "/metrics", _client_context(pki, (pki.stranger_cert, pki.stranger_key)), (USER, PASSWORD))
        mine = _client_context(pki, (pki.client_cert, pki.client_key))
        assert _https(server, "/metrics", mine).status_code == 401
        assert _https(server, "/metrics", mine, (USER, PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("tls_server_config: {cert_file: server.crt}", "needs cert_file and key_file"),
        ("tls_server_config: {cert_file: server.crt, key_file: nope.key}", "no such file"),
        ("tls_server_config: {cert_file: server.crt, key_file: server.key, cipher_suites: []}", "cipher_suites"),
        (
            "tls_server_config: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}",
            "NoClientCert",
        ),
        (
            "tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequestClientCert}",
            "is not one of",
        ),
        (
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "client_auth_type: RequireAndVerifyClientCert}",
            "needs client_ca_file",
        ),
        ("tls_server_config: {cert_file: ca.crt, key_file: server.key}", "cannot load"),
        ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS10}", "min_version"),
        ("basic_auth_users: {prometheus: plain-text-password}", "not a bcrypt hash"),
        ("basic_auth_users: {prometheus: $2b$10$short}", "not a valid bcrypt hash"),
        ("basic_auth_users: [prometheus]", "mapping"),
        ("http_server_config: {http2: true}", "http_server_config"),
        ("- a list", "mapping"),
        ("tls_server_config: {cert_file: [unclosed", "not valid YAML"),
    ],
)
def test_bad_web_configs_are_one_clear_error_naming_the_file(pki: Pki, document: str, message: str) -> None:
    path = pki.folder / "bad-web.yaml"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(WebConfigError, match=message) as caught:
        load_web_config(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_empty_web_config_is_plain_http_without_auth(pki: Pki) -> None:
    path = pki.folder / "empty-web.yaml"
    path.write_text("", encoding="utf-8")
    with _serving(load_web_config(path)) as server:
        assert server.scheme == "http"
        assert _get(server, "/metrics")[0] == 200
    with pytest.raises(WebConfigError, match="cannot read"):
        load_web_config(pki.folder / "missing.yaml")


# --- hostile strings: every label value the server exports is printable, encodable and bounded -----------------

_HOSTILE = st.one_of(
    st.text(max_size=40),  # any code point, lone surrogates included
    st.sampled_from(["a\nb", 'q"uote', "back\\slash", "\ud800", "\udfff tail", "\u2028", "\x00\r\t", "x" * 10_000]),
    st.text(min_size=250, max_size=300, alphabet="ab\n"),
)


def _agent_view(namespace: str, pod: str, container: str, owner: str, team: str) -> ExportView:
    record = PodRecord(
        namespace=namespace,
        name=pod,
        uid="uid-1",
        labels={"team": team},
        owner=Owner(kind="Job", name=owner, uid="uid-job"),
        first_seen_s=1.0,
        last_seen_s=2.0,
    )
    device = PodDeviceTotals(
        pod_key="uid-1", namespace=namespace, pod=pod, container=container, device="GPU-a", energy_mj=1, gpu_seconds=1.0
    )
    ledger = LedgerSnapshot(node="n1", t_s=2.0, pods={"uid-1": record}, devices=(device,), gpus=())
    status = AgentStatus(node="n1", backend="replay", simulated=True, version="t")
    return ExportView(ledger=ledger, status=status, label_allowlist=("team",))


def _served_label_values(registry: CollectorRegistry) -> list[str]:
    """What ``/metrics`` serves for ``registry``, parsed back by prometheus_client's own parser (both formats)."""
    app = MetricsServer(registry, lambda: (True, {}))._metrics_app
    values: list[str] = []
    captured: list[str] = []
    for accept, parse in (
        ("text/plain", text_string_to_metric_families),
        ("application/openmetrics-text; version=1.0.0", openmetrics_families),
    ):
        captured.clear()
        body = b"".join(
            app(
                {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "HTTP_ACCEPT": accept},
                lambda status, headers, *_: captured.append(status),
            )
        )
        assert captured == ["200 OK"]
        for family in parse(body.decode("utf-8")):
            for sample in family.samples:
                values.extend(sample.labels.values())
    return values


@settings(max_examples=100, deadline=None)
@given(namespace=_HOSTILE, pod=_HOSTILE, container=_HOSTILE, owner=_HOSTILE, team=_HOSTILE)
def test_agent_exposition_of_hostile_pods_parses_back_bounded(
    namespace: str, pod: str, container: str, owner: str, team: str
) -> None:
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: _agent_view(namespace, pod, container, owner, team)))
    values = _served_label_values(registry)
    assert values
    for value in values:
        assert len(value) <= MAX_LABEL_VALUE_CHARS
        assert value.isprintable()
        value.encode("utf-8")  # never a lone surrogate
    for original in (namespace, pod, owner):
        if len(original) <= MAX_LABEL_VALUE_CHARS and original.isprintable():
            assert original in values  # what Kubernetes can produce is exported unchanged


@settings(max_examples=100, deadline=None)
@given(namespace=_HOSTILE, team=_HOSTILE, node=_HOSTILE)
def test_operator_exposition_of_hostile_names_parses_back_bounded(namespace: str, team: str, node: str) -> None:
    totals = Totals(1_000, 1.0, 0.5, 0.0, 0.01)
    rollups = RollupSnapshot({namespace: totals}, {team: totals}, {node: 5}, "EUR")
    stats = OperatorStats()
    stats.node_intensity[node] = NodeIntensity("zone", "static", 100.0)
    registry = CollectorRegistry()
    registry.register(OperatorCollector(lambda: stats.view(rollups, {})))
    values = _served_label_values(registry)
    for value in values:
        assert len(value) <= MAX_LABEL_VALUE_CHARS
        assert value.isprintable()
    assert safe_label_value(namespace) in values
    assert safe_label_value(team) in values


def test_distinct_hostile_values_stay_distinct_and_safe_ones_unchanged() -> None:
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert safe_label_value(long_a) != safe_label_value(long_b)
    assert safe_label_value("a\nb") != safe_label_value("a\rb")
    assert safe_label_value("y" * 253) == "y" * 253
    assert safe_label_value("équipe b") == "équipe b"
    assert safe_label_value("a\u00a0b").startswith("a\ufffdb~")
    assert "\ufffd" in safe_label_value("\ud800")


@pytest.mark.parametrize("command", ["agent", "operator"])
def test_a_bad_web_config_file_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "web.yaml"
    bad.write_text("basic_auth_users: {prometheus: not-a-hash}\n", encoding="utf-8")
    extra = ["--backend", "simulated", "--once", "--dry-run"] if command == "agent" else ["--once"]
    result = subprocess.run(
        [sys.executable, "-m", "jouleledger", "--log-level", "ERROR", command, *extra, "--web-config-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert f"jouleledger {command}: web config {bad}: basic_auth_users.prometheus: not a bcrypt hash" == line


def test_a_client_that_never_starts_its_tls_handshake_blocks_nobody_else(pki: Pki) -> None:
    registry = CollectorRegistry()
    registry.register(_Collector())
    web_config = load_web_config(pki.web_config(users=False))
    server = MetricsServer(registry, _Health(), request_timeout_s=60.0, web_config=web_config)
    server.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", server.port or 0)) as _silent:  # connects, says nothing
            assert _https(server, "/metrics", _client_context(pki)).status_code == 200  # httpx gives up after 5 s
    finally:
        server.stop()


@pytest.mark.parametrize(("client_auth", "users"), [(False, True), (True, True), (True, False)])
def test_web_configs_we_accept_are_valid_for_the_prometheus_toolkit(pki: Pki, client_auth: bool, users: bool) -> None:
    """The same file works for node_exporter & co.: Prometheus's own checker (exporter-toolkit) accepts it."""
    promtool = require_tool("promtool")
    path = pki.web_config(client_auth=client_auth, users=users, name=f"toolkit-{client_auth}-{users}.yaml")
    load_web_config(path)
    result = subprocess.run(
        [promtool, "check", "web-config", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rotated_certificate_is_served_to_new_connections_and_a_broken_one_is_not(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    web_config = load_web_config(old.web_config(users=False))
    with _serving(web_config) as server:
        assert _https(server, "/metrics", _client_context(old)).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _https(server, "/metrics", _client_context(new))
        # A Secret update: the mounted files change in place.
        old.server_cert.write_bytes(new.server_cert.read_bytes())
        old.server_key.write_bytes(new.server_key.read_bytes())
        assert _https(server, "/metrics", _client_context(new)).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _https(server, "/metrics", _client_context(old))
        # A broken update (a key without its certificate): the last good certificate stays in use.
        old.server_cert.write_bytes(b"not a certificate\n")
        assert _https(server, "/metrics", _client_context(new)).status_code == 200

"""The Prometheus API client's request shapes for Prometheus, Thanos Querier and Grafana Mimir, and its errors, with
``httpx.MockTransport``; and the report's one-line errors for what the server says."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from jouleledger.promapi import Connection, PrometheusApi, PrometheusError, build_client
from jouleledger.report import command

Handler = Callable[[httpx.Request], httpx.Response]


def _matrix(values: list[list[Any]], metric: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": metric or {"team": "a"}, "values": values}]},
    }


class Recorder:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or (lambda _: httpx.Response(200, json=_matrix([[1.0, "1"], [2.0, "3"]])))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def api(self, **connection: Any) -> PrometheusApi:
        return PrometheusApi(build_client(Connection(**connection), transport=httpx.MockTransport(self)))


def _form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


def test_mimir_tenant_header_and_prefix(tmp_path: Path) -> None:
    recorder = Recorder()
    api = recorder.api(base_url="https://mimir.example/prometheus/", org_id="team-a|team-b")
    series = api.query_range("up", 0.0, 7200.0, 3600.0)
    assert series[0].points == ((1.0, 1.0), (2.0, 3.0))
    request = recorder.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/prometheus/api/v1/query_range"
    assert request.headers["X-Scope-OrgID"] == "team-a|team-b"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert _form(request) == {"query": ["up"], "start": ["0.0"], "end": ["7200.0"], "step": ["3600.0"]}
    assert "Authorization" not in request.headers


def test_thanos_bearer_token_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    recorder = Recorder()
    recorder.api(base_url="http://thanos-query:9090", bearer_token_file=token).query_range("up", 0, 60, 60)
    assert recorder.requests[0].headers["Authorization"] == "Bearer s3cret-token"
    assert "X-Scope-OrgID" not in recorder.requests[0].headers


def test_basic_auth_from_a_password_file(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pa:ss\n")
    recorder = Recorder(
        lambda _: httpx.Response(
            200,
            json={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [5, "2"]}]}},
        )
    )
    api = recorder.api(base_url="https://mimir", basic_auth_user="tenant", basic_auth_password_file=password)
    assert api.query("up", 5.0) == [({}, 2.0)]
    assert recorder.requests[0].headers["Authorization"] == httpx.BasicAuth("tenant", "pa:ss")._auth_header
    assert _form(recorder.requests[0]) == {"query": ["up"], "time": ["5.0"]}


def test_custom_ca_file(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=joule-ledger-test-ca"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    client = build_client(Connection(base_url="https://thanos", ca_file=cert))
    client.close()
    with pytest.raises(PrometheusError, match="cannot load CA file"):
        build_client(Connection(base_url="https://thanos", ca_file=key))


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ({"base_url": "thanos:9090"}, "expected an http:// or https:// URL"),
        ({"base_url": "http://x", "bearer_token_file": Path("/nonexistent/token")}, "cannot read bearer token file"),
        ({"base_url": "http://x", "basic_auth_user": "u"}, "needs --basic-auth-password-file"),
        ({"base_url": "https://x", "ca_file": Path("/nonexistent/ca.pem")}, "cannot load CA file"),
    ],
)
def test_bad_connection_settings(connection: dict[str, Any], message: str) -> None:
    with pytest.raises(PrometheusError, match=message):
        build_client(Connection(**connection))


def _raise_connect(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda _: httpx.Response(401, text="no"), r"refused the request \(401 unauthorized\)"),
        (lambda _: httpx.Response(403, json={"status": "error"}), r"refused the request \(403 forbidden\)"),
        (_raise_connect, "cannot reach Prometheus at http://prom/api/v1/query_range"),
        (lambda _: httpx.Response(200, json=_matrix([[1, "NaN"]])), "non-finite sample"),
        (lambda _: httpx.Response(200, json=_matrix([[1, "+Inf"]])), "non-finite sample"),
        (
            lambda _: httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"}),
            "failed: parse error",
        ),
        (lambda _: httpx.Response(502, text="<html>bad gateway</html>"), "answered 502 with a body that is not JSON"),
    ],
)
def test_errors_are_one_line(answer: Handler, message: str) -> None:
    api = Recorder(answer).api(base_url="http://prom")
    with pytest.raises(PrometheusError, match=message) as raised:
        api.query_range("x", 0, 60, 60)
    assert "\n" not in str(raised.value)


def _vector_body(metric_json: str) -> bytes:
    return (
        '{"status": "success", "data": {"resultType": "vector", "result": [{"metric": '
        + metric_json
        + ', "value": [1, "2"]}]}}'
    ).encode()


@pytest.mark.parametrize(
    "metric_json",
    [
        '{"a": 7}',  # a number: no escape in the answer, so only the type check stands between it and the caller
        '{"a": ["x"]}',
        '{"a": null}',
        '{"a": "\\ud800"}',  # a lone surrogate, spelled as a JSON escape
        '{"\\uDFFF": "x"}',  # in a name, upper case
        '{"ok": "fine", "a": "x\\udc00y"}',
    ],
)
def test_labels_that_are_not_strings_or_not_valid_text_are_refused(metric_json: str) -> None:
    api = Recorder(lambda _: httpx.Response(200, content=_vector_body(metric_json))).api(base_url="http://prom")
    with pytest.raises(PrometheusError, match="malformed label"):
        api.query("x", 0)


def test_valid_labels_pass_with_and_without_escapes() -> None:
    """An escape of a valid character (or of a backslash before "ud800") only takes the slower, per-string check."""
    for metric_json, labels in [
        ('{"a": "b", "c": "d"}', {"a": "b", "c": "d"}),
        ('{"a": "\\u00e9"}', {"a": "\u00e9"}),
        ('{"a": "\\\\ud800"}', {"a": "\\ud800"}),  # a backslash, then the letters: valid text
        ('{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a surrogate pair: one valid character
    ]:
        body = _vector_body(metric_json)
        api = Recorder(lambda _, body=body: httpx.Response(200, content=body)).api(base_url="http://prom")
        assert api.query("x", 0) == [(labels, 2.0)], metric_json


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_report_says_401_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("--prometheus", "http://mimir/prometheus", "--org-id", "t1", "--since", "1d")
    args.transport = httpx.MockTransport(lambda _: httpx.Response(401))
    assert command.run(args, now_s=1_800_000_000.0) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "jouleledger report: Prometheus at http://mimir/prometheus/api/v1/query_range refused the request "
        "(401 unauthorized): check the credentials and --org-id"
    ]


def test_report_through_a_tenant_sends_the_tenant_on_every_query(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        query = _form(request)["query"][0]
        if "team_gpu_energy" in query:
            return httpx.Response(200, json=_matrix([[0.0, "0"], [3600.0, "3600"]], {"team": "a"}))
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}})

    args = _args("--prometheus", "http://mimir/prometheus", "--org-id", "t1", "--since", "0", "--until", "3600",
                 "--format", "json")  # fmt: skip
    args.transport = httpx.MockTransport(answer)
    assert command.run(args, now_s=1_800_000_000.0) == 0
    document = json.loads(capsys.readouterr().out)
    assert [row["energy_mj"] for row in document["rows"]] == [3_600_000]
    assert document["total"]["energy_mj"] == document["measured_mj"] == 3_600_000
    assert seen
    assert all(request.headers["X-Scope-OrgID"] == "t1" for request in seen)
    assert all(request.url.path == "/prometheus/api/v1/query_range" for request in seen)
    assert all(_form(request)["step"] == ["300.0"] for request in seen)


def test_report_on_an_unreachable_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = _args("--prometheus", f"http://127.0.0.1:{port}", "--since", "1d", "--timeout", "5")
    assert command.run(args, now_s=1_800_000_000.0) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"jouleledger report: cannot reach Prometheus at http://127.0.0.1:{port}/api/v1/")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _one_team(request: httpx.Request) -> httpx.Response:
    if "team_gpu_energy" in _form(request)["query"][0]:
        return httpx.Response(200, json=_matrix([[0.0, "0"], [300.0, "300"]], {"team": "a"}))
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}})


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_only_on_a_terminal(terminal: bool, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("--prometheus", "http://prom", "--since", "0", "--until", "300")
    args.transport = httpx.MockTransport(_one_team)
    err = _Terminal() if terminal else io.StringIO()
    assert command.run(args, now_s=1_800_000_000.0, stderr=err) == 0
    assert "a " in capsys.readouterr().out
    if terminal:
        assert "query 1/9: last_over_time(jouleledger_team_gpu_energy_joules_total[300s])" in err.getvalue()
        assert err.getvalue().endswith("\r\x1b[2K")  # the progress line is cleared before the report
    else:
        assert err.getvalue() == ""

"""The operator's API client over the official ``kubernetes`` client: kopf's TLS settings (CA and client
certificate as files or as kubeconfig data) against a server that requires a client certificate, kopf's
``Authorization`` header, and retries of a server that does not answer."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kopf
import pytest
from urllib3.exceptions import InsecureRequestWarning

from jouleledger.kube.api import ApiError, KubeApi, build_api_client
from tests._tls import Pki, make_pki


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        subject = dict(item[0] for item in (peer or {}).get("subject", ()))
        body = json.dumps(
            {"client": subject.get("commonName", ""), "authorization": self.headers.get("Authorization", "")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        return None


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 that requires a client certificate from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


async def _get(info: kopf.ConnectionInfo) -> dict[str, object]:
    api = KubeApi(build_api_client(info), attempts=1)
    try:
        answer = await api.get("/api")
    finally:
        await api.aclose()
    assert answer is not None
    return answer


async def test_client_certificate_and_ca_as_files(pki: Pki, mtls_server: str) -> None:
    info = kopf.ConnectionInfo(
        server=mtls_server,
        ca_path=str(pki.ca),
        certificate_path=str(pki.client_cert),
        private_key_path=str(pki.client_key),
    )
    assert (await _get(info))["client"] != ""


async def test_client_certificate_and_ca_as_kubeconfig_data(pki: Pki, mtls_server: str) -> None:
    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()  # kubeconfig's *-data fields: base64 of PEM

    info = kopf.ConnectionInfo(
        server=mtls_server,
        ca_data=data(pki.ca),
        certificate_data=data(pki.client_cert),
        private_key_data=pki.client_key.read_text(),  # PEM text is accepted too
    )
    assert (await _get(info))["client"] != ""


async def test_an_unknown_ca_is_refused_and_insecure_skips_verification(pki: Pki, mtls_server: str) -> None:
    certs = {"certificate_path": str(pki.client_cert), "private_key_path": str(pki.client_key)}
    with pytest.raises(ApiError) as refused:
        await _get(kopf.ConnectionInfo(server=mtls_server, **certs))
    assert refused.value.status == 0
    assert refused.value.transient
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    with pytest.warns(InsecureRequestWarning):  # urllib3 says so
        assert (await _get(kopf.ConnectionInfo(server=mtls_server, insecure=True, **certs)))["client"] != ""


async def test_kopfs_authorization_header_is_sent(pki: Pki, mtls_server: str) -> None:
    tls = {"ca_path": str(pki.ca), "certificate_path": str(pki.client_cert), "private_key_path": str(pki.client_key)}
    basic = await _get(kopf.ConnectionInfo(server=mtls_server, username="u", password="p", **tls))
    assert basic["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    scheme = await _get(kopf.ConnectionInfo(server=mtls_server, scheme="Token", token="t0k", **tls))
    assert scheme["authorization"] == "Token t0k"


async def test_no_answer_is_retried_with_growing_backoff_then_a_transient_error() -> None:
    slept: list[float] = []

    async def sleep(delay_s: float) -> None:
        slept.append(delay_s)

    api = KubeApi(
        build_api_client(kopf.ConnectionInfo(server="http://127.0.0.1:1")), attempts=4, backoff_s=0.5, sleep=sleep
    )
    try:
        with pytest.raises(ApiError) as error:
            await api.get("/api/v1/namespaces/ml/pods/x")
    finally:
        await api.aclose()
    assert error.value.status == 0
    assert error.value.transient
    assert slept == [0.5, 1.0, 2.0]
    assert api.retries == 3


def test_the_environments_proxy_is_used_only_where_kopf_trusts_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert build_api_client(kopf.ConnectionInfo(server="https://10.0.0.1")).configuration.proxy is None
    trusting = build_api_client(kopf.ConnectionInfo(server="https://10.0.0.1", trust_env=True))
    assert trusting.configuration.proxy == "http://proxy.invalid:3128"
    explicit = build_api_client(kopf.ConnectionInfo(server="https://10.0.0.1", proxy_url="http://p.invalid:1"))
    assert explicit.configuration.proxy == "http://p.invalid:1"


class _Recorder(BaseHTTPRequestHandler):
    """Answers every write with the request it received: method, path, content type, authorization, body text."""

    def do_POST(self) -> None:
        self._echo()

    def do_PATCH(self) -> None:
        self._echo()

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = {
            "method": self.command,
            "path": self.path,
            "contentType": self.headers.get("Content-Type", ""),
            "authorization": self.headers.get("Authorization", ""),
            "body": self.rfile.read(length).decode("utf-8"),
        }
        self.server.received.append(received)  # type: ignore[attr-defined]
        answer = json.dumps({"metadata": {"resourceVersion": "7"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, fmt: str, *args: object) -> None:
        return None


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_a_json_body_is_sent_exactly_as_its_json_with_the_credentials(
    recorder: tuple[str, list[dict[str, str]]],
) -> None:
    url, received = recorder
    body = {
        "status": {
            "energyMillijoules": 9_007_199_254_740_993,  # past float64's integers: must stay an exact int
            "gpuSeconds": 0.1 + 0.2,
            "team": "équipe-ü",
            "series": [{"node": "n1", "epoch": "00ff", "ticks": 3}, {"node": "n2", "final": None, "ok": True}],
            "nodes": ("n1", "n2"),
        },
        "metadata": {"resourceVersion": "6"},
    }
    api = KubeApi(build_api_client(kopf.ConnectionInfo(server=url, token="s3cr3t")), attempts=1)
    try:
        answer = await api.merge_patch("/apis/x/v1/namespaces/ml/things/a/status", body)
        await api.create("/apis/x/v1/namespaces/ml/things", {"metadata": {"name": "b"}})
    finally:
        await api.aclose()
    assert answer == {"metadata": {"resourceVersion": "7"}}
    patch, post = received
    assert (patch["method"], patch["path"]) == ("PATCH", "/apis/x/v1/namespaces/ml/things/a/status")
    assert patch["contentType"] == "application/merge-patch+json"
    assert patch["authorization"] == "Bearer s3cr3t"
    sent = json.loads(patch["body"])
    assert sent == {**body, "status": {**body["status"], "nodes": ["n1", "n2"]}}
    assert sent["status"]["energyMillijoules"] == 9_007_199_254_740_993
    assert sent["status"]["gpuSeconds"] == 0.1 + 0.2
    assert (post["method"], post["contentType"], json.loads(post["body"])) == (
        "POST",
        "application/json",
        {"metadata": {"name": "b"}},
    )


async def test_a_body_that_is_not_json_data_is_refused_before_anything_is_sent(
    recorder: tuple[str, list[dict[str, str]]],
) -> None:
    url, received = recorder
    api = KubeApi(build_api_client(kopf.ConnectionInfo(server=url)), attempts=3)
    try:
        with pytest.raises(TypeError, match="not JSON serializable"):
            await api.merge_patch("/apis/x/v1/namespaces/ml/things/a", {"when": object()})
    finally:
        await api.aclose()
    assert received == []
    assert api.retries == 0

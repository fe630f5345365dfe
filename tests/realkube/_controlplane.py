"""A real Kubernetes control plane on 127.0.0.1 for the tests: etcd, kube-apiserver and kube-controller-manager.

The binaries are built from published Go modules by ``make controlplane`` (``tools/build-controlplane.sh``, modules
under ``tests/controlplane/``). :func:`start_control_plane` generates a throw-away PKI for the run (a CA, the API
server's serving certificate, client certificates for the admin and the controller manager, and the
service-account signing key pair), starts the three processes on free loopback ports with real authentication
(x509 client certificates and service-account tokens) and ``--authorization-mode=Node,RBAC``, waits until
``/readyz`` answers and the controller manager has done its first work, writes an admin kubeconfig, and stops
every process when the ``with`` block ends (also when it ends with an exception). There is no kubelet and no
scheduler: tests create Nodes and Pods (with ``nodeName``) and set pod status through the status subresource.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests._tools import REPO_ROOT

__all__ = [
    "BINARIES",
    "ApiCallError",
    "ControlPlane",
    "KubeClient",
    "binaries_dir",
    "die_with_parent",
    "start_control_plane",
    "wait_for",
]

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-controlplane.sh"
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "root-ca-certificate-publisher-controller",
)
"""The controllers the tests need: Jobs made real, owner-based deletion, namespaces and their service accounts."""
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0


def binaries_dir() -> Path:
    """Where ``make controlplane`` puts the binaries for the versions pinned in ``tests/controlplane/*/go.mod``."""
    override = os.environ.get("JOULELEDGER_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True, timeout=30
    )
    return Path(result.stdout.strip())


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what`` (and the last error)."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except Exception as error:  # a poll that fails is retried until the deadline
            last_error, result = error, None
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- PKI ---------------------------------------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca: Path
    serving_cert: Path
    serving_key: Path
    sa_public: Path
    sa_private: Path
    clients: Mapping[str, tuple[Path, Path]]
    """``name -> (certificate, key)``."""


def make_pki(directory: Path, clients: Mapping[str, tuple[str, str]]) -> Pki:
    """A CA, the API server's certificate, the ``clients`` (``name -> (CN, O)``) and a service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jouleledger-test-ca")])
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, subject: x509.Name, *, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, ca_name, ca_key, server=server)
        (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(directory / f"{name}.key", key)
        return directory / f"{name}.crt", directory / f"{name}.key"

    serving_cert, serving_key = issue(
        "apiserver", x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), server=True
    )
    issued = {}
    for name, (common_name, organization) in clients.items():
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        issued[name] = issue(name, x509.Name(attributes))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Pki(directory / "ca.crt", serving_cert, serving_key, directory / "sa.pub", directory / "sa.key", issued)


def write_kubeconfig(path: Path, server: str, ca: Path, user: Mapping[str, str]) -> Path:
    """A kubeconfig with one context: ``server`` verified against ``ca``, credentials ``user`` (kubeconfig keys)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "test", "user": dict(user)}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)
    return path


# --- a small client ----------------------------------------------------------------------------------------------


class ApiCallError(RuntimeError):
    """The API server refused a request; ``status`` and the server's ``message``."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class KubeClient:
    """Synchronous JSON requests to the API server as one identity (a client certificate or a bearer token)."""

    def __init__(self, server: str, ca: Path, *, cert: tuple[Path, Path] | None = None, token: str = "") -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        context = ssl.create_default_context(cafile=str(ca))
        if cert:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        self._client = httpx.Client(
            base_url=server,
            verify=context,
            headers=headers,
            timeout=30.0,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> httpx.Response:
        headers = {"Accept": accept}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body).encode()
        return self._client.request(method, path, params=params, content=content, headers=headers)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """The decoded answer; :class:`ApiCallError` for any status of 400 or more."""
        response = self.raw(method, path, body, **kwargs)
        try:
            decoded = response.json() if response.content else {}
        except ValueError:
            decoded = response.text
        if response.status_code >= 400:
            raise ApiCallError(method, path, response.status_code, decoded)
        return decoded

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def create(self, path: str, body: Mapping[str, Any], **kwargs: Any) -> Any:
        return self.call("POST", path, dict(body), **kwargs)

    def merge_patch(self, path: str, body: Mapping[str, Any], **kwargs: Any) -> Any:
        return self.call("PATCH", path, dict(body), content_type="application/merge-patch+json", **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", path, **kwargs)

    def exists(self, path: str) -> bool:
        response = self.raw("GET", path)
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise ApiCallError("GET", path, response.status_code, response.text)
        return True


# --- processes ---------------------------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: list[str]

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with status {code}; the end of its log ({self.log}):\n{self.tail()}"
            )

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT_S)


def die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the test process dies, however it dies (``setpriv --pdeathsig``,
    util-linux; without it, as is: the ``with`` block still stops it)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)


def _start(name: str, argv: list[str], logs: Path) -> _Process:
    log = logs / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            die_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _Process(name, popen, log, argv)


@dataclass
class ControlPlane:
    """A running control plane: its URL, CA, an admin kubeconfig and client, and the processes."""

    server: str
    ca: Path
    admin_cert: tuple[Path, Path]
    kubeconfig: Path
    workdir: Path
    bin_dir: Path
    etcd_url: str
    processes: list[_Process]

    def client(self, *, token: str = "") -> KubeClient:
        """A client as the admin (``system:masters``), or as the bearer of ``token``."""
        if token:
            return KubeClient(self.server, self.ca, token=token)
        return KubeClient(self.server, self.ca, cert=self.admin_cert)

    def token_kubeconfig(self, path: Path, token: str) -> Path:
        return write_kubeconfig(path, self.server, self.ca, {"token": token})

    def kubectl(self, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def etcd_revision(self) -> int:
        answer = httpx.post(f"{self.etcd_url}/v3/kv/range", json={"key": "AA=="}, timeout=10.0, trust_env=False)
        return int(answer.json()["header"]["revision"])

    def restart_apiserver(self, *, compact: bool) -> int:
        """Stop kube-apiserver, compact etcd's history up to now (so every resourceVersion a client holds is
        gone), start it again with the same flags and wait for ``/readyz``. The compacted revision."""
        index = next(i for i, p in enumerate(self.processes) if p.name == "kube-apiserver")
        old = self.processes[index]
        old.stop()
        revision = self.etcd_revision()
        if compact:
            answer = httpx.post(
                f"{self.etcd_url}/v3/kv/compaction",
                json={"revision": str(revision), "physical": True},
                timeout=30.0,
                trust_env=False,
            )
            answer.raise_for_status()
        self.processes[index] = _start(old.name, old.argv, old.log.parent)
        client = self.client()
        try:

            def ready() -> bool:
                self.check_alive()
                return client.raw("GET", "/readyz").status_code == 200

            wait_for("kube-apiserver /readyz after its restart", ready, START_TIMEOUT_S, 0.5)
        finally:
            client.close()
        return revision

    def logs(self) -> str:
        return "\n".join(f"--- {process.name} ---\n{process.tail()}" for process in self.processes)


@contextlib.contextmanager
def start_control_plane(bin_dir: Path, workdir: Path) -> Iterator[ControlPlane]:
    """Start etcd, kube-apiserver and kube-controller-manager; stop them all when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    pki = make_pki(
        workdir / "pki",
        {
            "admin": ("jouleledger-test-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", ""),
        },
    )
    etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    server = f"https://127.0.0.1:{api_port}"
    processes: list[_Process] = []
    try:
        processes.append(
            _start(
                "etcd",
                [
                    str(bin_dir / "etcd"),
                    "--name=test",
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                    f"--initial-cluster=test=http://127.0.0.1:{etcd_peer_port}",
                    "--unsafe-no-fsync",  # a throw-away store: durability is not what is tested
                    "--log-level=warn",
                ],
                logs,
            )
        )
        processes.append(
            _start(
                "kube-apiserver",
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--cert-dir={workdir / 'apiserver-certs'}",
                    f"--tls-cert-file={pki.serving_cert}",
                    f"--tls-private-key-file={pki.serving_key}",
                    f"--client-ca-file={pki.ca}",
                    "--authorization-mode=Node,RBAC",
                    "--anonymous-auth=false",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={pki.sa_public}",
                    f"--service-account-signing-key-file={pki.sa_private}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true",
                    # The defaults (NamespaceLifecycle, ServiceAccount, PodSecurity, ...) plus NodeRestriction.
                    "--enable-admission-plugins=NodeRestriction",
                    "--profiling=false",
                    "--v=0",
                ],
                logs,
            )
        )
        admin = KubeClient(server, pki.ca, cert=pki.clients["admin"])

        def ready() -> bool:
            for process in processes:
                process.check_alive()
            return admin.raw("GET", "/readyz").status_code == 200

        wait_for("kube-apiserver /readyz", ready, START_TIMEOUT_S, 0.5)
        kcm_kubeconfig = write_kubeconfig(
            workdir / "controller-manager.kubeconfig",
            server,
            pki.ca,
            {
                "client-certificate": str(pki.clients["controller-manager"][0]),
                "client-key": str(pki.clients["controller-manager"][1]),
            },
        )
        processes.append(
            _start(
                "kube-controller-manager",
                [
                    str(bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={kcm_kubeconfig}",
                    f"--authentication-kubeconfig={kcm_kubeconfig}",
                    f"--authorization-kubeconfig={kcm_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--cert-dir={workdir / 'kcm-certs'}",
                    "--leader-elect=false",
                    "--use-service-account-credentials=true",
                    f"--controllers={','.join(CONTROLLERS)}",
                    f"--service-account-private-key-file={pki.sa_private}",
                    f"--root-ca-file={pki.ca}",
                    "--concurrent-job-syncs=2",
                    "--v=0",
                ],
                logs,
            )
        )

        def controllers_working() -> bool:
            for process in processes:
                process.check_alive()
            return admin.exists("/api/v1/namespaces/default/serviceaccounts/default")

        wait_for("kube-controller-manager (the default service account)", controllers_working, START_TIMEOUT_S, 0.5)
        admin.close()
        kubeconfig = write_kubeconfig(
            workdir / "admin.kubeconfig",
            server,
            pki.ca,
            {"client-certificate": str(pki.clients["admin"][0]), "client-key": str(pki.clients["admin"][1])},
        )
        yield ControlPlane(server, pki.ca, pki.clients["admin"], kubeconfig, workdir, bin_dir, etcd_url, processes)
    except BaseException as error:
        if not isinstance(error, GeneratorExit):
            logs_text = "\n".join(f"--- {p.name} ({p.log}) ---\n{p.tail()}" for p in processes)
            error.add_note(f"control plane logs:\n{logs_text}")
        raise
    finally:
        for process in reversed(processes):
            process.stop()

"""The web configuration file of ``/metrics``: TLS and basic auth, in the Prometheus exporter-toolkit format.

::

    tls_server_config:
      cert_file: /etc/jouleledger/web/tls.crt     # relative paths are relative to this file's folder
      key_file: /etc/jouleledger/web/tls.key
      client_ca_file: /etc/jouleledger/web/ca.crt # verifies client certificates, with client_auth_type
      client_auth_type: RequireAndVerifyClientCert  # or NoClientCert (default), VerifyClientCertIfGiven
      min_version: TLS12                          # TLS12 (default) | TLS13
    basic_auth_users:
      prometheus: $2y$10$...                      # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Both sections are optional; keys the toolkit has and this server does not (``cipher_suites``,
``RequestClientCert``...) are errors, never silently ignored. :func:`load_web_config` raises
:class:`WebConfigError` (one line naming the file and the key) for every problem. The certificate, key and CA files
are re-read when they change (a rotated Secret): each new connection gets the current ones; files that fail to load
keep the previous ones in use (logged).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import bcrypt
import yaml

from jouleledger.core.labels import one_line

__all__ = ["TlsFiles", "WebConfig", "WebConfigError", "load_web_config"]

log = logging.getLogger(__name__)

CLIENT_AUTH_TYPES: Final[Mapping[str, ssl.VerifyMode]] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TOP_KEYS: Final = frozenset({"tls_server_config", "basic_auth_users"})
_TLS_KEYS: Final = frozenset({"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"})
_CACHE_SIZE: Final = 256
# Checked when the user is unknown, so that a wrong user name costs as much time as a wrong password.
_DUMMY_HASH: Final = b"$2b$10$" + b"N" * 53


class WebConfigError(ValueError):
    """The web config file is missing, unreadable or invalid (the message: one printable line)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class TlsFiles:
    """The server TLS context built from files, rebuilt when one of them changes (checked at each connection)."""

    def __init__(
        self, path: Path, files: tuple[str, str, str | None], verify_mode: ssl.VerifyMode, minimum: ssl.TLSVersion
    ) -> None:
        self._path = path
        self._files = files
        self._verify_mode = verify_mode
        self._minimum = minimum
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._context = self._build()

    def _stat(self) -> tuple[bytes, ...]:
        """A digest of each file's content (a few kB each: cheap next to a TLS handshake, and exact)."""
        stamps = []
        for name in self._files:
            if name is not None:
                try:
                    stamps.append(hashlib.sha256(Path(name).read_bytes()).digest())
                except OSError:
                    stamps.append(b"")
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        cert_file, key_file, ca_file = self._files
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self._minimum
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise WebConfigError(f"web config {self._path}: cannot load {cert_file} / {key_file}: {error}") from None
        if ca_file is not None:
            try:
                context.load_verify_locations(cafile=ca_file)
            except (OSError, ssl.SSLError) as error:
                raise WebConfigError(
                    f"web config {self._path}: cannot load client_ca_file {ca_file}: {error}"
                ) from None
        context.verify_mode = self._verify_mode
        return context

    def context(self) -> ssl.SSLContext:
        """The current context: rebuilt first when a file changed since the last build (the old one on failure)."""
        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._context = self._build()
                    log.info("web config %s: reloaded the TLS certificate files", self._path)
                except WebConfigError as error:
                    log.error("%s; still serving the previous certificate", error)
            return self._context


@dataclass(frozen=True)
class WebConfig:
    """A loaded web config: server TLS (None: plain HTTP) and bcrypt hashes by user (empty: no auth)."""

    path: Path
    tls: TlsFiles | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    _verified: dict[tuple[str, bytes], bool] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value passes basic auth (always, when no users are configured).

        Successful checks are cached by a digest of the credentials (bcrypt costs tens of ms per check).
        """
        if not self.users:
            return True
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        key = (user, hashlib.sha256(password).digest())
        with self._lock:
            if self._verified.get(key):
                return True
        expected = self.users.get(user)
        try:
            ok = bcrypt.checkpw(password, expected if expected is not None else _DUMMY_HASH) and expected is not None
        except ValueError:  # a hash bcrypt cannot read (checked at load; never a 500)
            ok = False
        if ok:
            with self._lock:
                if len(self._verified) >= _CACHE_SIZE:
                    self._verified.clear()
                self._verified[key] = True
        return ok


def _basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def load_web_config(path: Path) -> WebConfig:
    """Read and check ``path``; build the TLS context (loading the certificate and key now)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise WebConfigError(f"web config {path}: cannot read it: {error}") from None
    except (yaml.YAMLError, ValueError) as error:  # ValueError: an integer of more than 4,300 digits
        raise WebConfigError(f"web config {path}: not valid YAML: {error}".replace("\n", " ")) from None
    except RecursionError:
        raise WebConfigError(f"web config {path}: not valid YAML: nested too deeply") from None
    if document is None:
        document = {}
    top = _mapping(path, "the document", document, _TOP_KEYS)
    users = _users(path, top.get("basic_auth_users"))
    tls = top.get("tls_server_config")
    files = None if tls is None else _tls_files(path, _mapping(path, "tls_server_config", tls, _TLS_KEYS))
    if users and files is None:
        log.warning("web config %s: basic auth without TLS sends passwords in clear text", path)
    return WebConfig(path=path, tls=files, users=users)


def _mapping(path: Path, where: str, value: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WebConfigError(f"web config {path}: {where} must be a mapping")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise WebConfigError(f"web config {path}: {where}: unsupported key(s) {', '.join(unknown)}")
    return value


def _users(path: Path, value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WebConfigError(f"web config {path}: basic_auth_users must be a mapping of user to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        if not isinstance(user, str) or not user or ":" in user or not user.isprintable():
            raise WebConfigError(f"web config {path}: basic_auth_users: bad user name {user!r}")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"web config {path}: basic_auth_users.{user}: not a bcrypt hash")
        try:
            bcrypt.checkpw(b"", hashed.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise WebConfigError(f"web config {path}: basic_auth_users.{user}: not a valid bcrypt hash") from None
        users[user] = hashed.encode("ascii")
    return users


def _file(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"web config {path}: tls_server_config.{key} must be a file path")
    resolved = Path(value) if Path(value).is_absolute() else path.parent / value
    try:
        found = resolved.is_file()
    except OSError as error:  # a name too long for the file system
        raise WebConfigError(f"web config {path}: tls_server_config.{key}: {error.strerror}") from None
    if not found:
        raise WebConfigError(f"web config {path}: tls_server_config.{key}: no such file {resolved}")
    return str(resolved)


def _tls_files(path: Path, tls: Mapping[str, Any]) -> TlsFiles:
    if "cert_file" not in tls or "key_file" not in tls:
        raise WebConfigError(f"web config {path}: tls_server_config needs cert_file and key_file")
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH_TYPES:
        raise WebConfigError(
            f"web config {path}: tls_server_config.client_auth_type: {auth_type!r} is not one of "
            + ", ".join(CLIENT_AUTH_TYPES)
        )
    verify_mode = CLIENT_AUTH_TYPES[auth_type]
    has_ca = tls.get("client_ca_file") is not None
    if has_ca and verify_mode == ssl.CERT_NONE:
        raise WebConfigError(f"web config {path}: client_ca_file is set but client_auth_type is NoClientCert")
    if not has_ca and verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"web config {path}: client_auth_type {auth_type} needs client_ca_file")
    min_version = tls.get("min_version", "TLS12")
    if not isinstance(min_version, str) or min_version not in TLS_VERSIONS:
        raise WebConfigError(f"web config {path}: tls_server_config.min_version must be TLS12 or TLS13")
    cert_file, key_file = _file(path, "cert_file", tls["cert_file"]), _file(path, "key_file", tls["key_file"])
    ca_file = _file(path, "client_ca_file", tls["client_ca_file"]) if has_ca else None
    return TlsFiles(path, (cert_file, key_file, ca_file), verify_mode, TLS_VERSIONS[min_version])

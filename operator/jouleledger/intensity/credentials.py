"""Secrets (API tokens, passwords) read from files, never shown in logs, reprs or error messages.

Kubernetes mounts Secrets as files and updates them in place when the Secret changes, so a :class:`Secret` backed
by a file reads it again on every use: a rotated token is picked up without a restart.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MissingSecretError", "Secret"]

_MAX_SECRET_BYTES = 64 * 1024


class MissingSecretError(RuntimeError):
    """A secret file is missing, unreadable, too large or empty. The message names the file, not its content."""


class Secret:
    """A secret value from a file (read at each :meth:`reveal`) or given directly (tests, embedding)."""

    __slots__ = ("_path", "_value")

    def __init__(self, *, path: str | Path | None = None, value: str | None = None) -> None:
        if (path is None) == (value is None):
            raise ValueError("a Secret needs exactly one of path= or value=")
        self._path = Path(path) if path is not None else None
        self._value = value

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        return cls(path=path)

    @classmethod
    def literal(cls, value: str) -> Secret:
        return cls(value=value)

    @classmethod
    def of(cls, value: Secret | str) -> Secret:
        """``value`` itself if it is a secret already, else the literal secret ``value``."""
        return value if isinstance(value, Secret) else cls.literal(value)

    @property
    def path(self) -> Path | None:
        return self._path

    def reveal(self) -> str:
        """The secret, stripped of surrounding whitespace; raise :class:`MissingSecretError` if there is none."""
        if self._path is None:
            text = (self._value or "").strip()
            where = "the configured value"
        else:
            where = str(self._path)
            try:
                with self._path.open("rb") as handle:
                    raw = handle.read(_MAX_SECRET_BYTES + 1)
            except OSError as error:
                raise MissingSecretError(f"cannot read secret file {where}: {error.strerror or error}") from None
            if len(raw) > _MAX_SECRET_BYTES:
                raise MissingSecretError(f"secret file {where} is larger than {_MAX_SECRET_BYTES} bytes")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise MissingSecretError(f"secret file {where} is not UTF-8 text") from None
        if not text:
            raise MissingSecretError(f"secret in {where} is empty")
        if any(ch in text for ch in "\r\n"):
            raise MissingSecretError(f"secret in {where} spans several lines")
        return text

    def __repr__(self) -> str:
        return f"Secret(path={str(self._path)!r})" if self._path is not None else "Secret(<literal>)"

    __str__ = __repr__

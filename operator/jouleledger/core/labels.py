"""One sanitiser for every string that leaves the process as a metric label value (or is printed from outside).

Pod names, labels and owners come from the kubelet, the API server, traces and agents; the exposition escapes
quotes, backslashes and newlines, but a lone surrogate cannot be encoded at all (one such pod name would make the
whole scrape fail) and a 10 kB value costs Prometheus memory on every sample. :func:`safe_label_value` keeps every
value Kubernetes can produce unchanged (names up to 253 characters, printable) and maps anything else to a
bounded, printable value that stays distinct for distinct inputs.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["MAX_LABEL_VALUE_CHARS", "MAX_MESSAGE_CHARS", "one_line", "safe_label_value"]

MAX_LABEL_VALUE_CHARS: Final = 256
"""The longest label value exported (Kubernetes object names are at most 253 characters)."""
MAX_MESSAGE_CHARS: Final = 500
"""The longest error message printed about outside input (a 10 kB value is cut, not printed whole)."""
_DIGEST_CHARS: Final = 16
_REPLACEMENT: Final = "\ufffd"


def safe_label_value(value: str) -> str:
    """``value`` when it is at most :data:`MAX_LABEL_VALUE_CHARS` printable characters; else a printable value of at
    most that length: every character ``str.isprintable`` refuses (controls, separators other than the space, lone
    surrogates, unassigned code points) becomes U+FFFD, and the changed value ends in ``~`` and 16 hex digits of a
    hash of the original (so that two different hostile names never merge into one series)."""
    if len(value) <= MAX_LABEL_VALUE_CHARS and value.isprintable():
        return value
    head = value[: MAX_LABEL_VALUE_CHARS - _DIGEST_CHARS - 1]
    cleaned = "".join(char if char.isprintable() else _REPLACEMENT for char in head)
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return cleaned + "~" + digest


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` as one printable line of at most ``limit`` characters: a newline, control character or lone
    surrogate that came from the input is written as its Python escape (``\\n``, ``\\x00``, ``\\ud800``), and a
    longer message is cut with ``...``."""
    if len(message) <= limit and message.isprintable():
        return message
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message[: limit * 2])
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Fuzzing the web config file of both components' ``/metrics`` (:func:`load_web_config`): whatever the YAML, a
valid configuration or one :class:`WebConfigError` whose message is one line naming the file, never another
exception (the command lines print it as one line and exit 2)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouleledger.metrics.webconfig import WebConfigError, load_web_config
from tests._figures import figure
from tests._fuzz import mutated

HASH = "$2b$04$BmRt.r4Gzn8MKv0j1uds..FOFHoMR/b2.8.jh2Cj8VaKusv3mP33i"  # "pw" at cost 4 (fast to check)
VALID: dict[str, Any] = {
    "tls_server_config": {
        "cert_file": "server.crt",
        "key_file": "server.key",
        "client_auth_type": "NoClientCert",
        "min_version": "TLS12",
    },
    "basic_auth_users": {"prometheus": HASH},
}
TEXTS = [
    "tls_server_config: {cert_file: " + "9" * 5000 + "}",  # yaml raises ValueError (the 4,300-digit limit)
    "[" * 600 + "]" * 600,  # yaml recurses until RecursionError
    "tls_server_config: {cert_file: a, key_file: b, client_auth_type: [RequireAnyClientCert]}",  # unhashable
    "tls_server_config: {cert_file: a, key_file: b, min_version: {TLS12: 1}}",
    'tls_server_config: {cert_file: "a\\0b", key_file: b}',  # a NUL in a path
    "tls_server_config: {cert_file: " + "a" * 5000 + ", key_file: b}",  # a file name too long for the OS
    'basic_auth_users: {"a\\nb": x}',
    "\udcff: 1",  # written with surrogatepass: not UTF-8
]


def test_web_config_files_give_a_config_or_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text("not a certificate")
    (tmp_path / "server.key").write_text("not a key")
    path = tmp_path / "web.yml"
    outcomes: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None)
    @example(TEXTS[0])
    @example(TEXTS[1])
    @example(TEXTS[2])
    @example(TEXTS[4])
    @example(TEXTS[5])
    @example(TEXTS[6])  # a user name with a newline: a two-line message
    @example("? '\n\n  '\n: null\n")  # an unknown key of newlines: likewise
    # The deeply nested text takes PyYAML about 0.1 s to reject: once, as an example, not drawn again and again.
    @given(
        st.sampled_from([t for t in TEXTS if t != TEXTS[1]])
        | st.builds(lambda doc: yaml.safe_dump(doc, allow_unicode=True), mutated(VALID))
    )
    def run(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_web_config(path)
        except WebConfigError as error:
            message = str(error)
        else:
            outcomes["valid"] += 1
            return
        assert "\n" not in message
        assert str(path) in message
        outcomes["web_config_error"] += 1

    run()
    figure(f"web config fuzz: {outcomes.total()} files, {dict(sorted(outcomes.items()))}")
    assert outcomes["web_config_error"]

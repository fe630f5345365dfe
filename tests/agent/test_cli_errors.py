"""Bad input to any command: one clear line on stderr naming the input, a non-zero exit, never a traceback.

Table-driven: each case is a command line (and the files it needs); every command runs as a real subprocess, as a
user would run it. Log records are silenced (``--log-level ERROR``) so that stderr holds only the error itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HEADER = {
    "type": "header",
    "version": 1,
    "node": "n",
    "gpus": [{"uuid": "GPU-a", "model": "Tesla T4", "energy_counter": True, "power_limit_w": 70}],
}


def _sample(t: float, energy: int, pods: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "type": "sample",
        "t": t,
        "gpus": [{"uuid": "GPU-a", "energy_mj": energy, "power_mw": 50_000}],
        "pods": pods or [],
    }


def _trace(tmp: Path, *lines: str | bytes) -> str:
    path = tmp / "trace.jsonl"
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return str(path)


POD = {"namespace": "ns", "name": "p", "uid": "u", "containers": [{"name": "c", "devices": ["GPU-a"]}]}


def _long_held_trace(tmp: Path) -> str:
    """One pod holding the GPU for 10^9 s (its counter covers the gap): a billion GPU-seconds."""
    return _trace(tmp, _header(), json.dumps(_sample(0, 0, [POD])), json.dumps(_sample(1e9, 1, [POD])))


def _header() -> str:
    return json.dumps(HEADER)


def _regular_file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("")
    return path


def _jouleledger(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "jouleledger.cli", "--log-level", "ERROR", *args],
        input=stdin,
        check=False,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


# (id, build the argv in a temp dir, text the error line must contain)
Case = tuple[str, Callable[[Path], list[str]], str]
CASES: list[Case] = [
    ("replay-not-utf8", lambda t: ["replay", _trace(t, b'{"type": "header", "node": "\xff\xfe"}')], "UTF-8"),
    (
        "replay-4300-digits",
        lambda t: ["replay", _trace(t, _header(), '{"type": "sample", "t": ' + "9" * 5000 + "}")],
        "line 2",
    ),
    ("replay-deeply-nested", lambda t: ["replay", _trace(t, "[" * 200_000 + "]" * 200_000)], "line 1"),
    (
        "replay-huge-counter",
        lambda t: ["replay", _trace(t, _header(), json.dumps(_sample(0, 10**400)))],
        "energy_mj",
    ),
    ("replay-huge-time", lambda t: ["replay", _trace(t, _header(), json.dumps(_sample(1e300, 1)))], "t: "),
    (
        "replay-zero-power-limit",
        lambda t: ["replay", _trace(t, json.dumps({**HEADER, "gpus": [{**HEADER["gpus"][0], "power_limit_w": 0}]}))],  # type: ignore[dict-item]
        "power_limit_w",
    ),
    (
        "replay-10kB-name",
        lambda t: ["replay", _trace(t, json.dumps({**HEADER, "node": "n" * 10_000}))],
        "header.node is longer than 1024",
    ),
    ("replay-missing-file", lambda t: ["replay", str(t / "nope.jsonl")], "nope.jsonl"),
    ("replay-directory", lambda t: ["replay", str(t)], str(Path("/"))),
    ("replay-empty", lambda t: ["replay", _trace(t)], "empty"),
    ("replay-bad-pue", lambda t: ["replay", _trace(t, _header()), "--pue", "nan"], "pue"),
    (
        "replay-carbon-overflow",
        lambda t: [
            "replay",
            "--json",
            "--embodied-g-per-gpu-hour",
            "1e308",
            _long_held_trace(t),
        ],
        "not a finite number",
    ),
    ("agent-interval-negative", lambda t: ["agent", "--backend", "simulated", "--interval-s", "-1"], "--interval-s"),
    ("agent-interval-zero", lambda t: ["agent", "--backend", "simulated", "--interval-s", "0"], "--interval-s"),
    ("agent-interval-nan", lambda t: ["agent", "--backend", "simulated", "--interval-s", "nan"], "--interval-s"),
    ("agent-gpus-zero", lambda t: ["agent", "--backend", "simulated", "--gpus", "0"], "--gpus"),
    ("agent-gpus-too-many", lambda t: ["agent", "--backend", "simulated", "--gpus", "5000", "--once"], "gpus"),
    ("agent-retention-negative", lambda t: ["agent", "--backend", "simulated", "--retention-s", "-5"], "--retention-s"),
    ("agent-port-70000", lambda t: ["agent", "--backend", "simulated", "--port", "70000"], "--port"),
    ("agent-max-ticks-negative", lambda t: ["agent", "--backend", "simulated", "--max-ticks", "-1"], "--max-ticks"),
    (
        "agent-bad-listen-address",
        lambda t: [
            "agent",
            "--backend",
            "simulated",
            "--listen-address",
            "999.1.1.1",
            "--port",
            "1",
            "--max-ticks",
            "1",
        ],
        "999.1.1.1",
    ),
    (
        "agent-checkpoint-under-a-file",
        lambda t: (
            ["agent", "--backend", "simulated", "--port", "0", "--once", "--checkpoint-path", f"{_regular_file(t)}/ck"]
        ),
        "--checkpoint-path",
    ),
    (
        "agent-checkpoint-is-a-directory",
        lambda t: ["agent", "--backend", "simulated", "--port", "0", "--once", "--checkpoint-path", str(t)],
        "is a directory",
    ),
    ("agent-replay-without-trace", lambda t: ["agent", "--backend", "replay", "--port", "0"], "--trace"),
    (
        "record-samples-zero",
        lambda t: ["record", "--backend", "simulated", "--out", "-", "--samples", "0"],
        "--samples",
    ),
    (
        "record-interval-zero",
        lambda t: ["record", "--backend", "simulated", "--out", "-", "--interval-s", "0"],
        "--interval",
    ),
    ("record-gpus-zero", lambda t: ["record", "--backend", "simulated", "--out", "-", "--gpus", "0"], "--gpus"),
    ("record-unwritable-out", lambda t: ["record", "--backend", "simulated", "--out", str(t)], "--out"),
    ("demo-wall-negative", lambda t: ["demo", "--wall-s", "-1"], "--wall-s"),
    ("demo-interval-nan", lambda t: ["demo", "--interval-s", "nan"], "--interval-s"),
]


@pytest.mark.parametrize(("argv", "names"), [(case[1], case[2]) for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gives_one_clear_line(tmp_path: Path, argv: Callable[[Path], list[str]], names: str) -> None:
    result = _jouleledger(*argv(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]


def test_port_in_use_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = _jouleledger("agent", "--backend", "simulated", "--listen-address", "127.0.0.1", "--port", port)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line


def test_operator_once_without_a_cluster_gives_one_clear_line(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""}
    result = _jouleledger("operator", "--once", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "Kubernetes" in line


def _valid_trace(pods: int) -> list[str]:
    pod_list = [
        {
            "namespace": "ns",
            "name": f"pod-{i}",
            "uid": f"u{i}",
            "containers": [{"name": "c", "devices": [f"GPU-a::{i}"]}],
        }
        for i in range(pods)
    ]
    return [_header(), json.dumps(_sample(0, 0, pod_list)), json.dumps(_sample(1, 7_000, pod_list))]


def test_replay_reads_standard_input(tmp_path: Path) -> None:
    result = _jouleledger("replay", "-", "--json", stdin=("\n".join(_valid_trace(2)) + "\n").encode())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["measured_mj"] == 7_000


def test_bad_standard_input_names_it(tmp_path: Path) -> None:
    result = _jouleledger("replay", "-", stdin=b"\xff\n")
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("jouleledger replay: -: ")


def test_lone_surrogates_in_names_are_rejected_with_one_line(tmp_path: Path) -> None:
    """A name no exporter could write (a lone surrogate, JSON "\\ud800") is an error of the trace, not a crash of
    the table output or of every later scrape."""
    pod = {"namespace": "ns", "name": "evil-\ud800", "uid": "u", "containers": [{"name": "c", "devices": ["GPU-a"]}]}
    trace = _trace(tmp_path, _header(), json.dumps(_sample(0, 0, [pod])), json.dumps(_sample(1, 5, [pod])))
    result = _jouleledger("replay", trace)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "line 2" in line
    assert "pods[0].name" in line


def test_output_piped_to_a_reader_that_stops_early_exits_quietly(tmp_path: Path) -> None:
    trace = _trace(tmp_path, *_valid_trace(3000))  # a --json report of several hundred kB
    with subprocess.Popen(
        [sys.executable, "-m", "jouleledger.cli", "replay", trace, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.readline()  # like `| head -1`
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 1
    assert stderr == ""

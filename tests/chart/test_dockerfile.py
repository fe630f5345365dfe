"""The Dockerfile, read as instructions (no Docker engine here to build it): multi-stage, non-root, one entry
point, and every file it copies exists and is not excluded by .dockerignore."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from tests._tools import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def _stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            stages.append([])
        assert stages, "the first instruction must be FROM"
        stages[-1].append(step)
    return stages


def test_instruction_parser_joins_continuations() -> None:
    assert instructions("FROM a AS b\n# c\nRUN x \\\n    && y\n") == [("FROM", "a AS b"), ("RUN", "x  && y")]


def test_multi_stage_slim_runtime() -> None:
    stages = _stages(instructions(DOCKERFILE.read_text()))
    assert len(stages) >= 2
    builder_from, runtime_from = stages[0][0][1].split(), stages[-1][0][1].split()
    assert builder_from[0] == "python:3.11-slim"
    assert builder_from[1].upper() == "AS"
    builder = builder_from[2]
    assert runtime_from[0] == "python:3.11-slim"
    runtime_text = " ".join(arguments for _, arguments in stages[-1])
    assert f"from={builder}" in runtime_text or f"--from={builder}" in runtime_text, "runtime must use the builder"
    assert any(keyword == "RUN" and "pip wheel" in arguments for keyword, arguments in stages[0])


def test_non_root_user_and_entrypoint() -> None:
    steps = instructions(DOCKERFILE.read_text())
    users = [arguments for keyword, arguments in steps if keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] == "65532"
    (entrypoint,) = [arguments for keyword, arguments in steps if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["jouleledger"]
    exposed = {port for keyword, arguments in steps if keyword == "EXPOSE" for port in arguments.split()}
    assert exposed == {"9470", "9471"}


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, enough for our file: last matching pattern wins, ``!`` re-includes, a pattern
    matching a parent directory matches everything below it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        regex_body = body.replace("**/", "*/") if body != "**" else "*"
        if any(fnmatch.fnmatchcase(c, body) or fnmatch.fnmatchcase(c, regex_body) for c in candidates):
            ignored = not negate
    return ignored


def test_copied_sources_exist_and_are_not_ignored() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    copies = [arguments for keyword, arguments in instructions(DOCKERFILE.read_text()) if keyword == "COPY"]
    sources = [src for copy in copies if "--from" not in copy for src in copy.split()[:-1]]
    assert {"pyproject.toml", "operator"} <= set(sources)
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert not _ignored("operator/jouleledger/cli.py", patterns)
    assert _ignored(".venv/bin/python", patterns)
    assert _ignored("tests/conftest.py", patterns)
    assert _ignored("operator/jouleledger/__pycache__/cli.cpython-311.pyc", patterns)
    assert not _ignored(str(Path("README.md")), patterns)

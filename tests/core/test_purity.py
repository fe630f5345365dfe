"""The core imports nothing but the standard library and itself (import-linter checks the listed third-party
packages and our other layers in ``make lint``; this catches any other package too)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import jouleledger.core

CORE = Path(jouleledger.core.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _outside(module: str) -> bool:
    top = module.split(".", maxsplit=1)[0]
    if top == "jouleledger":
        return not (module == "jouleledger.core" or module.startswith("jouleledger.core."))
    return top not in sys.stdlib_module_names and top != "__future__"


def test_core_imports_only_the_standard_library_and_itself() -> None:
    files = sorted(CORE.glob("*.py"))
    assert files
    offending = {
        (path.name, ".".join(module.split(".")[:2])) for path in files for module in _imports(path) if _outside(module)
    }
    assert offending == set()


def test_the_check_sees_third_party_and_higher_layers() -> None:
    assert _outside("prometheus_client.core")
    assert _outside("jouleledger.metrics.agent")
    assert not _outside("jouleledger.core.units")
    assert not _outside("fractions")

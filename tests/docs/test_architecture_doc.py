"""docs/architecture.md lists every module of the package, and nothing that is not one."""

from __future__ import annotations

import re

from tests._tools import REPO_ROOT

PACKAGE = REPO_ROOT / "operator" / "jouleledger"
DOC = REPO_ROOT / "docs" / "architecture.md"


def _documented() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### Modules") : text.index("## Data flow")]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([\w/]+\.py)`", row)}


def _modules() -> set[str]:
    names = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    return {
        name
        for name in names
        if not name.endswith(("__init__.py", "__main__.py")) and not name.startswith("kube/_podresources/")
    }


def test_the_module_list_is_the_tree() -> None:
    documented, modules = _documented(), _modules()
    assert sorted(modules - documented) == [], "modules missing from docs/architecture.md"
    assert sorted(documented - modules) == [], "docs/architecture.md lists modules that do not exist"

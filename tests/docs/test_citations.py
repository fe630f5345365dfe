"""The product documents itself: nothing in the repository cites a design document outside it, and every link
in the README and ``docs/`` resolves to a file in the repository."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests._tools import REPO_ROOT

# Built from parts so that this file does not match itself.
_OUTSIDE_CITATION = re.compile(r"DESIGN" + r"\.md|\.\./" + r"shared\b")
_SKIPPED_DIRS = {".git", ".venv", ".cache", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "build"}
_SKIPPED_DIRS |= {"dist", "__pycache__", "node_modules", "shared"}
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _repository_files() -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")]
        files.extend(Path(folder, name) for name in names)
    return files


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def test_nothing_cites_a_document_outside_the_repository() -> None:
    citing = []
    for path in _repository_files():
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE_CITATION.search(line):
                citing.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert citing == [], "cite docs/ instead:\n" + "\n".join(citing)


def test_the_citation_check_finds_a_citation() -> None:
    assert _OUTSIDE_CITATION.search("see DESIGN" + ".md, rule 1")
    assert _OUTSIDE_CITATION.search("in ../" + "shared/STYLE.md")
    assert not _OUTSIDE_CITATION.search("see docs/attribution.md")


def test_every_documentation_link_resolves() -> None:
    documents = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        for target in _LINK.findall(document.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(REPO_ROOT)} -> {target}")
    assert broken == []


def test_the_user_documents_exist_and_the_readme_links_them() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("architecture", "attribution", "trace-format", "metrics", "annotations"):
        assert (REPO_ROOT / "docs" / f"{name}.md").is_file()
        assert f"(docs/{name}.md)" in readme, name

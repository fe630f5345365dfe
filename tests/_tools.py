"""Finding the real external tools the integration tests use (helm, promtool, prometheus, gcc).

Locally a missing tool skips the test with a clear reason; in CI (``CI`` set) it fails, so a green CI run always
means the real tool ran.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["REPO_ROOT", "require_tool"]

REPO_ROOT = Path(__file__).resolve().parent.parent

_ENV_OVERRIDES = {"helm": "JOULELEDGER_HELM"}
_LOCAL_FALLBACKS = {
    "helm": REPO_ROOT / ".cache" / "bin" / "helm",
    "checkov": REPO_ROOT / ".cache" / "bin" / "checkov",  # make checkov
}


def require_tool(name: str) -> str:
    """Return the path of the executable ``name``; skip (or fail in CI) when it is not installed."""
    candidates: list[str] = []
    override = os.environ.get(_ENV_OVERRIDES.get(name, ""), "")
    if override:
        candidates.append(override)
    fallback = _LOCAL_FALLBACKS.get(name)
    if fallback is not None:
        candidates.append(str(fallback))
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    message = f"{name} is not installed (run .ci/run or see README 'Development')"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(message)

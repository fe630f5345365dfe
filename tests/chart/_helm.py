"""Rendering the chart with the real helm binary, for the chart and rule tests."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests._tools import REPO_ROOT

__all__ = ["CHART", "CI_VALUES", "NAMESPACE", "RELEASE", "HelmError", "by_kind", "helm_run", "render"]

CHART = REPO_ROOT / "charts" / "jouleledger"
CI_VALUES = tuple(sorted((CHART / "ci").glob("*-values.yaml")))
RELEASE = "jl-test"
NAMESPACE = "energy"


class HelmError(RuntimeError):
    """helm exited non-zero; the message holds its stderr."""


def helm_run(helm: str, *args: str) -> str:
    """Run helm and return its stdout, raising :class:`HelmError` with stderr when it fails."""
    result = subprocess.run([helm, *args], capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


@functools.cache
def _render_cached(helm: str, values: tuple[str, ...], sets: tuple[str, ...], extra: tuple[str, ...]) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    for path in values:
        args += ["--values", path]
    for item in sets:
        args += ["--set-json", item]
    return helm_run(helm, *args)


def render(
    helm: str,
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    *,
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (``sets`` are ``--set-json`` items such as ``agent.port=1``)."""
    extra = ("--include-crds",) if include_crds else ()
    text = _render_cached(helm, tuple(str(p) for p in values), sets, extra)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [obj for obj in objects if obj.get("kind") == kind]

#!/usr/bin/env python3
"""Render the Helm chart into plain YAML under ``manifests/`` (``--write``) or fail on drift (``--check``).

The manifests are the chart with its default values (plus a Namespace), and, separately, the Prometheus
Operator objects (ServiceMonitors, PrometheusRule) that need that operator's CRDs, rendered with
``charts/jouleledger/ci/monitoring-values.yaml``. A fixed release name and namespace keep them reproducible:

    kubectl apply --server-side -f manifests/jouleledger.yaml
    kubectl apply --server-side -f manifests/jouleledger-monitoring.yaml   # with the Prometheus Operator

Usage: ``tools/render_manifests.py --helm PATH (--write | --check)``.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NAMESPACE", "RELEASE", "Manifest", "main", "manifests", "render"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "charts" / "jouleledger"
OUT_DIR = REPO_ROOT / "manifests"
RELEASE = "jouleledger"
NAMESPACE = "jouleledger"

_HEADER = (
    "# Rendered from charts/jouleledger by tools/render_manifests.py (release {release!r}, namespace {namespace!r}).\n"
    "# Do not edit: change the chart and run `make manifests`; CI fails when this file drifts from the chart.\n"
)

# The agents mount host paths (/proc, the kubelet pod-resources socket), which only the "privileged" Pod Security
# level allows; the namespace says so explicitly.
_NAMESPACE_DOC = f"""---
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/name: jouleledger
    app.kubernetes.io/instance: {RELEASE}
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/warn: privileged
"""


@dataclass(frozen=True)
class Manifest:
    """One file under ``manifests/`` and the ``helm template`` arguments that produce it."""

    filename: str
    helm_args: tuple[str, ...]
    with_namespace: bool = False


def manifests() -> tuple[Manifest, ...]:
    """The files this tool maintains."""
    monitoring_values = str(CHART / "ci" / "monitoring-values.yaml")
    return (
        Manifest("jouleledger.yaml", ("--include-crds",), with_namespace=True),
        Manifest(
            "jouleledger-monitoring.yaml",
            (
                "--values",
                monitoring_values,
                "--show-only",
                "templates/servicemonitor.yaml",
                "--show-only",
                "templates/prometheusrule.yaml",
            ),
        ),
    )


def render(helm: str, manifest: Manifest) -> str:
    """Run ``helm template`` for one manifest file and return the file's text."""
    command = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *manifest.helm_args]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    body = result.stdout if result.stdout.startswith("---") else "---\n" + result.stdout
    prefix = _NAMESPACE_DOC if manifest.with_namespace else ""
    text = _HEADER.format(release=RELEASE, namespace=NAMESPACE) + prefix + body
    return text if text.endswith("\n") else text + "\n"


def _check(helm: str, out_dir: Path) -> int:
    drifted = 0
    for manifest in manifests():
        path = out_dir / manifest.filename
        expected = render(helm, manifest)
        actual = path.read_text(encoding="utf-8") if path.exists() else ""
        if actual != expected:
            drifted += 1
            diff = difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"manifests/{manifest.filename} (committed)",
                tofile=f"manifests/{manifest.filename} (rendered from the chart)",
            )
            sys.stdout.writelines(diff)
    if drifted:
        print(f"\n{drifted} manifest file(s) drifted from the chart: run `make manifests` and commit.", file=sys.stderr)
        return 1
    print("manifests/ matches the chart.")
    return 0


def _write(helm: str, out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for manifest in manifests():
        path = out_dir / manifest.filename
        path.write_text(render(helm, manifest), encoding="utf-8")
        print(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--helm", default="helm", help="path of the helm binary (default: helm on PATH)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where the manifests live (default: manifests/)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="re-render the manifests")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff when the manifests drifted")
    args = parser.parse_args(argv)
    try:
        return _write(args.helm, args.out_dir) if args.write else _check(args.helm, args.out_dir)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"render_manifests: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

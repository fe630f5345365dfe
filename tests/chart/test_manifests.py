"""manifests/ is the chart rendered with fixed names; tools/render_manifests.py --check fails on drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests._tools import REPO_ROOT

pytestmark = pytest.mark.slow

TOOL = REPO_ROOT / "tools" / "render_manifests.py"
MANIFESTS = REPO_ROOT / "manifests"


def _tool(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--helm", helm, *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_committed_manifests_match_the_chart(helm: str) -> None:
    result = _tool(helm, "--check")
    assert result.returncode == 0, f"manifests/ drifted from the chart (run `make manifests`):\n{result.stdout}"


def test_check_reports_drift_with_a_diff(helm: str, tmp_path: Path) -> None:
    assert _tool(helm, "--write", "--out-dir", str(tmp_path)).returncode == 0
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["jouleledger-monitoring.yaml", "jouleledger.yaml"]
    main = tmp_path / "jouleledger.yaml"
    main.write_text(main.read_text().replace("replicas: 1", "replicas: 3"))
    result = _tool(helm, "--check", "--out-dir", str(tmp_path))
    assert result.returncode == 1
    assert "-  replicas: 3" in result.stdout
    assert "+  replicas: 1" in result.stdout
    assert "drifted" in result.stderr


def test_manifests_are_plain_yaml_with_a_namespace() -> None:
    objects = [doc for doc in yaml.safe_load_all((MANIFESTS / "jouleledger.yaml").read_text()) if doc]
    kinds = [obj["kind"] for obj in objects]
    assert kinds[0] == "Namespace"
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert {"DaemonSet", "Deployment", "ClusterRole", "ConfigMap", "Service"} <= set(kinds)
    for obj in objects[1:]:
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}:
            assert obj["metadata"]["namespace"] == "jouleledger", obj["metadata"]["name"]
    text = (MANIFESTS / "jouleledger.yaml").read_text()
    assert "{{ ." not in text, "an unrendered template action"
    assert "{{-" not in text, "an unrendered template action"
    monitoring = [doc for doc in yaml.safe_load_all((MANIFESTS / "jouleledger-monitoring.yaml").read_text()) if doc]
    assert sorted(obj["kind"] for obj in monitoring) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]

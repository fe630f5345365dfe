"""checkov over every rendered variant of the chart (the default and each ci/*-values.yaml), in one run.

Any failed check fails the test. Checks that do not apply are skipped in the chart itself, each with its reason:
on one object with a ``checkov.io/skipN: "ID=reason"`` annotation, or for all in ``charts/jouleledger/.checkov.yaml``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._tools import require_tool
from tests.chart._helm import CHART, CI_VALUES, by_kind, render
from tests.chart._helm import _render_cached as render_text

pytestmark = pytest.mark.slow

CONFIG = CHART / ".checkov.yaml"
VARIANTS = {"default": (), **{path.stem: (str(path),) for path in CI_VALUES}}


@pytest.fixture(scope="module")
def report(helm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    checkov = require_tool("checkov")
    folder = tmp_path_factory.mktemp("rendered")
    for name, values in VARIANTS.items():
        (folder / f"{name}.yaml").write_text(render_text(helm, values, (), ()), encoding="utf-8")
    result = subprocess.run(
        [checkov, "--config-file", str(CONFIG), "-d", str(folder), "--output", "json", "--compact"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    document = json.loads(result.stdout)
    reports = document if isinstance(document, list) else [document]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return dict(kubernetes)


def test_no_check_fails_on_any_variant(report: dict[str, Any]) -> None:
    failed = sorted(
        f"{item['check_id']} {Path(item['file_path']).stem}: {item['resource'][:80]} ({item['check_name']})"
        for item in report["results"].get("failed_checks", [])
    )
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 10 * len(VARIANTS)  # every variant was read


def test_every_skip_has_a_reason(report: dict[str, Any]) -> None:
    skipped = report["results"].get("skipped_checks", [])
    assert skipped, "the chart's skip annotations were not read"
    for item in skipped:
        assert len(item["check_result"].get("suppress_comment") or "") >= 20, item["check_id"]


def test_skip_annotations_name_a_check_and_a_reason(helm: str) -> None:
    for values in VARIANTS.values():
        objects = render(helm, tuple(Path(path) for path in values))
        for obj in [*by_kind(objects, "DaemonSet"), *by_kind(objects, "Deployment"), *by_kind(objects, "Pod")]:
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    assert re.fullmatch(r"CKV2?_K8S_\d+=[^=]{20,}", value), (obj["metadata"]["name"], value)


def test_global_skips_each_carry_a_comment() -> None:
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    config = yaml.safe_load("\n".join(lines))
    assert config["skip-download"] is True  # never reach out to a vendor API from the tests
    for check in config["skip-check"]:
        index = lines.index(f"  - {check}")
        assert lines[index - 1].strip().startswith("#"), f"{check} has no reason above it"


def test_image_digests_are_honoured(helm: str) -> None:
    objects = render(helm, (CHART / "ci" / "secured-values.yaml",))
    for kind in ("DaemonSet", "Deployment"):
        (workload,) = by_kind(objects, kind)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert "@sha256:" in container["image"]
        assert not any("CKV_K8S_43" in value for value in workload["metadata"]["annotations"].values())
    (test_pod,) = by_kind(objects, "Pod")
    assert "@sha256:" in test_pod["spec"]["containers"][0]["image"]

"""The chart with the real helm binary: lint, render every values variant, reject typos, validate every object
against the Kubernetes API schemas of the oldest and newest supported versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart._helm import CHART, CI_VALUES, HelmError, helm_run, render

pytestmark = pytest.mark.slow

OLDEST_KUBERNETES = "1.29"
NEWEST_KUBERNETES = ".".join(kubernetes_validate.utils.latest_version().split(".")[:2])
# Kinds of other projects' CRDs that kubernetes-validate has no schema for (checked by promtool / by hand instead).
FOREIGN_CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
_VALIDATED: set[tuple[str, str]] = set()  # (version, object as JSON): identical objects are validated once
VARIANTS = [pytest.param((), id="default"), *(pytest.param((path,), id=path.stem) for path in CI_VALUES)]


def test_ci_variants_exist() -> None:
    assert {path.stem for path in CI_VALUES} >= {"minimal-values", "monitoring-values", "electricitymaps-values"}


def test_chart_version_matches_kube_version_floor() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"].startswith(f">={OLDEST_KUBERNETES}.0")


@pytest.mark.parametrize("values", VARIANTS)
def test_lint_strict(helm: str, values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", "energy"]
    for path in values:
        args += ["--values", str(path)]
    output = helm_run(helm, *args)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("values", VARIANTS)
@pytest.mark.parametrize("kubernetes_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_every_object_validates_strictly(helm: str, values: tuple[Path, ...], kubernetes_version: str) -> None:
    objects = render(helm, values, include_crds=True)
    assert objects, "nothing rendered"
    validated = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in FOREIGN_CRD_KINDS:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        key = (kubernetes_version, json.dumps(obj, sort_keys=True))
        validated += 1
        if key in _VALIDATED:
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{name} is invalid for Kubernetes {kubernetes_version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{name}: {error.message} (add it to FOREIGN_CRD_KINDS only if it is another project's CRD)")
        _VALIDATED.add(key)
    assert validated >= 10


@pytest.mark.parametrize("values", VARIANTS)
def test_every_object_carries_the_common_labels(helm: str, values: tuple[Path, ...]) -> None:
    for obj in render(helm, values):
        labels: dict[str, Any] = obj["metadata"].get("labels", {})
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "jouleledger", name
        assert labels.get("app.kubernetes.io/instance") == "jl-test", name
        assert labels.get("app.kubernetes.io/component") in {"agent", "operator", "test"}, name


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ('agent.bakend="nvml"', "bakend"),
        ('agent.backend="cuda"', "backend"),
        ('agent.podMetadata="kubelet"', "podMetadata"),
        ("operator.config.pue=0.9", "pue"),
        ('operator.config.intensity.provider="carbonaware"', "provider"),
        ("operator.config.intensity.zoneTable={}", "zoneTable"),
        ('operator.config.price.currency="US dollars"', "currency"),
        ('operator.config.intensity.zones={"eu-west-1": "low"}', "eu-west-1"),
        ("monitoring.serviceMonitor.enable=true", "enable"),
        ('monitoring.prometheusRule.budgets.namespaces={"a": {"energyKwh": 1}}', "energyKwh"),
        ('monitoring.serviceMonitor.interval="30 seconds"', "interval"),
        ("agent.port=70000", "port"),
        ("agentt={}", "agentt"),
    ],
)
def test_schema_rejects_typos_and_bad_values(helm: str, item: str, complaint: str) -> None:
    with pytest.raises(HelmError) as failure:
        helm_run(helm, "template", "jl-test", str(CHART), "--set-json", item)
    message = str(failure.value)
    assert "schema" in message
    assert complaint in message


def test_ci_values_are_accepted_by_the_schema_alone(helm: str) -> None:
    """Each variant changes something: it must not render the same objects as the defaults."""
    default = render(helm)
    for path in CI_VALUES:
        assert render(helm, (path,)) != default, path.name


def test_notes_tell_how_to_reach_the_metrics(helm: str) -> None:
    output = helm_run(helm, "install", "jl", str(CHART), "--namespace", "energy", "--dry-run=client")
    notes = output[output.index("NOTES:") :]
    assert "port-forward daemonset/jl-jouleledger-agent 9470:9470" in notes
    assert "port-forward service/jl-jouleledger-operator 9471:9471" in notes
    assert "http://jl-jouleledger-agent.energy.svc:9470/metrics" in notes
    assert "honor_labels: true" in notes
    assert "helm test jl -n energy" in notes

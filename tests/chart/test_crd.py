"""The WorkloadFootprint CRD shipped in the chart: the agreed names, and example objects valid against its
openAPIV3Schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart._helm import CHART

CRD_PATH = CHART / "crds" / "workloadfootprints.jouleledger.io.yaml"
EXAMPLES = sorted((Path(__file__).parent / "data").glob("workloadfootprint-*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def _version(crd: dict[str, Any], name: str = "v1alpha1") -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == name]
    return version


def _validator(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    schema = _version(crd)["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_crd_names_match_the_contract(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "workloadfootprints.jouleledger.io"
    spec = crd["spec"]
    assert spec["group"] == "jouleledger.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "WorkloadFootprint"
    assert spec["names"]["plural"] == "workloadfootprints"
    assert "wfp" in spec["names"].get("shortNames", [])
    version = _version(crd)
    assert version["served"] is True
    assert version["storage"] is True
    assert "status" in version.get("subresources", {})


def test_examples_exist() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_examples_validate_against_the_crd_schema(crd: dict[str, Any], path: Path) -> None:
    example = yaml.safe_load(path.read_text())
    assert example["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
    assert example["kind"] == crd["spec"]["names"]["kind"]
    errors = sorted(_validator(crd).iter_errors(example), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("status", "energyMillijoules"), "a lot"), (("status", "finalized"), "yes"), (("spec", "workload"), "Job")],
)
def test_schema_rejects_wrong_types(crd: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    example = copy.deepcopy(yaml.safe_load(EXAMPLES[0].read_text()))
    target = example
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(_validator(crd).iter_errors(example)), f"{'.'.join(path)}={value!r} was accepted"

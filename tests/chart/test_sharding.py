"""``operator.shards``: one Deployment replica by default; with more, a StatefulSet whose pods take their shard from
the pod name's ordinal (``--shard-from-pod-name --total-shards N``, POD_NAME from the downward API)."""

from __future__ import annotations

from typing import Any

import pytest

from jouleledger.cli import build_parser
from jouleledger.controller.main import shard_spec
from tests.chart._helm import HelmError, by_kind, render

pytestmark = pytest.mark.slow


def _operator_args(workload: dict[str, Any]) -> list[str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in container["args"]]


def test_one_shard_is_one_deployment_replica_without_shard_flags(default_objects: list[Any]) -> None:
    (deployment,) = by_kind(default_objects, "Deployment")
    assert by_kind(default_objects, "StatefulSet") == []
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = _operator_args(deployment)
    assert not {"--shard", "--total-shards", "--shard-from-pod-name"} & set(args)


def test_several_shards_run_as_a_statefulset_whose_ordinal_is_the_shard(helm: str) -> None:
    objects = render(helm, sets=("operator.shards=3",))
    assert by_kind(objects, "Deployment") == []
    (statefulset,) = by_kind(objects, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    (service,) = [obj for obj in by_kind(objects, "Service") if obj["metadata"]["name"] == spec["serviceName"]]
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = spec["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    args = _operator_args(statefulset)
    assert "--standalone" in args  # shards never coordinate through kopf peering
    parsed = build_parser(args).parse_args(args)
    name = statefulset["metadata"]["name"]
    shards = [shard_spec(parsed, {"POD_NAME": f"{name}-{ordinal}"}) for ordinal in range(3)]
    assert [(spec.shard, spec.total) for spec in shards] == [(0, 3), (1, 3), (2, 3)]


def test_shards_with_kopf_peering_are_refused(helm: str) -> None:
    with pytest.raises(HelmError, match=r"disable operator\.peering"):
        render(helm, sets=("operator.shards=2", "operator.peering.enabled=true"))


def test_zero_shards_are_refused_by_the_schema(helm: str) -> None:
    with pytest.raises(HelmError, match="shards"):
        render(helm, sets=("operator.shards=0",))

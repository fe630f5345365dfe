"""Chart, schema and program settings stay in step: the rendered command lines parse with the program's own
parser, and the rendered operator config loads with the program's own loader."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from jouleledger.cli import build_parser
from jouleledger.controller import config as operator_config
from jouleledger.controller.config import ConfigError, load_config
from tests.chart._helm import CHART, CI_VALUES, by_kind, render

pytestmark = pytest.mark.slow

VARIANTS = [pytest.param((), id="default"), *(pytest.param((path,), id=path.stem) for path in CI_VALUES)]
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def _container(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (workload,) = by_kind(objects, kind)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _substitute_env(args: list[str], env: dict[str, str]) -> list[str]:
    """What the kubelet does with ``$(VAR)`` in container args."""
    for name, value in env.items():
        args = [arg.replace(f"$({name})", value) for arg in args]
    return args


@pytest.mark.parametrize("values", VARIANTS)
def test_agent_args_parse_with_the_program(helm: str, values: tuple[Path, ...]) -> None:
    container = _container(render(helm, values), "DaemonSet")
    args = _substitute_env(container["args"], {"NODE_NAME": "gpu-node-1"})
    parsed = build_parser(args).parse_args(args)
    assert parsed.command == "agent"
    assert parsed.node_name == "gpu-node-1"
    (port,) = container["ports"]
    assert parsed.port == port["containerPort"]
    mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
    socket_path = parsed.kubelet_socket.removeprefix("unix://")
    assert any(socket_path.startswith(mount + "/") for mount in mounts), socket_path
    assert parsed.proc_root in mounts
    assert any(str(parsed.checkpoint_path).startswith(mount + "/") for mount in mounts)


@pytest.mark.parametrize("values", VARIANTS)
def test_operator_args_parse_with_the_program(helm: str, values: tuple[Path, ...]) -> None:
    objects = render(helm, values)
    kind = "StatefulSet" if by_kind(objects, "StatefulSet") else "Deployment"  # a sharded operator is a StatefulSet
    container = _container(objects, kind)
    args = _substitute_env(container["args"], {"POD_NAMESPACE": "energy", "POD_NAME": "jouleledger-operator-1"})
    parsed = build_parser(args).parse_args(args)
    assert parsed.command == "operator"
    (port,) = container["ports"]
    assert parsed.port == port["containerPort"]


def _rendered_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config_maps = [cm for cm in by_kind(objects, "ConfigMap") if cm["metadata"]["name"].endswith("-operator")]
    (config_map,) = config_maps
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


@pytest.mark.parametrize("values", VARIANTS)
def test_operator_config_loads_with_the_program(helm: str, values: tuple[Path, ...], tmp_path: Path) -> None:
    config = _rendered_config(render(helm, values))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded.pue == config["pue"]
    assert loaded.team_label == config["teamLabel"]
    assert loaded.currency == config["price"]["currency"]


def test_operator_config_loader_rejects_an_unknown_key(helm: str, tmp_path: Path) -> None:
    """The contract the schema relies on: the program would also catch a key the chart let through."""
    config = _rendered_config(render(helm))
    config["price"]["perKwh"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="perKwh"):
        load_config(path)


def _redirect_secret_files(block: dict[str, Any], tmp_path: Path) -> None:
    for section in ("electricityMaps", "wattTime"):
        for key, value in list(block.get(section, {}).items()):
            if key.endswith("File") and value:
                secret = tmp_path / Path(value).name
                secret.write_text("not-a-real-token\n")
                block[section][key] = str(secret)


@pytest.mark.parametrize("values", VARIANTS)
def test_intensity_block_builds_a_provider(helm: str, values: tuple[Path, ...], tmp_path: Path) -> None:
    from jouleledger.intensity.config import build_provider
    from jouleledger.intensity.electricitymaps import ElectricityMapsIntensity
    from jouleledger.intensity.static import StaticIntensity
    from jouleledger.intensity.watttime import WattTimeIntensity

    expected = {"static": StaticIntensity, "electricitymaps": ElectricityMapsIntensity, "watttime": WattTimeIntensity}
    block = _rendered_config(render(helm, values))["intensity"]
    _redirect_secret_files(block, tmp_path)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    try:
        provider = build_provider(block, client=client)
    finally:
        asyncio.run(client.aclose())
    assert type(provider) is expected[block["provider"]]


def _schema_keys(node: dict[str, Any]) -> dict[str, Any]:
    """Nested key tree of a schema block with fixed properties (free-form maps are leaves)."""
    if node.get("type") == "object" and "properties" in node:
        return {key: _schema_keys(child) for key, child in node["properties"].items()}
    return {}


def _known_keys_tree(known: Any) -> dict[str, Any]:
    return {key: (_known_keys_tree(child) if child is not None else {}) for key, child in known.items()}


def test_schema_intensity_keys_are_the_programs() -> None:
    from jouleledger.intensity.config import KNOWN_KEYS

    schema = SCHEMA["properties"]["operator"]["properties"]["config"]["properties"]["intensity"]
    assert _schema_keys(schema) == _known_keys_tree(KNOWN_KEYS)


def test_schema_config_top_level_keys_are_the_programs() -> None:
    schema = SCHEMA["properties"]["operator"]["properties"]["config"]
    top = operator_config._TOP_KEYS  # the loader's own key set
    assert set(schema["properties"]) == set(top)
    assert set(VALUES["operator"]["config"]) == set(top)


def _walk(values: Any, schema: dict[str, Any], where: str) -> None:
    """Every key in values.yaml is declared by the schema (and the schema closes our blocks)."""
    if not isinstance(values, dict) or "properties" not in schema:
        return
    assert schema.get("additionalProperties") is False, f"{where or '(top)'}: schema block is open"
    for key, value in values.items():
        assert key in schema["properties"], f"{where}.{key} is in values.yaml but not in the schema"
        _walk(value, schema["properties"][key], f"{where}.{key}")


def test_every_default_value_is_declared_in_the_schema() -> None:
    _walk(VALUES, SCHEMA, "")
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"

"""The chart's defaults are the code's: values.yaml repeats some constants (it must), and this keeps them equal."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from jouleledger.agent import main as agent_main
from jouleledger.controller import main as operator_main
from jouleledger.controller.config import OperatorConfig
from jouleledger.core import contract
from jouleledger.core.carbon import MAX_PUE
from jouleledger.core.ledger import DEFAULT_RETENTION_S
from jouleledger.intensity.config import DEFAULTS as INTENSITY_DEFAULTS
from jouleledger.kube import KUBELET_SOCKET

CHART = Path(__file__).resolve().parents[2] / "charts" / "jouleledger"
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


def _defaults(add_arguments: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--backend", "simulated"] if add_arguments is agent_main.add_arguments else [])


def test_agent_values_are_the_agents_defaults() -> None:
    agent = VALUES["agent"]
    flags = _defaults(agent_main.add_arguments)
    assert agent["port"] == contract.AGENT_PORT == flags.port
    assert agent["intervalSeconds"] == contract.AGENT_INTERVAL_S == flags.interval_s
    assert agent["retentionSeconds"] == DEFAULT_RETENTION_S == flags.retention_s
    assert f"unix://{agent['podResourcesPath']}/kubelet.sock" == KUBELET_SOCKET == flags.kubelet_socket


def test_operator_values_are_the_operators_defaults() -> None:
    operator = VALUES["operator"]
    flags = _defaults(operator_main.add_arguments)
    assert operator["port"] == contract.OPERATOR_PORT == flags.port
    assert operator["scrapeIntervalSeconds"] == contract.SCRAPE_INTERVAL_S == flags.scrape_interval_s
    assert flags.agent_port == contract.AGENT_PORT
    assert flags.agent_selector == contract.AGENT_SELECTOR


def test_operator_config_values_are_the_config_defaults() -> None:
    config = VALUES["operator"]["config"]
    default = OperatorConfig()
    assert config["teamLabel"] == default.team_label
    assert tuple(config["zoneLabels"]) == default.zone_labels
    assert config["defaultZone"] == default.default_zone
    assert config["price"]["currency"] == default.currency
    assert config["scrape"]["timeoutSeconds"] == default.scrape_timeout_s
    assert config["scrape"]["concurrency"] == default.scrape_concurrency
    assert config["maxGpuPowerW"] == default.max_gpu_power_w
    assert config["relistIntervalSeconds"] == default.relist_interval_s
    for key in ("provider", "defaultGramsPerKwh", "cacheTtlSeconds", "timeoutSeconds", "maxAgeSeconds"):
        assert config["intensity"][key] == INTENSITY_DEFAULTS[key], key


def test_the_schema_bounds_the_pue_as_the_code_does() -> None:
    pue = SCHEMA["properties"]["operator"]["properties"]["config"]["properties"]["pue"]
    assert (pue["minimum"], pue["maximum"]) == (1.0, MAX_PUE)

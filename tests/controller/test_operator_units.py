"""Small pieces of the operator: configuration, command line, exposition parsing, cluster state, collector."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.controller import main as operator_main
from jouleledger.controller.cluster import ClusterState, parse_selector
from jouleledger.controller.config import ConfigError, load_config, parse_config
from jouleledger.core.footprints import RollupSnapshot, Totals
from jouleledger.core.operator_stats import NodeIntensity, OperatorStats
from jouleledger.metrics.operator_collector import ExpositionError, OperatorCollector, parse_exposition
from tests.controller._exposition import Pod, agent_text


def test_config_defaults_and_values() -> None:
    config = parse_config(
        {
            "teamLabel": "example.com/team",
            "pue": 1.25,
            "zoneLabels": ["zone"],
            "defaultZone": "eu",
            "price": {"currency": "EUR", "defaultPerKwh": 0.2, "zones": {"fr": 0.1}},
            "embodied": {"defaultGramsPerGpuHour": 5, "models": {"A100": 12}},
            "scrape": {"timeoutSeconds": 2, "concurrency": 4},
            "intensity": {"provider": "static"},
        }
    )
    assert (config.pue, config.currency, config.price_of("fr"), config.price_of("de")) == (1.25, "EUR", 0.1, 0.2)
    assert config.zone_of({"zone": "fr"}) == "fr"
    assert config.zone_of({}) == "eu"
    assert config.embodied_g_per_gpu_hour == {"A100": 12.0}
    assert parse_config(None).pue == 1.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pue": 0.9}, "pue"),
        ({"pue": float("nan")}, "pue"),
        ({"teamLable": "x"}, "unknown key teamLable"),
        ({"price": {"curency": "USD"}}, "unknown key price.curency"),
        ({"scrape": {"concurrency": 0}}, "scrape.concurrency"),
        ({"zoneLabels": "zone"}, "zoneLabels"),
        ({"embodied": {"models": {"A100": -1}}}, "embodied.models.A100"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_config_errors_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_config_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("pue: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_command_line_contract_and_bad_config_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    operator_main.add_arguments(parser)
    config = tmp_path / "config.yaml"
    config.write_text("pue: 1.2\nunknownKey: 1\n")
    args = parser.parse_args(
        [
            *("--config", str(config), "--listen-address", "0.0.0.0", "--port", "9471"),
            *("--agent-namespace", "jl", "--agent-selector", "app.kubernetes.io/component=agent"),
            *("--agent-port", "9470", "--scrape-interval-s", "15", "--standalone", "--dry-run", "--once"),
        ]
    )
    assert (args.standalone, args.dry_run, args.once, args.scrape_interval_s) == (True, True, True, 15.0)
    assert operator_main.run(args) == 2
    assert "unknown key unknownKey" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--standalone", "--peering", "x"])


def test_fast_parser_agrees_with_prometheus_client_and_falls_back() -> None:
    text = agent_text(
        "n1", 12.5, [Pod("ml", f"p{i}", f"u{i}", i * 1.5, i * 0.25, "Job", "j", "ju", "t") for i in range(5)]
    )
    expected = [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    assert parse_exposition(text) == expected
    escaped = 'jouleledger_pod_info{pod="a\\"b",uid="u"} 1\n'  # an escaped quote: prometheus_client parses it
    assert parse_exposition(escaped) == [("jouleledger_pod_info", {"pod": 'a"b', "uid": "u"}, 1.0)]
    with pytest.raises(ExpositionError):
        parse_exposition('broken{pod="a" 1\n')


def test_fast_parser_shares_unchanged_label_sets_and_leaves_unusual_text_to_prometheus_client() -> None:
    pods = [Pod("ml", f"p{i}", f"u{i}", i * 1.5, i * 0.25, "Job", "j", "ju", "t") for i in range(3)]
    cache: dict[str, Any] = {}
    first = parse_exposition(agent_text("n1", 12.5, pods), cache)
    second = parse_exposition(agent_text("n1", 13.5, pods), cache)
    assert first == parse_exposition(agent_text("n1", 12.5, pods))  # a cache changes no result
    energy = [labels for name, labels, _ in second if name == "jouleledger_pod_gpu_energy_joules_total"]
    seconds = [labels for name, labels, _ in second if name == "jouleledger_pod_gpu_seconds_total"]
    before = [labels for name, labels, _ in first if name == "jouleledger_pod_gpu_energy_joules_total"]
    assert all(a is b and b is c for a, b, c in zip(energy, seconds, before, strict=True))  # parsed once
    # Lines the fast path does not take (a blank line, CRLF, spaces in the label set, a trailing garbage label)
    # are parsed by prometheus_client or rejected, never misread.
    assert parse_exposition('a{x="1"} 2\n\nb 3\n', cache) == [("a", {"x": "1"}, 2.0), ("b", {}, 3.0)]
    assert parse_exposition('a{x="1"} 2\r\n', cache) == [("a", {"x": "1"}, 2.0)]
    assert parse_exposition('a{ x="1" } 2\n', cache) == [("a", {"x": "1"}, 2.0)]
    with pytest.raises(ExpositionError):
        parse_exposition('a{x="1",y} 2\n', cache)


def test_selector_and_agent_discovery() -> None:
    assert parse_selector("a=b, c==d") == {"a": "b", "c": "d"}
    with pytest.raises(ValueError, match="key=value"):
        parse_selector("a in (b)")
    cluster = ClusterState(
        team_label="team", agent_namespace="jl", agent_selector={"app": "agent"}, agent_port=9470, zone_of=lambda _: "z"
    )

    def pod(name: str, namespace: str, ip: str, phase: str = "Running") -> dict[str, object]:
        return {
            "metadata": {"name": name, "namespace": namespace, "uid": name, "labels": {"app": "agent"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": phase, "podIP": ip},
        }

    cluster.apply("pods", None, pod("a1", "jl", "10.0.0.1"))
    cluster.apply("pods", "ADDED", pod("other", "default", "10.0.0.2"))  # not the agent namespace
    cluster.apply("pods", "ADDED", pod("a2", "jl", "not-an-ip"))
    cluster.apply("pods", "ADDED", pod("a3", "jl", "fd00::1", phase="Pending"))
    assert [target.url for target in cluster.agent_targets()] == ["http://10.0.0.1:9470/metrics"]
    cluster.apply("pods", "ADDED", pod("a4", "jl", "fd00::1"))
    assert {target.url for target in cluster.agent_targets()} == {"http://[fd00::1]:9470/metrics"}
    cluster.apply("pods", "DELETED", pod("a4", "jl", "fd00::1"))
    assert [target.pod for target in cluster.agent_targets()] == ["a1"]


def test_collector_renders_rollups_and_self_metrics() -> None:
    stats = OperatorStats()
    stats.scrapes["ok"] = 3
    stats.agents = 2
    stats.observe_delay(4.0)
    stats.observe_delay(40.0)
    stats.node_intensity["n1"] = NodeIntensity("z1", "static", 321.0)
    stats.rejected["wrong_node"] = 5
    rollups = RollupSnapshot(
        namespaces={"ml": Totals(2_000, 7.0, 1.5, 0.5, 0.25)},
        teams={"vision": Totals(2_000, 7.0, 1.5, 0.5, 0.25)},
        unallocated_mj={"n1": 500},
        currency="USD",
    )
    registry = CollectorRegistry()
    registry.register(OperatorCollector(lambda: stats.view(rollups, {("watttime", "timeout"): 4})))
    value = registry.get_sample_value
    assert value("jouleledger_namespace_gpu_energy_joules_total", {"namespace": "ml"}) == 2.0
    assert value("jouleledger_team_carbon_grams_total", {"team": "vision", "scope": "embodied"}) == 0.5
    assert value("jouleledger_namespace_cost_total", {"namespace": "ml", "currency": "USD"}) == 0.25
    assert value("jouleledger_node_unallocated_energy_joules_total", {"node": "n1"}) == 0.5
    assert (
        value("jouleledger_node_grid_intensity_grams_per_kwh", {"node": "n1", "zone": "z1", "source": "static"}) == 321
    )
    assert value("jouleledger_operator_scrapes_total", {"result": "ok"}) == 3
    assert value("jouleledger_operator_agents") == 2
    assert value("jouleledger_operator_intensity_fallbacks_total", {"provider": "watttime", "reason": "timeout"}) == 4
    assert value("jouleledger_operator_annotation_delay_seconds_bucket", {"le": "5.0"}) == 1
    assert value("jouleledger_operator_annotation_delay_seconds_bucket", {"le": "+Inf"}) == 2
    assert value("jouleledger_operator_annotation_delay_seconds_sum") == 44.0
    assert value("jouleledger_operator_rejected_samples_total", {"reason": "wrong_node"}) == 5


def test_the_operator_process_raises_the_garbage_collector_thresholds() -> None:
    """``run`` tunes the collector before anything else (here it then fails on a missing config file)."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        parser = argparse.ArgumentParser()
        operator_main.add_arguments(parser)
        assert operator_main.run(parser.parse_args(["--config", "/nonexistent/config.yaml", "--once"])) == 2
        assert gc.get_threshold() == operator_main.GC_THRESHOLDS
        assert operator_main.GC_THRESHOLDS[0] > 700
    finally:
        gc.set_threshold(*before)

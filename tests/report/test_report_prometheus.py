"""``jouleledger report`` against a real Prometheus loaded with a known month-like data set (``_dataset``): every
row, the idle line and the total are compared with figures computed here from the data set's own intervals."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from jouleledger.cli import main
from tests._prometheus import LoadedPrometheus
from tests.report import _dataset

pytestmark = pytest.mark.slow

SINCE = "2025-11-01T00:00:00Z"
PRICING = ["--pue", "1.2", "--price-per-kwh", "0.2", "--currency", "EUR"]


def _until(data: _dataset.Dataset) -> str:
    return str(data.scenario.end_s)


def report(prom: LoadedPrometheus, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    status = main(
        ["report", "--prometheus", prom.url, "--since", SINCE, "--until", _until(prom.data), "--format", "json",
         "--output", str(out), *args]
    )  # fmt: skip
    assert status == 0
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def _split(total: int, weights: list[int]) -> list[int]:
    """Largest remainder, ties to the first (written again here, independently of the product)."""
    if not any(weights):
        weights = [1] * len(weights)
    quotas = [Fraction(total * w, sum(weights)) for w in weights]
    parts = [math.floor(q) for q in quotas]
    order = sorted(range(len(parts)), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


class Expected:
    """Figures of the period computed from the data set's intervals."""

    def __init__(self, data: _dataset.Dataset, key: str) -> None:
        self.energy: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.operational: dict[str, float] = defaultdict(float)
        self.embodied: dict[str, float] = defaultdict(float)
        self.cost: dict[str, float] = defaultdict(float)
        self.on_node: dict[tuple[str, str], int] = defaultdict(int)
        self.idle: dict[str, int] = defaultdict(int)
        self.idle_g: dict[str, float] = defaultdict(float)
        self.idle_cost: dict[str, float] = defaultdict(float)
        for interval in data.in_period():
            kwh = _dataset.kwh(interval.energy_mj)
            grams = kwh * _dataset.PUE * _dataset.intensity(interval.node, interval.end_s)
            money = kwh * _dataset.PUE * _dataset.PRICE_PER_KWH
            if interval.pod is None:
                self.idle[interval.node] += interval.energy_mj
                self.idle_g[interval.node] += grams
                self.idle_cost[interval.node] += money
                continue
            pod = interval.pod
            name = {"team": pod.team, "namespace": pod.namespace, "workload": pod.workload, "node": pod.node}[key]
            self.energy[name] += interval.energy_mj
            self.seconds[name] += _dataset.INTERVAL_S
            self.operational[name] += grams
            self.embodied[name] += _dataset.INTERVAL_S / 3600 * _dataset.EMBODIED_G_PER_GPU_HOUR
            self.cost[name] += money
            self.on_node[(name, interval.node)] += interval.energy_mj

    def shared(self, policy: str) -> dict[str, int]:
        keys = sorted(self.energy)
        shared = dict.fromkeys(keys, 0)
        for node, idle in sorted(self.idle.items()):
            weights = [1] * len(keys) if policy == "share-even" else [self.on_node[(k, node)] for k in keys]
            for k, part in zip(keys, _split(idle, weights), strict=True):
                shared[k] += part
        return shared


def _rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in document["rows"]}


@pytest.mark.parametrize("by", ["team", "namespace"])
def test_rollup_rows_match_the_hand_made_totals(loaded_prometheus: LoadedPrometheus, tmp_path: Path, by: str) -> None:
    document = report(loaded_prometheus, tmp_path, "--by", by, *PRICING)
    expected = Expected(loaded_prometheus.data, by)
    rows = _rows(document)
    assert set(rows) == set(expected.energy)
    for key, row in rows.items():
        assert row["energy_mj"] == expected.energy[key], key
        assert row["idle_mj"] == 0
        assert row["gpu_hours"] == pytest.approx(expected.seconds[key] / 3600, abs=1e-6)
        assert row["operational_g"] == pytest.approx(expected.operational[key], rel=1e-9, abs=2e-6)
        assert row["embodied_g"] == pytest.approx(expected.embodied[key], rel=1e-9, abs=2e-6)
        assert row["cost"] == pytest.approx(expected.cost[key], rel=1e-9, abs=2e-6)
    idle = sum(expected.idle.values())
    assert idle > 0
    assert document["unallocated"]["energy_mj"] == idle
    assert document["unallocated"]["operational_g"] == pytest.approx(sum(expected.idle_g.values()), rel=1e-9, abs=2e-6)
    assert document["unallocated"]["operational_g"] > 0
    assert document["unallocated"]["cost"] == pytest.approx(sum(expected.idle_cost.values()), rel=1e-9, abs=2e-6)
    measured = sum(interval.energy_mj for interval in loaded_prometheus.data.in_period())
    assert document["measured_mj"] == measured == document["agent_measured_mj"]
    assert document["total"]["energy_mj"] == measured
    assert sum(row["energy_mj"] for row in document["rows"]) + idle == measured
    assert document["period"]["step_s"] == 3600
    assert any("max_over_time" in expr for expr in document["source"]["series"])  # the operator restarted


@pytest.mark.parametrize("policy", ["share-weighted", "share-even"])
@pytest.mark.parametrize("by", ["team", "namespace", "workload", "node"])
def test_idle_policies_keep_the_total(
    loaded_prometheus: LoadedPrometheus, tmp_path: Path, by: str, policy: str
) -> None:
    document = report(loaded_prometheus, tmp_path, "--by", by, "--idle", policy, *PRICING)
    expected = Expected(loaded_prometheus.data, by)
    shared = expected.shared(policy)
    rows = _rows(document)
    for key, row in rows.items():
        assert row["idle_mj"] == shared[key], key
        assert row["energy_mj"] == expected.energy[key] + shared[key], key
    assert document["unallocated"]["energy_mj"] == 0
    assert document["idle_policy"] == policy
    measured = sum(interval.energy_mj for interval in loaded_prometheus.data.in_period())
    assert sum(row["energy_mj"] for row in document["rows"]) == measured == document["total"]["energy_mj"]
    idle_g = sum(expected.idle_g.values())
    carbon = sum(row["operational_g"] for row in document["rows"])
    assert carbon == pytest.approx(sum(expected.operational.values()) + idle_g, rel=1e-9, abs=2e-6)


@pytest.mark.parametrize("by", ["workload", "node"])
def test_agent_rows_match_the_hand_made_totals(loaded_prometheus: LoadedPrometheus, tmp_path: Path, by: str) -> None:
    document = report(loaded_prometheus, tmp_path, "--by", by, *PRICING, "--embodied-g-per-gpu-hour", "20")
    expected = Expected(loaded_prometheus.data, by)
    rows = _rows(document)
    assert set(rows) == set(expected.energy)
    for key, row in rows.items():
        assert row["energy_mj"] == expected.energy[key], key
        assert row["gpu_hours"] == pytest.approx(expected.seconds[key] / 3600, abs=1e-6)
        assert row["operational_g"] == pytest.approx(expected.operational[key], rel=1e-9, abs=2e-6)
        assert row["embodied_g"] == pytest.approx(expected.embodied[key], rel=1e-9, abs=2e-6)
        assert row["cost"] == pytest.approx(expected.cost[key], rel=1e-9, abs=2e-6)
    assert document["unallocated"]["energy_mj"] == sum(expected.idle.values())
    assert document["unallocated"]["operational_g"] == pytest.approx(sum(expected.idle_g.values()), rel=1e-9, abs=2e-6)
    nodes = {node["node"]: node for node in document["nodes"]}
    for node, idle in expected.idle.items():
        assert nodes[node]["idle_mj"] == idle
    if by == "workload":  # the serving workload's energy per request and per token over the period
        served = [i for i in loaded_prometheus.data.in_period() if i.pod and i.pod.owner_name == "llm-7f"]
        requests, prompt, output = (len(served) * n for n in _dataset.SERVING_PER_INTERVAL)
        joules = sum(i.energy_mj for i in served) / 1000
        serving = rows["serving/ReplicaSet/llm-7f"]["serving"]
        assert serving["requests"] == pytest.approx(requests)
        assert serving["joules_per_request"] == pytest.approx(joules / requests, rel=1e-9)
        assert serving["joules_per_output_token"] == pytest.approx(joules / output, rel=1e-9)
        assert serving["joules_per_token"] == pytest.approx(joules / (prompt + output), rel=1e-9)
        assert "serving" not in rows["research/Job/train-a"]


def test_every_format_renders_the_same_rows(loaded_prometheus: LoadedPrometheus, tmp_path: Path) -> None:
    for output_format in ("table", "csv", "markdown"):
        out = tmp_path / f"report.{output_format}"
        assert main(["report", "--prometheus", loaded_prometheus.url, "--since", SINCE, "--until",
                     _until(loaded_prometheus.data), "--format", output_format, "--output", str(out)]) == 0  # fmt: skip
        text = out.read_text()
        for key in ("a", "b", "c", "(unallocated: idle GPUs)", "total"):
            assert key in text, (output_format, key)
    lines = (tmp_path / "report.csv").read_text().splitlines()
    assert lines[0].startswith("key,energy_mj,")
    energies = [int(line.split(",")[1]) for line in lines[1:-1]]
    assert sum(energies) == int(lines[-1].split(",")[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2020-01-01", "--until", "2020-01-02"], "no Joule Ledger energy"),
        (["--since", "2025-11-03", "--until", "2025-11-02"], "is not before --until"),
        (["--by", "pod"], "--by 'pod': expected one of team, namespace, workload, node"),
        (["--idle", "spread"], "--idle 'spread'"),
        (["--since", "yesterday"], "--since 'yesterday'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    loaded_prometheus: LoadedPrometheus, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["report", "--prometheus", loaded_prometheus.url, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]
    assert err[0].startswith("jouleledger report: ")


def test_idle_carbon_and_cost_come_from_the_operator_where_it_exports_them(
    loaded_prometheus: LoadedPrometheus, tmp_path: Path
) -> None:
    document = report(loaded_prometheus, tmp_path, "--by", "team")  # no --pue, no price: the operator's figures
    expected = Expected(loaded_prometheus.data, "team")
    assert document["unallocated"]["operational_g"] == pytest.approx(sum(expected.idle_g.values()), rel=1e-9, abs=2e-6)
    assert document["unallocated"]["cost"] == pytest.approx(sum(expected.idle_cost.values()), rel=1e-9, abs=2e-6)
    assert any("as the operator applied them" in note for note in document["notes"])

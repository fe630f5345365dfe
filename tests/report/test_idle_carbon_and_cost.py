"""Idle (unallocated) energy has carbon and cost in ``replay`` and ``demo``; ``--price-per-kwh`` adds cost columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jouleledger.cli import main

MJ_PER_KWH = 3_600_000_000


def _trace(path: Path) -> Path:
    header = {"type": "header", "version": 1, "node": "n1",
              "gpus": [{"uuid": "GPU-1", "model": "H100", "energy_counter": True, "power_limit_w": 700}]}  # fmt: skip
    pod = {"namespace": "ns", "name": "p", "uid": "u1", "labels": {"team": "t"},
           "containers": [{"name": "main", "devices": ["GPU-1"], "pids": []}]}  # fmt: skip
    samples = [
        {"type": "sample", "t": 0.0, "gpus": [{"uuid": "GPU-1", "energy_mj": 1_000_000, "power_mw": 100_000}],
         "pods": []},
        # 10 s idle at 300 g/kWh: 2,000,000 mJ no pod held
        {"type": "sample", "t": 10.0, "grid_g_per_kwh": 300.0,
         "gpus": [{"uuid": "GPU-1", "energy_mj": 3_000_000, "power_mw": 200_000}], "pods": []},
        # 10 s held by ns/p at 100 g/kWh: 5,000,000 mJ
        {"type": "sample", "t": 20.0, "grid_g_per_kwh": 100.0,
         "gpus": [{"uuid": "GPU-1", "energy_mj": 8_000_000, "power_mw": 500_000}], "pods": [pod]},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in [header, *samples]) + "\n")
    return path


def test_replay_json_gives_idle_energy_carbon_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = _trace(tmp_path / "t.jsonl")
    assert main(["replay", str(trace), "--json", "--pue", "1.5", "--price-per-kwh", "0.3", "--currency", "EUR"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["unallocated_mj"] == 2_000_000
    assert document["unallocated_carbon_g"] == pytest.approx(2_000_000 / MJ_PER_KWH * 1.5 * 300.0)
    assert document["unallocated_cost"] == pytest.approx(2_000_000 / MJ_PER_KWH * 1.5 * 0.3)
    assert (document["price_per_kwh"], document["currency"]) == (0.3, "EUR")
    [pod] = document["pods"]
    assert pod["energy_mj"] == 5_000_000
    assert pod["carbon_g"] == pytest.approx(5_000_000 / MJ_PER_KWH * 1.5 * 100.0)
    assert pod["cost"] == pytest.approx(5_000_000 / MJ_PER_KWH * 1.5 * 0.3)


def test_replay_without_a_price_has_no_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(_trace(tmp_path / "t.jsonl")), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["unallocated_cost"] is None
    assert document["pods"][0]["cost"] is None
    assert document["unallocated_carbon_g"] == pytest.approx(2_000_000 / MJ_PER_KWH * 300.0)


def test_replay_table_shows_idle_carbon_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(_trace(tmp_path / "t.jsonl")), "--price-per-kwh", "0.3", "--currency", "EUR"]) == 0
    out = capsys.readouterr().out
    idle = next(line for line in out.splitlines() if "(unallocated: idle GPUs)" in line)
    kwh, _, _, grams, cost = (float(x) for x in re.findall(r"\d+\.\d+", idle))
    assert kwh == pytest.approx(2_000_000 / MJ_PER_KWH, abs=1e-6)
    assert grams == pytest.approx(2_000_000 / MJ_PER_KWH * 300.0, abs=1e-3)
    assert cost == pytest.approx(2_000_000 / MJ_PER_KWH * 0.3, abs=1e-6)
    assert "cost EUR" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--price-per-kwh", "0.3"], "--price-per-kwh needs --currency"),
        (["--price-per-kwh", "nan", "--currency", "EUR"], "--price-per-kwh nan: must be a finite number"),
    ],
)
def test_bad_price(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["replay", str(_trace(tmp_path / "t.jsonl")), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]


def test_demo_idle_row_has_carbon_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["demo", "--port", "0", "--wall-s", "0", "--duration-s", "900", "--price-per-kwh", "0.25",
                   "--currency", "EUR"])  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    team_table = out.split("per team")[1].split("per namespace")[0].strip().splitlines()
    # columns with a decimal point: kWh, share, GPU-hours, CO2e g, cost
    numbers = {line: [float(x) for x in re.findall(r"\d+\.\d+", line)] for line in team_table[1:]}
    kwh, _, _, grams, cost = next(v for line, v in numbers.items() if "(unallocated: idle GPUs)" in line)
    assert kwh > 0
    assert grams > 0  # it used to be 0 g CO2e
    assert cost == pytest.approx(kwh * 1.2 * 0.25, abs=2e-6)
    assert sum(v[4] for v in numbers.values()) == pytest.approx(sum(v[0] for v in numbers.values()) * 0.3, abs=1e-5)

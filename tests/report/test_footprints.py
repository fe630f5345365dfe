"""``jouleledger report --from-footprints``: rows from WorkloadFootprint objects (the kube call is replaced at its
seam, ``footprint_lister``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from jouleledger.report import command


def _footprint(namespace: str, kind: str, name: str, team: str, energy_mj: int, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "team": team,
        "energyMillijoules": energy_mj,
        "gpuSeconds": 3600.0,
        "carbon": {"operationalGrams": 10.0, "embodiedGrams": 2.0},
        "cost": {"amount": 1.5, "currency": "EUR"},
        "firstSeen": "2026-11-02T00:00:00Z",
        "lastSeen": "2026-11-03T00:00:00Z",
        **extra,
    }
    return {
        "metadata": {"namespace": namespace, "name": f"uid-{name}"},
        "spec": {"workload": {"kind": kind, "name": name}},
        "status": status,
    }


FOOTPRINTS = [
    _footprint("research", "Job", "train", "a", 7_000_000),
    _footprint(
        "research",
        "Job",
        "done",
        "a",
        1_000,
        final={
            "energyMillijoules": 5_000_000,
            "gpuSeconds": 7200.0,
            "carbon": {"operationalGrams": 4.0, "embodiedGrams": 1.0},
            "cost": {"amount": 0.5, "currency": "EUR"},
        },
    ),
    _footprint("serving", "Deployment", "llm", "b", 11_000_000),
    _footprint("old", "Job", "gone", "c", 99, lastSeen="2026-01-01T00:00:00Z"),  # before the period
]


def _run(capsys: pytest.CaptureFixture[str], *argv: str, objects: list[dict[str, Any]] = FOOTPRINTS) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--from-footprints", "--since", "2026-11-01", "--until", "2026-12-01", *argv])
    args.footprint_lister = lambda kubeconfig, namespace: objects
    status = command.run(args, now_s=1_800_000_000.0)
    captured = capsys.readouterr()
    return status, captured.out if status == 0 else captured.err


def test_rows_by_workload_use_the_final_record_of_finished_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _run(capsys, "--by", "workload", "--format", "json")
    assert status == 0
    document = json.loads(out)
    rows = {row["key"]: row for row in document["rows"]}
    assert {k: r["energy_mj"] for k, r in rows.items()} == {
        "serving/Deployment/llm": 11_000_000,
        "research/Job/train": 7_000_000,
        "research/Job/done": 5_000_000,
    }
    assert rows["research/Job/done"]["carbon_g"] == 5.0
    assert document["currency"] == "EUR"
    assert document["source"]["kind"] == "footprints"
    assert document["total"]["energy_mj"] == 23_000_000


def test_rows_by_team(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _run(capsys, "--by", "team", "--format", "csv")
    assert status == 0
    lines = out.splitlines()
    assert lines[1].startswith("a,12000000,")  # largest first
    assert lines[2].startswith("b,11000000,")


@pytest.mark.parametrize(
    ("argv", "objects", "message"),
    [
        (["--by", "node"], FOOTPRINTS, "--by node needs --prometheus"),
        ([], [], "no WorkloadFootprint was seen in the period"),
        ([], [_footprint("x", "Job", "j", "a", -5)], "WorkloadFootprint x/uid-j: its totals are not finite"),
    ],
)
def test_bad_footprint_input(
    capsys: pytest.CaptureFixture[str], argv: list[str], objects: list[dict[str, Any]], message: str
) -> None:
    status, err = _run(capsys, *argv, objects=objects)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1

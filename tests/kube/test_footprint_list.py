"""``jouleledger report``'s footprint listing through ``kube/api.py``, logged in with a kubeconfig (against the
kmock emulator), and its one-line errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from jouleledger.kube.footprint_list import FootprintListError, list_footprints
from tests._kube_emulator import Emulator, Fault, served

RESOURCE = "jouleledger.io/v1alpha1/workloadfootprints"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "t"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    return path


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[Emulator]:
    async with served(Emulator()) as emulator:
        for namespace, name in (("ml", "job-1"), ("ml", "job-2"), ("vision", "job-3")):
            emulator.objects[RESOURCE, namespace, name] = {
                "apiVersion": "jouleledger.io/v1alpha1",
                "kind": "WorkloadFootprint",
                "metadata": {"name": name, "namespace": namespace},
            }
        yield emulator


async def test_lists_a_namespace_or_all_of_them(api: Emulator, tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config", str(api.url).rstrip("/"))
    ml = await asyncio.to_thread(list_footprints, config, "ml")
    assert sorted(o["metadata"]["name"] for o in ml) == ["job-1", "job-2"]
    everywhere = await asyncio.to_thread(list_footprints, config, None)
    assert sorted(o["metadata"]["name"] for o in everywhere) == ["job-1", "job-2", "job-3"]
    assert {r.headers.get("Authorization") for r in api.requests} == {"Bearer t"}


async def test_a_refusal_is_one_line_with_a_hint(api: Emulator, tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config", str(api.url).rstrip("/"))
    api.faults.append(Fault("GET", "workloadfootprints", 403))
    with pytest.raises(FootprintListError, match=r"failed: 403 Injected \(is the Joule Ledger CRD installed"):
        await asyncio.to_thread(list_footprints, config, "ml")


def test_no_configuration_and_no_server_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FootprintListError, match="no Kubernetes configuration"):
        list_footprints(tmp_path / "missing", None)
    with pytest.raises(FootprintListError, match="cannot reach the Kubernetes API"):
        list_footprints(kubeconfig(tmp_path / "config", "http://127.0.0.1:1"), None)

"""``--source prometheus`` against a REAL Prometheus (Debian's ``prometheus`` binary) scraping the fake agents:
the operator reads the agents' counters through one instant query per pass and records exactly what direct
scraping records, through an agent restart (a new epoch, counters from zero) between two passes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest

from jouleledger.controller.promsource import PrometheusSource
from jouleledger.core.promsource import TARGET_LABELS, agent_query, samples_by_node
from jouleledger.promapi import Connection, PrometheusApi, build_client
from tests._kube_emulator import (
    Emulator,
    FakeAgents,
    place_agents,
    place_job,
    register_resources,
)
from tests._prometheus import serve
from tests._tools import require_tool
from tests.controller._exposition import Pod, agent_text
from tests.controller._passes import TwoPasses, two_pass_app

pytestmark = pytest.mark.slow

FOOTPRINTS = "jouleledger.io/v1alpha1/workloadfootprints"
NODES = {"n1": "127.0.0.1", "n2": "127.0.0.2"}
JOBS = 6
BASE = time.time()
TIMELESS = {"firstSeen", "lastSeen", "intervalStart", "intervalEnd"}


def prometheus_scraping(port: int, where: Path) -> contextlib.AbstractContextManager[str]:
    """A real Prometheus scraping the fake agents on 127.0.0.1 and 127.0.0.2 every second (agent labels kept)."""
    config = (
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: jouleledger-agent\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}', '127.0.0.2:{port}']}}]\n"
    )
    return serve(where / "tsdb", where / "prometheus.log", config)


def populate(api: Emulator, agents: FakeAgents) -> None:
    """Two nodes; six Jobs, one pod each on alternating nodes; the even ones finished before the first pass."""
    place_agents(api, agents, NODES)
    for index in range(JOBS):
        place_job(api, index, "n1" if index % 2 == 0 else "n2", completed_at=BASE - 10 if index % 2 == 0 else None)


def expose(agents: FakeAgents, stage: int) -> None:
    """Stage 0: epoch 00..., 10 ticks. Stage 1: every agent restarted without its checkpoint (epoch 11..., counters
    from zero, 3 ticks) and the running pods used 1/4 of their first energy again."""
    pods: dict[str, list[Pod]] = {node: [] for node in NODES}
    for index in range(JOBS):
        node = "n1" if index % 2 == 0 else "n2"
        energy_j = 1000.0 * (index + 1) + 0.125
        if stage == 1:
            energy_j /= 4
        pods[node].append(
            Pod(
                "ml",
                f"train-{index}-x",
                f"pod-{index}",
                energy_j,
                10.0 + index,
                "Job",
                f"train-{index}",
                f"job-{index}",
            )
        )
    for index, node in enumerate(NODES):
        agents.texts[node] = agent_text(
            node,
            BASE + 5.0 * stage,
            pods[node],
            unallocated_j=(500.0 * (index + 1)) / (4 if stage else 1),
            epoch=("11" if stage else "00") * 8,
            ticks=3.0 if stage else 10.0,
        )


def app_for(
    api: Emulator, agents: FakeAgents, between: Callable[[], Awaitable[None]], prometheus: str | None
) -> TwoPasses:
    """An operator whose ``once()`` runs two passes, each reading both agents, ``between`` awaited between them."""
    connection = None if prometheus is None else Connection(prometheus)
    return two_pass_app(api, agents, between, scraped_ok=len(NODES), prometheus=connection)


def recorded(api: Emulator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (resource, _, name), obj in api.objects.items():
        if resource == kmock.resource(FOOTPRINTS) and not obj.deleted:
            status = {key: value for key, value in obj.raw["status"].items() if key not in TIMELESS}
            status.pop("final", None)
            out[name] = status
    for index in range(JOBS):
        annotations = api.objects["batch/v1/jobs", "ml", f"train-{index}"].get("metadata", {}).get("annotations", {})
        out[f"train-{index}"] = {k: v for k, v in annotations.items() if k.startswith("jouleledger.io/")}
    return out


def prometheus_shows(url: str, stage: int) -> bool:
    api = PrometheusApi(build_client(Connection(url)))
    try:
        ticks = api.query("jouleledger_agent_last_tick_timestamp_seconds", time.time())
        series = api.query(agent_query(), time.time())
    finally:
        api.close()
    wanted = BASE + 5.0 * stage
    epoch = ("11" if stage else "00") * 8
    infos = [labels for labels, _ in series if labels.get("__name__") == "jouleledger_agent_info"]
    return sorted(labels.get("node", "") for labels, value in ticks if value == wanted) == sorted(NODES) and sorted(
        labels.get("epoch", "") for labels in infos
    ) == [epoch] * len(NODES)


async def wait_for_prometheus(url: str, stage: int) -> None:
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(prometheus_shows, url, stage):
        assert time.monotonic() < deadline, f"Prometheus did not scrape stage {stage} within 60 s"
        await asyncio.sleep(0.25)


async def test_prometheus_source_records_what_direct_scraping_records(
    api: Emulator, agents: FakeAgents, tmp_path: Path
) -> None:
    require_tool("prometheus")
    async with Emulator() as direct, kmock.Server(direct):
        register_resources(direct)
        populate(direct, agents)
        expose(agents, 0)

        async def restart_agents() -> None:
            expose(agents, 1)

        await app_for(direct, agents, restart_agents, None).once()
        reference = recorded(direct)

    populate(api, agents)
    expose(agents, 0)
    with prometheus_scraping(agents.port, tmp_path) as url:
        await wait_for_prometheus(url, 0)

        async def restart_agents_seen_by_prometheus() -> None:
            expose(agents, 1)
            await wait_for_prometheus(url, 1)

        app = app_for(api, agents, restart_agents_seen_by_prometheus, url)
        summary = await app.once()
    assert summary.restored
    assert isinstance(app.accountant.scraper if app.accountant else None, PrometheusSource)
    # Completion reads have a source of their own (its own client and memos), asking for their nodes only.
    completions = app.accountant.completion_source if app.accountant else None
    assert isinstance(completions, PrometheusSource)
    assert completions is not app.accountant.scraper
    # ... and wait for Prometheus only as long as a direct read waits for an agent (scrape.timeoutSeconds).
    assert (app.accountant.scraper.timeout_s, completions.timeout_s) == (Connection(url).timeout_s, 5.0)
    assert recorded(api) == reference
    finished = [reference[f"train-{index}"] for index in range(0, JOBS, 2)]
    assert all(annotations.get("jouleledger.io/energy-kwh") for annotations in finished)
    running = reference["job-1"]
    assert running["energyMillijoules"] == 2_000_125 + 500_031  # all of epoch 00, then all of the new epoch 11


async def test_the_query_answer_regroups_to_the_agents_own_samples(agents: FakeAgents, tmp_path: Path) -> None:
    """Against a real Prometheus: the answer carries the target labels Prometheus adds, and the regroup by node
    leaves exactly the agents' own samples (what a direct scrape of each agent parses)."""
    require_tool("prometheus")
    agents.ips.update(NODES)
    expose(agents, 0)
    with prometheus_scraping(agents.port, tmp_path) as url:
        await wait_for_prometheus(url, 0)
        api = PrometheusApi(build_client(Connection(url)))
        try:
            answer = api.query(agent_query('job="jouleledger-agent"'), time.time())
            # A completion read's query: only the nodes it names (a "." in a name matches only itself).
            one = api.query(agent_query('job="jouleledger-agent"', ["n2", "n1.zone-a"]), time.time())
        finally:
            api.close()
    assert sorted(samples_by_node(one)) == ["n2"]
    assert len(one) == len([1 for labels, _ in answer if labels.get("node") == "n2"])
    assert answer
    assert all(TARGET_LABELS & set(labels) for labels, _ in answer)
    by_node = samples_by_node(answer)
    assert sorted(by_node) == sorted(NODES)
    for samples in by_node.values():
        assert not [labels for _, labels, _ in samples if TARGET_LABELS & set(labels)]

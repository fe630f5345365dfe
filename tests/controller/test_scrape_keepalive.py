"""The scraper keeps agent connections alive across passes, as many as the open-file budget allows."""

from __future__ import annotations

import resource

import aiohttp.web
import pytest

from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import OK, AgentClientConfig, AgentScraper, build_agent_client, open_file_budget
from tests.controller._exposition import agent_text


@pytest.mark.parametrize(("keep_alive_agents", "connections"), [(None, 1), (0, 3)], ids=["kept", "over-budget"])
async def test_three_passes_reuse_one_connection_per_agent_within_the_open_file_budget(
    keep_alive_agents: int | None, connections: int
) -> None:
    peers: list[tuple[str, int]] = []

    async def metrics(request: aiohttp.web.Request) -> aiohttp.web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peers.append(tuple(peer[:2]) if peer else ("", 0))
        return aiohttp.web.Response(text=agent_text("n1", 100.0), content_type="text/plain")

    app = aiohttp.web.Application()
    app.router.add_get("/metrics", metrics)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with build_agent_client(AgentClientConfig()) as client:
            scraper = AgentScraper(
                client,
                timeout_s=5.0,
                concurrency=4,
                backoff_base_s=1.0,
                backoff_max_s=8.0,
                keep_alive_agents=keep_alive_agents,
            )
            target = AgentTarget(node="n1", pod="agent-n1", ip="127.0.0.1", port=port)
            for _ in range(3):
                (outcome,) = await scraper.scrape_all([target])
                assert outcome.result == OK
    finally:
        await runner.cleanup()
    assert len(peers) == 3
    assert len(set(peers)) == connections  # one TCP connection served all three passes, unless over the budget


def test_the_open_file_budget_is_half_the_raised_limit() -> None:
    budget = open_file_budget()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard in (soft, resource.RLIM_INFINITY)  # raised to the hard maximum
    assert budget == max(0, soft // 2 - 64)

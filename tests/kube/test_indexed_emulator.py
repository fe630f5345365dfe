"""The benchmarks' API emulator (``IndexedEmulator``): a watch resumed from a ``resourceVersion`` replays only the
objects written after it, each once and in the order of their latest writes, as a real API server's watch does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kmock

from tests._kube_emulator import IndexedEmulator, register_resources


async def _replayed(api: IndexedEmulator, path: str, since: int) -> list[dict[str, Any]]:
    """The events a watch of ``path`` from ``since`` sends before it goes quiet."""
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{str(api.url).rstrip('/')}{path}?watch=true&resourceVersion={since}") as response,
    ):
        while True:
            try:
                line = await asyncio.wait_for(response.content.readline(), 0.5)
            except TimeoutError:
                return events
            if not line:
                return events
            if line.strip():
                events.append(json.loads(line))


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": {"nodeName": "n1"}}


async def test_a_resumed_watch_replays_only_later_writes_each_once() -> None:
    async with IndexedEmulator() as api, kmock.Server(api):
        register_resources(api)
        base = str(api.url).rstrip("/")
        async with aiohttp.ClientSession() as session:
            for name in ("a", "b", "c"):
                async with session.post(f"{base}/api/v1/namespaces/ns/pods", json=_pod(name)) as r:
                    assert r.status == 200
            since = api.resource_version
            for name, phase in (("a", "Pending"), ("b", "Running"), ("a", "Running")):
                async with session.patch(
                    f"{base}/api/v1/namespaces/ns/pods/{name}", json={"status": {"phase": phase}}
                ) as r:
                    assert r.status == 200
            async with session.post(f"{base}/apis/batch/v1/namespaces/ns/jobs", json={"metadata": {"name": "j"}}) as r:
                assert r.status == 200

        events = await _replayed(api, "/api/v1/pods", since)
        names = [event["object"]["metadata"]["name"] for event in events if event.get("type") != "BOOKMARK"]
        # Not "c" (unchanged since), "a" once and in the order of its latest write (after "b"'s), no Job.
        assert names == ["b", "a"]
        latest = {event["object"]["metadata"]["name"]: event["object"] for event in events}
        assert latest["a"]["status"]["phase"] == "Running"
        assert int(latest["a"]["metadata"]["resourceVersion"]) == api.resource_version - 1

        everything = await _replayed(api, "/api/v1/pods", 0)  # no version: every pod
        assert sorted(event["object"]["metadata"]["name"] for event in everything) == ["a", "b", "c"]

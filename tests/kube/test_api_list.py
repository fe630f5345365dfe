"""``KubeApi.list`` page by page (``limit``/``continue``), and metadata-only lists (the periodic relist's)."""

from __future__ import annotations

from typing import Any

import kopf

from jouleledger.kube.api import LIST_PAGE_SIZE, METADATA_LIST, KubeApi, build_api_client
from tests._kube_emulator import Emulator, job_object, served


async def test_a_metadata_only_list_asks_for_partial_object_metadata_in_pages() -> None:
    async with served(Emulator()) as emulator:
        emulator.objects["batch/v1/jobs", "ml", "a"] = job_object("ml", "a", "job-a")
        kube = KubeApi(build_api_client(kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"))))
        try:
            full = await kube.list("/apis/batch/v1/jobs")
            partial = await kube.list("/apis/batch/v1/jobs", params={"labelSelector": "a=b"}, metadata_only=True)
        finally:
            await kube.aclose()
    assert [item["metadata"]["uid"] for item in full] == [item["metadata"]["uid"] for item in partial] == ["job-a"]
    first, second = (request for request in emulator.requests if request.url.path == "/apis/batch/v1/jobs")
    assert first.headers["Accept"] == "application/json"
    assert second.headers["Accept"] == METADATA_LIST
    assert second.url.query["limit"] == str(LIST_PAGE_SIZE)
    assert second.url.query["labelSelector"] == "a=b"


class _PagedApi(KubeApi):
    """Answers every request from ``items``, ``limit`` at a time, with an opaque ``continue`` token."""

    def __init__(self, items: list[dict[str, Any]]) -> None:  # no client: only request() is called
        self.items = items
        self.queries: list[dict[str, str]] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        query = dict(kwargs.get("params") or {})
        self.queries.append(query)
        start = int(query.get("continue", "tok-0").removeprefix("tok-"))
        end = start + int(query["limit"])
        more = end < len(self.items)
        return {"metadata": {"continue": f"tok-{end}" if more else ""}, "items": self.items[start:end]}


async def test_list_follows_continue_until_the_last_page() -> None:
    items = [{"metadata": {"uid": f"u{index}"}} for index in range(2 * LIST_PAGE_SIZE + 1)]
    api = _PagedApi(items)
    listed = await api.list("/apis/batch/v1/jobs", params={"labelSelector": "a=b"}, metadata_only=True)
    assert listed == items
    assert [query.get("continue") for query in api.queries] == [
        None,
        f"tok-{LIST_PAGE_SIZE}",
        f"tok-{2 * LIST_PAGE_SIZE}",
    ]
    assert all(query["labelSelector"] == "a=b" and query["limit"] == str(LIST_PAGE_SIZE) for query in api.queries)

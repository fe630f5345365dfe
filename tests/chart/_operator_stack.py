"""The operator's Kubernetes API for end-to-end tests that run ``jouleledger operator`` as a real process.

The API is the operator tests' kmock emulator (:class:`tests._kube_emulator.Emulator`, with its resources and
object builders), served from a background thread with its own event loop, so that synchronous tests and
subprocesses can use it. Objects are created and changed through HTTP, as a client would, so that the operator's
watches see every change. :func:`write_kubeconfig` points ``jouleledger operator`` at it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests._kube_emulator import AGENT_NAMESPACE, Emulator, agent_pod, node_object, served

__all__ = ["AGENT_NAMESPACE", "MockKubernetesApi", "agent_pod", "node_object", "write_kubeconfig"]

_START_TIMEOUT_S = 10.0


class MockKubernetesApi:
    """The emulator on ``127.0.0.1:<random port>`` while the ``with`` block runs."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def __enter__(self) -> MockKubernetesApi:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise RuntimeError(f"the mock Kubernetes API did not start within {_START_TIMEOUT_S:.0f} s")
        if self._error is not None:
            raise RuntimeError("the mock Kubernetes API failed to start") from self._error
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(_START_TIMEOUT_S)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the thread that waits in __enter__
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with served(Emulator()) as emulator:
            self.url = str(emulator.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    # --- a small client ------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """``(status, decoded JSON)`` of one request (a merge patch for PATCH)."""
        data = None if body is None else json.dumps(body).encode()
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        decoded = json.loads(raw) if raw else {}
        return status, decoded if isinstance(decoded, dict) else {"value": decoded}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the collection ``path``; the created object (AssertionError if refused)."""
        status, answer = self.request("POST", path, body)
        assert status in (200, 201), f"POST {path}: HTTP {status}: {answer}"
        return answer


def write_kubeconfig(path: Path, server_url: str) -> Path:
    """A kubeconfig whose only context talks to ``server_url`` without credentials."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "mock",
        "clusters": [{"name": "mock", "cluster": {"server": server_url}}],
        "users": [{"name": "mock", "user": {}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "mock"}}],
    }
    path.write_text(json.dumps(config))
    return path

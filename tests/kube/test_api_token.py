"""The operator's API client follows a rotated service-account token file."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import httpx

from jouleledger.kube.api import RotatingTokenAuth, build_http_client


def info(token: str | None) -> SimpleNamespace:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return SimpleNamespace(server="http://127.0.0.1:1", token=token, as_http_headers=lambda: headers)


async def test_token_from_the_projected_file_follows_rotation(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={})

    client = build_http_client(info("first"), token_path=token_file, transport=httpx.MockTransport(handler))
    assert isinstance(client.auth, RotatingTokenAuth)
    await client.get("/api")
    token_file.write_text("second\n")
    os.utime(token_file, ns=(1, 1))  # a distinct modification time, as the kubelet's atomic swap gives
    await client.get("/api")
    token_file.unlink()
    await client.get("/api")  # unreadable: the last good token stays
    await client.aclose()
    assert seen == ["Bearer first", "Bearer second", "Bearer second"]


async def test_a_token_not_from_that_file_stays_a_static_header(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("other\n")
    client = build_http_client(info("kubeconfig-token"), token_path=token_file)
    assert client.auth is None or not isinstance(client.auth, RotatingTokenAuth)
    assert client.headers["Authorization"] == "Bearer kubeconfig-token"
    await client.aclose()
    no_token = build_http_client(info(None), token_path=token_file)
    assert "Authorization" not in no_token.headers
    await no_token.aclose()

"""The operator's API client (the official ``kubernetes`` client) follows a rotated service-account token file."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import kopf

from jouleledger.kube.api import KubeApi, RotatingToken, build_api_client
from tests._kube_emulator import Emulator, served

PATH = "/apis/jouleledger.io/v1alpha1/namespaces/ml/workloadfootprints"


async def authorizations(token: str | None, token_file: Path, steps: Sequence[Callable[[], None]] = ()) -> list[str]:
    """The ``Authorization`` header of one request logged in with ``token``, then of one more after each step."""
    async with served(Emulator()) as emulator:
        info = kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"), token=token)
        api = KubeApi(build_api_client(info, token_path=token_file))
        try:
            await api.list(PATH)
            for step in steps:
                step()
                await api.list(PATH)
        finally:
            await api.aclose()
        return [request.headers.get("Authorization", "") for request in emulator.requests]


def rewrite(token_file: Path, token: str) -> Callable[[], None]:
    def step() -> None:
        token_file.write_text(f"{token}\n")
        os.utime(token_file, ns=(1, 1))  # a distinct modification time, as the kubelet's atomic swap gives

    return step


async def test_token_from_the_projected_file_follows_rotation(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    seen = await authorizations("first", token_file, [rewrite(token_file, "second"), token_file.unlink])
    assert seen == ["Bearer first", "Bearer second", "Bearer second"]  # unreadable: the last good token stays


async def test_a_token_not_from_that_file_stays_a_static_header(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("other\n")
    seen = await authorizations("kubeconfig-token", token_file, [rewrite(token_file, "other-2")])
    assert seen == ["Bearer kubeconfig-token"] * 2
    assert await authorizations(None, token_file) == [""]


def test_the_hook_is_the_official_clients_refresh_hook(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc")
    client = build_api_client(kopf.ConnectionInfo(server="https://127.0.0.1:1", token="abc"), token_path=token_file)
    assert isinstance(client.configuration.refresh_api_key_hook, RotatingToken)
    rewrite(token_file, "def")()
    assert client.configuration.auth_settings()["BearerToken"]["value"] == "Bearer def"

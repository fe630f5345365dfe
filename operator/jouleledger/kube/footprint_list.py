"""List the operator's ``WorkloadFootprint`` resources for ``jouleledger report`` (through ``kube/api.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jouleledger.kube.api import ApiError, KubeApi, load_api_client
from jouleledger.kube.footprints import GROUP, PLURAL, footprint_path

__all__ = ["FootprintListError", "list_footprints"]

ATTEMPTS = 3


class FootprintListError(Exception):
    """The footprints could not be listed; the message is one line for the user."""


def list_footprints(kubeconfig: Path | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every ``WorkloadFootprint`` (of ``namespace``, or cluster-wide), as plain dicts."""
    from kubernetes.config import ConfigException

    try:
        client = load_api_client(kubeconfig)
    except (ConfigException, OSError) as error:
        raise FootprintListError(f"no Kubernetes configuration: {error}") from error

    async def listing() -> list[dict[str, Any]]:
        async with KubeApi(client, attempts=ATTEMPTS) as api:
            return await api.list(footprint_path(namespace or ""))

    try:
        return asyncio.run(listing())
    except ApiError as error:
        if error.status == 0:
            raise FootprintListError(f"cannot reach the Kubernetes API: {error.reason}: {error.message}") from error
        raise FootprintListError(
            f"listing {PLURAL}.{GROUP} failed: {error.status} {error.reason}"
            + (" (is the Joule Ledger CRD installed and may you list it?)" if error.status in (403, 404) else "")
        ) from error

"""List the operator's ``WorkloadFootprint`` resources through the Kubernetes API (the ``kubernetes`` client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jouleledger.kube.footprints import GROUP, PLURAL, VERSION

__all__ = ["FootprintListError", "list_footprints"]


class FootprintListError(Exception):
    """The footprints could not be listed; the message is one line for the user."""


def list_footprints(kubeconfig: Path | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every ``WorkloadFootprint`` (of ``namespace``, or cluster-wide), as plain dicts."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as error:
        raise FootprintListError(f"no Kubernetes configuration: {error}") from error
    api = client.CustomObjectsApi()
    try:
        if namespace:
            answer = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        else:
            answer = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    except ApiException as error:
        raise FootprintListError(
            f"listing {PLURAL}.{GROUP} failed: {error.status} {error.reason}"
            + (" (is the Joule Ledger CRD installed and may you list it?)" if error.status in (403, 404) else "")
        ) from error
    except Exception as error:  # urllib3 connection errors and the like
        raise FootprintListError(f"cannot reach the Kubernetes API: {type(error).__name__}: {error}") from error
    items = answer.get("items") if isinstance(answer, dict) else None
    return [item for item in items or [] if isinstance(item, dict)]

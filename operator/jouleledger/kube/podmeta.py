"""Metadata of the pods on the agent's node, from the Kubernetes API.

The kubelet's PodResources answer names pods by namespace and name only; the ledger needs each pod's UID,
labels, controller owner, phase and the runtime ids of its containers. :class:`PodMetadataCache` lists the
node's pods (``field_selector=spec.nodeName=<node>``) through an injected ``CoreV1Api``-like object and keeps
the view in memory. There is no thread: :meth:`PodMetadataCache.lookup` refreshes the view when it is older
than ``refresh_interval_s``, or sooner (at most every ``retry_interval_s``) when a pod it is asked about is
not in the view yet, so a new pod gets its UID on its first tick rather than a ``namespace/name`` key first.

An API failure never raises: the last good view is kept, the error is logged and counted, and :attr:`up` turns
False until a list succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from jouleledger.core.model import Owner
from jouleledger.core.units import positive

__all__ = [
    "CoreV1ApiLike",
    "PodKey",
    "PodMeta",
    "PodMetadataCache",
    "pod_meta_from_object",
    "strip_container_id",
]

log = logging.getLogger(__name__)

PodKey = tuple[str, str]
"""``(namespace, name)``: how the kubelet names a pod."""

_EMPTY: Mapping[str, str] = MappingProxyType({})
MAX_ERROR_CHARS = 300


class CoreV1ApiLike(Protocol):
    """The one call of ``kubernetes.client.CoreV1Api`` the cache uses."""

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class PodMeta:
    """What the API server says about one pod. ``container_ids`` maps container name to runtime id."""

    namespace: str
    name: str
    uid: str
    phase: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    owner: Owner | None = None
    container_ids: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)


def strip_container_id(container_id: str) -> str:
    """``containerd://abc`` -> ``abc`` (also ``cri-o://``, ``docker://`` or any ``<runtime>://``)."""
    _, separator, rest = container_id.partition("://")
    return rest if separator else container_id


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string (got {type(value).__name__})")
    return value


def _owner(references: Iterable[Any] | None) -> Owner | None:
    for reference in references or ():
        if getattr(reference, "controller", None) is True:
            return Owner(
                kind=_text(getattr(reference, "kind", None), "ownerReference.kind"),
                name=_text(getattr(reference, "name", None), "ownerReference.name"),
                uid=_text(getattr(reference, "uid", None), "ownerReference.uid"),
            )
    return None


def _container_ids(status: Any) -> Mapping[str, str]:
    ids: dict[str, str] = {}
    for attribute in ("init_container_statuses", "container_statuses", "ephemeral_container_statuses"):
        for container in getattr(status, attribute, None) or ():
            raw = getattr(container, "container_id", None)
            if raw:  # absent until the runtime created the container
                ids[_text(getattr(container, "name", None), "containerStatus.name")] = strip_container_id(
                    _text(raw, "containerStatus.containerID")
                )
    return MappingProxyType(ids) if ids else _EMPTY


def pod_meta_from_object(pod: Any) -> PodMeta:
    """Convert a ``kubernetes.client.V1Pod``; ValueError when a required field is missing or mistyped."""
    metadata = getattr(pod, "metadata", None)
    if metadata is None:
        raise ValueError("pod without metadata")
    namespace = _text(getattr(metadata, "namespace", None), "metadata.namespace")
    name = _text(getattr(metadata, "name", None), "metadata.name")
    uid = _text(getattr(metadata, "uid", None), "metadata.uid")
    if not namespace or not name or not uid:
        raise ValueError(f"pod {namespace}/{name} without namespace, name or uid")
    labels = getattr(metadata, "labels", None) or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
    ):
        raise ValueError(f"pod {namespace}/{name}: labels are not a string map")
    status = getattr(pod, "status", None)
    phase = getattr(status, "phase", None) or ""
    return PodMeta(
        namespace=namespace,
        name=name,
        uid=uid,
        phase=_text(phase, "status.phase"),
        labels=MappingProxyType(dict(labels)) if labels else _EMPTY,
        owner=_owner(getattr(metadata, "owner_references", None)),
        container_ids=_container_ids(status),
    )


class PodMetadataCache:
    """The node's pods as the API server lists them, refreshed on demand; never raises on API errors.

    ``api`` is a ``kubernetes.client.CoreV1Api`` (or a fake with ``list_pod_for_all_namespaces``);
    ``clock`` returns monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        api: CoreV1ApiLike,
        node_name: str,
        *,
        refresh_interval_s: float = 30.0,
        retry_interval_s: float = 5.0,
        request_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not node_name:
            raise ValueError("node_name must not be empty (set it from the downward API: spec.nodeName)")
        self.api = api
        self.node_name = node_name
        self.refresh_interval_s = positive("refresh_interval_s", refresh_interval_s)
        self.retry_interval_s = positive("retry_interval_s", retry_interval_s)
        self.request_timeout_s = positive("request_timeout_s", request_timeout_s)
        self._clock = clock
        self._view: Mapping[PodKey, PodMeta] = MappingProxyType({})
        self._last_attempt_s: float | None = None
        self.up = False
        """True when the last list succeeded."""
        self.refreshes_total = 0
        self.errors_total = 0
        """Failed lists (the last good view was kept)."""
        self.rejected_total = 0
        """Pod objects skipped because a required field was missing or mistyped."""
        self.last_error = ""

    @property
    def view(self) -> Mapping[PodKey, PodMeta]:
        """The last good view, without refreshing."""
        return self._view

    def lookup(self, keys: Collection[PodKey] = ()) -> Mapping[PodKey, PodMeta]:
        """The current view, refreshed first when stale or when one of ``keys`` is not in it."""
        if self._due(keys):
            self.refresh()
        return self._view

    def refresh(self) -> bool:
        """List the node's pods now; on failure keep the last good view. True when the list succeeded."""
        self._last_attempt_s = self._clock()
        try:
            response = self.api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_name}", _request_timeout=self.request_timeout_s
            )
            items = list(getattr(response, "items", None) or ())
        except Exception as error:  # any API, network or decoding failure: keep the last view
            self._failed(error)
            return False
        view: dict[PodKey, PodMeta] = {}
        for item in items:
            try:
                meta = pod_meta_from_object(item)
            except ValueError as error:
                self.rejected_total += 1
                log.warning("ignoring a malformed pod from the API server: %s", error)
                continue
            view[meta.key] = meta
        self._view = MappingProxyType(view)
        self.refreshes_total += 1
        if not self.up and self.errors_total:
            log.info("pod metadata for node %s available again (%d pods)", self.node_name, len(view))
        self.up = True
        self.last_error = ""
        return True

    def _due(self, keys: Collection[PodKey]) -> bool:
        if self._last_attempt_s is None:
            return True
        age_s = self._clock() - self._last_attempt_s
        if not self.up or any(key not in self._view for key in keys):
            return age_s >= self.retry_interval_s
        return age_s >= self.refresh_interval_s

    def _failed(self, error: Exception) -> None:
        self.errors_total += 1
        message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
        self.last_error = message
        if self.up or self.errors_total == 1:
            log.warning(
                "cannot list the pods of node %s from the API server (keeping the last %d known): %s",
                self.node_name,
                len(self._view),
                message,
            )
        else:
            log.debug("pod metadata still unavailable: %s", message)
        self.up = False

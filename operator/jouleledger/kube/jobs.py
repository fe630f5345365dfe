"""Jobs through the API: reading a Job's completion state (and whether its status counts every pod it ran),
writing its footprint annotations, posting Events.

A Job is finished when its ``Complete`` or ``Failed`` condition is ``True``; it finished at that condition's
``lastTransitionTime`` (``status.completionTime`` for ``Complete`` when the condition has no time). Annotations are
written with a JSON merge patch that carries the Job's ``resourceVersion`` (a concurrent change is a 409, retried
later). Event names derive from the Job and the reason, so posting one twice is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from jouleledger.core.footprints import KEY_VERSION
from jouleledger.kube.api import ConflictError, KubeApi, format_time, parse_time

__all__ = ["EVENT_COMPONENT", "JobState", "JobWriter", "counted_pods", "footprint_annotations", "job_path", "job_state"]

EVENT_COMPONENT: Final = "jouleledger-operator"


class JobId(Protocol):
    """What names a Job."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str: ...


@dataclass(frozen=True, slots=True)
class JobState:
    """Whether a Job finished (``Complete``/``Failed``), when, and its Joule Ledger annotations (if any)."""

    finished: bool
    outcome: str = ""  # Complete | Failed
    completion_unix_s: float | None = None
    annotations: Mapping[str, str] | None = None
    counted_pods: int | None = None  # see counted_pods()

    @property
    def annotated(self) -> bool:
        return self.annotations is not None and KEY_VERSION in self.annotations


def footprint_annotations(annotations: object) -> dict[str, str]:
    """The ``jouleledger.io/`` annotations among an object's annotations."""
    if not isinstance(annotations, Mapping):
        return {}
    return {str(key): str(value) for key, value in annotations.items() if str(key).startswith("jouleledger.io/")}


def job_state(job: Mapping[str, Any]) -> JobState:
    """Read a Job object (as the API returns it)."""
    metadata = job.get("metadata") or {}
    annotations = footprint_annotations(metadata.get("annotations"))
    status = job.get("status") or {}
    for condition in status.get("conditions") or ():
        if not isinstance(condition, Mapping):
            continue
        kind = condition.get("type")
        if kind in ("Complete", "Failed") and str(condition.get("status")) == "True":
            when = parse_time(condition.get("lastTransitionTime"))
            if when is None and kind == "Complete":
                when = parse_time(status.get("completionTime"))
            return JobState(True, str(kind), when, annotations, counted_pods(status))
    return JobState(False, annotations=annotations)


def _count(status: Mapping[str, Any], key: str) -> int | None:
    """A pod count of a Job status: 0 when absent or null (the API omits zeros), None when not a count."""
    value = status.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def counted_pods(status: Mapping[str, Any]) -> int | None:
    """How many pods a finished Job's status says it ran (``succeeded`` + ``failed``), when it has counted every one
    of them: none ``active``, none ``terminating``, none in ``uncountedTerminatedPods``. None otherwise, or when a
    count is not a non-negative integer. A Job whose known pods number at least this many has no pod the operator
    has not seen (controller/jobs.py relies on it to finalize without waiting for unrelated agents)."""
    uncounted = status.get("uncountedTerminatedPods")
    if uncounted is None:
        uncounted = {}
    if not isinstance(uncounted, Mapping) or any(uncounted.get(key) for key in ("succeeded", "failed")):
        return None
    if "succeeded" not in status and "failed" not in status:
        return None  # a status written without counts (not the Job controller's): nothing is known
    counts = {key: _count(status, key) for key in ("active", "terminating", "succeeded", "failed")}
    if None in counts.values() or counts["active"] or counts["terminating"]:
        return None
    return (counts["succeeded"] or 0) + (counts["failed"] or 0)


def job_path(namespace: str, name: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"


class JobWriter:
    """Annotates Jobs and posts Events on them."""

    def __init__(self, api: KubeApi, *, clock: Callable[[], float]) -> None:
        self.api = api
        self._clock = clock

    async def read(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        """The Job as it is now, or None when it is gone (or another Job of that name replaced it)."""
        current = await self.api.get(job_path(namespace, name))
        if current is None or (current.get("metadata") or {}).get("uid") != uid:
            return None
        return current

    async def annotate(self, job: Mapping[str, Any], annotations: Mapping[str, str | None]) -> None:
        """Merge ``annotations`` into the Job just read (None removes a key; ConflictError when it changed since)."""
        metadata = job.get("metadata") or {}
        patch: dict[str, Any] = {"annotations": dict(annotations)}
        if metadata.get("resourceVersion"):
            patch["resourceVersion"] = metadata["resourceVersion"]
        await self.api.merge_patch(
            job_path(str(metadata.get("namespace", "")), str(metadata.get("name", ""))), {"metadata": patch}
        )

    async def event(self, job: JobId, kind: str, reason: str, message: str) -> None:
        """Post an Event on the Job (a repeat of the same reason is a no-op; other API errors raise)."""
        stamp = format_time(self._clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{job.name[:200]}.jouleledger.{reason.lower()}.{job.uid[:8]}",
                "namespace": job.namespace,
            },
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.name,
                "namespace": job.namespace,
                "uid": job.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": "jouleledger.io/operator",
            "reportingInstance": EVENT_COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        with contextlib.suppress(ConflictError):
            await self.api.create(f"/api/v1/namespaces/{job.namespace}/events", body)

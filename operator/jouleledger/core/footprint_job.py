"""Finished Jobs: when a footprint is final, and the annotations that record it (exactly once).

A Job is finished when its ``Complete`` or ``Failed`` condition is ``True``; it finished at that condition's
``lastTransitionTime`` (``status.completionTime`` for ``Complete`` when the condition has no time). Its footprint is
final once every agent that ran its pods has been scraped with a last tick **later** than that time (so the
readings up to the end of the pods were folded in), or, at the latest, ``deadline_s`` after the Job finished: then
the footprint is recorded with what was folded, and the agents still missing are named in a warning Event.

Annotation values (all strings): ``energy-kwh`` with 6 decimals, ``gpu-hours`` with 6 decimals, ``co2e-grams``
(operational + embodied) with 3 decimals, ``cost`` as ``"<amount with 4 decimals> <currency>"``,
``intensity-source`` the sources used (comma-separated, sorted), ``method`` how energy was measured.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jouleledger.core.footprint import FinalRecord
from jouleledger.core.units import S_PER_HOUR, mj_to_kwh

__all__ = [
    "ANNOTATION_PREFIX",
    "CLOCK_SKEW_ALLOWANCE_S",
    "FOOTPRINT_VERSION",
    "KEY_CO2E",
    "KEY_COST",
    "KEY_ENERGY",
    "KEY_GPU_HOURS",
    "KEY_METHOD",
    "KEY_SOURCE",
    "KEY_VERSION",
    "Decision",
    "JobState",
    "decide_finalization",
    "job_annotations",
    "job_state",
    "method_of",
    "parse_time",
]

ANNOTATION_PREFIX: Final = "jouleledger.io/"
KEY_ENERGY: Final = ANNOTATION_PREFIX + "energy-kwh"
KEY_GPU_HOURS: Final = ANNOTATION_PREFIX + "gpu-hours"
KEY_CO2E: Final = ANNOTATION_PREFIX + "co2e-grams"
KEY_COST: Final = ANNOTATION_PREFIX + "cost"
KEY_SOURCE: Final = ANNOTATION_PREFIX + "intensity-source"
KEY_METHOD: Final = ANNOTATION_PREFIX + "method"
KEY_VERSION: Final = ANNOTATION_PREFIX + "footprint-version"
FOOTPRINT_VERSION: Final = "1"

_METHODS: Final[Mapping[str, str]] = {
    "nvml": "measured-nvml-energy-counter",
    "replay": "replayed-trace",
    "simulated": "simulated",
}


def method_of(backend: str, simulated: bool) -> str:
    """The ``method`` annotation for an agent backend (simulated data always says so)."""
    if simulated:
        return "simulated"
    return _METHODS.get(backend, f"measured-{backend}" if backend else "unknown")


def parse_time(value: object) -> float | None:
    """An RFC 3339 time (as Kubernetes writes them) as Unix seconds; None when absent or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class JobState:
    """Whether a Job finished (``Complete``/``Failed``), when, and whether it is already annotated."""

    finished: bool
    outcome: str = ""  # Complete | Failed
    completion_unix_s: float | None = None
    annotated: bool = False


def job_state(job: Mapping[str, Any]) -> JobState:
    """Read a Job object (as the API returns it)."""
    metadata = job.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    annotated = KEY_VERSION in annotations
    status = job.get("status") or {}
    for condition in status.get("conditions") or ():
        if not isinstance(condition, Mapping):
            continue
        kind = condition.get("type")
        if kind in ("Complete", "Failed") and str(condition.get("status")) == "True":
            when = parse_time(condition.get("lastTransitionTime"))
            if when is None and kind == "Complete":
                when = parse_time(status.get("completionTime"))
            return JobState(True, str(kind), when, annotated)
    return JobState(False, annotated=annotated)


@dataclass(frozen=True, slots=True)
class Decision:
    """``ready``: record now; ``missing_nodes``: agents not caught up (recorded anyway when the deadline passed)."""

    ready: bool
    missing_nodes: tuple[str, ...] = ()
    timed_out: bool = False


CLOCK_SKEW_ALLOWANCE_S: Final = 2.0
"""How far a node's clock may run behind the API server's before a tick could be mistaken for a later one."""


def decide_finalization(
    completion_unix_s: float,
    nodes: Iterable[str],
    folded_tick_unix_s: Mapping[str, float],
    now_unix_s: float,
    deadline_s: float,
    *,
    clock_skew_s: float = 0.0,
) -> Decision:
    """Whether a Job's footprint is final.

    ``nodes`` are the nodes its pods ran on (only nodes with an agent); ``folded_tick_unix_s`` the last tick of each
    agent's latest *folded* scrape (the node's clock). Ready when every node's folded tick is later than the
    completion (the API server's clock) by more than ``clock_skew_s``, or when ``deadline_s`` has passed since the
    completion (``timed_out``, ``missing_nodes`` set).
    """
    after_s = completion_unix_s + clock_skew_s
    missing = tuple(sorted(node for node in set(nodes) if folded_tick_unix_s.get(node, float("-inf")) <= after_s))
    if not missing:
        return Decision(True)
    if now_unix_s - completion_unix_s >= deadline_s:
        return Decision(True, missing, timed_out=True)
    return Decision(False, missing)


def job_annotations(final: FinalRecord) -> dict[str, str]:
    """The Job's annotations for a final footprint (values formatted as the module docstring says)."""
    return {
        KEY_ENERGY: f"{mj_to_kwh(final.energy_mj):.6f}",
        KEY_GPU_HOURS: f"{final.gpu_seconds / S_PER_HOUR:.6f}",
        KEY_CO2E: f"{final.carbon_g:.3f}",
        KEY_COST: f"{final.cost:.4f} {final.currency}",
        KEY_SOURCE: ",".join(final.intensity_sources) or "none",
        KEY_METHOD: ",".join(final.methods) or "none",
        KEY_VERSION: FOOTPRINT_VERSION,
    }

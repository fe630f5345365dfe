"""One scrape of one agent, as the operator's accounting reads it.

The adapter (``controller.scrape``) parses the Prometheus text exposition and hands this module plain samples
``(sample name, labels, value)``; :func:`parse_agent_samples` turns them into an :class:`AgentScrape`: cumulative
per-pod counters (energy in integer millijoules, GPU-seconds), the identity of each pod from
``jouleledger_pod_info`` (UID, controller owner, allow-listed labels), unallocated energy per GPU, the GPU models,
and the agent's own ``info``/ticks/last-tick gauge.

Untrusted values (non-finite or negative numbers, series of another node, counters of a pod without an info
series) are never counted: each one becomes a :class:`Rejection` with a reason, which the caller logs and counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from jouleledger.core.model import Owner
from jouleledger.core.units import InvalidValueError, checked_float, j_to_mj
from jouleledger.metrics import names

__all__ = [
    "AgentScrape",
    "PodIdentity",
    "Rejection",
    "ScrapeFormatError",
    "SeriesKey",
    "SeriesValue",
    "parse_agent_samples",
]

POD_ENERGY_SAMPLE: Final = names.POD_ENERGY + "_total"
POD_GPU_SECONDS_SAMPLE: Final = names.POD_GPU_SECONDS + "_total"
POD_INFO_SAMPLE: Final = names.POD_INFO + "_info"
GPU_ENERGY_SAMPLE: Final = names.GPU_ENERGY + "_total"
GPU_UNALLOCATED_SAMPLE: Final = names.GPU_UNALLOCATED + "_total"
AGENT_INFO_SAMPLE: Final = names.AGENT_INFO + "_info"
AGENT_TICKS_SAMPLE: Final = names.AGENT_TICKS + "_total"

_PENDING: Final = frozenset(
    {
        POD_ENERGY_SAMPLE,
        POD_GPU_SECONDS_SAMPLE,
        POD_INFO_SAMPLE,
        names.POD_FINISHED,
        GPU_ENERGY_SAMPLE,
        GPU_UNALLOCATED_SAMPLE,
    }
)

Sample = tuple[str, Mapping[str, str], float]
"""``(sample name, labels, value)`` as the Prometheus text parser yields them."""


class ScrapeFormatError(ValueError):
    """The exposition is not an agent's: no ``jouleledger_agent_info`` or no last-tick gauge."""


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One per-pod counter series as the agent exports it (a pod re-created under the same name shares it)."""

    node: str
    namespace: str
    pod: str
    container: str
    device: str


@dataclass(frozen=True, slots=True)
class SeriesValue:
    """Cumulative values of one series: energy (integer mJ) and GPU-seconds."""

    energy_mj: int
    gpu_seconds: float


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """A pod as ``jouleledger_pod_info`` describes it; ``labels`` holds the allow-listed pod labels by key
    as exported (``label_team`` -> ``team``)."""

    namespace: str
    name: str
    uid: str
    owner: Owner | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A sample that was not counted, and why (``not_finite``, ``negative``, ``wrong_node``, ``no_pod_info``...)."""

    sample: str
    labels: Mapping[str, str]
    reason: str


@dataclass(frozen=True, slots=True)
class AgentScrape:
    """What one agent exported at one scrape.

    ``pods`` maps ``(namespace, pod)`` to the identities with that name, oldest first (the agent keeps a finished
    pod for its retention window, so a re-created pod briefly has two). ``unallocated_mj`` is per physical GPU;
    ``gpu_models`` maps GPU ids to model names.
    """

    node: str
    backend: str
    simulated: bool
    last_tick_unix_s: float
    ticks: float
    series: Mapping[SeriesKey, SeriesValue]
    pods: Mapping[tuple[str, str], tuple[PodIdentity, ...]]
    unallocated_mj: Mapping[str, int]
    gpu_models: Mapping[str, str]
    finished_unix_s: Mapping[tuple[str, str], float] = field(default_factory=dict)
    rejected: tuple[Rejection, ...] = ()

    def newest_pod(self, namespace: str, pod: str) -> PodIdentity | None:
        """The most recently created pod of that name (the one new energy belongs to)."""
        identities = self.pods.get((namespace, pod))
        return identities[-1] if identities else None

    def model_of(self, device: str) -> str:
        """The GPU model of a device id (``GPU-x``, ``GPU-x::n``, ``MIG-x``); ``""`` when unknown.

        A MIG instance takes the model of its node when the node has a single model (the exposition does not
        say which physical GPU holds a MIG instance).
        """
        base = device.partition("::")[0]
        model = self.gpu_models.get(base)
        if model is not None:
            return model
        models = set(self.gpu_models.values())
        return models.pop() if len(models) == 1 else ""


def _owner(labels: Mapping[str, str]) -> Owner | None:
    uid = labels.get("owner_uid", "")
    if not uid:
        return None
    return Owner(labels.get("owner_kind", ""), labels.get("owner_name", ""), uid)


def _value(sample: str, labels: Mapping[str, str], value: float) -> tuple[float | None, Rejection | None]:
    try:
        return checked_float(sample, value), None
    except InvalidValueError as error:
        reason = "negative" if error.reason.startswith("below") else error.reason.replace(" ", "_")
        return None, Rejection(sample, labels, reason)


def parse_agent_samples(samples: Iterable[Sample], *, expected_node: str = "") -> AgentScrape:
    """Build an :class:`AgentScrape` from an agent's samples.

    ``expected_node`` (the node the operator found the agent pod on) must match the agent's own ``node``
    label when given; per-pod and per-GPU series of another node are rejected. Raises
    :class:`ScrapeFormatError` when the exposition lacks the agent's info or last-tick series.
    """
    agent_info: Mapping[str, str] | None = None
    last_tick: float | None = None
    ticks = 0.0
    energy: dict[SeriesKey, int] = {}
    seconds: dict[SeriesKey, float] = {}
    pods: dict[tuple[str, str], list[PodIdentity]] = {}
    finished: dict[tuple[str, str], float] = {}
    unallocated: dict[str, int] = {}
    models: dict[str, str] = {}
    rejected: list[Rejection] = []
    pending: list[Sample] = []
    for name, labels, raw in samples:
        if name == AGENT_INFO_SAMPLE:
            agent_info = labels
        elif name == names.AGENT_LAST_TICK:
            value, rejection = _value(name, labels, raw)
            if rejection is not None:
                raise ScrapeFormatError(f"{name}: {rejection.reason} ({raw!r})")
            last_tick = value
        elif name == AGENT_TICKS_SAMPLE:
            ticks = raw if math.isfinite(raw) and raw >= 0 else 0.0
        elif name in _PENDING:
            pending.append((name, labels, raw))
    if agent_info is None:
        raise ScrapeFormatError(f"no {AGENT_INFO_SAMPLE} series: not a Joule Ledger agent")
    if last_tick is None:
        raise ScrapeFormatError(f"no {names.AGENT_LAST_TICK} series")
    node = agent_info.get("node", "")
    if not node:
        raise ScrapeFormatError(f"{AGENT_INFO_SAMPLE} has no node label")
    if expected_node and node != expected_node:
        raise ScrapeFormatError(f"agent reports node {node!r} but runs on node {expected_node!r}")

    for name, labels, raw in pending:
        if labels.get("node", node) != node:
            rejected.append(Rejection(name, labels, "wrong_node"))
            continue
        if name == POD_INFO_SAMPLE:
            identity = PodIdentity(
                namespace=labels.get("namespace", ""),
                name=labels.get("pod", ""),
                uid=labels.get("uid", ""),
                owner=_owner(labels),
                labels={key[len("label_") :]: val for key, val in labels.items() if key.startswith("label_")},
            )
            if not identity.uid or not identity.namespace or not identity.name:
                rejected.append(Rejection(name, labels, "incomplete_pod_info"))
                continue
            pods.setdefault((identity.namespace, identity.name), []).append(identity)
            continue
        value, rejection = _value(name, labels, raw)
        if rejection is not None or value is None:
            rejected.append(rejection or Rejection(name, labels, "invalid"))
            continue
        if name == names.POD_FINISHED:
            finished[(labels.get("namespace", ""), labels.get("pod", ""))] = value
        elif name == GPU_ENERGY_SAMPLE:
            if labels.get("model"):
                models[labels.get("gpu", "")] = labels["model"]
        elif name == GPU_UNALLOCATED_SAMPLE:
            unallocated[labels.get("gpu", "")] = j_to_mj(value)
        else:
            key = SeriesKey(
                node,
                labels.get("namespace", ""),
                labels.get("pod", ""),
                labels.get("container", ""),
                labels.get("gpu", ""),
            )
            if name == POD_ENERGY_SAMPLE:
                energy[key] = j_to_mj(value)
            else:
                seconds[key] = value

    series: dict[SeriesKey, SeriesValue] = {}
    for key in sorted(set(energy) | set(seconds)):
        if (key.namespace, key.pod) not in pods:
            rejected.append(Rejection(POD_ENERGY_SAMPLE, {"namespace": key.namespace, "pod": key.pod}, "no_pod_info"))
            continue
        series[key] = SeriesValue(energy.get(key, 0), seconds.get(key, 0.0))
    return AgentScrape(
        node=node,
        backend=agent_info.get("backend", ""),
        simulated=agent_info.get("simulated", "false").lower() == "true",
        last_tick_unix_s=last_tick,
        ticks=ticks,
        series=series,
        pods={key: tuple(value) for key, value in pods.items()},
        unallocated_mj=unallocated,
        gpu_models=models,
        finished_unix_s=finished,
        rejected=tuple(rejected),
    )

"""Counter deltas: one agent scrape read as the operator's accounting sees it, and its deltas since the last one.

:func:`parse_agent_samples` turns an agent's plain samples ``(sample name, labels, value)`` (the adapter in
``controller.scrape`` parses the text exposition) into an :class:`AgentScrape`: cumulative per-pod counters (energy in
integer millijoules, GPU-seconds), each pod's identity from ``jouleledger_pod_info``, unallocated energy per GPU, the
GPU models and the agent's own info, epoch and tick count. Untrusted values (non-finite, negative, physically
impossible, another node's) are never counted: each becomes a :class:`Rejection` with a reason, which the caller
counts.

:class:`DeltaTracker` turns those cumulative counters into per-scrape deltas, never negative:

- A series that went up contributes the difference. One that went **down** is a reset (the agent's counters
  restarted) only when the agent's ``epoch`` changed, or, for an agent that exports no epoch, when the value went
  down: then its **new value** is new energy. Under the same epoch a lower value is not a reset: it is rejected
  (``counter_regression``) and the baseline stays at its maximum. A baseline read without an epoch followed by
  one with an epoch is the same counters (an upgraded agent restored its pre-epoch checkpoint), not a reset. A
  changed epoch resets every series of the node, also one that happens to have grown past its old value.
- A pod re-created under the same name shares its series with the old pod while the agent retains both: the
  tracker remembers each pod's *share* of every series, gives new energy to the newest pod of that name, and when
  the old pod expires subtracts its share instead of mistaking the drop for a reset.
- **First sight** of a series after the first scrape of its agent is new energy (``origin="new"``); one present at
  the first scrape predates tracking (``origin="adopted"``) and continues from the watermark restored from the
  persisted footprints (:meth:`DeltaTracker.restore`, called before the first scrape is folded), or counts in full
  when no footprint holds it. A restored watermark carries the epoch it was taken under: a scrape under another
  epoch makes it a reset, so energy is neither lost nor doubled across an agent reset and an operator restart.
- Unallocated (idle) energy has no persisted ledger: at an agent's first scrape it only sets the baseline.
- A series absent from ``prune_after_misses`` successful scrapes of its agent in a row is forgotten.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from jouleledger.core import contract
from jouleledger.core.frozen import quick_init
from jouleledger.core.memo import SameObjectMemo
from jouleledger.core.model import Owner
from jouleledger.core.units import InvalidValueError, checked_float, j_to_mj, positive

__all__ = [
    "ADOPTED",
    "CONTINUED",
    "NEW",
    "RESET",
    "AgentScrape",
    "DeltaTracker",
    "ParseMemo",
    "PodDelta",
    "PodIdentity",
    "Rejection",
    "ScrapeDeltas",
    "ScrapeFormatError",
    "SeriesKey",
    "SeriesValue",
    "parse_agent_samples",
]

CONTINUED: Final = "continued"
RESET: Final = "reset"
NEW: Final = "new"
ADOPTED: Final = "adopted"

POD_ENERGY_SAMPLE: Final = contract.sample_name(contract.POD_ENERGY)
POD_GPU_SECONDS_SAMPLE: Final = contract.sample_name(contract.POD_GPU_SECONDS)
POD_FROM_POWER_SAMPLE: Final = contract.sample_name(contract.POD_ENERGY_FROM_POWER)
POD_INFO_SAMPLE: Final = contract.sample_name(contract.POD_INFO)
GPU_ENERGY_SAMPLE: Final = contract.sample_name(contract.GPU_ENERGY)
GPU_UNALLOCATED_SAMPLE: Final = contract.sample_name(contract.GPU_UNALLOCATED)
AGENT_INFO_SAMPLE: Final = contract.sample_name(contract.AGENT_INFO)
AGENT_TICKS_SAMPLE: Final = contract.sample_name(contract.AGENT_TICKS)

DEFAULT_MAX_GPU_POWER_W: Final = 1500.0
"""The most a GPU is believed to draw when its agent exports no power limit (above every GPU made so far)."""
MAX_COUNTER_J: Final = (2**63 - 1) / 1000
"""No counter can exceed what int64 millijoules hold (~2.5 TWh): anything above is rejected, never converted."""
MAX_GPU_SECONDS: Final = 1e12
"""~31,700 GPU-years: a GPU-seconds counter above it is rejected (sums stay finite)."""
ENERGY_SLACK: Final = 0.01
"""Relative allowance on the physical bounds (power limits are enforced by the driver on average)."""
ENERGY_SLACK_MJ: Final = 1_000
"""Absolute allowance on the physical bounds (whole-mJ rounding of every interval's shares)."""

_PENDING: Final = frozenset(  # read once the agent's node is known (the pod counters: in a list of their own)
    {
        POD_INFO_SAMPLE,
        contract.POD_FINISHED,
        GPU_ENERGY_SAMPLE,
        GPU_UNALLOCATED_SAMPLE,
        contract.GPU_POWER_LIMIT,
    }
)

_POD_COUNTERS: Final = frozenset({POD_ENERGY_SAMPLE, POD_GPU_SECONDS_SAMPLE, POD_FROM_POWER_SAMPLE})
_COUNTERS: Final = _POD_COUNTERS | {GPU_UNALLOCATED_SAMPLE}
"""Counter series that may appear once: a copy with another value is rejected (``duplicate_series``) and the series
held; an identical copy (the same agent read through two Prometheus jobs or replicas) is harmless."""

Sample = tuple[str, Mapping[str, str], float]
"""``(sample name, labels, value)`` as the Prometheus text parser yields them."""


class ScrapeFormatError(ValueError):
    """The exposition is not an agent's: no ``jouleledger_agent_info`` or no last-tick gauge."""


class SeriesKey(NamedTuple):
    """One per-pod counter series as the agent exports it (a pod re-created under the same name shares it).

    A named tuple, not a dataclass: every pass hashes and compares tens of thousands of them."""

    node: str
    namespace: str
    pod: str
    container: str
    device: str


@quick_init
@dataclass(frozen=True, slots=True)
class SeriesValue:
    """Cumulative values of one series: energy (integer mJ) and GPU-seconds; as a watermark, also the agent
    ``epoch`` and tick count they were read under."""

    energy_mj: int
    gpu_seconds: float
    epoch: str = ""
    ticks: int = 0
    from_power_mj: int = 0
    """The part of ``energy_mj`` whose intervals were integrated from power (no counter, or a rejected delta)."""


@quick_init
@dataclass(frozen=True, slots=True)
class PodIdentity:
    """A pod as ``jouleledger_pod_info`` describes it; ``labels`` holds the allow-listed pod labels by key
    as exported (``label_team`` -> ``team``)."""

    namespace: str
    name: str
    uid: str
    owner: Owner | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class Rejection:
    """A sample that was not counted, and why (``not_finite``, ``negative``, ``wrong_node``, ``no_pod_info``...)."""

    sample: str
    labels: Mapping[str, str]
    reason: str


@quick_init
@dataclass(frozen=True, slots=True)
class AgentScrape:
    """What one agent exported at one scrape.

    ``pods`` maps ``(namespace, pod)`` to the identities with that name, oldest first (the agent keeps a finished
    pod for its retention window, so a re-created pod briefly has two). ``unallocated_mj`` is per physical GPU;
    ``gpu_models`` maps GPU ids to model contract.
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
    epoch: str = ""
    """The agent's counter identity (empty for an agent that exports none)."""
    held: frozenset[SeriesKey] = frozenset()
    """Series present but rejected this scrape (their baselines stay as they are; they are not missing)."""
    power_limits_w: Mapping[str, float] = field(default_factory=dict)
    """Power limit of each physical GPU, where the agent exports one."""

    def power_limit_w(self, device: str, max_gpu_power_w: float) -> float:
        """The most the GPU of a device id can draw: its exported limit, never above ``max_gpu_power_w``; for a
        device whose GPU exported none (a MIG instance), the largest limit of the node or ``max_gpu_power_w``."""
        limit = self.power_limits_w.get(device.partition("::")[0])
        if limit is None:
            limit = max(self.power_limits_w.values(), default=max_gpu_power_w)
        return min(limit, max_gpu_power_w)

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


_MAXIMUM: Final[Mapping[str, float]] = {
    POD_ENERGY_SAMPLE: MAX_COUNTER_J,
    POD_FROM_POWER_SAMPLE: MAX_COUNTER_J,
    GPU_UNALLOCATED_SAMPLE: MAX_COUNTER_J,
    POD_GPU_SECONDS_SAMPLE: MAX_GPU_SECONDS,
}


def _value(sample: str, labels: Mapping[str, str], value: float) -> tuple[float | None, Rejection | None]:
    try:
        return checked_float(sample, value, maximum=_MAXIMUM.get(sample, math.inf)), None
    except InvalidValueError as error:
        reason = error.reason.replace(" ", "_")
        if error.reason.startswith("below"):
            reason = "negative"
        elif error.reason.startswith("above"):
            reason = "out_of_range"
        return None, Rejection(sample, labels, reason)


def within_power(energy_mj: int, gpu_seconds: float, power_limit_w: float) -> bool:
    """Whether ``energy_mj`` is possible on a device held for ``gpu_seconds`` at ``power_limit_w`` at most
    (a pod's energy share and its GPU-seconds take the same fraction of the device's interval)."""
    bound_mj = power_limit_w * gpu_seconds * 1000 * (1 + ENERGY_SLACK) + ENERGY_SLACK_MJ
    return energy_mj <= bound_mj


def _duplicate(seen: dict[tuple[str, object], float], key: tuple[str, object], raw: float) -> bool:
    """Whether a counter series already had another value in this exposition (records the first one)."""
    first = seen.setdefault(key, raw)
    return first is not raw and not (first == raw or (math.isnan(first) and math.isnan(raw)))


def _series_key(node: str, labels: Mapping[str, str]) -> SeriesKey:
    return SeriesKey(
        node,
        labels.get("namespace", ""),
        labels.get("pod", ""),
        labels.get("container", ""),
        labels.get("gpu", ""),
    )


class ParseMemo:
    """What :func:`parse_agent_samples` derived from one agent's label mappings at its previous scrape (pod identities
    and series keys), for a parser that hands out the same mapping for an unchanged series every scrape (the
    exposition parser's label cache): see :class:`~jouleledger.core.memo.SameObjectMemo`. ``plan``: the previous
    scrape's :class:`ShapePlan`, when it had one."""

    __slots__ = ("identities", "keys", "plan")

    def __init__(self) -> None:
        self.identities: SameObjectMemo[PodIdentity] = SameObjectMemo()
        self.keys: SameObjectMemo[tuple[str, SeriesKey]] = SameObjectMemo()  # (node, key)
        self.plan: ShapePlan | None = None


_NAME: Final = operator.itemgetter(0)
_LABELS: Final = operator.itemgetter(1)
_VALUE: Final = operator.itemgetter(2)
_FLOAT: Final = frozenset({float})


def _plain(values: list[float], maximum: float) -> bool:
    """Whether every value is a float the pod-counter loop of the full parser takes as is: finite, from 0 to
    ``maximum`` (a sum that overflows declines too, which is only ever safe)."""
    if not values:
        return True
    return (
        _FLOAT.issuperset(map(type, values))
        and math.isfinite(sum(values))
        and min(values) >= 0.0
        and max(values) <= maximum
    )


class ShapePlan:
    """What a clean scrape's shape makes of every scrape of the same shape: the same sample names with the same
    label mappings, in the same order (the parsers hand out one mapping per unchanged series), under the same
    expected node. Every structural result (the node, pods, series keys, models; which sample is which) is the same
    for such a scrape, so :meth:`apply` reads only the values.

    A plan is made only from a scrape without a rejection and without a counter series given twice, and
    :meth:`apply` declines (returns None) any scrape whose value the full parser would reject or treat other than
    as read: the full parser then parses it, and has the last word. Between the two, the result is the same."""

    __slots__ = (
        "agent",
        "expected_node",
        "finished",
        "finished_at",
        "gpu_energy",
        "joules",
        "labels",
        "last_ticks",
        "limits",
        "limits_at",
        "models",
        "names",
        "pods",
        "seconds",
        "series",
        "tick_counts",
        "unallocated",
        "unallocated_at",
    )

    def __init__(
        self,
        samples: list[Sample],
        scrape: AgentScrape,
        expected_node: str,
        *,
        joules: list[int],
        seconds: list[int],
        series: list[tuple[SeriesKey, int, int, int]],
        last_ticks: list[int],
        tick_counts: list[int],
        finished: list[tuple[int, tuple[str, str]]],
        gpu_energy: list[int],
        unallocated: list[tuple[int, str]],
        limits: list[tuple[int, str]],
    ) -> None:
        # Each (index, key) list as two: the samples' places, and where their values go (in sample order).
        self.names: list[str] = list(map(_NAME, samples))
        self.labels: list[Mapping[str, str]] = list(map(_LABELS, samples))
        self.expected_node = expected_node
        self.agent = (scrape.node, scrape.backend, scrape.simulated, scrape.epoch)
        self.pods = scrape.pods
        self.models = scrape.gpu_models
        self.joules = joules  # indices of the pod energy and energy-from-power samples
        self.seconds = seconds  # indices of the GPU-seconds samples
        self.series = series  # (key, energy, GPU-seconds, energy-from-power sample index or -1), in key order
        self.last_ticks = last_ticks
        self.tick_counts = tick_counts
        self.finished_at = [index for index, _ in finished]
        self.finished = [pod for _, pod in finished]  # (namespace, pod)
        self.gpu_energy = gpu_energy  # the GPU energy samples: read for their model, their values only checked
        self.unallocated_at = [index for index, _ in unallocated]
        self.unallocated = [gpu for _, gpu in unallocated]
        self.limits_at = [index for index, _ in limits]
        self.limits = [gpu for _, gpu in limits]

    @classmethod
    def of(cls, samples: list[Sample], scrape: AgentScrape, expected_node: str) -> ShapePlan | None:
        """The plan of a scrape just parsed from ``samples`` in full; None when it was not clean."""
        if scrape.rejected or scrape.held:
            return None
        node = scrape.node
        joules: list[int] = []
        seconds: list[int] = []
        slots: dict[SeriesKey, list[int]] = {}
        last_ticks: list[int] = []
        tick_counts: list[int] = []
        finished: list[tuple[int, tuple[str, str]]] = []
        gpu_energy: list[int] = []
        unallocated: list[tuple[int, str]] = []
        limits: list[tuple[int, str]] = []
        for index, (name, labels, _) in enumerate(samples):
            if name in _POD_COUNTERS:
                (seconds if name == POD_GPU_SECONDS_SAMPLE else joules).append(index)
                slot = slots.setdefault(_series_key(node, labels), [-1, -1, -1])
                which = 0 if name == POD_ENERGY_SAMPLE else 1 if name == POD_GPU_SECONDS_SAMPLE else 2
                if slot[which] >= 0:
                    return None  # one series twice: whether its copies agree is a question of values
                slot[which] = index
            elif name == contract.AGENT_LAST_TICK:
                last_ticks.append(index)
            elif name == AGENT_TICKS_SAMPLE:
                tick_counts.append(index)
            elif name == contract.POD_FINISHED:
                finished.append((index, (labels.get("namespace", ""), labels.get("pod", ""))))
            elif name == GPU_ENERGY_SAMPLE:
                gpu_energy.append(index)
            elif name == GPU_UNALLOCATED_SAMPLE:
                gpu = labels.get("gpu", "")
                if any(seen == gpu for _, seen in unallocated):
                    return None  # as for a pod counter given twice
                unallocated.append((index, gpu))
            elif name == contract.GPU_POWER_LIMIT:
                limits.append((index, labels.get("gpu", "")))
        counted = [key for key, slot in slots.items() if slot[0] >= 0 or slot[1] >= 0]
        if len(counted) != len(scrape.series) or not all(key in scrape.series for key in counted):
            return None  # (not for a clean scrape: each such series has its pod's info)
        return cls(
            samples,
            scrape,
            expected_node,
            joules=joules,
            seconds=seconds,
            series=[(key, *_slots(slots[key])) for key in scrape.series],
            last_ticks=last_ticks,
            tick_counts=tick_counts,
            finished=finished,
            gpu_energy=gpu_energy,
            unallocated=unallocated,
            limits=limits,
        )

    def apply(self, samples: list[Sample], expected_node: str) -> AgentScrape | None:
        """The scrape of ``samples`` when they have this plan's shape and every value reads as is; else None."""
        if (
            expected_node != self.expected_node
            or len(samples) != len(self.names)
            or list(map(_LABELS, samples)) != self.labels
            or list(map(_NAME, samples)) != self.names
        ):
            return None
        values = list(map(_VALUE, samples))
        if not _plain([values[index] for index in self.joules], MAX_COUNTER_J) or not _plain(
            [values[index] for index in self.seconds], MAX_GPU_SECONDS
        ):
            return None
        last_ticks = _checked(samples, self.last_ticks)
        tick_counts = _checked(samples, self.tick_counts)
        finished = _checked(samples, self.finished_at)
        unallocated = _checked(samples, self.unallocated_at)
        limits = _checked(samples, self.limits_at)
        if (
            not last_ticks
            or tick_counts is None
            or finished is None
            or unallocated is None
            or limits is None
            or _checked(samples, self.gpu_energy) is None
        ):
            return None
        series: dict[SeriesKey, SeriesValue] = {}
        for key, energy, seconds, power in self.series:
            total_mj = j_to_mj(values[energy]) if energy >= 0 else 0
            from_power_mj = j_to_mj(values[power]) if power >= 0 else 0
            series[key] = SeriesValue(
                total_mj, values[seconds] if seconds >= 0 else 0.0, from_power_mj=min(from_power_mj, total_mj)
            )
        node, backend, simulated, epoch = self.agent
        return AgentScrape(
            node=node,
            backend=backend,
            simulated=simulated,
            last_tick_unix_s=last_ticks[-1],
            ticks=(tick_counts[-1] or 0.0) if tick_counts else 0.0,
            epoch=epoch,
            series=series,
            pods=dict(self.pods),
            unallocated_mj={gpu: j_to_mj(value) for gpu, value in zip(self.unallocated, unallocated, strict=True)},
            gpu_models=dict(self.models),
            finished_unix_s=dict(zip(self.finished, finished, strict=True)),
            power_limits_w={gpu: value for gpu, value in zip(self.limits, limits, strict=True) if value > 0},
        )


def _identity(labels: Mapping[str, str]) -> PodIdentity:
    return PodIdentity(
        namespace=labels.get("namespace", ""),
        name=labels.get("pod", ""),
        uid=labels.get("uid", ""),
        owner=_owner(labels),
        labels={key[6:]: val for key, val in labels.items() if key.startswith("label_")},
    )


def _checked(samples: list[Sample], indices: list[int]) -> list[float] | None:
    """The values of those samples as the full parser reads them; None when it would reject one."""
    values: list[float] = []
    for index in indices:
        value, rejection = _value(*samples[index])
        if value is None or rejection is not None:
            return None
        values.append(value)
    return values


def _slots(slot: list[int]) -> tuple[int, int, int]:
    return slot[0], slot[1], slot[2]


def parse_agent_samples(
    samples: Iterable[Sample], *, expected_node: str = "", memo: ParseMemo | None = None
) -> AgentScrape:
    """Build an :class:`AgentScrape` from an agent's samples.

    ``expected_node`` (the node the operator found the agent pod on) must match the agent's own ``node``
    label when given; per-pod and per-GPU series of another node are rejected, and so is a value no counter can
    hold (``out_of_range``) and a counter series given twice with different values (``duplicate_series``); a pod
    series with a rejected sample is *held* (neither counted nor missing). Raises
    :class:`ScrapeFormatError` when the exposition lacks the agent's info or last-tick series. ``memo`` (one per
    agent, kept across scrapes) reuses the identities and series keys of label mappings seen at the previous scrape,
    and reads a scrape of the previous one's shape by its :class:`ShapePlan`.
    """
    if memo is None:
        return _parse(samples, expected_node, None)
    listed = samples if isinstance(samples, list) else list(samples)
    plan = memo.plan
    if plan is not None:
        planned = plan.apply(listed, expected_node)
        if planned is not None:
            return planned
    memo.plan = None
    scrape = _parse(listed, expected_node, memo)
    memo.plan = ShapePlan.of(listed, scrape, expected_node)
    return scrape


def _parse(samples: Iterable[Sample], expected_node: str, memo: ParseMemo | None) -> AgentScrape:
    agent_info: Mapping[str, str] | None = None
    last_tick: float | None = None
    ticks = 0.0
    energy: dict[SeriesKey, int] = {}
    seconds: dict[SeriesKey, float] = {}
    from_power: dict[SeriesKey, int] = {}
    pods: dict[tuple[str, str], list[PodIdentity]] = {}
    finished: dict[tuple[str, str], float] = {}
    unallocated: dict[str, int] = {}
    models: dict[str, str] = {}
    limits: dict[str, float] = {}
    held: set[SeriesKey] = set()
    seen: dict[tuple[str, object], float] = {}
    duplicated_gpus: set[str] = set()
    rejected: list[Rejection] = []
    pending: list[Sample] = []
    pod_series: list[Sample] = []  # the pod counters: most of the exposition
    for sample in samples:
        name, labels, raw = sample
        if name in _POD_COUNTERS:
            pod_series.append(sample)
        elif name == AGENT_INFO_SAMPLE:
            agent_info = labels
        elif name == contract.AGENT_LAST_TICK:
            value, rejection = _value(name, labels, raw)
            if rejection is not None:
                raise ScrapeFormatError(f"{name}: {rejection.reason} ({raw!r})")
            last_tick = value
        elif name == AGENT_TICKS_SAMPLE:
            tick_count, rejection = _value(name, labels, raw)
            if rejection is not None:
                rejected.append(rejection)  # counted; the tick count is then unknown (0)
            ticks = tick_count or 0.0
        elif name in _PENDING:
            pending.append(sample)
    if agent_info is None:
        raise ScrapeFormatError(f"no {AGENT_INFO_SAMPLE} series: not a Joule Ledger agent")
    if last_tick is None:
        raise ScrapeFormatError(f"no {contract.AGENT_LAST_TICK} series")
    node = agent_info.get("node", "")
    if not node:
        raise ScrapeFormatError(f"{AGENT_INFO_SAMPLE} has no node label")
    if expected_node and node != expected_node:
        raise ScrapeFormatError(f"agent reports node {node!r} but runs on node {expected_node!r}")

    identities = memo.identities if memo is not None else SameObjectMemo[PodIdentity]()
    for name, labels, raw in pending:
        if labels.get("node", node) != node:
            rejected.append(Rejection(name, labels, "wrong_node"))
            continue
        if name == POD_INFO_SAMPLE:
            identity = identities.derive(labels, _identity)
            if not identity.uid or not identity.namespace or not identity.name:
                rejected.append(Rejection(name, labels, "incomplete_pod_info"))
                continue
            named = pods.setdefault((identity.namespace, identity.name), [])
            if identity not in named:  # the same series twice (one agent through two Prometheus jobs): once
                named.append(identity)
            continue
        if name == GPU_UNALLOCATED_SAMPLE and _duplicate(seen, (name, labels.get("gpu", "")), raw):
            rejected.append(Rejection(name, labels, "duplicate_series"))
            duplicated_gpus.add(labels.get("gpu", ""))
            continue
        value, rejection = _value(name, labels, raw)
        if rejection is not None or value is None:
            rejected.append(rejection or Rejection(name, labels, "invalid"))
        elif name == contract.POD_FINISHED:
            finished[(labels.get("namespace", ""), labels.get("pod", ""))] = value
        elif name == GPU_ENERGY_SAMPLE:
            if labels.get("model"):
                models[labels.get("gpu", "")] = labels["model"]
        elif name == GPU_UNALLOCATED_SAMPLE:
            unallocated[labels.get("gpu", "")] = j_to_mj(value)
        elif name == contract.GPU_POWER_LIMIT and value > 0:
            limits[labels.get("gpu", "")] = value

    # The pod counters: most of the exposition. The energy, GPU-seconds and energy-from-power lines of one series
    # usually share one label mapping (the parser's cache), so its key is built once.
    keys = memo.keys if memo is not None else SameObjectMemo[tuple[str, SeriesKey]]()
    for name, labels, raw in pod_series:
        known = keys.get(labels)
        if known is None or known[0] != node:  # a label mapping in the memo passed this node's check before
            if labels.get("node", node) != node:
                rejected.append(Rejection(name, labels, "wrong_node"))
                continue
            known = (node, _series_key(node, labels))
        keys.put(labels, known)  # the same pair again: nothing allocated
        key = known[1]
        if _duplicate(seen, (name, key), raw):  # one series with two values: neither is counted, its baseline stays
            rejected.append(Rejection(name, labels, "duplicate_series"))
            held.add(key)
            continue
        maximum = MAX_GPU_SECONDS if name == POD_GPU_SECONDS_SAMPLE else MAX_COUNTER_J
        if type(raw) is float and 0.0 <= raw <= maximum:  # the common case, no rejection bookkeeping (NaN fails)
            value = raw
        else:
            checked, rejection = _value(name, labels, raw)
            if rejection is not None or checked is None:
                rejected.append(rejection or Rejection(name, labels, "invalid"))
                held.add(key)
                continue
            value = checked
        if name == POD_ENERGY_SAMPLE:
            energy[key] = j_to_mj(value)
        elif name == POD_FROM_POWER_SAMPLE:
            from_power[key] = j_to_mj(value)
        else:
            seconds[key] = value

    identities.turn()
    keys.turn()
    for gpu in duplicated_gpus:
        unallocated.pop(gpu, None)  # its baseline stays as it is
    series: dict[SeriesKey, SeriesValue] = {}
    for key in sorted(energy.keys() | seconds.keys()):
        if key in held:
            continue
        if (key.namespace, key.pod) not in pods:
            where = {"namespace": key.namespace, "pod": key.pod, "gpu": key.device}
            rejected.append(Rejection(POD_ENERGY_SAMPLE, where, "no_pod_info"))
            continue
        total_mj = energy.get(key, 0)
        series[key] = SeriesValue(total_mj, seconds.get(key, 0.0), from_power_mj=min(from_power.get(key, 0), total_mj))
    return AgentScrape(
        node=node,
        backend=agent_info.get("backend", ""),
        simulated=agent_info.get("simulated", "false").lower() == "true",
        last_tick_unix_s=last_tick,
        ticks=ticks,
        epoch=agent_info.get("epoch", ""),
        series=series,
        pods={key: tuple(value) for key, value in pods.items()},
        unallocated_mj=unallocated,
        gpu_models=models,
        finished_unix_s=finished,
        rejected=tuple(rejected),
        held=frozenset(held),
        power_limits_w=limits,
    )


# --- deltas --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Share:
    energy_mj: int = 0
    gpu_seconds: float = 0.0
    epoch: str = ""
    from_power_mj: int = 0


@dataclass(slots=True)
class _SeriesState:
    energy_mj: int
    gpu_seconds: float
    shares: dict[str, _Share] = field(default_factory=dict)
    misses: int = 0
    from_power_mj: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class PodDelta:
    """New energy (``from_power_mj`` of it integrated from power) and GPU-seconds of one pod on one series since
    the previous scrape. ``share`` is the pod's cumulative share of the series after this delta, read under the
    scrape's epoch and tick count: the watermark its footprint stores.
    """

    key: SeriesKey
    pod: PodIdentity
    energy_mj: int
    gpu_seconds: float
    origin: str
    share: SeriesValue
    from_power_mj: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class ScrapeDeltas:
    """What one scrape of one agent added. ``expired`` lists ``(series, pod uid)`` shares that left the agent
    (an old pod of the same name expired; or every share but the newest after a reset); ``pruned`` the series
    that were forgotten."""

    node: str
    first: bool
    pods: tuple[PodDelta, ...]
    unallocated_mj: Mapping[str, int]
    resets: int = 0
    expired: tuple[tuple[SeriesKey, str], ...] = ()
    pruned: tuple[SeriesKey, ...] = ()
    regressions: int = 0
    """Series whose value went down under an unchanged epoch: rejected, their baselines kept."""
    epoch: str = ""
    ticks: int = 0
    implausible: int = 0
    """Series or idle values above what the node's GPUs can draw: rejected, their baselines kept."""
    regressed: tuple[tuple[SeriesKey, str], ...] = ()
    """``(series, pod uid)`` shares whose counter went down under an unchanged epoch (persist them now: the agent
    no longer holds what they include)."""


def _credit(
    state: _SeriesState, share: _Share, value: SeriesValue, delta: tuple[int, float, int], ticks: int
) -> SeriesValue:
    """Add ``delta`` (energy, GPU-seconds, energy from power) to the pod's ``share``, move the series' baseline to
    ``value``; the share as the watermark its footprint stores."""
    share.energy_mj += delta[0]
    share.gpu_seconds += delta[1]
    share.from_power_mj += delta[2]
    state.energy_mj, state.gpu_seconds, state.misses = value.energy_mj, value.gpu_seconds, 0
    state.from_power_mj = value.from_power_mj
    return SeriesValue(share.energy_mj, share.gpu_seconds, share.epoch, ticks, share.from_power_mj)


class DeltaTracker:
    """Per-series baselines across scrapes (see the module docstring for the rules)."""

    def __init__(self, *, prune_after_misses: int = 8, max_gpu_power_w: float = DEFAULT_MAX_GPU_POWER_W) -> None:
        if prune_after_misses < 1:
            raise ValueError(f"prune_after_misses must be at least 1, got {prune_after_misses}")
        positive("max_gpu_power_w", max_gpu_power_w)
        self._prune_after = prune_after_misses
        self._max_w = max_gpu_power_w
        self._series: dict[SeriesKey, _SeriesState] = {}
        self._by_node: dict[str, set[SeriesKey]] = {}
        self._unallocated: dict[tuple[str, str], tuple[int, float]] = {}  # (node, gpu) -> (value, its agent tick)
        self._last_tick: dict[str, float] = {}  # node -> agent tick of its latest scrape
        self._epochs: dict[str, str] = {}  # node -> epoch of its unallocated baselines
        self._tracked: set[str] = set()

    @property
    def tracked_nodes(self) -> frozenset[str]:
        """Nodes whose agent was scraped successfully at least once."""
        return frozenset(self._tracked)

    def __len__(self) -> int:
        return len(self._series)

    def baseline(self, key: SeriesKey) -> SeriesValue | None:
        """The cumulative value last seen (or restored) for a series."""
        state = self._series.get(key)
        return None if state is None else SeriesValue(state.energy_mj, state.gpu_seconds)

    def restore(self, key: SeriesKey, pod_uid: str, watermark: SeriesValue) -> None:
        """Load a persisted watermark: ``pod_uid``'s share of ``key`` (read under agent ``epoch``) that its footprint
        already includes.

        Shares of several pods of one series add up to its baseline. Restoring the same ``(key, pod_uid)`` twice
        keeps the larger share (a footprint is never behind itself). A watermark of another epoch than the ones
        restored for that series is kept apart: the first scrape keeps the shares of its own epoch and drops the
        others (their energy is in their footprints already; their counters are gone).
        """
        energy_mj, gpu_seconds, epoch = watermark.energy_mj, watermark.gpu_seconds, watermark.epoch
        if energy_mj < 0 or gpu_seconds < 0:
            raise ValueError(f"negative watermark for {key} / {pod_uid}: {energy_mj} mJ, {gpu_seconds} s")
        state = self._series.get(key)
        if state is None:
            state = self._series[key] = _SeriesState(0, 0.0)
            self._by_node.setdefault(key.node, set()).add(key)
        share = state.shares.get(pod_uid)
        if share is None or share.epoch != epoch:
            if share is not None:  # the same pod's share under two epochs: the larger one is what was persisted last
                if share.energy_mj >= energy_mj:
                    return
                state.energy_mj -= share.energy_mj
                state.gpu_seconds -= share.gpu_seconds
                state.from_power_mj -= share.from_power_mj
            share = state.shares[pod_uid] = _Share(epoch=epoch)
        if energy_mj > share.energy_mj:
            state.energy_mj += energy_mj - share.energy_mj
            share.energy_mj = energy_mj
        if gpu_seconds > share.gpu_seconds:
            state.gpu_seconds += gpu_seconds - share.gpu_seconds
            share.gpu_seconds = gpu_seconds
        if watermark.from_power_mj > share.from_power_mj:
            state.from_power_mj += watermark.from_power_mj - share.from_power_mj
            share.from_power_mj = watermark.from_power_mj

    def restore_all(self, watermarks: Iterable[tuple[SeriesKey, str, SeriesValue]]) -> int:
        """:meth:`restore` each ``(series, pod uid, share)``; returns how many."""
        count = 0
        for key, pod_uid, value in watermarks:
            self.restore(key, pod_uid, value)
            count += 1
        return count

    def observe(self, scrape: AgentScrape) -> ScrapeDeltas:
        """The deltas of one successful scrape; updates the baselines."""
        node = scrape.node
        first = node not in self._tracked
        self._tracked.add(node)
        keys = self._by_node.setdefault(node, set())
        pods: list[PodDelta] = []
        expired: list[tuple[SeriesKey, str]] = []
        resets = regressions = implausible = 0
        regressed: list[tuple[SeriesKey, str]] = []
        epoch = scrape.epoch
        ticks = int(scrape.ticks)
        limits: dict[str, float] = {}  # device -> its power limit, looked up once per scrape
        for key, value in scrape.series.items():
            identities = scrape.pods.get((key.namespace, key.pod), ())
            if not identities:  # parse_agent_samples never yields such a series; keep the baseline as is
                continue
            newest = identities[-1]
            state = self._series.get(key)
            limit_w = limits.get(key.device)
            if limit_w is None:
                limit_w = limits[key.device] = scrape.power_limit_w(key.device, self._max_w)
            if not within_power(value.energy_mj, value.gpu_seconds, limit_w):
                implausible += 1  # more energy than the GPU can draw in the time the pod held it
                if state is not None:
                    state.misses = 0
                continue
            if state is not None and len(state.shares) == 1 and value.energy_mj >= state.energy_mj:
                # The common case, one pod's series going up under its epoch: what the general rules below give
                # (no stale, vanished or dropped share; CONTINUED), without their bookkeeping.
                only = state.shares.get(newest.uid)
                if only is not None and not (epoch and only.epoch and only.epoch != epoch):
                    energy_mj = value.energy_mj - state.energy_mj
                    gpu_seconds = max(0.0, value.gpu_seconds - state.gpu_seconds)
                    power_mj = min(energy_mj, max(0, value.from_power_mj - state.from_power_mj))
                    only.epoch = epoch
                    watermark = _credit(state, only, value, (energy_mj, gpu_seconds, power_mj), ticks)
                    pods.append(PodDelta(key, newest, energy_mj, gpu_seconds, CONTINUED, watermark, power_mj))
                    continue
            if state is None:
                origin = ADOPTED if first else NEW
                energy_mj, gpu_seconds, power_mj = value.energy_mj, value.gpu_seconds, value.from_power_mj
                state = self._series[key] = _SeriesState(0, 0.0)
                keys.add(key)
            else:
                stale = [uid for uid, sh in state.shares.items() if epoch and sh.epoch and sh.epoch != epoch]
                for uid in stale:  # shares of another agent epoch: those counters are gone
                    gone = state.shares.pop(uid)
                    state.energy_mj -= gone.energy_mj
                    state.gpu_seconds -= gone.gpu_seconds
                    state.from_power_mj -= gone.from_power_mj
                    if uid != newest.uid:
                        expired.append((key, uid))
                live = {identity.uid for identity in identities}
                vanished = [uid for uid in state.shares if uid not in live]
                expected_mj = state.energy_mj - sum(state.shares[uid].energy_mj for uid in vanished)
                expected_s = state.gpu_seconds - sum(state.shares[uid].gpu_seconds for uid in vanished)
                expected_p = state.from_power_mj - sum(state.shares[uid].from_power_mj for uid in vanished)
                # A share taken before the agent had epochs counts the same counters (an upgraded agent restores
                # its pre-epoch checkpoint under a new epoch): lower is a regression, not a reset.
                same_epoch = bool(epoch) and any(share.epoch in (epoch, "") for share in state.shares.values())
                if stale and not state.shares:
                    origin = RESET  # every share was of an older epoch: all of this epoch's value is new
                    resets += 1
                    energy_mj, gpu_seconds, power_mj = value.energy_mj, value.gpu_seconds, value.from_power_mj
                    dropped = []
                elif value.energy_mj >= expected_mj:
                    origin = CONTINUED
                    energy_mj = value.energy_mj - expected_mj
                    gpu_seconds = max(0.0, value.gpu_seconds - expected_s)
                    power_mj = min(energy_mj, max(0, value.from_power_mj - expected_p))
                    dropped = vanished
                elif same_epoch:
                    regressions += 1  # same epoch, lower value: not a reset; the baseline stays at its maximum
                    regressed.extend((key, uid) for uid in state.shares)
                    state.misses = 0
                    continue
                else:
                    origin = RESET
                    resets += 1
                    energy_mj, gpu_seconds, power_mj = value.energy_mj, value.gpu_seconds, value.from_power_mj
                    dropped = [uid for uid in state.shares if uid != newest.uid]
                    if newest.uid in state.shares:
                        state.shares[newest.uid] = _Share()
                for uid in dropped:
                    del state.shares[uid]
                    expired.append((key, uid))
            for share in state.shares.values():
                share.epoch = epoch
            share = state.shares.setdefault(newest.uid, _Share(epoch=epoch))
            watermark = _credit(state, share, value, (energy_mj, gpu_seconds, power_mj), ticks)
            pods.append(PodDelta(key, newest, energy_mj, gpu_seconds, origin, watermark, power_mj))

        pruned: list[SeriesKey] = []
        for key in keys - scrape.series.keys() - scrape.held:
            state = self._series[key]
            state.misses += 1
            if state.misses >= self._prune_after:
                pruned.append(key)
        for key in pruned:
            keys.discard(key)
            del self._series[key]

        unallocated: dict[str, int] = {}
        tick_s = scrape.last_tick_unix_s
        previous_epoch = self._epochs.get(node, "")
        changed = bool(epoch and previous_epoch and epoch != previous_epoch)
        if epoch:
            self._epochs[node] = epoch
        for gpu, value_mj in scrape.unallocated_mj.items():
            baseline = self._unallocated.get((node, gpu))
            previous, since_s = baseline if baseline is not None else (None, self._last_tick.get(node, tick_s))
            if previous is None:
                delta = 0 if first else value_mj
            elif changed:
                delta = value_mj
            elif value_mj >= previous:
                delta = value_mj - previous
            elif epoch:  # the same epoch, or the first one of an upgraded agent: the same counters
                regressions += 1
                unallocated[gpu] = 0
                continue
            else:
                delta = value_mj
                resets += 1
            if not within_power(delta, max(0.0, tick_s - since_s), scrape.power_limit_w(gpu, self._max_w)):
                implausible += 1  # more idle energy than the GPU can draw since its baseline was read
                unallocated[gpu] = 0
                continue
            self._unallocated[(node, gpu)] = (value_mj, tick_s)
            unallocated[gpu] = delta
        self._last_tick[node] = tick_s
        return ScrapeDeltas(
            node,
            first,
            tuple(pods),
            unallocated,
            resets,
            tuple(expired),
            tuple(sorted(pruned)),
            regressions,
            epoch,
            ticks,
            implausible,
            tuple(regressed),
        )

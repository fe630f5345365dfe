"""The agent's ``/metrics``: a custom collector that renders one immutable :class:`ExportView` per scrape.

Nothing here keeps state between scrapes: every scrape asks the injected ``view_provider`` for the latest
view and builds fresh metric families from it, so the exposition holds exactly the pods the ledger still
retains (running pods and finished pods inside their retention window) and grows linearly with them.

Label discipline (see :mod:`jouleledger.core.contract`): per-pod series carry only ``namespace``, ``pod``,
``container``, ``node`` and ``gpu``; the pod UID, its owner and its allow-listed labels appear only on
``jouleledger_pod_info``. A pod re-created under the same name is a second ledger record with the same
``namespace``/``pod``/``container``/``gpu`` labels; its counters are summed into one series (the sum only
grows while both are retained, and the operator's reset handling covers the drop when the older record
expires).

Finished pods stay in the exposition for the agent's retention window, so that every consumer (Prometheus, an
operator that was down for a while) reads their final totals. A consumer that has already folded them says so
and stops paying for them: ``/metrics?folded_until=T`` (:func:`scoped_registry`) leaves out every pod record that
finished at or before ``T``. ``T`` must be a ``jouleledger_pod_finished_timestamp_seconds`` value (the agent's
sample clock, which is what ``finished`` times are measured on) taken from a scrape of this agent whose contents
the consumer has durably folded, typically the largest such value. Why that is safe: finish times are sample
times and sample times grow tick by tick, so every record that finished at or before ``T`` finished in a tick
that scrape already showed, with its final totals (a finished record's counters never change again; a pod that
comes back is running again and exported again). ``T`` belongs to one run of the agent's counters: after they
reset (a new ``epoch``, or counters that went down) the consumer sends no ``T`` until it has folded a scrape of
the new run. A scrape without the parameter (Prometheus) still sees every retained pod. A ``T`` later than the
agent's latest sample time is ignored (the clock stepped back, or ``T`` is from another run). What remains
assumed is that the sample clock does not step back by more than a tick and then catch up past ``T`` before the
consumer has stored the scrapes of the repeated ticks (NTP slews rather than steps).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from jouleledger.core import contract as names
from jouleledger.core.snapshot import AgentStatus, ExportView, LedgerSnapshot, PodRecord

__all__ = [
    "FOLDED_UNTIL_PARAM",
    "POD_LABELS",
    "AgentCollector",
    "label_name_for",
    "pod_info_label_names",
    "scoped_registry",
    "without_folded",
]

FOLDED_UNTIL_PARAM = names.FOLDED_UNTIL_PARAM
"""The ``/metrics`` query parameter: unix seconds up to which the scraper has folded the agent's finished pods."""

MJ_PER_J = 1000

POD_LABELS: tuple[str, ...] = ("namespace", "pod", "container", "node", "gpu")
"""The only labels of the per-pod series (energy, GPU-seconds)."""

_POD_INFO_FIXED: tuple[str, ...] = (
    "namespace",
    "pod",
    "node",
    "uid",
    "owner_kind",
    "owner_name",
    "owner_uid",
)

_HELP = names.HELP


def label_name_for(pod_label_key: str) -> str:
    """The ``jouleledger_pod_info`` label name of a pod label key: ``app.kubernetes.io/name`` ->
    ``label_app_kubernetes_io_name`` (every character outside ``[A-Za-z0-9_]`` becomes ``_``)."""
    if not pod_label_key:
        raise ValueError("pod label key must not be empty")
    return "label_" + names.sanitize_label(pod_label_key)


def pod_info_label_names(label_allowlist: Iterable[str], *, strict: bool = False) -> tuple[tuple[str, str], ...]:
    """``(pod label key, info label name)`` pairs for an allow-list, in allow-list order.

    Two keys that sanitise to the same label name (``a.b`` and ``a_b``) cannot both be exported: with
    ``strict`` (configuration validation) that raises :class:`ValueError`; otherwise the first key wins and
    the later one is left out, so that a scrape never fails on configuration that slipped through.
    """
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for key in label_allowlist:
        label = label_name_for(key)
        if label in seen:
            if seen[label] == key:
                continue
            if strict:
                raise ValueError(
                    f"pod label keys {seen[label]!r} and {key!r} both map to the metric label {label!r}; "
                    "allow-list only one of them"
                )
            continue
        seen[label] = key
        pairs.append((key, label))
    return tuple(pairs)


@dataclass(slots=True)
class _PodSeries:
    energy_mj: int = 0
    gpu_seconds: float = 0.0
    from_power_mj: int = 0


class AgentCollector:
    """A prometheus_client collector for the agent: register it on an injected ``CollectorRegistry``.

    ``view_provider`` returns the latest immutable :class:`ExportView`; it is called once per scrape and must
    be cheap and thread-safe (typically it returns an attribute that the agent loop replaces after each tick).
    ``folded_until_s`` leaves out the pods that finished at or before it (:func:`without_folded`).
    """

    def __init__(self, view_provider: Callable[[], ExportView], *, folded_until_s: float | None = None) -> None:
        self._view_provider = view_provider
        self._folded_until_s = folded_until_s

    def describe(self) -> Iterator[Metric]:
        """The families this collector exports (no samples), so that a registry can detect name clashes."""
        empty = LedgerSnapshot(node="", t_s=0.0, pods={}, devices=(), gpus=())
        status = AgentStatus(node="", backend="", simulated=False, version="")
        for family in _families(ExportView(ledger=empty, status=status)):
            family.samples.clear()
            yield family

    def collect(self) -> Iterator[Metric]:
        """Fresh metric families built from the latest view."""
        view = self._view_provider()
        if self._folded_until_s is not None:
            view = without_folded(view, self._folded_until_s)
        return iter(_families(view))


def without_folded(view: ExportView, folded_until_s: float) -> ExportView:
    """``view`` without the pods that finished at or before ``folded_until_s`` (and their device totals).

    A ``folded_until_s`` later than the view's own sample time cannot come from a scrape of these counters (the
    clock stepped back, or the scraper kept a time from an earlier run): the view is then returned whole.
    """
    ledger = view.ledger
    if folded_until_s > ledger.t_s:
        return view
    folded = {
        key
        for key, record in ledger.pods.items()
        if record.finished_s is not None and record.finished_s <= folded_until_s
    }
    if not folded:
        return view
    pods = {key: record for key, record in ledger.pods.items() if key not in folded}
    devices = tuple(device for device in ledger.devices if device.pod_key not in folded)
    return dataclasses.replace(view, ledger=dataclasses.replace(ledger, pods=pods, devices=devices))


def scoped_registry(
    view_provider: Callable[[], ExportView],
) -> Callable[[Mapping[str, list[str]]], CollectorRegistry | None]:
    """The :class:`~jouleledger.metrics.server.MetricsServer` ``scoped`` hook: a one-request registry for
    ``?folded_until=T`` (a finite number of unix seconds, given once); None (the server's registry) without it."""

    def build(query: Mapping[str, list[str]]) -> CollectorRegistry | None:
        values = query.get(FOLDED_UNTIL_PARAM)
        if values is None:
            return None
        if len(values) != 1:
            raise ValueError(f"{FOLDED_UNTIL_PARAM} must be given once, not {len(values)} times")
        try:
            folded_until_s = float(values[0])
        except ValueError:
            folded_until_s = math.nan
        if not math.isfinite(folded_until_s):
            raise ValueError(f"{FOLDED_UNTIL_PARAM} must be a finite number of unix seconds, not {values[0]!r}")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(view_provider, folded_until_s=folded_until_s))
        return registry

    return build


def _families(view: ExportView) -> list[Metric]:
    return [
        *_pod_families(view.ledger, view.label_allowlist),
        *_gpu_families(view.ledger),
        *_self_families(view.ledger, view.status),
    ]


def _pod_families(ledger: LedgerSnapshot, label_allowlist: Iterable[str]) -> list[Metric]:
    node = ledger.node
    series: dict[tuple[str, str, str, str], _PodSeries] = {}
    for device in ledger.devices:
        key = (device.namespace, device.pod, device.container, device.device)
        totals = series.get(key)
        if totals is None:
            totals = series[key] = _PodSeries()
        totals.energy_mj += device.energy_mj
        totals.gpu_seconds += device.gpu_seconds
        totals.from_power_mj += device.energy_from_power_mj

    energy = CounterMetricFamily(names.POD_ENERGY, _HELP[names.POD_ENERGY], labels=POD_LABELS)
    from_power = CounterMetricFamily(names.POD_ENERGY_FROM_POWER, _HELP[names.POD_ENERGY_FROM_POWER], labels=POD_LABELS)
    gpu_seconds = CounterMetricFamily(names.POD_GPU_SECONDS, _HELP[names.POD_GPU_SECONDS], labels=POD_LABELS)
    for (namespace, pod, container, device_id), totals in sorted(series.items()):
        labels = [namespace, pod, container, node, device_id]
        energy.add_metric(labels, totals.energy_mj / MJ_PER_J)
        if totals.from_power_mj:
            from_power.add_metric(labels, totals.from_power_mj / MJ_PER_J)
        gpu_seconds.add_metric(labels, totals.gpu_seconds)

    info = InfoMetricFamily(names.POD_INFO, _HELP[names.POD_INFO], labels=())
    allowed = pod_info_label_names(label_allowlist)
    # A namespace/pod name counts as finished only when every retained record of that name has finished,
    # matching the per-pod series, which sum all of them.
    finished: dict[tuple[str, str], float | None] = {}
    info_seen: set[tuple[str, ...]] = set()
    for record in sorted(ledger.pods.values(), key=_record_order):
        info_labels = _pod_info_labels(record, node, allowed)
        identity = tuple(info_labels.values())
        if identity not in info_seen:  # two records that differ only in what is not exported: one series
            info_seen.add(identity)
            info.add_metric([], info_labels)
        name_key = (record.namespace, record.name)
        earlier = finished.get(name_key, record.finished_s)
        if record.finished_s is None or earlier is None:
            finished[name_key] = None
        else:
            finished[name_key] = max(earlier, record.finished_s)

    finished_family = GaugeMetricFamily(
        names.POD_FINISHED, _HELP[names.POD_FINISHED], labels=("namespace", "pod", "node")
    )
    for (namespace, pod), finished_s in sorted(finished.items()):
        if finished_s is not None:
            finished_family.add_metric([namespace, pod, node], finished_s)
    return [energy, from_power, gpu_seconds, info, finished_family]


def _record_order(record: PodRecord) -> tuple[str, str, float, str]:
    return (record.namespace, record.name, record.first_seen_s, record.uid)


def _pod_info_labels(record: PodRecord, node: str, allowed: tuple[tuple[str, str], ...]) -> dict[str, str]:
    owner = record.owner
    labels = {
        "namespace": record.namespace,
        "pod": record.name,
        "node": node,
        "uid": record.uid,
        "owner_kind": owner.kind if owner is not None else "",
        "owner_name": owner.name if owner is not None else "",
        "owner_uid": owner.uid if owner is not None else "",
    }
    for key, label in allowed:
        labels[label] = record.labels.get(key, "")
    return labels


def _gpu_families(ledger: LedgerSnapshot) -> list[Metric]:
    node = ledger.node
    measured = CounterMetricFamily(names.GPU_ENERGY, _HELP[names.GPU_ENERGY], labels=("node", "gpu", "model"))
    from_power = CounterMetricFamily(
        names.GPU_ENERGY_FROM_POWER, _HELP[names.GPU_ENERGY_FROM_POWER], labels=("node", "gpu")
    )
    unallocated = CounterMetricFamily(names.GPU_UNALLOCATED, _HELP[names.GPU_UNALLOCATED], labels=("node", "gpu"))
    power = GaugeMetricFamily(names.GPU_POWER, _HELP[names.GPU_POWER], labels=("node", "gpu"))
    limit = GaugeMetricFamily(names.GPU_POWER_LIMIT, _HELP[names.GPU_POWER_LIMIT], labels=("node", "gpu"))
    for gpu in sorted(ledger.gpus, key=lambda g: g.uuid):
        measured.add_metric([node, gpu.uuid, gpu.model], gpu.measured_mj / MJ_PER_J)
        if gpu.energy_from_power_mj:
            from_power.add_metric([node, gpu.uuid], gpu.energy_from_power_mj / MJ_PER_J)
        unallocated.add_metric([node, gpu.uuid], gpu.unallocated_mj / MJ_PER_J)
        if gpu.power_w is not None:
            power.add_metric([node, gpu.uuid], gpu.power_w)
        if gpu.power_limit_w is not None:
            limit.add_metric([node, gpu.uuid], gpu.power_limit_w)
    return [measured, from_power, unallocated, power, limit]


def _self_families(ledger: LedgerSnapshot, status: AgentStatus) -> list[Metric]:
    node = status.node
    info = InfoMetricFamily(names.AGENT_INFO, _HELP[names.AGENT_INFO], labels=())
    info.add_metric(
        [],
        {
            "node": node,
            "backend": status.backend,
            "simulated": "true" if status.simulated else "false",
            "version": status.version,
            "epoch": status.epoch,
        },
    )
    rejected = CounterMetricFamily(names.AGENT_REJECTED, _HELP[names.AGENT_REJECTED], labels=("node", "gpu", "reason"))
    for (gpu_uuid, reason), count in sorted(ledger.rejected.items()):
        rejected.add_metric([ledger.node, gpu_uuid, reason], count)
    read_errors = CounterMetricFamily(
        names.AGENT_READ_ERRORS, _HELP[names.AGENT_READ_ERRORS], labels=("node", "gpu", "kind")
    )
    for (gpu_uuid, kind), count in sorted(status.reading_errors.items()):
        read_errors.add_metric([node, gpu_uuid, kind], count)
    return [
        info,
        _node_counter(names.AGENT_TICKS, node, status.ticks_total),
        _node_counter(names.AGENT_TICK_CPU, node, status.tick_cpu_seconds_total),
        _node_gauge(names.AGENT_LAST_TICK, node, status.last_tick_unix_s),
        rejected,
        read_errors,
        _node_gauge(names.AGENT_POD_SOURCE_UP, node, 1.0 if status.pod_source_up else 0.0),
        _node_counter(names.AGENT_POD_SOURCE_ERRORS, node, status.pod_source_errors_total),
        _node_counter(names.AGENT_CHECKPOINT_WRITES, node, status.checkpoint_writes_total),
        _node_counter(names.AGENT_CHECKPOINT_ERRORS, node, status.checkpoint_errors_total),
    ]


def _node_counter(name: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, _HELP[name], labels=("node",))
    family.add_metric([node], value)
    return family


def _node_gauge(name: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, _HELP[name], labels=("node",))
    family.add_metric([node], value)
    return family

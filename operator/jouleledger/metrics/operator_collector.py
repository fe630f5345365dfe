"""The operator's ``/metrics`` (namespace/team roll-ups and self-metrics), and parsing of the agents' exposition.

:class:`OperatorCollector` builds fresh families from one immutable
:class:`~jouleledger.core.operator_stats.OperatorView` per scrape. Roll-up counters count what this operator process
folded since it started (a restart is an ordinary counter reset for ``increase()``/``rate()``); the authoritative
per-workload totals live in the ``WorkloadFootprint`` objects.

:func:`parse_exposition` turns an agent's Prometheus text exposition into plain ``(sample, labels, value)``
tuples for :func:`jouleledger.core.deltas.parse_agent_samples`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.core import contract as names
from jouleledger.core.deltas import Sample
from jouleledger.core.footprints import RollupSnapshot, Totals
from jouleledger.core.memo import trim_text_cache
from jouleledger.core.operator_stats import DELAY_BUCKETS_S, PASS_BUCKETS_S, OperatorView
from jouleledger.core.units import MJ_PER_J

__all__ = ["ExpositionError", "LabelsCache", "OperatorCollector", "parse_exposition"]


class ExpositionError(ValueError):
    """The text is not a valid Prometheus exposition."""


_ROW = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}\n]*)\})?[ \t]+(\S+)(?:[ \t]+-?[0-9]+)?[ \t]*$", re.M)
_LABELS = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*,?')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\n]*)"')

LabelsCache = dict[str, Mapping[str, str]]
"""Label sets already parsed, by their text: an agent repeats the same ones at every scrape (never mutate them)."""


def _parse_simple(text: str, cache: LabelsCache | None = None) -> list[Sample] | None:
    """A strict, fast parser for what agents write (one regular expression over the whole text, label sets from
    ``cache`` when seen before); None when any line is unusual (escapes, empty lines, carriage returns, spacing)."""
    if "\\" in text or "\r" in text or "\n\n" in text or text.startswith("\n"):
        return None
    rows = _ROW.findall(text)
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    comments = text.count("\n#") + (1 if text.startswith("#") else 0)
    if len(rows) != lines - comments:
        return None  # a line that is neither a comment nor a plain sample
    if cache is None:
        cache = {}
    else:
        trim_text_cache(cache, len(rows))
    samples: list[Sample] = []
    append = samples.append
    get = cache.get
    try:
        for name, labels_text, value_text in rows:
            labels = get(labels_text)
            if labels is None:
                if labels_text and _LABELS.fullmatch(labels_text) is None:
                    return None
                labels = cache[labels_text] = dict(_LABEL.findall(labels_text))
            append((name, labels, float(value_text)))
    except ValueError:
        return None
    return samples


def parse_exposition(text: str, labels_cache: LabelsCache | None = None) -> list[Sample]:
    """Every sample of a Prometheus text exposition as ``(sample name, labels, value)``.

    Agents' expositions take a strict fast path (about ten times faster than ``prometheus_client.parser``, which
    matters at thousands of pods per pass); anything that path does not accept (escaped label values, odd spacing)
    is parsed by ``prometheus_client.parser``, which has the last word. ``labels_cache`` (one per agent, kept across
    scrapes) shares the label sets of unchanged series instead of parsing them again: the samples' label mappings
    must then be read only.
    """
    simple = _parse_simple(text, labels_cache)
    if simple is not None:
        return simple
    try:
        return [
            (sample.name, dict(sample.labels), _float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except (ValueError, TypeError, IndexError, KeyError) as error:
        raise ExpositionError(f"invalid exposition: {error}") from error


def _float(value: float) -> float:
    """A sample value as a float; an integer beyond float64 is infinite, as the fast path reads its digits (the
    value is then rejected as not finite downstream, like any other, instead of raising)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


_HELP = names.HELP


def _rollup_families(
    rollups: RollupSnapshot,
    key: str,
    *,
    groups: dict[str, Totals],
    energy: str,
    seconds: str,
    carbon: str,
    cost: str,
) -> list[Metric]:
    energy_family = CounterMetricFamily(energy, _HELP[energy], labels=(key,))
    seconds_family = CounterMetricFamily(seconds, _HELP[seconds], labels=(key,))
    carbon_family = CounterMetricFamily(carbon, _HELP[carbon], labels=(key, "scope"))
    cost_family = CounterMetricFamily(cost, _HELP[cost], labels=(key, "currency"))
    for name, totals in sorted(groups.items()):
        energy_family.add_metric([name], totals.energy_mj / MJ_PER_J)
        seconds_family.add_metric([name], totals.gpu_seconds)
        carbon_family.add_metric([name, "operational"], totals.operational_g)
        carbon_family.add_metric([name, "embodied"], totals.embodied_g)
        cost_family.add_metric([name, rollups.currency], totals.cost)
    return [energy_family, seconds_family, carbon_family, cost_family]


def _families(view: OperatorView) -> list[Metric]:
    rollups = view.rollups
    families = [
        *_rollup_families(
            rollups,
            "namespace",
            groups=dict(rollups.namespaces),
            energy=names.NAMESPACE_ENERGY,
            seconds=names.NAMESPACE_GPU_SECONDS,
            carbon=names.NAMESPACE_CARBON,
            cost=names.NAMESPACE_COST,
        ),
        *_rollup_families(
            rollups,
            "team",
            groups=dict(rollups.teams),
            energy=names.TEAM_ENERGY,
            seconds=names.TEAM_GPU_SECONDS,
            carbon=names.TEAM_CARBON,
            cost=names.TEAM_COST,
        ),
    ]
    unallocated = CounterMetricFamily(names.NODE_UNALLOCATED, _HELP[names.NODE_UNALLOCATED], labels=("node",))
    for node, energy_mj in sorted(rollups.unallocated_mj.items()):
        unallocated.add_metric([node], energy_mj / MJ_PER_J)
    idle_carbon = CounterMetricFamily(
        names.NODE_UNALLOCATED_CARBON, names.HELP[names.NODE_UNALLOCATED_CARBON], labels=("node",)
    )
    idle_cost = CounterMetricFamily(
        names.NODE_UNALLOCATED_COST, names.HELP[names.NODE_UNALLOCATED_COST], labels=("node", "currency")
    )
    for node in sorted(rollups.unallocated_mj):
        idle_carbon.add_metric([node], rollups.unallocated_g.get(node, 0.0))
        idle_cost.add_metric([node, rollups.currency], rollups.unallocated_cost.get(node, 0.0))
    intensity = GaugeMetricFamily(names.NODE_INTENSITY, _HELP[names.NODE_INTENSITY], labels=("node", "zone", "source"))
    for node, reading in sorted(view.node_intensity.items()):
        intensity.add_metric([node, reading.zone, reading.source], reading.g_per_kwh)
    scrapes = CounterMetricFamily(names.OPERATOR_SCRAPES, _HELP[names.OPERATOR_SCRAPES], labels=("result",))
    for result, count in sorted(view.scrapes.items()):
        scrapes.add_metric([result], count)
    agents = GaugeMetricFamily(names.OPERATOR_AGENTS, _HELP[names.OPERATOR_AGENTS], value=view.agents)
    resets = CounterMetricFamily(names.OPERATOR_AGENT_RESETS, _HELP[names.OPERATOR_AGENT_RESETS], labels=("node",))
    for node, count in sorted(view.counter_resets.items()):
        resets.add_metric([node], count)
    tampering = CounterMetricFamily(
        names.OPERATOR_ANNOTATION_TAMPERING, _HELP[names.OPERATOR_ANNOTATION_TAMPERING], value=view.tampering
    )
    written = CounterMetricFamily(
        names.OPERATOR_FOOTPRINTS_WRITTEN, _HELP[names.OPERATOR_FOOTPRINTS_WRITTEN], value=view.footprints_written
    )
    errors = CounterMetricFamily(
        names.OPERATOR_FOOTPRINT_ERRORS, _HELP[names.OPERATOR_FOOTPRINT_ERRORS], labels=("reason",)
    )
    for reason, count in sorted(view.footprint_errors.items()):
        errors.add_metric([reason], count)
    fallbacks = CounterMetricFamily(
        names.OPERATOR_INTENSITY_FALLBACKS, _HELP[names.OPERATOR_INTENSITY_FALLBACKS], labels=("provider", "reason")
    )
    for (provider, reason), count in sorted(view.intensity_fallbacks.items()):
        fallbacks.add_metric([provider, reason], count)
    rejected = CounterMetricFamily(
        names.OPERATOR_REJECTED_SAMPLES, _HELP[names.OPERATOR_REJECTED_SAMPLES], labels=("reason",)
    )
    for reason, count in sorted(view.rejected_samples.items()):
        rejected.add_metric([reason], count)
    pruned = CounterMetricFamily(names.OPERATOR_STALE_PRUNED, _HELP[names.OPERATOR_STALE_PRUNED], labels=("kind",))
    for kind, count in sorted(view.pruned.items()):
        pruned.add_metric([kind], count)
    completion_reads = CounterMetricFamily(
        names.OPERATOR_COMPLETION_READS, _HELP[names.OPERATOR_COMPLETION_READS], value=view.completion_reads
    )
    lag = GaugeMetricFamily(names.OPERATOR_OLDEST_TICK_AGE, _HELP[names.OPERATOR_OLDEST_TICK_AGE])
    if view.oldest_tick_age_s is not None:
        lag.add_metric([], view.oldest_tick_age_s)
    delay = _histogram(names.OPERATOR_ANNOTATION_DELAY, DELAY_BUCKETS_S, view.delay_bucket_counts, view.delay_sum_s)
    passes = _histogram(names.OPERATOR_PASS_DURATION, PASS_BUCKETS_S, view.pass_bucket_counts, view.pass_sum_s)
    phases = GaugeMetricFamily(names.OPERATOR_LAST_PASS_PHASE, _HELP[names.OPERATOR_LAST_PASS_PHASE], labels=("phase",))
    for phase, seconds in view.last_pass_phases_s.items():
        phases.add_metric([phase], seconds)
    return [
        *families,
        unallocated,
        idle_carbon,
        idle_cost,
        intensity,
        scrapes,
        agents,
        resets,
        written,
        tampering,
        errors,
        fallbacks,
        rejected,
        pruned,
        completion_reads,
        lag,
        delay,
        passes,
        phases,
    ]


def _histogram(name: str, bounds_s: tuple[float, ...], counts: tuple[int, ...], sum_s: float) -> Metric:
    """A histogram family from per-bucket (not cumulative) counts, the last one for ``+Inf``."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*bounds_s, math.inf), counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
    return HistogramMetricFamily(name, _HELP[name], buckets=buckets, sum_value=sum_s)


class OperatorCollector:
    """A prometheus_client collector: register it on an injected ``CollectorRegistry``.

    ``view_provider`` returns the latest :class:`OperatorView`; it is called from the metrics server's threads, so
    it must only read an attribute that the accounting loop replaces after each pass.
    """

    def __init__(self, view_provider: Callable[[], OperatorView]) -> None:
        self._view_provider = view_provider

    def describe(self) -> Iterator[Metric]:
        empty = OperatorView(rollups=RollupSnapshot({}, {}, {}, ""))
        for family in _families(empty):
            family.samples.clear()
            yield family

    def collect(self) -> Iterator[Metric]:
        return iter(_families(self._view_provider()))

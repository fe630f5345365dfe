"""The serving workloads' figures on the operator's ``/metrics``: energy and carbon per request and per token over
the latest interval (absent when that interval had no request or token), and the counters a report divides."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from jouleledger.core import contract as names
from jouleledger.core.serving import ServingView

__all__ = ["ServingCollector", "serving_families"]

_LABELS = ("namespace", "workload_kind", "workload")
_HELP = names.HELP


def serving_families(view: ServingView) -> list[Metric]:
    gauges = {
        name: GaugeMetricFamily(name, _HELP[name], labels=_LABELS)
        for name in (
            names.WORKLOAD_J_PER_REQUEST,
            names.WORKLOAD_J_PER_OUTPUT_TOKEN,
            names.WORKLOAD_J_PER_TOKEN,
            names.WORKLOAD_G_PER_1000_REQUESTS,
            names.WORKLOAD_SERVING_INTERVAL,
        )
    }
    counters = {
        name: CounterMetricFamily(name, _HELP[name], labels=_LABELS)
        for name in (
            names.WORKLOAD_SERVING_ENERGY,
            names.WORKLOAD_SERVING_CARBON,
            names.WORKLOAD_SERVING_REQUESTS,
            names.WORKLOAD_SERVING_PROMPT_TOKENS,
            names.WORKLOAD_SERVING_OUTPUT_TOKENS,
        )
    }
    for workload in view.workloads:
        labels = [workload.namespace, workload.kind, workload.name]
        latest = workload.latest
        if latest is not None:
            figures = {
                names.WORKLOAD_J_PER_REQUEST: latest.joules_per_request,
                names.WORKLOAD_J_PER_OUTPUT_TOKEN: latest.joules_per_output_token,
                names.WORKLOAD_J_PER_TOKEN: latest.joules_per_token,
                names.WORKLOAD_G_PER_1000_REQUESTS: latest.grams_per_1000_requests,
                names.WORKLOAD_SERVING_INTERVAL: latest.end_s - latest.start_s,
            }
            for name, value in figures.items():
                if value is not None:  # no request (or token) in the interval: no ratio
                    gauges[name].add_metric(labels, value)
        totals = workload.totals
        counters[names.WORKLOAD_SERVING_ENERGY].add_metric(labels, totals.energy_mj / 1000)
        counters[names.WORKLOAD_SERVING_CARBON].add_metric(labels, totals.carbon_g)
        counters[names.WORKLOAD_SERVING_REQUESTS].add_metric(labels, totals.requests)
        counters[names.WORKLOAD_SERVING_PROMPT_TOKENS].add_metric(labels, totals.prompt_tokens)
        counters[names.WORKLOAD_SERVING_OUTPUT_TOKENS].add_metric(labels, totals.output_tokens)
    reads = CounterMetricFamily(names.OPERATOR_SERVING_READS, _HELP[names.OPERATOR_SERVING_READS], labels=("result",))
    for result, count in sorted(view.reads.items()):
        reads.add_metric([result], count)
    return [*gauges.values(), *counters.values(), reads]


class ServingCollector:
    """Register on the operator's registry next to the OperatorCollector."""

    def __init__(self, view_provider: Callable[[], ServingView]) -> None:
        self._view_provider = view_provider

    def describe(self) -> Iterator[Metric]:
        for family in serving_families(ServingView()):
            family.samples.clear()
            yield family

    def collect(self) -> Iterator[Metric]:
        return iter(serving_families(self._view_provider()))

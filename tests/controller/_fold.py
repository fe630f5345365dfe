"""The operator's accounting of scrape outcomes without Kubernetes, for the fuzz tests: each ``ok`` scrape goes
through the delta tracker into a footprint book exactly as a pass folds it, every rejection is counted in an
:class:`OperatorStats` (by reason, as the accountant counts them), and the operator's own ``/metrics`` is rendered
from the result, so that a test can check what would be exported."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.controller.scrape import OK, ScrapeOutcome
from jouleledger.core.deltas import MAX_COUNTER_J, MAX_GPU_SECONDS, AgentScrape, DeltaTracker, PodIdentity
from jouleledger.core.footprints import Attribution, FootprintBook, IntervalRates, method_of
from jouleledger.core.operator_stats import OperatorStats
from jouleledger.core.units import MAX_COUNTER_MJ
from jouleledger.core.workload import WorkloadRef
from jouleledger.metrics.operator_collector import OperatorCollector

__all__ = ["FoldedLedger", "check_scrape"]


def check_scrape(scrape: AgentScrape) -> None:
    """What an accepted scrape may hold: bounded, finite, non-negative numbers only."""
    assert math.isfinite(scrape.last_tick_unix_s)
    assert math.isfinite(scrape.ticks)
    assert scrape.ticks >= 0
    for value in scrape.series.values():
        assert 0 <= value.energy_mj <= MAX_COUNTER_MJ
        assert 0 <= value.from_power_mj <= value.energy_mj
        assert math.isfinite(value.gpu_seconds)
        assert 0 <= value.gpu_seconds <= MAX_GPU_SECONDS
    for energy_mj in scrape.unallocated_mj.values():
        assert 0 <= energy_mj <= MAX_COUNTER_J * 1000 + 1
    for limit_w in scrape.power_limits_w.values():
        assert math.isfinite(limit_w)
        assert limit_w > 0
    for finished_s in scrape.finished_unix_s.values():
        assert math.isfinite(finished_s)


def _attribute(pod: PodIdentity) -> Attribution:
    return Attribution(WorkloadRef(pod.namespace, "Pod", pod.name, pod.uid))


class FoldedLedger:
    """Delta tracker, footprint book and self-metrics of one operator process."""

    def __init__(self) -> None:
        self.tracker = DeltaTracker()
        self.book = FootprintBook("USD")
        self.stats = OperatorStats()
        self._last_end: dict[str, float] = {}

    def fold(self, outcomes: Iterable[ScrapeOutcome], now: float) -> int:
        """Fold every ``ok`` outcome as a pass does; the energy counted (mJ)."""
        folded = 0
        for outcome in outcomes:
            self.stats.scrapes[outcome.result] = self.stats.scrapes.get(outcome.result, 0) + 1
            if outcome.result != OK or outcome.scrape is None:
                continue
            scrape = outcome.scrape
            check_scrape(scrape)
            for rejection in scrape.rejected:
                self.stats.count_rejected(rejection.reason)
            deltas = self.tracker.observe(scrape)
            self.stats.count_rejected("implausible_energy", deltas.implausible)
            self.stats.count_rejected("counter_regression", deltas.regressions)
            for delta in deltas.pods:
                assert delta.energy_mj >= 0
                assert 0 <= delta.from_power_mj <= delta.energy_mj
                assert math.isfinite(delta.gpu_seconds)
                assert delta.gpu_seconds >= 0
            rates = IntervalRates(
                start_unix_s=self._last_end.get(scrape.node, now),
                end_unix_s=now,
                zone="z",
                intensity_g_per_kwh=400.0,
                intensity_source="static",
                pue=1.2,
                price_per_kwh=0.2,
                currency="USD",
                method=method_of(scrape.backend, scrape.simulated),
                embodied_g_per_gpu_hour={"NVIDIA H100 80GB HBM3": 25.0},
                default_embodied_g_per_gpu_hour=10.0,
            )
            folded += self.book.fold(deltas, rates, _attribute, scrape.model_of).energy_mj
            self._last_end[scrape.node] = now
        return folded

    def energy_mj(self, pod_uid: str) -> int:
        account = self.book.accounts.get(pod_uid)
        return 0 if account is None else account.totals.energy_mj

    def check_footprints(self) -> None:
        """Every footprint and roll-up is finite and non-negative."""
        for account in self.book.accounts.values():
            totals = account.totals
            assert 0 <= totals.energy_from_power_mj <= totals.energy_mj <= MAX_COUNTER_MJ * 64
            for number in (totals.gpu_seconds, totals.operational_g, totals.embodied_g, totals.cost):
                assert math.isfinite(number), account
                assert number >= 0, account

    def exported(self) -> list[tuple[str, dict[str, str], float]]:
        """The operator's ``/metrics`` as it would be served now, parsed back; every value finite and >= 0."""
        registry = CollectorRegistry(auto_describe=False)
        view = self.stats.view(self.book.rollups(), {})
        registry.register(OperatorCollector(lambda: view))
        text = generate_latest(registry).decode("utf-8")
        samples = [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
        for name, labels, value in samples:
            assert math.isfinite(value), (name, labels, value)
            assert value >= 0, (name, labels, value)
        return samples

"""The operator's authoritative ledger: counter deltas per scrape, folded into per-workload footprints.

Two pieces, both pure (no I/O, no clocks: every time is passed in):

:class:`DeltaTracker` turns an agent's cumulative counters into per-scrape deltas.

- A series that went up contributes the difference; one that went **down** (an agent restarted without its
  checkpoint) contributes its **new value**, and the reset is counted. Deltas are never negative.
- A pod re-created under the same name shares its series with the old pod while the agent retains both. The
  tracker remembers each pod's *share* of every series (what was attributed to it), gives new energy to the
  newest pod of that name, and when the old pod's record expires (its UID leaves ``jouleledger_pod_info``) it
  subtracts the old share instead of mistaking the drop for a reset.
- **First sight** of a series: when it appears after the operator started tracking that agent (any scrape but
  the first successful one), the pod's counter started while it was being watched, so its full value is new
  energy (``origin="new"``). A series already present at the *first* scrape of an agent predates tracking
  (``origin="adopted"``): the operator (re)started while it ran. Its baseline must then come from the ledger that
  was persisted: :meth:`DeltaTracker.restore` loads, from every ``WorkloadFootprint``, the share of each series that
  footprint already includes. The footprint stores its totals *and* these watermarks in one object, written in one
  request, so the two are always consistent: a restored series continues from its watermark (energy folded and
  persisted before the restart is never counted twice, energy folded but not persisted is counted again exactly
  once), and an adopted series without a watermark was in no persisted total, so its full value is counted too.
  Nothing persisted is therefore lost or doubled; a finalized footprint never changes (its late energy is
  recorded apart). The caller must restore *before* the first scrape is folded.
- Unallocated (idle) energy has no persisted ledger: at an agent's first scrape it only sets the baseline.
- A series absent from ``prune_after_misses`` successful scrapes of its agent in a row is forgotten (the agent
  dropped the finished pod after its retention window).

:class:`Ledger` folds deltas into :class:`WorkloadAccount` objects. Each scrape is one interval of its node:
operational carbon is ``kWh x PUE x the interval's grid intensity`` of the node's zone, cost is
``kWh x PUE x price per kWh`` of the zone (the facility energy is what is billed, so PUE applies to cost as well
as to operational carbon), embodied carbon is ``GPU-hours x grams per GPU-hour`` of the GPU model (no PUE).
Namespace, team and per-node unallocated roll-ups count what *this process* folded, starting from zero, so that
Prometheus sees an ordinary counter reset when the operator restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from jouleledger.core.carbon import embodied_g, energy_cost, operational_g
from jouleledger.core.footprint_scrape import AgentScrape, PodIdentity, SeriesKey, SeriesValue
from jouleledger.core.workload import WorkloadRef

__all__ = [
    "ADOPTED",
    "CONTINUED",
    "NEW",
    "RESET",
    "UNASSIGNED_TEAM",
    "Attribution",
    "DeltaTracker",
    "FinalRecord",
    "FoldSummary",
    "IntervalRates",
    "Ledger",
    "PodDelta",
    "RollupSnapshot",
    "ScrapeDeltas",
    "Totals",
    "TotalsView",
    "WorkloadAccount",
]

CONTINUED: Final = "continued"
RESET: Final = "reset"
NEW: Final = "new"
ADOPTED: Final = "adopted"

UNASSIGNED_TEAM: Final = "unassigned"
"""Team of a workload whose pods carry no team label."""


# --- deltas --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Share:
    energy_mj: int = 0
    gpu_seconds: float = 0.0


@dataclass(slots=True)
class _SeriesState:
    energy_mj: int
    gpu_seconds: float
    shares: dict[str, _Share] = field(default_factory=dict)
    misses: int = 0


@dataclass(frozen=True, slots=True)
class PodDelta:
    """New energy and GPU-seconds of one pod on one series since the previous scrape.

    ``share_*`` is the pod's cumulative share of the series after this delta: the watermark its footprint stores.
    """

    key: SeriesKey
    pod: PodIdentity
    energy_mj: int
    gpu_seconds: float
    origin: str
    share_energy_mj: int
    share_gpu_seconds: float


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


class DeltaTracker:
    """Per-series baselines across scrapes (see the module docstring for the rules)."""

    def __init__(self, *, prune_after_misses: int = 8) -> None:
        if prune_after_misses < 1:
            raise ValueError(f"prune_after_misses must be at least 1, got {prune_after_misses}")
        self._prune_after = prune_after_misses
        self._series: dict[SeriesKey, _SeriesState] = {}
        self._by_node: dict[str, set[SeriesKey]] = {}
        self._unallocated: dict[tuple[str, str], int] = {}
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

    def restore(self, key: SeriesKey, pod_uid: str, energy_mj: int, gpu_seconds: float) -> None:
        """Load a persisted watermark: ``pod_uid``'s share of ``key`` that its footprint already includes.

        Shares of several pods of one series add up to its baseline. Restoring the same ``(key, pod_uid)`` twice
        keeps the larger share (a footprint is never behind itself).
        """
        if energy_mj < 0 or gpu_seconds < 0:
            raise ValueError(f"negative watermark for {key} / {pod_uid}: {energy_mj} mJ, {gpu_seconds} s")
        state = self._series.get(key)
        if state is None:
            state = self._series[key] = _SeriesState(0, 0.0)
            self._by_node.setdefault(key.node, set()).add(key)
        share = state.shares.setdefault(pod_uid, _Share())
        if energy_mj > share.energy_mj:
            state.energy_mj += energy_mj - share.energy_mj
            share.energy_mj = energy_mj
        if gpu_seconds > share.gpu_seconds:
            state.gpu_seconds += gpu_seconds - share.gpu_seconds
            share.gpu_seconds = gpu_seconds

    def observe(self, scrape: AgentScrape) -> ScrapeDeltas:
        """The deltas of one successful scrape; updates the baselines."""
        node = scrape.node
        first = node not in self._tracked
        self._tracked.add(node)
        keys = self._by_node.setdefault(node, set())
        pods: list[PodDelta] = []
        expired: list[tuple[SeriesKey, str]] = []
        resets = 0
        for key, value in scrape.series.items():
            identities = scrape.pods.get((key.namespace, key.pod), ())
            if not identities:  # parse_agent_samples never yields such a series; keep the baseline as is
                continue
            newest = identities[-1]
            state = self._series.get(key)
            if state is None:
                origin = ADOPTED if first else NEW
                energy_mj, gpu_seconds = value.energy_mj, value.gpu_seconds
                state = self._series[key] = _SeriesState(0, 0.0)
                keys.add(key)
            else:
                live = {identity.uid for identity in identities}
                vanished = [uid for uid in state.shares if uid not in live]
                expected_mj = state.energy_mj - sum(state.shares[uid].energy_mj for uid in vanished)
                expected_s = state.gpu_seconds - sum(state.shares[uid].gpu_seconds for uid in vanished)
                if value.energy_mj >= expected_mj:
                    origin = CONTINUED
                    energy_mj = value.energy_mj - expected_mj
                    gpu_seconds = max(0.0, value.gpu_seconds - expected_s)
                    dropped = vanished
                else:
                    origin = RESET
                    resets += 1
                    energy_mj, gpu_seconds = value.energy_mj, value.gpu_seconds
                    dropped = [uid for uid in state.shares if uid != newest.uid]
                    if newest.uid in state.shares:
                        state.shares[newest.uid] = _Share()
                for uid in dropped:
                    del state.shares[uid]
                    expired.append((key, uid))
            share = state.shares.setdefault(newest.uid, _Share())
            share.energy_mj += energy_mj
            share.gpu_seconds += gpu_seconds
            state.energy_mj, state.gpu_seconds, state.misses = value.energy_mj, value.gpu_seconds, 0
            pods.append(PodDelta(key, newest, energy_mj, gpu_seconds, origin, share.energy_mj, share.gpu_seconds))

        pruned: list[SeriesKey] = []
        for key in keys - scrape.series.keys():
            state = self._series[key]
            state.misses += 1
            if state.misses >= self._prune_after:
                pruned.append(key)
        for key in pruned:
            keys.discard(key)
            del self._series[key]

        unallocated: dict[str, int] = {}
        for gpu, value_mj in scrape.unallocated_mj.items():
            previous = self._unallocated.get((node, gpu))
            if previous is None:
                delta = 0 if first else value_mj
            elif value_mj >= previous:
                delta = value_mj - previous
            else:
                delta = value_mj
                resets += 1
            self._unallocated[(node, gpu)] = value_mj
            unallocated[gpu] = delta
        return ScrapeDeltas(node, first, tuple(pods), unallocated, resets, tuple(expired), tuple(sorted(pruned)))


# --- the ledger ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntervalRates:
    """What applies to one scrape interval ``(start_unix_s, end_unix_s]`` of one node."""

    start_unix_s: float
    end_unix_s: float
    zone: str
    intensity_g_per_kwh: float
    intensity_source: str
    pue: float
    price_per_kwh: float
    currency: str
    method: str
    embodied_g_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)  # by GPU model
    default_embodied_g_per_gpu_hour: float = 0.0

    def embodied_rate(self, model: str) -> float:
        return self.embodied_g_per_gpu_hour.get(model, self.default_embodied_g_per_gpu_hour)


@dataclass(slots=True)
class Totals:
    """Accumulated energy (integer mJ), GPU-seconds, operational/embodied grams CO2e and cost."""

    energy_mj: int = 0
    gpu_seconds: float = 0.0
    operational_g: float = 0.0
    embodied_g: float = 0.0
    cost: float = 0.0

    def add(self, energy_mj: int, gpu_seconds: float, operational: float, embodied: float, cost: float) -> None:
        self.energy_mj += energy_mj
        self.gpu_seconds += gpu_seconds
        self.operational_g += operational
        self.embodied_g += embodied
        self.cost += cost

    def view(self) -> TotalsView:
        return TotalsView(self.energy_mj, self.gpu_seconds, self.operational_g, self.embodied_g, self.cost)


@dataclass(frozen=True, slots=True)
class TotalsView:
    """An immutable copy of :class:`Totals`."""

    energy_mj: int = 0
    gpu_seconds: float = 0.0
    operational_g: float = 0.0
    embodied_g: float = 0.0
    cost: float = 0.0

    @property
    def carbon_g(self) -> float:
        return self.operational_g + self.embodied_g


@dataclass(frozen=True, slots=True)
class FinalRecord:
    """A finished Job's footprint, frozen once: what its annotations say, forever.

    ``complete`` is False when the deadline passed before every agent that ran the Job's pods reported a reading
    taken after the Job finished (``missing_nodes`` names them).
    """

    energy_mj: int
    gpu_seconds: float
    operational_g: float
    embodied_g: float
    cost: float
    currency: str
    intensity_sources: tuple[str, ...]
    methods: tuple[str, ...]
    completion_unix_s: float
    finalized_unix_s: float
    complete: bool = True
    missing_nodes: tuple[str, ...] = ()

    @property
    def carbon_g(self) -> float:
        return self.operational_g + self.embodied_g


@dataclass(slots=True)
class WorkloadAccount:
    """The running footprint of one workload, and the watermarks of the series it includes."""

    ref: WorkloadRef
    team: str
    currency: str
    totals: Totals = field(default_factory=Totals)
    first_seen_unix_s: float = 0.0
    last_seen_unix_s: float = 0.0
    interval_start_unix_s: float = 0.0
    interval_end_unix_s: float = 0.0
    pods: set[str] = field(default_factory=set)
    pods_before: int = 0  # pods counted before a restore whose UIDs are no longer kept
    nodes: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)
    watermarks: dict[tuple[SeriesKey, str], SeriesValue] = field(default_factory=dict)
    late_energy_mj: int = 0
    final: FinalRecord | None = None
    final_written: bool = False
    dirty: bool = True
    written_unix_s: float = 0.0

    @property
    def finalized(self) -> bool:
        return self.final is not None

    @property
    def pods_counted(self) -> int:
        return self.pods_before + len(self.pods)


@dataclass(frozen=True, slots=True)
class Attribution:
    """Where a pod's energy goes: its workload and team (``UNASSIGNED_TEAM`` when unlabelled)."""

    workload: WorkloadRef
    team: str = UNASSIGNED_TEAM


@dataclass(frozen=True, slots=True)
class FoldSummary:
    """What one fold changed: energy counted, late energy (finalized workloads) and workloads touched."""

    energy_mj: int
    late_energy_mj: int
    workloads: frozenset[str]
    unallocated_mj: int


@dataclass(frozen=True, slots=True)
class RollupSnapshot:
    """Roll-ups folded by this process, for the metrics collector. Keys: namespace, team, node, ``(zone, source)``."""

    namespaces: Mapping[str, TotalsView]
    teams: Mapping[str, TotalsView]
    unallocated_mj: Mapping[str, int]
    currency: str
    workloads: int = 0
    finalized: int = 0


class Ledger:
    """Workload accounts by UID, and namespace/team/node roll-ups."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.accounts: dict[str, WorkloadAccount] = {}
        self._holder: dict[tuple[SeriesKey, str], str] = {}  # watermark -> workload uid
        self._by_series: dict[SeriesKey, set[str]] = {}  # series -> pod uids with a watermark
        self._namespaces: dict[str, Totals] = {}
        self._teams: dict[str, Totals] = {}
        self._unallocated: dict[str, int] = {}

    def restore(self, account: WorkloadAccount) -> None:
        """Load an account from its persisted footprint (before the first fold)."""
        account.dirty = False
        account.final_written = account.final is not None
        self.accounts[account.ref.uid] = account
        for watermark in account.watermarks:
            self._index(watermark, account.ref.uid)

    def restore_into(self, tracker: DeltaTracker) -> int:
        """Load every account's watermarks into ``tracker``; returns how many."""
        count = 0
        for account in self.accounts.values():
            for (key, pod_uid), value in account.watermarks.items():
                tracker.restore(key, pod_uid, value.energy_mj, value.gpu_seconds)
                count += 1
        return count

    def _index(self, watermark: tuple[SeriesKey, str], workload_uid: str) -> None:
        self._holder[watermark] = workload_uid
        self._by_series.setdefault(watermark[0], set()).add(watermark[1])

    def _forget(self, watermark: tuple[SeriesKey, str]) -> None:
        workload_uid = self._holder.pop(watermark, None)
        uids = self._by_series.get(watermark[0])
        if uids is not None:
            uids.discard(watermark[1])
            if not uids:
                del self._by_series[watermark[0]]
        account = self.accounts.get(workload_uid or "")
        if account is not None and account.watermarks.pop(watermark, None) is not None:
            account.dirty = True

    def fold(
        self,
        deltas: ScrapeDeltas,
        rates: IntervalRates,
        attribute: Callable[[PodIdentity], Attribution],
        model_of: Callable[[str], str],
    ) -> FoldSummary:
        """Fold one scrape's deltas, all at ``rates``; ``attribute`` names each pod's workload and team,
        ``model_of`` the GPU model of a device id."""
        counted = late = 0
        touched: set[str] = set()
        for delta in deltas.pods:
            attribution = attribute(delta.pod)
            ref = attribution.workload
            account = self.accounts.get(ref.uid)
            if account is None:
                account = self.accounts[ref.uid] = WorkloadAccount(ref, attribution.team, self.currency)
                account.first_seen_unix_s = rates.end_unix_s
            watermark = (delta.key, delta.pod.uid)
            holder = self._holder.get(watermark)
            if holder is not None and holder != ref.uid:  # the pod moved workload (owner resolved later)
                self._forget(watermark)
            self._index(watermark, ref.uid)
            share = SeriesValue(delta.share_energy_mj, delta.share_gpu_seconds)
            if account.watermarks.get(watermark) != share:
                account.watermarks[watermark] = share
                account.dirty = True
            account.last_seen_unix_s = max(account.last_seen_unix_s, rates.end_unix_s)
            if delta.key.node not in account.nodes:
                account.nodes.add(delta.key.node)
                account.dirty = True
            touched.add(ref.uid)
            if delta.energy_mj == 0 and delta.gpu_seconds == 0.0:
                if account.final is None and delta.pod.uid not in account.pods:
                    account.pods.add(delta.pod.uid)
                    account.dirty = True
                continue
            operational = operational_g(delta.energy_mj, rates.pue, rates.intensity_g_per_kwh)
            embodied = embodied_g(delta.gpu_seconds, rates.embodied_rate(model_of(delta.key.device)))
            cost = energy_cost(delta.energy_mj, rates.pue, rates.price_per_kwh)
            self._namespaces.setdefault(ref.namespace, Totals()).add(
                delta.energy_mj, delta.gpu_seconds, operational, embodied, cost
            )
            self._teams.setdefault(account.team, Totals()).add(
                delta.energy_mj, delta.gpu_seconds, operational, embodied, cost
            )
            if account.final is not None:
                account.late_energy_mj += delta.energy_mj
                late += delta.energy_mj
                continue
            account.pods.add(delta.pod.uid)
            account.totals.add(delta.energy_mj, delta.gpu_seconds, operational, embodied, cost)
            account.sources.add(rates.intensity_source)
            account.methods.add(rates.method)
            if not account.interval_start_unix_s or rates.start_unix_s < account.interval_start_unix_s:
                account.interval_start_unix_s = rates.start_unix_s
            account.interval_end_unix_s = max(account.interval_end_unix_s, rates.end_unix_s)
            counted += delta.energy_mj
        for watermark in (*deltas.expired, *_pruned_watermarks(deltas.pruned, self._by_series)):
            self._forget(watermark)
        unallocated = sum(deltas.unallocated_mj.values())
        self._unallocated[deltas.node] = self._unallocated.get(deltas.node, 0) + unallocated
        return FoldSummary(counted, late, frozenset(touched), unallocated)

    def finalize(
        self,
        workload_uid: str,
        completion_unix_s: float,
        now_unix_s: float,
        *,
        missing_nodes: Iterable[str] = (),
    ) -> FinalRecord:
        """Freeze an account (idempotent: a finalized account returns its existing record unchanged)."""
        account = self.accounts[workload_uid]
        if account.final is not None:
            return account.final
        missing = tuple(sorted(missing_nodes))
        totals = account.totals
        account.final = FinalRecord(
            energy_mj=totals.energy_mj,
            gpu_seconds=totals.gpu_seconds,
            operational_g=totals.operational_g,
            embodied_g=totals.embodied_g,
            cost=totals.cost,
            currency=account.currency,
            intensity_sources=tuple(sorted(account.sources)),
            methods=tuple(sorted(account.methods)),
            completion_unix_s=completion_unix_s,
            finalized_unix_s=now_unix_s,
            complete=not missing,
            missing_nodes=missing,
        )
        account.dirty = True
        return account.final

    def forget(self, workload_uid: str) -> None:
        """Drop an account (its workload and footprint were deleted)."""
        account = self.accounts.pop(workload_uid, None)
        if account is None:
            return
        for watermark in list(account.watermarks):
            self._forget(watermark)

    def rollups(self) -> RollupSnapshot:
        return RollupSnapshot(
            namespaces={name: totals.view() for name, totals in self._namespaces.items()},
            teams={name: totals.view() for name, totals in self._teams.items()},
            unallocated_mj=dict(self._unallocated),
            currency=self.currency,
            workloads=len(self.accounts),
            finalized=sum(1 for account in self.accounts.values() if account.final is not None),
        )


def _pruned_watermarks(
    pruned: Iterable[SeriesKey], by_series: Mapping[SeriesKey, set[str]]
) -> list[tuple[SeriesKey, str]]:
    return [(key, uid) for key in pruned for uid in sorted(by_series.get(key, ()))]

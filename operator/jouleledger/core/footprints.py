"""Workload footprints: the operator's authoritative book of per-workload energy, carbon and cost, and finalisation.

:class:`FootprintBook` folds the deltas of one agent scrape (:mod:`jouleledger.core.deltas`) into
:class:`WorkloadAccount` objects. Each scrape is one interval of its node: operational carbon is
``kWh x PUE x the interval's grid intensity`` of the node's zone, cost is ``kWh x PUE x price per kWh`` (the facility
energy is what is billed), embodied carbon is ``GPU-hours x grams per GPU-hour`` of the GPU model (no PUE).
Namespace, team and per-node unallocated roll-ups count what *this process* folded, starting from zero, so that
Prometheus sees an ordinary counter reset when the operator restarts.

A finished Job's footprint is final once every agent that ran its pods has been scraped with a last tick **later**
than the Job's completion, or at the latest ``deadline_s`` after it (:func:`decide_finalization`); the
:class:`FinalRecord` then never changes and :func:`job_annotations` renders it (``energy-kwh`` and ``gpu-hours``
with 6 decimals, ``co2e-grams`` operational + embodied with 3, ``cost`` as ``"<amount with 4 decimals>
<currency>"``, ``intensity-source`` the sources used, ``method`` how the energy was measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jouleledger.core.carbon import embodied_g, energy_cost, operational_g
from jouleledger.core.deltas import RESET, DeltaTracker, PodIdentity, ScrapeDeltas, SeriesKey, SeriesValue
from jouleledger.core.frozen import quick_init
from jouleledger.core.model import Owner
from jouleledger.core.units import S_PER_HOUR, mj_to_kwh
from jouleledger.core.workload import WorkloadRef, resolve_workload

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
    "UNASSIGNED_TEAM",
    "AnsweredTicks",
    "Attribution",
    "Decision",
    "FinalRecord",
    "FoldSummary",
    "FootprintBook",
    "IntervalRates",
    "RollupSnapshot",
    "Totals",
    "WorkloadAccount",
    "attribute",
    "decide_finalization",
    "default_finalize_deadline_s",
    "default_write_interval_s",
    "job_annotations",
    "method_annotation",
    "method_of",
    "nodes_behind",
    "power_method_of",
]

UNASSIGNED_TEAM: Final = "unassigned"
"""Team of a workload whose pods carry no team label."""

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


COUNTER_METHOD: Final = "measured-nvml-energy-counter"
POWER_METHOD: Final = "integrated-nvml-power"
MIXED_METHOD: Final = "mixed"


def method_of(backend: str, simulated: bool) -> str:
    """How an agent backend measured the energy of its counters (simulated data always says so)."""
    if simulated:
        return "simulated"
    return _METHODS.get(backend, f"measured-{backend}" if backend else "unknown")


def power_method_of(backend: str, simulated: bool) -> str:
    """How an agent backend measured the energy it integrated from power: NVML power readings; simulated and
    replayed data keep their own method."""
    method = method_of(backend, simulated)
    return POWER_METHOD if method == COUNTER_METHOD else method


def method_annotation(methods: Iterable[str]) -> str:
    """The ``method`` annotation: ``mixed`` when the energy came from NVML counters and NVML power integration
    both, otherwise the methods used (comma-separated, sorted), ``none`` without energy."""
    used = set(methods)
    if {COUNTER_METHOD, POWER_METHOD} <= used:
        used = (used - {COUNTER_METHOD, POWER_METHOD}) | {MIXED_METHOD}
    return ",".join(sorted(used)) or "none"


# --- the ledger ----------------------------------------------------------------------------------------------


@quick_init
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
    method: str  # of energy from counters
    power_method: str = "integrated-nvml-power"  # of energy integrated from power
    embodied_g_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)  # by GPU model
    default_embodied_g_per_gpu_hour: float = 0.0

    def embodied_rate(self, model: str) -> float:
        return self.embodied_g_per_gpu_hour.get(model, self.default_embodied_g_per_gpu_hour)


@quick_init
@dataclass(frozen=True, slots=True)
class Totals:
    """Energy (integer mJ), GPU-seconds, operational/embodied grams CO2e and cost: one value, added with ``+``."""

    energy_mj: int = 0
    gpu_seconds: float = 0.0
    operational_g: float = 0.0
    embodied_g: float = 0.0
    cost: float = 0.0
    energy_from_power_mj: int = 0
    """The part of ``energy_mj`` integrated from power readings (no energy counter, or its delta rejected)."""

    @property
    def carbon_g(self) -> float:
        return self.operational_g + self.embodied_g

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.energy_mj + other.energy_mj,
            self.gpu_seconds + other.gpu_seconds,
            self.operational_g + other.operational_g,
            self.embodied_g + other.embodied_g,
            self.cost + other.cost,
            self.energy_from_power_mj + other.energy_from_power_mj,
        )


ZERO: Final = Totals()


@quick_init
@dataclass(frozen=True, slots=True)
class FinalRecord:
    """A finished Job's footprint, frozen once: what its annotations say, forever.

    ``complete`` is False when the deadline passed before every agent that ran the Job's pods reported a reading
    taken after the Job finished (``missing_nodes`` names them).
    """

    totals: Totals
    currency: str
    intensity_sources: tuple[str, ...]
    methods: tuple[str, ...]
    completion_unix_s: float
    finalized_unix_s: float
    complete: bool = True
    missing_nodes: tuple[str, ...] = ()


@dataclass(slots=True)
class WorkloadAccount:
    """The running footprint of one workload, and the watermarks of the series it includes."""

    ref: WorkloadRef
    team: str
    currency: str
    totals: Totals = ZERO
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
    urgent: bool = False  # a reset was folded: persist now, not at the next write interval
    written_unix_s: float = 0.0
    folded_until: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Per node ``(epoch, folded_until)`` when last written (:mod:`jouleledger.core.folded`)."""

    @property
    def finalized(self) -> bool:
        return self.final is not None

    @property
    def pods_counted(self) -> int:
        return self.pods_before + len(self.pods)

    def merge(self, previous: WorkloadAccount, adopt: Callable[[SeriesKey], bool] = lambda key: False) -> None:
        """Merge a persisted footprint of the same workload (forgotten, written meanwhile by another writer, or by
        another operator instance that saw the same counters), by the series watermarks: energy is counted once.

        A series share both hold under the same epoch is the same energy: the larger watermark is kept and only
        ``previous``'s excess over this one's is new. Energy ``previous`` holds in no such share (shares this one
        does not hold, or holds under another epoch, and energy whose shares were dropped) is new only by what
        exceeds this account's own such energy: both accounts' unshared energy is taken as common history (so
        merging with itself, or with an older copy of itself, changes nothing). New carbon and cost are those of
        ``previous`` per mJ (embodied per GPU-second). A final footprint stays final: ``previous``'s when it has
        one, else this one's; energy beyond the final totals is late energy.

        ``adopt`` names series this account cannot have held (of a node its process never tracked): a share of
        such a series that only ``previous`` holds is kept with its watermark, its energy new."""
        mine = _sums(self.watermarks.values())
        held: list[SeriesValue] = []
        raised_mj = raised_s = raised_p = 0.0
        for w, pv in previous.watermarks.items():
            av = self.watermarks.get(w)
            if av is None and adopt(w[0]):
                av = SeriesValue(0, 0.0, pv.epoch)
            if av is None or not _same_share(av, pv):
                continue
            held.append(pv)
            raised_mj += max(0, pv.energy_mj - av.energy_mj)
            raised_s += max(0.0, pv.gpu_seconds - av.gpu_seconds)
            raised_p += max(0, pv.from_power_mj - av.from_power_mj)
            self.watermarks[w] = SeriesValue(
                max(av.energy_mj, pv.energy_mj),
                max(av.gpu_seconds, pv.gpu_seconds),
                av.epoch or pv.epoch,
                max(av.ticks, pv.ticks),
                max(av.from_power_mj, pv.from_power_mj),
            )
        theirs = _sums(held)
        unshared_mine = max(0, self.totals.energy_mj + self.late_energy_mj - mine[0])
        unshared_theirs = max(0, previous.totals.energy_mj + previous.late_energy_mj - theirs[0])
        new_mj = int(raised_mj) + max(0, unshared_theirs - unshared_mine)
        if previous.final is not None:
            energy_mj = self.totals.energy_mj + self.late_energy_mj + new_mj
            self.totals, self.final = previous.totals, previous.final
            self.late_energy_mj = energy_mj - previous.totals.energy_mj
        elif self.final is not None:
            self.late_energy_mj += new_mj
        else:
            new_s = raised_s + max(0.0, (previous.totals.gpu_seconds - theirs[1]) - (self.totals.gpu_seconds - mine[1]))
            new_p = int(raised_p) + max(
                0, (previous.totals.energy_from_power_mj - theirs[2]) - (self.totals.energy_from_power_mj - mine[2])
            )
            self.totals = self.totals + _new_totals(previous.totals, self.totals, new_mj, new_s, min(new_p, new_mj))
        # pods a footprint counts without their UIDs may be pods this account knows by UID (common history)
        self.pods_before = max(self.pods_before, previous.pods_before - len(self.pods - previous.pods))
        self.pods |= previous.pods
        self.nodes |= previous.nodes
        self.sources |= previous.sources
        self.methods |= previous.methods
        if previous.first_seen_unix_s:
            mine_s = self.first_seen_unix_s or previous.first_seen_unix_s
            self.first_seen_unix_s = min(mine_s, previous.first_seen_unix_s)
        self.last_seen_unix_s = max(self.last_seen_unix_s, previous.last_seen_unix_s)
        if previous.interval_start_unix_s:
            self.interval_start_unix_s = min(
                self.interval_start_unix_s or previous.interval_start_unix_s, previous.interval_start_unix_s
            )
        self.interval_end_unix_s = max(self.interval_end_unix_s, previous.interval_end_unix_s)
        for node, (epoch, until_s) in previous.folded_until.items():
            if node not in self.folded_until or until_s > self.folded_until[node][1]:
                self.folded_until[node] = (epoch, until_s)
        self.dirty = True

    def written(self, now_unix_s: float) -> None:
        """Its footprint (and final record, if any) was persisted at ``now_unix_s``."""
        self.dirty, self.urgent, self.written_unix_s = False, False, now_unix_s
        self.final_written = self.final is not None


def _same_share(mine: SeriesValue | None, theirs: SeriesValue) -> bool:
    """Whether two watermarks of one ``(series, pod)`` count the same counters: the same epoch, or one of them
    taken before the agent had epochs (an upgraded agent's counters continue)."""
    return mine is not None and (mine.epoch == theirs.epoch or not mine.epoch or not theirs.epoch)


def _sums(values: Iterable[SeriesValue]) -> tuple[int, float, int]:
    energy_mj, gpu_seconds, from_power_mj = 0, 0.0, 0
    for value in values:
        energy_mj += value.energy_mj
        gpu_seconds += value.gpu_seconds
        from_power_mj += value.from_power_mj
    return energy_mj, gpu_seconds, from_power_mj


def _new_totals(theirs: Totals, mine: Totals, energy_mj: int, gpu_seconds: float, from_power_mj: int) -> Totals:
    """Totals of energy and GPU-seconds merged in: carbon and cost at the rates of the account they came from
    (of this one when that one holds no energy)."""
    if not energy_mj and not gpu_seconds:
        return ZERO
    rates = theirs if theirs.energy_mj else mine
    per_mj = energy_mj / rates.energy_mj if rates.energy_mj else 0.0
    embodied = theirs if theirs.gpu_seconds else mine
    per_s = gpu_seconds / embodied.gpu_seconds if embodied.gpu_seconds else 0.0
    return Totals(
        energy_mj,
        gpu_seconds,
        rates.operational_g * per_mj,
        embodied.embodied_g * per_s,
        rates.cost * per_mj,
        from_power_mj,
    )


@quick_init
@dataclass(frozen=True, slots=True)
class Attribution:
    """Where a pod's energy goes: its workload and team (``UNASSIGNED_TEAM`` when unlabelled)."""

    workload: WorkloadRef
    team: str = UNASSIGNED_TEAM


def attribute(
    pod: PodIdentity,
    owner: Owner | None,
    owners: Mapping[str, Owner | None],
    *,
    team_key: str,
    watched_team: str = "",
) -> Attribution:
    """A pod's workload (the top controller owner above ``owner``, its verified owner, see
    :func:`~jouleledger.core.workload.resolve_workload`) and team: the pod's ``team_key`` label, else the team the
    pod watch knows (``watched_team``), else ``UNASSIGNED_TEAM``."""
    workload = resolve_workload(pod.namespace, pod.name, pod.uid, owner, owners)
    return Attribution(workload, pod.labels.get(team_key) or watched_team or UNASSIGNED_TEAM)


@quick_init
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

    namespaces: Mapping[str, Totals]
    teams: Mapping[str, Totals]
    unallocated_mj: Mapping[str, int]
    currency: str
    workloads: int = 0
    finalized: int = 0
    # idle energy's operational carbon and cost per node (same PUE, intensity and price as the node's pods)
    unallocated_g: Mapping[str, float] = field(default_factory=dict)
    unallocated_cost: Mapping[str, float] = field(default_factory=dict)


class FootprintBook:
    """The operator's book: workload accounts by UID, and namespace/team/node roll-ups."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.accounts: dict[str, WorkloadAccount] = {}
        self._holder: dict[tuple[SeriesKey, str], str] = {}  # watermark -> workload uid
        self._by_series: dict[SeriesKey, set[str]] = {}  # series -> pod uids with a watermark
        # Roll-up sums, the six fields of a Totals each, added in place by every fold (rollups() makes the Totals).
        self._namespaces: dict[str, list[Any]] = {}
        self._teams: dict[str, list[Any]] = {}
        self._unallocated: dict[str, int] = {}
        self._unallocated_g: dict[str, float] = {}
        self._unallocated_cost: dict[str, float] = {}

    def restore(self, account: WorkloadAccount) -> None:
        """Load an account from its persisted footprint (before the first fold)."""
        account.dirty = False
        account.final_written = account.final is not None
        self.accounts[account.ref.uid] = account
        for watermark in account.watermarks:
            self._index(watermark, account.ref.uid)

    def merge(
        self,
        account: WorkloadAccount,
        previous: WorkloadAccount,
        adopt: Callable[[SeriesKey], bool] = lambda key: False,
    ) -> None:
        """:meth:`WorkloadAccount.merge` of one of this book's accounts, its adopted watermarks indexed."""
        account.merge(previous, adopt)
        for watermark in account.watermarks:
            if self._holder.get(watermark) != account.ref.uid:
                self._index(watermark, account.ref.uid)

    def merge_stored(self, account: WorkloadAccount, previous: WorkloadAccount, tracker: DeltaTracker) -> None:
        """Merge the footprint found stored (``previous``: another writer's) into one of this book's accounts, and
        continue ``tracker`` from what is now counted: a raised share, or a share of a series it never saw. The
        stored watermarks of nodes the tracker does not follow are adopted."""
        before = dict(account.watermarks)
        tracked = tracker.tracked_nodes
        self.merge(account, previous, adopt=lambda key: key.node not in tracked)
        for watermark, theirs in previous.watermarks.items():
            merged = account.watermarks.get(watermark)
            if merged is not None and merged != before.get(watermark):
                tracker.restore(*watermark, merged)
            elif merged is None and tracker.baseline(watermark[0]) is None:
                tracker.restore(*watermark, theirs)

    def watermarks(self) -> Iterable[tuple[SeriesKey, str, SeriesValue]]:
        """Every account's watermarks ``(series, pod uid, share)``, to restore a :class:`DeltaTracker` from."""
        for account in self.accounts.values():
            for (key, pod_uid), value in account.watermarks.items():
                yield key, pod_uid, value

    def persisted(self, key: SeriesKey, pod_uid: str) -> bool:
        """Whether the footprint holding ``pod_uid``'s share of ``key`` is written with it (True when no account of
        this book holds that share: there is nothing of it to write)."""
        holder = self._holder.get((key, pod_uid))
        account = None if holder is None else self.accounts.get(holder)
        return account is None or not account.dirty

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
        # The roll-ups' sums (kept as sums) and this fold's per workload, added in the order Totals would add them
        # (the same floats); a workload's Totals made once per fold.
        namespaces, teams = self._namespaces, self._teams
        workloads: dict[str, tuple[WorkloadAccount, list[Any]]] = {}
        models: dict[str, str] = {}
        for delta in deltas.pods:
            attribution = attribute(delta.pod)
            ref = attribution.workload
            account = self.accounts.get(ref.uid)
            if account is None:
                account = self.accounts[ref.uid] = WorkloadAccount(ref, attribution.team, self.currency)
                account.first_seen_unix_s = rates.end_unix_s
            watermark = (delta.key, delta.pod.uid)
            holder = self._holder.get(watermark)
            if holder != ref.uid:  # indexed already when it is this workload's
                if holder is not None:  # the pod moved workload (owner resolved later)
                    self._forget(watermark)
                self._index(watermark, ref.uid)
            share = delta.share  # under the scrape's epoch and ticks
            before = account.watermarks.get(watermark)
            account.watermarks[watermark] = share
            if (  # a new tick count alone is no change to persist
                before is None
                or before.energy_mj != share.energy_mj
                or before.gpu_seconds != share.gpu_seconds
                or before.from_power_mj != share.from_power_mj
                or before.epoch != share.epoch
            ):
                account.dirty = True
            if delta.origin == RESET:
                account.urgent = True
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
            model = models.get(delta.key.device)
            if model is None:
                model = models[delta.key.device] = model_of(delta.key.device)
            added = (
                delta.energy_mj,
                delta.gpu_seconds,
                operational_g(delta.energy_mj, rates.pue, rates.intensity_g_per_kwh),
                embodied_g(delta.gpu_seconds, rates.embodied_rate(model)),
                energy_cost(delta.energy_mj, rates.pue, rates.price_per_kwh),
                delta.from_power_mj,
            )
            _add(_sums_of(namespaces, ref.namespace), added)
            _add(_sums_of(teams, account.team), added)
            if account.final is not None:
                account.late_energy_mj += delta.energy_mj
                late += delta.energy_mj
                continue
            account.pods.add(delta.pod.uid)
            running = workloads.get(ref.uid)
            if running is None or running[0] is not account:
                running = workloads[ref.uid] = (account, _fields(account.totals))
            _add(running[1], added)
            account.sources.add(rates.intensity_source)
            if delta.from_power_mj:
                account.methods.add(rates.power_method)
            if delta.energy_mj > delta.from_power_mj:
                account.methods.add(rates.method)
            if not account.interval_start_unix_s or rates.start_unix_s < account.interval_start_unix_s:
                account.interval_start_unix_s = rates.start_unix_s
            account.interval_end_unix_s = max(account.interval_end_unix_s, rates.end_unix_s)
            counted += delta.energy_mj
        for account, sums in workloads.values():
            account.totals = Totals(*sums)
        for watermark in deltas.regressed:  # the agent went back: only the footprint still holds these shares
            behind = self.accounts.get(self._holder.get(watermark, ""))
            if behind is not None:
                behind.dirty = behind.urgent = True
        for watermark in (*deltas.expired, *_pruned_watermarks(deltas.pruned, self._by_series)):
            self._forget(watermark)
        unallocated = sum(deltas.unallocated_mj.values())
        self._unallocated[deltas.node] = self._unallocated.get(deltas.node, 0) + unallocated
        grams = operational_g(unallocated, rates.pue, rates.intensity_g_per_kwh)
        self._unallocated_g[deltas.node] = self._unallocated_g.get(deltas.node, 0.0) + grams
        cost = energy_cost(unallocated, rates.pue, rates.price_per_kwh)
        self._unallocated_cost[deltas.node] = self._unallocated_cost.get(deltas.node, 0.0) + cost
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
        account.final = FinalRecord(
            totals=account.totals,
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

    def due_for_write(self, now_unix_s: float, write_interval_s: float, limit: int) -> list[WorkloadAccount]:
        """Changed accounts to persist now: final ones not yet written and those a reset was folded into at once,
        others once ``write_interval_s`` passed since their last write; in that order, then the least recently
        written first, at most ``limit``."""
        due = [
            account
            for account in self.accounts.values()
            if account.dirty
            and (
                (account.final is not None and not account.final_written)
                or account.urgent
                or now_unix_s - account.written_unix_s >= write_interval_s
            )
        ]
        due.sort(key=lambda account: (account.final is None, not account.urgent, account.written_unix_s))
        return due[:limit]

    def collectable(self, now_unix_s: float, done_jobs: Iterable[str], idle_s: float = 3600.0) -> list[str]:
        """Written accounts that hold no series any more: final ones whose Job is done, others idle for ``idle_s``.

        A forgotten account that sees energy again is merged with its persisted footprint when written."""
        done = set(done_jobs)
        return [
            uid
            for uid, account in self.accounts.items()
            if not account.dirty
            and not account.watermarks
            and (account.final is not None or now_unix_s - account.last_seen_unix_s > idle_s)
            and (account.final is None or uid in done)
        ]

    def rollups(self) -> RollupSnapshot:
        return RollupSnapshot(
            namespaces={name: Totals(*sums) for name, sums in self._namespaces.items()},
            teams={name: Totals(*sums) for name, sums in self._teams.items()},
            unallocated_mj=dict(self._unallocated),
            currency=self.currency,
            unallocated_g=dict(self._unallocated_g),
            unallocated_cost=dict(self._unallocated_cost),
            workloads=len(self.accounts),
            finalized=sum(1 for account in self.accounts.values() if account.final is not None),
        )


def _pruned_watermarks(
    pruned: Iterable[SeriesKey], by_series: Mapping[SeriesKey, set[str]]
) -> list[tuple[SeriesKey, str]]:
    return [(key, uid) for key in pruned for uid in sorted(by_series.get(key, ()))]


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """``ready``: record now; ``missing_nodes``: agents not caught up (recorded anyway when the deadline passed)."""

    ready: bool
    missing_nodes: tuple[str, ...] = ()
    timed_out: bool = False


CLOCK_SKEW_ALLOWANCE_S: Final = 2.0
"""How far a node's clock may run behind the API server's before a tick could be mistaken for a later one."""


def _fields(totals: Totals) -> list[Any]:
    return [
        totals.energy_mj,
        totals.gpu_seconds,
        totals.operational_g,
        totals.embodied_g,
        totals.cost,
        totals.energy_from_power_mj,
    ]


def _sums_of(sums: dict[str, list[Any]], name: str) -> list[Any]:
    running = sums.get(name)
    if running is None:
        running = sums[name] = _fields(ZERO)
    return running


def _add(running: list[Any], added: tuple[int, float, float, float, float, int]) -> None:
    """``running`` (the six fields of a :class:`Totals`) plus ``added``: what ``Totals.__add__`` computes."""
    running[0] += added[0]
    running[1] += added[1]
    running[2] += added[2]
    running[3] += added[3]
    running[4] += added[4]
    running[5] += added[5]


def default_write_interval_s(scrape_interval_s: float) -> float:
    """How often a running workload's footprint is persisted by default: every 300 s or four intervals."""
    return max(4 * scrape_interval_s, 300.0)


def default_finalize_deadline_s(scrape_interval_s: float) -> float:
    """How long after a Job's completion its footprint waits for late agents by default: 120 s or ten intervals."""
    return max(10 * scrape_interval_s, 120.0)


class AnsweredTicks:
    """The agents that answered a pass (their nodes) and the oldest last tick folded from any of them, computed once
    per pass: every finished Job waiting for its footprint is decided against all of them
    (:func:`decide_finalization`), and a Job's wait ends only once that oldest tick is after its completion."""

    __slots__ = ("nodes", "oldest_unix_s")

    def __init__(self, nodes: Iterable[str], folded_tick_unix_s: Mapping[str, float]) -> None:
        self.nodes = frozenset(nodes)
        self.oldest_unix_s = min((folded_tick_unix_s.get(node, -math.inf) for node in self.nodes), default=math.inf)

    def lag_s(self, now_unix_s: float) -> float | None:
        """How far the ledger's view of the slowest answering agent is behind ``now_unix_s``: a finished Job waits
        at least this long after its completion (plus the clock-skew allowance) for its footprint. ``+Inf`` while
        an agent that answered has never been folded (the API could not yet say who owns its pods); None when no
        agent answered. Negative when that agent's clock runs ahead of the operator's."""
        if not self.nodes:
            return None
        return now_unix_s - self.oldest_unix_s


def decide_finalization(
    completion_unix_s: float,
    nodes: Iterable[str],
    folded_tick_unix_s: Mapping[str, float],
    now_unix_s: float,
    deadline_s: float,
    *,
    clock_skew_s: float = 0.0,
    answered: AnsweredTicks | None = None,
) -> Decision:
    """Whether a Job's footprint is final.

    ``nodes`` are the nodes its pods ran on (only nodes with an agent); ``folded_tick_unix_s`` the last tick of each
    agent's latest *folded* scrape (the node's clock). Ready when every node's folded tick is later than the
    completion (the API server's clock) by more than ``clock_skew_s``, or when ``deadline_s`` has passed since the
    completion (``timed_out``, ``missing_nodes`` set). The nodes of ``answered`` must be caught up too; while one of
    them is not (and the deadline has not passed), the decision is not ready and its ``missing_nodes`` names only
    those of ``nodes`` that are behind: the answering agents are listed once the Job is recorded without them.
    """
    after_s = completion_unix_s + clock_skew_s
    timed_out = now_unix_s - completion_unix_s >= deadline_s
    own = set(nodes)
    if answered is not None and answered.oldest_unix_s <= after_s:
        if not timed_out:
            return Decision(False, nodes_behind(own, folded_tick_unix_s, after_s))
        own |= answered.nodes
    missing = nodes_behind(own, folded_tick_unix_s, after_s)
    if not missing:
        return Decision(True)
    if timed_out:
        return Decision(True, missing, timed_out=True)
    return Decision(False, missing)


def nodes_behind(nodes: Iterable[str], folded_tick_unix_s: Mapping[str, float], after_s: float) -> tuple[str, ...]:
    """The ``nodes`` whose folded tick is not later than ``after_s`` (a completion plus the clock-skew allowance)."""
    return tuple(sorted(node for node in nodes if folded_tick_unix_s.get(node, -math.inf) <= after_s))


def job_annotations(final: FinalRecord) -> dict[str, str]:
    """The Job's annotations for a final footprint (values formatted as the module docstring says)."""
    return {
        KEY_ENERGY: f"{mj_to_kwh(final.totals.energy_mj):.6f}",
        KEY_GPU_HOURS: f"{final.totals.gpu_seconds / S_PER_HOUR:.6f}",
        KEY_CO2E: f"{final.totals.carbon_g:.3f}",
        KEY_COST: f"{final.totals.cost:.4f} {final.currency}",
        KEY_SOURCE: ",".join(final.intensity_sources) or "none",
        KEY_METHOD: method_annotation(final.methods),
        KEY_VERSION: FOOTPRINT_VERSION,
    }

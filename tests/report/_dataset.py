"""A month of Joule Ledger series with known per-interval energies, written as OpenMetrics for
``promtool tsdb create-blocks-from openmetrics``, and the hand-made totals the report must reproduce.

Two nodes, three GPUs, four pods of three teams, 5-minute intervals from before the period to after it (a period
of D days; times below as fractions of it):

- ``research/train-a-0`` (team a, Job train-a) on n1/g0 all the time;
- ``serving/llm-7f-x`` (team b, ReplicaSet llm-7f) on n1/g1 until 2/3 D + 25 min (not on a step), after which
  n1/g1 is idle;
- ``research/eval-0`` (team c, Job eval) on n2/g0 until D/6; n2/g0 is idle from then until
- ``serving/llm-7f-y`` (team b) is born on n2/g0 at D/3 + 10 min (its series starts inside the period).

The operator restarts at D/2 + 20 min: its roll-up counters start again from zero (a reset between two steps).
Grid intensity: n1 follows the hour of day (100 + 10 x hour g/kWh), n2 is 300 g/kWh. PUE 1.2, embodied
20 g per GPU-hour, 0.2 EUR per facility kWh.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

DAY_S = 86400
INTERVAL_S = 300
START_S = 1_761_955_200  # 2025-11-01T00:00:00Z: the report's period starts here
MARGIN_S = 4 * 3600  # data before and after the period, which the report must not count
PUE = 1.2
EMBODIED_G_PER_GPU_HOUR = 20.0
PRICE_PER_KWH = 0.2
CURRENCY = "EUR"
MJ_PER_KWH = 3_600_000_000


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    team: str
    owner_kind: str
    owner_name: str
    node: str
    gpu: str
    first_end_s: int  # end of its first interval
    last_end_s: int  # end of its last interval

    @property
    def workload(self) -> str:
        return f"{self.namespace}/{self.owner_kind}/{self.owner_name}"


@dataclass(frozen=True)
class Scenario:
    days: int

    @property
    def end_s(self) -> int:
        return START_S + self.days * DAY_S

    @property
    def data_start_s(self) -> int:
        return START_S - MARGIN_S

    @property
    def data_end_s(self) -> int:
        return self.end_s + MARGIN_S

    def at(self, fraction: float, minutes: int = 0) -> int:
        return START_S + round(self.days * DAY_S * fraction / 3600) * 3600 + minutes * 60

    @property
    def restart_s(self) -> int:
        return self.at(1 / 2, 20)

    @property
    def pods(self) -> tuple[Pod, ...]:
        first, last = self.data_start_s + INTERVAL_S, self.data_end_s
        return (
            Pod("research", "train-a-0", "a", "Job", "train-a", "n1", "g0", first, last),
            Pod("serving", "llm-7f-x", "b", "ReplicaSet", "llm-7f", "n1", "g1", first, self.at(2 / 3, 25)),
            Pod("research", "eval-0", "c", "Job", "eval", "n2", "g0", first, self.at(1 / 6)),
            Pod("serving", "llm-7f-y", "b", "ReplicaSet", "llm-7f", "n2", "g0", self.at(1 / 3, 10), last),
        )


GPUS = (("n1", "g0"), ("n1", "g1"), ("n2", "g0"))
# llm-7f serves, per pod and interval: 12 requests, 2,400 prompt tokens, 1,500 generated tokens
SERVING_WORKLOAD = "llm-7f"
SERVING_PER_INTERVAL = (12.0, 2400.0, 1500.0)
SERVING_FAMILIES = ("energy_joules", "carbon_grams", "requests", "prompt_tokens", "output_tokens")


def intensity(node: str, end_s: int) -> float:
    """g/kWh of the interval that ends at ``end_s``."""
    hour = (end_s - 1) // 3600
    return 100.0 + 10.0 * (hour % 24) if node == "n1" else 300.0


@dataclass
class Interval:
    end_s: int
    node: str
    gpu: str
    pod: Pod | None  # None: idle
    energy_mj: int


@dataclass
class Dataset:
    scenario: Scenario
    intervals: list[Interval] = field(default_factory=list)

    def in_period(self) -> list[Interval]:
        return [i for i in self.intervals if START_S < i.end_s <= self.scenario.end_s]


def build(days: int, seed: int = 9) -> Dataset:
    rng = random.Random(seed)
    scenario = Scenario(days)
    data = Dataset(scenario)
    pods = scenario.pods
    for end_s in range(scenario.data_start_s + INTERVAL_S, scenario.data_end_s + 1, INTERVAL_S):
        for node, gpu in GPUS:
            holder = next(
                (p for p in pods if p.node == node and p.gpu == gpu and p.first_end_s <= end_s <= p.last_end_s), None
            )
            energy = rng.randint(60_000_000, 210_000_000) if holder else rng.randint(15_000_000, 25_000_000)
            data.intervals.append(Interval(end_s, node, gpu, holder, energy))
    return data


def kwh(energy_mj: int) -> float:
    return energy_mj / MJ_PER_KWH


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _j(value_mj: float) -> str:
    return f"{value_mj / 1000:.3f}"


class _Writer:
    def __init__(self) -> None:
        self.families: dict[str, tuple[str, dict[str, list[tuple[int, str]]]]] = {}

    def add(self, family: str, kind: str, labels: dict[str, str], time_s: int, value: str) -> None:
        suffix = "_total" if kind == "counter" else ""
        entry = self.families.setdefault(family, (kind, {}))
        entry[1].setdefault(f"{family}{suffix}{_labels(labels)}", []).append((time_s, value))

    def text(self) -> Iterable[str]:
        for family, (kind, series) in self.families.items():
            yield f"# TYPE {family} {kind}\n"
            for name, points in series.items():
                for time_s, value in points:
                    yield f"{name} {value} {time_s}\n"
        yield "# EOF\n"


def openmetrics(data: Dataset) -> str:
    """Everything the agents and the operator would have exported, one sample per interval end."""
    out = _Writer()
    by_end: dict[int, list[Interval]] = defaultdict(list)
    for interval in data.intervals:
        by_end[interval.end_s].append(interval)
    pod_mj: dict[Pod, int] = defaultdict(int)
    gpu_mj: dict[tuple[str, str], int] = defaultdict(int)
    idle_mj: dict[tuple[str, str], int] = defaultdict(int)
    # operator roll-ups since the operator (re)started: energy mJ, GPU-s, operational g, embodied g, cost
    rollups: dict[tuple[str, str], list[float]] = {}
    node_idle: dict[str, int] = {}
    node_idle_figures: dict[str, list[float]] = {}  # the operator's idle carbon (g) and cost per node
    serving: list[float] = []  # the operator's serving counters of llm-7f: energy mJ, g, requests, prompt, output
    for end_s in sorted(by_end):
        if end_s == data.scenario.restart_s + INTERVAL_S:
            rollups.clear()
            node_idle.clear()
            node_idle_figures.clear()
            serving.clear()
        for interval in by_end[end_s]:
            key = (interval.node, interval.gpu)
            gpu_mj[key] += interval.energy_mj
            grams = kwh(interval.energy_mj) * PUE * intensity(interval.node, end_s)
            if interval.pod is None:
                idle_mj[key] += interval.energy_mj
                node_idle[interval.node] = node_idle.get(interval.node, 0) + interval.energy_mj
                figures = node_idle_figures.setdefault(interval.node, [0.0, 0.0])
                figures[0] += grams
                figures[1] += kwh(interval.energy_mj) * PUE * PRICE_PER_KWH
                continue
            pod = interval.pod
            pod_mj[pod] += interval.energy_mj
            if pod.owner_name == SERVING_WORKLOAD:
                if not serving:
                    serving.extend([0.0] * 5)
                for i, amount in enumerate((interval.energy_mj, grams, *SERVING_PER_INTERVAL)):
                    serving[i] += amount
            for group in (("team", pod.team), ("namespace", pod.namespace)):
                totals = rollups.setdefault(group, [0.0, 0.0, 0.0, 0.0, 0.0])
                totals[0] += interval.energy_mj
                totals[1] += INTERVAL_S
                totals[2] += grams
                totals[3] += INTERVAL_S / 3600 * EMBODIED_G_PER_GPU_HOUR
                totals[4] += kwh(interval.energy_mj) * PUE * PRICE_PER_KWH
        for pod in data.scenario.pods:
            if not pod.first_end_s <= end_s <= pod.last_end_s:
                continue
            labels = {"namespace": pod.namespace, "pod": pod.name, "container": "main", "node": pod.node,
                      "gpu": pod.gpu}  # fmt: skip
            seconds = (end_s - pod.first_end_s) // INTERVAL_S * INTERVAL_S + INTERVAL_S
            out.add("jouleledger_pod_gpu_energy_joules", "counter", labels, end_s, _j(pod_mj[pod]))
            out.add("jouleledger_pod_gpu_seconds", "counter", labels, end_s, f"{seconds}")
            info = {"namespace": pod.namespace, "pod": pod.name, "node": pod.node, "uid": f"uid-{pod.name}",
                    "owner_kind": pod.owner_kind, "owner_name": pod.owner_name, "owner_uid": f"uid-{pod.owner_name}",
                    "label_team": pod.team}  # fmt: skip
            out.add("jouleledger_pod_info", "gauge", info, end_s, "1")
        for node, gpu in GPUS:
            out.add("jouleledger_gpu_energy_joules", "counter", {"node": node, "gpu": gpu, "model": "H100"}, end_s,
                    _j(gpu_mj[(node, gpu)]))  # fmt: skip
            out.add("jouleledger_gpu_unallocated_energy_joules", "counter", {"node": node, "gpu": gpu}, end_s,
                    _j(idle_mj[(node, gpu)]))  # fmt: skip
        for (kind, name), totals in sorted(rollups.items()):
            out.add(f"jouleledger_{kind}_gpu_energy_joules", "counter", {kind: name}, end_s, _j(totals[0]))
            out.add(f"jouleledger_{kind}_gpu_seconds", "counter", {kind: name}, end_s, f"{totals[1]:.0f}")
            for scope, grams in (("operational", totals[2]), ("embodied", totals[3])):
                out.add(f"jouleledger_{kind}_carbon_grams", "counter", {kind: name, "scope": scope}, end_s,
                        repr(grams))  # fmt: skip
            out.add(f"jouleledger_{kind}_cost", "counter", {kind: name, "currency": CURRENCY}, end_s, repr(totals[4]))
        if serving:
            labels = {"namespace": "serving", "workload_kind": "ReplicaSet", "workload": SERVING_WORKLOAD}
            for name, value in zip(SERVING_FAMILIES, serving, strict=True):
                text = _j(value) if name.endswith("joules") else repr(value)
                out.add(f"jouleledger_workload_serving_{name}", "counter", labels, end_s, text)
        for node, energy in sorted(node_idle.items()):
            if energy:
                out.add("jouleledger_node_unallocated_energy_joules", "counter", {"node": node}, end_s, _j(energy))
                grams, cost = node_idle_figures[node]
                out.add("jouleledger_node_unallocated_carbon_grams", "counter", {"node": node}, end_s, repr(grams))
                out.add("jouleledger_node_unallocated_cost", "counter", {"node": node, "currency": CURRENCY}, end_s,
                        repr(cost))  # fmt: skip
        for node in ("n1", "n2"):
            out.add("jouleledger_node_grid_intensity_grams_per_kwh", "gauge",
                    {"node": node, "zone": f"zone-{node}", "source": "static"}, end_s,
                    repr(intensity(node, end_s)))  # fmt: skip
    return "".join(out.text())

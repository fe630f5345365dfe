"""Helpers of the operator core's tests: parsing a hand-written agent exposition, a Job's pod, one interval's
rates and attribution by the pod's own owner and team label."""

from __future__ import annotations

from jouleledger.core.deltas import AgentScrape, PodIdentity, parse_agent_samples
from jouleledger.core.footprints import Attribution, IntervalRates
from jouleledger.core.workload import resolve_workload
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod

H100 = "NVIDIA H100 80GB HBM3"


def scrape_of(text: str, node: str = "n1") -> AgentScrape:
    return parse_agent_samples(parse_exposition(text), expected_node=node)


def job_pod(energy_j: float, gpu_seconds: float, *, uid: str = "pod-1", name: str = "train-x") -> Pod:
    return Pod("ml", name, uid, energy_j, gpu_seconds, "Job", "train", "job-1", "vision")


def rates(start: float, end: float, intensity: float, **overrides: object) -> IntervalRates:
    values: dict[str, object] = {
        "start_unix_s": start,
        "end_unix_s": end,
        "zone": "z1",
        "intensity_g_per_kwh": intensity,
        "intensity_source": "static",
        "pue": 1.5,
        "price_per_kwh": 0.10,
        "currency": "USD",
        "method": "measured-nvml-energy-counter",
        "embodied_g_per_gpu_hour": {H100: 20.0},
        "default_embodied_g_per_gpu_hour": 0.0,
    }
    values.update(overrides)
    return IntervalRates(**values)  # type: ignore[arg-type]


def by_owner(pod: PodIdentity) -> Attribution:
    return Attribution(resolve_workload(pod.namespace, pod.name, pod.uid, pod.owner, {}), pod.labels.get("team", ""))

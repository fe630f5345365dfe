"""The metric contract: every metric Joule Ledger exports, with its type, help and labels, declared once.

Both exporters (agent, operator) build their families from these specs and the operator's scrape parser reads the
agents' series by the same names. Names use base units and Prometheus conventions (the exposition appends
``_total`` to counter families and ``_info`` to info families). Per-pod series carry only ``namespace``, ``pod``,
``container``, ``node`` and ``gpu``; pod labels from the allow-list, the pod UID and its owner appear only on
``jouleledger_pod_info``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "AGENT_INTERVAL_S",
    "AGENT_PORT",
    "AGENT_SELECTOR",
    "HELP",
    "OPERATOR_PORT",
    "SCRAPE_INTERVAL_S",
    "SPECS",
    "MetricSpec",
    "sample_name",
    "sanitize_label",
]

# --- defaults the processes and the chart share (tests/chart/test_defaults.py checks the chart's values.yaml) ---

AGENT_INTERVAL_S: Final = 1.0
"""Default seconds between the agent's energy readings (ticks)."""
AGENT_PORT: Final = 9470
"""Default port of the agent's ``/metrics`` and ``/healthz`` (the operator scrapes it there)."""
OPERATOR_PORT: Final = 9471
"""Default port of the operator's ``/metrics`` and ``/healthz``."""
AGENT_SELECTOR: Final = "app.kubernetes.io/component=agent"
"""Default label selector of the agent pods (the label the chart puts on them)."""
SCRAPE_INTERVAL_S: Final = 15.0
COMPLETION_POLL_S: Final = 2.0
"""Seconds between the operator's completion reads (0 turns them off): see ``Accountant.run_completion_read``."""
"""Default seconds between the operator's accounting passes (one scrape of every agent each)."""

MetricType = Literal["counter", "gauge", "info", "histogram"]

# --- agent: per pod and device -----------------------------------------------------------------------------------
POD_ENERGY: Final = "jouleledger_pod_gpu_energy_joules"
POD_ENERGY_FROM_POWER: Final = "jouleledger_pod_gpu_energy_from_power_joules"
POD_GPU_SECONDS: Final = "jouleledger_pod_gpu_seconds"
POD_INFO: Final = "jouleledger_pod"
POD_FINISHED: Final = "jouleledger_pod_finished_timestamp_seconds"

# --- agent: per GPU ----------------------------------------------------------------------------------------------
GPU_ENERGY: Final = "jouleledger_gpu_energy_joules"
GPU_ENERGY_FROM_POWER: Final = "jouleledger_gpu_energy_from_power_joules"
GPU_UNALLOCATED: Final = "jouleledger_gpu_unallocated_energy_joules"
GPU_POWER: Final = "jouleledger_gpu_power_watts"
GPU_POWER_LIMIT: Final = "jouleledger_gpu_power_limit_watts"

# --- agent: self -------------------------------------------------------------------------------------------------
AGENT_INFO: Final = "jouleledger_agent"
AGENT_TICKS: Final = "jouleledger_agent_ticks"
AGENT_TICK_CPU: Final = "jouleledger_agent_tick_cpu_seconds"
AGENT_LAST_TICK: Final = "jouleledger_agent_last_tick_timestamp_seconds"
AGENT_REJECTED: Final = "jouleledger_agent_rejected_readings"
AGENT_READ_ERRORS: Final = "jouleledger_agent_gpu_read_errors"
AGENT_POD_SOURCE_UP: Final = "jouleledger_agent_pod_source_up"
AGENT_POD_SOURCE_ERRORS: Final = "jouleledger_agent_pod_source_errors"
AGENT_CHECKPOINT_WRITES: Final = "jouleledger_agent_checkpoint_writes"
AGENT_CHECKPOINT_ERRORS: Final = "jouleledger_agent_checkpoint_errors"

FOLDED_UNTIL_PARAM: Final = "folded_until"
"""The agent's ``/metrics`` query parameter: unix seconds (one of its pod finish times) up to which the scraper has
durably folded its finished pods; those are left out of the answer (operator: core/folded.py)."""

# --- operator: roll-ups for chargeback ---------------------------------------------------------------------------
NAMESPACE_ENERGY: Final = "jouleledger_namespace_gpu_energy_joules"
NAMESPACE_GPU_SECONDS: Final = "jouleledger_namespace_gpu_seconds"
NAMESPACE_CARBON: Final = "jouleledger_namespace_carbon_grams"
NAMESPACE_COST: Final = "jouleledger_namespace_cost"
TEAM_ENERGY: Final = "jouleledger_team_gpu_energy_joules"
TEAM_GPU_SECONDS: Final = "jouleledger_team_gpu_seconds"
TEAM_CARBON: Final = "jouleledger_team_carbon_grams"
TEAM_COST: Final = "jouleledger_team_cost"
NODE_UNALLOCATED: Final = "jouleledger_node_unallocated_energy_joules"
NODE_UNALLOCATED_CARBON: Final = "jouleledger_node_unallocated_carbon_grams"
NODE_UNALLOCATED_COST: Final = "jouleledger_node_unallocated_cost"
NODE_INTENSITY: Final = "jouleledger_node_grid_intensity_grams_per_kwh"

# --- operator: self ----------------------------------------------------------------------------------------------
OPERATOR_SCRAPES: Final = "jouleledger_operator_scrapes"
OPERATOR_AGENTS: Final = "jouleledger_operator_agents"
OPERATOR_AGENT_RESETS: Final = "jouleledger_operator_agent_resets"
OPERATOR_FOOTPRINTS_WRITTEN: Final = "jouleledger_operator_job_footprints_written"
OPERATOR_FOOTPRINT_ERRORS: Final = "jouleledger_operator_job_footprint_errors"
OPERATOR_INTENSITY_FALLBACKS: Final = "jouleledger_operator_intensity_fallbacks"
OPERATOR_REJECTED_SAMPLES: Final = "jouleledger_operator_rejected_samples"
OPERATOR_ANNOTATION_DELAY: Final = "jouleledger_operator_annotation_delay_seconds"
OPERATOR_ANNOTATION_TAMPERING: Final = "jouleledger_operator_annotation_tampering"
OPERATOR_SERVING_READS: Final = "jouleledger_operator_serving_reads"
OPERATOR_STALE_PRUNED: Final = "jouleledger_operator_stale_objects_pruned"
OPERATOR_OLDEST_TICK_AGE: Final = "jouleledger_operator_oldest_tick_age_seconds"
OPERATOR_PASS_DURATION: Final = "jouleledger_operator_pass_duration_seconds"
OPERATOR_LAST_PASS_PHASE: Final = "jouleledger_operator_last_pass_phase_seconds"
OPERATOR_COMPLETION_READS: Final = "jouleledger_operator_completion_reads"

# --- operator: serving workloads (pods labelled jouleledger.io/serving), from the same per-pod energy deltas -----
# The ratios cover the latest interval between two reads of the server's counters; absent without requests.
WORKLOAD_J_PER_REQUEST: Final = "jouleledger_workload_energy_joules_per_request"
WORKLOAD_J_PER_OUTPUT_TOKEN: Final = "jouleledger_workload_energy_joules_per_output_token"
WORKLOAD_J_PER_TOKEN: Final = "jouleledger_workload_energy_joules_per_token"
WORKLOAD_G_PER_1000_REQUESTS: Final = "jouleledger_workload_carbon_grams_per_1000_requests"
WORKLOAD_SERVING_INTERVAL: Final = "jouleledger_workload_serving_interval_seconds"
WORKLOAD_SERVING_ENERGY: Final = "jouleledger_workload_serving_energy_joules"
WORKLOAD_SERVING_CARBON: Final = "jouleledger_workload_serving_carbon_grams"
WORKLOAD_SERVING_REQUESTS: Final = "jouleledger_workload_serving_requests"
WORKLOAD_SERVING_PROMPT_TOKENS: Final = "jouleledger_workload_serving_prompt_tokens"
WORKLOAD_SERVING_OUTPUT_TOKENS: Final = "jouleledger_workload_serving_output_tokens"

_POD: Final = ("namespace", "pod", "container", "node", "gpu")
_WORKLOAD: Final = ("namespace", "workload_kind", "workload")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: ``labels`` are the fixed labels (``jouleledger_pod_info`` adds ``label_<key>`` ones)."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()


def _specs(*specs: MetricSpec) -> Mapping[str, MetricSpec]:
    return {spec.name: spec for spec in specs}


SPECS: Final[Mapping[str, MetricSpec]] = _specs(
    MetricSpec(POD_ENERGY, "counter", "GPU energy attributed to a pod's container on one GPU device, in joules.", _POD),
    MetricSpec(
        POD_ENERGY_FROM_POWER,
        "counter",
        "Part of a pod's container energy on one GPU device whose intervals were measured by power integration "
        "(no energy counter, or its delta rejected), in joules; absent while zero.",
        _POD,
    ),
    MetricSpec(
        POD_GPU_SECONDS,
        "counter",
        "GPU time held by a pod's container on one device, in GPU-seconds (device fraction x seconds).",
        _POD,
    ),
    MetricSpec(
        POD_INFO,
        "info",
        "Identity of a pod the agent accounts for: UID, controller owner and allow-listed pod labels.",
        ("namespace", "pod", "node", "uid", "owner_kind", "owner_name", "owner_uid"),
    ),
    MetricSpec(
        POD_FINISHED,
        "gauge",
        "Unix time (agent sample clock) at which the pod was first seen gone; absent while it runs.",
        ("namespace", "pod", "node"),
    ),
    MetricSpec(GPU_ENERGY, "counter", "Energy measured on a physical GPU, in joules.", ("node", "gpu", "model")),
    MetricSpec(
        GPU_ENERGY_FROM_POWER,
        "counter",
        "Part of a physical GPU's measured energy obtained by power integration, in joules; absent while zero.",
        ("node", "gpu"),
    ),
    MetricSpec(
        GPU_UNALLOCATED,
        "counter",
        "Energy measured on a physical GPU while no pod held it (idle), in joules.",
        ("node", "gpu"),
    ),
    MetricSpec(GPU_POWER, "gauge", "Latest power reading of a physical GPU, in watts.", ("node", "gpu")),
    MetricSpec(
        GPU_POWER_LIMIT,
        "gauge",
        "Power limit of a physical GPU, in watts: the operator bounds the energy it accepts from the agent by it.",
        ("node", "gpu"),
    ),
    MetricSpec(
        AGENT_INFO,
        "info",
        "The agent's build and data source; simulated is true when the data is not measured; epoch identifies "
        "its counters (a new epoch whenever they start from zero).",
        ("node", "backend", "simulated", "version", "epoch"),
    ),
    MetricSpec(AGENT_TICKS, "counter", "Sampling ticks the agent completed.", ("node",)),
    MetricSpec(AGENT_TICK_CPU, "counter", "CPU time the agent spent in its sampling ticks, in seconds.", ("node",)),
    MetricSpec(
        AGENT_LAST_TICK, "gauge", "Unix time at which the agent's last tick completed (0 before the first).", ("node",)
    ),
    MetricSpec(
        AGENT_REJECTED,
        "counter",
        "GPU readings rejected as untrustworthy (never counted as energy), by reason.",
        ("node", "gpu", "reason"),
    ),
    MetricSpec(AGENT_READ_ERRORS, "counter", "Failed GPU reads, by error kind.", ("node", "gpu", "kind")),
    MetricSpec(
        AGENT_POD_SOURCE_UP,
        "gauge",
        "1 while the pod source (kubelet) can be read, 0 while all energy goes to unallocated.",
        ("node",),
    ),
    MetricSpec(AGENT_POD_SOURCE_ERRORS, "counter", "Failed reads of the pod source (kubelet).", ("node",)),
    MetricSpec(AGENT_CHECKPOINT_WRITES, "counter", "Checkpoints of the agent's counters written.", ("node",)),
    MetricSpec(
        AGENT_CHECKPOINT_ERRORS,
        "counter",
        "Checkpoint writes or loads that failed (corrupt checkpoint files included).",
        ("node",),
    ),
    MetricSpec(
        NAMESPACE_ENERGY,
        "counter",
        "GPU energy of the namespace's workloads folded by this operator process, in joules.",
        ("namespace",),
    ),
    MetricSpec(
        NAMESPACE_GPU_SECONDS,
        "counter",
        "GPU-seconds of the namespace's workloads folded by this operator process.",
        ("namespace",),
    ),
    MetricSpec(
        NAMESPACE_CARBON,
        "counter",
        "Grams CO2e of the namespace (operational with PUE; embodied per GPU-hour).",
        ("namespace", "scope"),
    ),
    MetricSpec(
        NAMESPACE_COST,
        "counter",
        "Energy cost of the namespace (facility energy = IT energy x PUE, times the zone price).",
        ("namespace", "currency"),
    ),
    MetricSpec(
        TEAM_ENERGY,
        "counter",
        "GPU energy of the team's workloads folded by this operator process, in joules.",
        ("team",),
    ),
    MetricSpec(
        TEAM_GPU_SECONDS, "counter", "GPU-seconds of the team's workloads folded by this operator process.", ("team",)
    ),
    MetricSpec(
        TEAM_CARBON,
        "counter",
        "Grams CO2e of the team (operational with PUE; embodied per GPU-hour).",
        ("team", "scope"),
    ),
    MetricSpec(
        TEAM_COST,
        "counter",
        "Energy cost of the team (facility energy = IT energy x PUE, times the zone price).",
        ("team", "currency"),
    ),
    MetricSpec(
        NODE_UNALLOCATED,
        "counter",
        "GPU energy no pod held (idle), folded by this operator process, in joules.",
        ("node",),
    ),
    MetricSpec(
        NODE_UNALLOCATED_CARBON,
        "counter",
        "Operational grams CO2e of the node's idle energy (PUE and the node's grid intensity, as for its pods).",
        ("node",),
    ),
    MetricSpec(
        NODE_UNALLOCATED_COST,
        "counter",
        "Energy cost of the node's idle energy (facility energy = IT energy x PUE, times the zone price).",
        ("node", "currency"),
    ),
    MetricSpec(
        NODE_INTENSITY,
        "gauge",
        "Grid carbon intensity applied to the node's latest interval, in g CO2e per kWh.",
        ("node", "zone", "source"),
    ),
    MetricSpec(OPERATOR_SCRAPES, "counter", "Agent scrapes by result.", ("result",)),
    MetricSpec(OPERATOR_AGENTS, "gauge", "Agents discovered."),
    MetricSpec(
        OPERATOR_AGENT_RESETS,
        "counter",
        "Agent counters seen going down (agent restarted without its checkpoint).",
        ("node",),
    ),
    MetricSpec(OPERATOR_FOOTPRINTS_WRITTEN, "counter", "Finished Jobs whose footprint annotations were written."),
    MetricSpec(
        OPERATOR_FOOTPRINT_ERRORS,
        "counter",
        "Footprints or annotations that could not be written, by reason.",
        ("reason",),
    ),
    MetricSpec(
        OPERATOR_INTENSITY_FALLBACKS,
        "counter",
        "Intensity readings served from the fallback table, by provider and reason.",
        ("provider", "reason"),
    ),
    MetricSpec(
        OPERATOR_REJECTED_SAMPLES,
        "counter",
        "Agent samples not trusted (wrong node, invalid value, no pod info), by reason.",
        ("reason",),
    ),
    MetricSpec(OPERATOR_ANNOTATION_DELAY, "histogram", "Seconds from a Job's completion to its footprint annotations."),
    MetricSpec(
        OPERATOR_ANNOTATION_TAMPERING,
        "counter",
        "Job footprint annotations found different from the WorkloadFootprint (edited or forged) and restored.",
    ),
    MetricSpec(
        OPERATOR_STALE_PRUNED,
        "counter",
        "Objects deleted while a watch was down, found by the periodic relist and removed from the operator's view, "
        "by kind (pods: agent pods; jobs; replicasets; nodes).",
        ("kind",),
    ),
    MetricSpec(
        OPERATOR_COMPLETION_READS,
        "counter",
        "Completion reads: between passes, reads of only the agents that finished Jobs with every pod seen still "
        "wait for, after which those Jobs that are ready are recorded without waiting for the next pass.",
    ),
    MetricSpec(
        OPERATOR_OLDEST_TICK_AGE,
        "gauge",
        "Seconds from the oldest last tick folded from the agents that answered the latest pass to that pass: a "
        "finished Job with a pod the operator may not have seen waits at least this long after its completion (+Inf "
        "while an agent that answered has never been folded; absent while no agent answers).",
    ),
    MetricSpec(
        OPERATOR_PASS_DURATION,
        "histogram",
        "Wall seconds of each accounting pass, from reading the agents to the last footprint and annotation write: "
        "passes longer than the interval run back to back, and finished Jobs wait that much longer.",
    ),
    MetricSpec(
        OPERATOR_LAST_PASS_PHASE,
        "gauge",
        "Wall seconds of the latest accounting pass by phase (read: the agents' scrapes or the Prometheus query, and "
        "the API relist when due; fold: folding them, reading serving pods' counters, deciding which Jobs are final; "
        "write: footprints and Job annotations).",
        ("phase",),
    ),
    MetricSpec(
        OPERATOR_SERVING_READS, "counter", "Reads of serving pods' request and token counters, by result.", ("result",)
    ),
    MetricSpec(
        WORKLOAD_J_PER_REQUEST,
        "gauge",
        "GPU energy per completed request over the latest interval, in joules.",
        _WORKLOAD,
    ),
    MetricSpec(
        WORKLOAD_J_PER_OUTPUT_TOKEN,
        "gauge",
        "GPU energy per generated token over the latest interval, in joules.",
        _WORKLOAD,
    ),
    MetricSpec(
        WORKLOAD_J_PER_TOKEN,
        "gauge",
        "GPU energy per token (prompt plus generated) over the latest interval, in joules.",
        _WORKLOAD,
    ),
    MetricSpec(
        WORKLOAD_G_PER_1000_REQUESTS,
        "gauge",
        "Operational grams CO2e per 1,000 completed requests over the latest interval.",
        _WORKLOAD,
    ),
    MetricSpec(
        WORKLOAD_SERVING_INTERVAL,
        "gauge",
        "Length of the interval the per-request and per-token figures cover, in seconds.",
        _WORKLOAD,
    ),
    MetricSpec(
        WORKLOAD_SERVING_ENERGY,
        "counter",
        "GPU energy of the serving pods over intervals whose requests were counted, in joules.",
        _WORKLOAD,
    ),
    MetricSpec(WORKLOAD_SERVING_CARBON, "counter", "Operational grams CO2e of that energy.", _WORKLOAD),
    MetricSpec(
        WORKLOAD_SERVING_REQUESTS, "counter", "Requests the serving pods completed over the same intervals.", _WORKLOAD
    ),
    MetricSpec(WORKLOAD_SERVING_PROMPT_TOKENS, "counter", "Prompt tokens over the same intervals.", _WORKLOAD),
    MetricSpec(WORKLOAD_SERVING_OUTPUT_TOKENS, "counter", "Generated tokens over the same intervals.", _WORKLOAD),
)

HELP: Final[Mapping[str, str]] = {name: spec.help for name, spec in SPECS.items()}
"""Help text by family name."""

_SUFFIX: Final[Mapping[str, str]] = {"counter": "_total", "info": "_info", "gauge": "", "histogram": ""}


def sample_name(family: str) -> str:
    """The sample name a family's value appears under in the text exposition (``_total``, ``_info``)."""
    return family + _SUFFIX[SPECS[family].type]


_INVALID_LABEL_CHARS: Final = re.compile(r"[^A-Za-z0-9_]")


def sanitize_label(key: str) -> str:
    """A Kubernetes label key as a Prometheus label name part: every character outside ``[A-Za-z0-9_]`` -> ``_``."""
    return _INVALID_LABEL_CHARS.sub("_", key)

"""Every metric name Joule Ledger exports: the contract between the agent, the operator, the chart's rules and
the dashboards. Names use base units and Prometheus conventions (``_total`` on counters, which the exposition
appends to the family names below).

Per-pod series carry only ``namespace``, ``pod``, ``container``, ``node`` and ``gpu``; pod labels from the
allow-list, the pod UID and its owner appear only on ``jouleledger_pod_info``.
"""

from __future__ import annotations

from typing import Final

# --- agent: per pod and device -----------------------------------------------------------------------------------
POD_ENERGY: Final = "jouleledger_pod_gpu_energy_joules"  # counter {namespace,pod,container,node,gpu}
POD_ENERGY_FROM_POWER: Final = (
    "jouleledger_pod_gpu_energy_from_power_joules"  # counter {namespace,pod,container,node,gpu}
)
POD_GPU_SECONDS: Final = "jouleledger_pod_gpu_seconds"  # counter {namespace,pod,container,node,gpu}
POD_INFO: Final = "jouleledger_pod"  # info {namespace,pod,node,uid,owner_kind,owner_name,owner_uid,label_<key>...}
POD_FINISHED: Final = "jouleledger_pod_finished_timestamp_seconds"  # gauge {namespace,pod,node}; absent while running

# --- agent: per GPU ----------------------------------------------------------------------------------------------
GPU_ENERGY: Final = "jouleledger_gpu_energy_joules"  # counter {node,gpu,model}: measured
GPU_ENERGY_FROM_POWER: Final = "jouleledger_gpu_energy_from_power_joules"  # counter {node,gpu}: part of GPU_ENERGY
GPU_UNALLOCATED: Final = "jouleledger_gpu_unallocated_energy_joules"  # counter {node,gpu}: no pod held the GPU
GPU_POWER: Final = "jouleledger_gpu_power_watts"  # gauge {node,gpu}

# --- agent: self -------------------------------------------------------------------------------------------------
AGENT_INFO: Final = "jouleledger_agent"  # info {node,backend,simulated,version,epoch}
AGENT_TICKS: Final = "jouleledger_agent_ticks"  # counter {node}: ticks within the epoch
AGENT_TICK_CPU: Final = "jouleledger_agent_tick_cpu_seconds"  # counter {node}
AGENT_LAST_TICK: Final = "jouleledger_agent_last_tick_timestamp_seconds"  # gauge {node}
AGENT_REJECTED: Final = "jouleledger_agent_rejected_readings"  # counter {node,gpu,reason}
AGENT_READ_ERRORS: Final = "jouleledger_agent_gpu_read_errors"  # counter {node,gpu,kind}
AGENT_POD_SOURCE_UP: Final = "jouleledger_agent_pod_source_up"  # gauge {node}: kubelet reachable
AGENT_POD_SOURCE_ERRORS: Final = "jouleledger_agent_pod_source_errors"  # counter {node}
AGENT_CHECKPOINT_WRITES: Final = "jouleledger_agent_checkpoint_writes"  # counter {node}
AGENT_CHECKPOINT_ERRORS: Final = "jouleledger_agent_checkpoint_errors"  # counter {node}

# --- operator: roll-ups for chargeback ---------------------------------------------------------------------------
NAMESPACE_ENERGY: Final = "jouleledger_namespace_gpu_energy_joules"  # counter {namespace}
NAMESPACE_GPU_SECONDS: Final = "jouleledger_namespace_gpu_seconds"  # counter {namespace}
NAMESPACE_CARBON: Final = "jouleledger_namespace_carbon_grams"  # counter {namespace,scope=operational|embodied}
NAMESPACE_COST: Final = "jouleledger_namespace_cost"  # counter {namespace,currency}
TEAM_ENERGY: Final = "jouleledger_team_gpu_energy_joules"  # counter {team}
TEAM_GPU_SECONDS: Final = "jouleledger_team_gpu_seconds"  # counter {team}
TEAM_CARBON: Final = "jouleledger_team_carbon_grams"  # counter {team,scope}
TEAM_COST: Final = "jouleledger_team_cost"  # counter {team,currency}
NODE_UNALLOCATED: Final = "jouleledger_node_unallocated_energy_joules"  # counter {node}
NODE_INTENSITY: Final = "jouleledger_node_grid_intensity_grams_per_kwh"  # gauge {node,zone,source}

# --- operator: serving workloads (pods annotated jouleledger.io/serving), from the same per-pod energy deltas ----
# Labels {W} = {W}; the ratios cover the latest interval between two reads.
WORKLOAD_J_PER_REQUEST: Final = "jouleledger_workload_energy_joules_per_request"  # gauge {W}
WORKLOAD_J_PER_OUTPUT_TOKEN: Final = "jouleledger_workload_energy_joules_per_output_token"  # gauge {W}
WORKLOAD_J_PER_TOKEN: Final = "jouleledger_workload_energy_joules_per_token"  # gauge {W}
WORKLOAD_G_PER_1000_REQUESTS: Final = "jouleledger_workload_carbon_grams_per_1000_requests"  # gauge {W}
WORKLOAD_SERVING_INTERVAL: Final = "jouleledger_workload_serving_interval_seconds"  # gauge {W}: interval covered
WORKLOAD_SERVING_ENERGY: Final = "jouleledger_workload_serving_energy_joules"  # counter {W}
WORKLOAD_SERVING_CARBON: Final = "jouleledger_workload_serving_carbon_grams"  # counter {W}
WORKLOAD_SERVING_REQUESTS: Final = "jouleledger_workload_serving_requests"  # counter {W}
WORKLOAD_SERVING_PROMPT_TOKENS: Final = "jouleledger_workload_serving_prompt_tokens"  # counter {W}
WORKLOAD_SERVING_OUTPUT_TOKENS: Final = "jouleledger_workload_serving_output_tokens"  # counter {W}
OPERATOR_SERVING_READS: Final = "jouleledger_operator_serving_reads"  # counter {result=ok|error|timeout|invalid}

# --- operator: self ----------------------------------------------------------------------------------------------
OPERATOR_SCRAPES: Final = "jouleledger_operator_scrapes"  # counter {result=ok|error|timeout}
OPERATOR_AGENTS: Final = "jouleledger_operator_agents"  # gauge: agents discovered
OPERATOR_AGENT_RESETS: Final = "jouleledger_operator_agent_resets"  # counter {node}
OPERATOR_FOOTPRINTS_WRITTEN: Final = "jouleledger_operator_job_footprints_written"  # counter
OPERATOR_FOOTPRINT_ERRORS: Final = "jouleledger_operator_job_footprint_errors"  # counter {reason}
OPERATOR_INTENSITY_FALLBACKS: Final = "jouleledger_operator_intensity_fallbacks"  # counter {provider,reason}
OPERATOR_REJECTED_SAMPLES: Final = "jouleledger_operator_rejected_samples"  # counter {reason}
OPERATOR_ANNOTATION_DELAY: Final = "jouleledger_operator_annotation_delay_seconds"  # histogram

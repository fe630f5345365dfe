"""Hand-written agent expositions for the operator's tests (the Prometheus text format, as an agent serves it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Pod", "agent_text"]


@dataclass(frozen=True)
class Pod:
    """One pod of a hand-written exposition: its counters on one device, in joules and GPU-seconds."""

    namespace: str
    name: str
    uid: str
    energy_j: float
    gpu_seconds: float
    owner_kind: str = ""
    owner_name: str = ""
    owner_uid: str = ""
    team: str = ""
    device: str = "GPU-a"
    container: str = "main"
    from_power_j: float = 0.0


def agent_text(
    node: str,
    last_tick_s: float,
    pods: Iterable[Pod] = (),
    *,
    unallocated_j: float = 0.0,
    model: str = "NVIDIA H100 80GB HBM3",
    backend: str = "nvml",
    extra_info: Iterable[Pod] = (),
    epoch: str | None = None,
    ticks: float = 10.0,
    finished: Mapping[tuple[str, str], float] | None = None,
) -> str:
    """The exposition of one agent. ``extra_info`` adds pod_info lines without counters (an older pod of a name);
    ``epoch`` adds the agent's counter identity to its info (None: an agent that exports none); ``finished`` the
    finish time of pods (namespace, name) whose records all finished."""
    pods = list(pods)
    epoch_label = "" if epoch is None else f',epoch="{epoch}"'

    lines = [
        "# HELP jouleledger_agent_info The agent's build and data source.",
        "# TYPE jouleledger_agent_info gauge",
        f'jouleledger_agent_info{{backend="{backend}"{epoch_label},node="{node}",simulated="false",'
        'version="0.1.0"} 1.0',
        "# TYPE jouleledger_agent_last_tick_timestamp_seconds gauge",
        f'jouleledger_agent_last_tick_timestamp_seconds{{node="{node}"}} {last_tick_s}',
        "# TYPE jouleledger_agent_ticks counter",
        f'jouleledger_agent_ticks_total{{node="{node}"}} {ticks}',
        "# TYPE jouleledger_gpu_energy_joules counter",
        f'jouleledger_gpu_energy_joules_total{{gpu="GPU-a",model="{model}",node="{node}"}} 99999.0',
        "# TYPE jouleledger_gpu_unallocated_energy_joules counter",
        f'jouleledger_gpu_unallocated_energy_joules_total{{gpu="GPU-a",node="{node}"}} {unallocated_j}',
        "# TYPE jouleledger_pod_info gauge",
    ]
    for pod in [*extra_info, *pods]:
        lines.append(
            f'jouleledger_pod_info{{label_team="{pod.team}",namespace="{pod.namespace}",node="{node}",'
            f'owner_kind="{pod.owner_kind}",owner_name="{pod.owner_name}",owner_uid="{pod.owner_uid}",'
            f'pod="{pod.name}",uid="{pod.uid}"}} 1.0'
        )
    lines.append("# TYPE jouleledger_pod_gpu_energy_joules counter")
    for pod in pods:
        lines.append(
            f'jouleledger_pod_gpu_energy_joules_total{{container="{pod.container}",gpu="{pod.device}",'
            f'namespace="{pod.namespace}",node="{node}",pod="{pod.name}"}} {pod.energy_j}'
        )
    lines.append("# TYPE jouleledger_pod_gpu_energy_from_power_joules counter")
    for pod in pods:
        if pod.from_power_j:
            lines.append(
                f'jouleledger_pod_gpu_energy_from_power_joules_total{{container="{pod.container}",gpu="{pod.device}",'
                f'namespace="{pod.namespace}",node="{node}",pod="{pod.name}"}} {pod.from_power_j}'
            )
    lines.append("# TYPE jouleledger_pod_gpu_seconds counter")
    for pod in pods:
        lines.append(
            f'jouleledger_pod_gpu_seconds_total{{container="{pod.container}",gpu="{pod.device}",'
            f'namespace="{pod.namespace}",node="{node}",pod="{pod.name}"}} {pod.gpu_seconds}'
        )
    lines.append("# TYPE jouleledger_pod_finished_timestamp_seconds gauge")
    for (namespace, name), finished_s in sorted((finished or {}).items()):
        lines.append(
            f'jouleledger_pod_finished_timestamp_seconds{{namespace="{namespace}",node="{node}",pod="{name}"}} '
            f"{finished_s!r}"
        )
    return "\n".join(lines) + "\n"

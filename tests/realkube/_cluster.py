"""What the real-control-plane tests do to the cluster as a kubelet, a user or an agent would.

No kubelet runs: :func:`set_pod_running` and :func:`set_pod_succeeded` write pod status through the status
subresource as the kubelet does. :class:`FakeAgent` serves a hand-written agent exposition on a loopback address
so that an agent Pod whose ``status.podIP`` is that address is scraped by the operator. :func:`run_operator` runs
``jouleledger operator`` as a real process with the arguments and configuration the chart renders.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from jouleledger.core.footprints import CLOCK_SKEW_ALLOWANCE_S
from tests._tools import REPO_ROOT
from tests.chart._helm import CHART
from tests.controller._exposition import Pod, agent_text
from tests.realkube._controlplane import ApiCallError, ControlPlane, KubeClient, free_port, wait_for

__all__ = [
    "ENERGY_J",
    "FOOTPRINTS",
    "GPU_SECONDS",
    "FakeAgent",
    "OperatorRun",
    "OperatorStack",
    "chart_operator_args",
    "create_namespace",
    "create_node",
    "finished_job",
    "helm_cli",
    "job_annotations",
    "job_pods",
    "parse_time",
    "report_job",
    "run_operator",
    "service_account_token",
    "set_pod_running",
    "set_pod_succeeded",
]

IMAGE = "registry.invalid/busybox:1"  # never pulled: no kubelet runs


def parse_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- objects ---------------------------------------------------------------------------------------------------


def create_namespace(client: KubeClient, name: str, labels: Mapping[str, str] | None = None) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
    try:
        client.create("/api/v1/namespaces", body)
    except ApiCallError as error:
        if error.status != 409:
            raise
    wait_for(
        f"the default service account of namespace {name}",
        lambda: client.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        60,
    )


def create_node(client: KubeClient, name: str, zone: str = "") -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    try:
        result: dict[str, Any] = client.create("/api/v1/nodes", body)
    except ApiCallError as error:
        if error.status != 409:
            raise
        result = client.get(f"/api/v1/nodes/{name}")
    return result


def _container_status(name: str, state: Mapping[str, Any], ready: bool, container_id: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "imageID": "",
        "containerID": container_id,
        "ready": ready,
        "started": ready,
        "restartCount": 0,
        "state": dict(state),
    }


def set_pod_running(client: KubeClient, namespace: str, name: str, ip: str = "127.0.0.1") -> dict[str, Any]:
    """What a kubelet writes once the pod's containers run (status subresource)."""
    pod = client.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    started = _now()
    containers = [
        _container_status(c["name"], {"running": {"startedAt": started}}, True, f"containerd://{name}-{c['name']}")
        for c in pod["spec"]["containers"]
    ]
    status = {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "conditions": [
            {"type": kind, "status": "True", "lastTransitionTime": started}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ],
        "containerStatuses": containers,
    }
    result: dict[str, Any] = client.merge_patch(
        f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status}
    )
    return result


def set_pod_succeeded(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """What a kubelet writes when every container exited 0."""
    pod = client.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    finished = _now()
    started = (pod.get("status") or {}).get("startTime") or finished
    containers = [
        _container_status(
            c["name"],
            {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": finished}},
            False,
            f"containerd://{name}-{c['name']}",
        )
        for c in pod["spec"]["containers"]
    ]
    status = {
        "phase": "Succeeded",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished},
        ],
        "containerStatuses": containers,
    }
    result: dict[str, Any] = client.merge_patch(
        f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status}
    )
    return result


def job_pods(client: KubeClient, namespace: str, job: str) -> list[dict[str, Any]]:
    answer = client.get(
        f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": f"batch.kubernetes.io/job-name={job}"}
    )
    return list(answer.get("items") or [])


def finished_job(client: KubeClient, namespace: str, name: str, node: str) -> tuple[dict[str, Any], str]:
    """Create a one-pod Job on ``node``, let the real Job controller create its pod, play the kubelet (Running,
    then Succeeded), and wait until the controller marks the Job Complete. The Job and its pod's name."""
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"team": "vision"}},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": IMAGE}],
                },
            },
        },
    }
    client.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", body)
    pods = wait_for(
        f"the Job controller to create the pod of {namespace}/{name}", lambda: job_pods(client, namespace, name)
    )
    pod = pods[0]["metadata"]["name"]
    set_pod_running(client, namespace, pod)
    wait_for(
        f"the Job controller to count {namespace}/{name} active",
        lambda: (client.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}").get("status") or {}).get("active"),
    )
    set_pod_succeeded(client, namespace, pod)

    def complete() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        conditions = (job.get("status") or {}).get("conditions") or []
        done = any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)
        return job if done and job["status"].get("completionTime") else None

    return wait_for(f"the Job controller to mark {namespace}/{name} Complete", complete, 90), pod


def service_account_token(client: KubeClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """A bound token of the service account, through the TokenRequest API (as the kubelet gets one)."""
    answer = client.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}},
    )
    token: str = answer["status"]["token"]
    return token


# --- Jobs and their footprints ---------------------------------------------------------------------------

ENERGY_J = 3600.0  # 0.001 kWh
GPU_SECONDS = 60.0
FOOTPRINTS = "/apis/jouleledger.io/v1alpha1/namespaces/{namespace}/workloadfootprints"


def report_job(stack: Any, job: dict[str, Any], pod: str, admin: KubeClient) -> None:
    """The fake agent reports the Job's pod, with a tick that is later than the Job's completion by more than the
    operator's clock-skew allowance, and never in the future, as a real agent's tick: a tick ahead of the clock
    would make the operator finalize the next Job before its energy is reported (it would read as "finished without
    GPU energy"). Waits the few seconds until the clock has passed that point."""
    metadata = job["metadata"]
    pod_uid = admin.get(f"/api/v1/namespaces/{metadata['namespace']}/pods/{pod}")["metadata"]["uid"]
    completed = parse_time(job["status"]["completionTime"])
    # completionTime is in whole seconds (rounded down): one second more is surely after the real completion.
    tick = completed + 1.0 + CLOCK_SKEW_ALLOWANCE_S + 0.5
    while (now := time.time()) < tick:
        time.sleep(tick - now)
    stack.agent.text = agent_text(
        stack.node,
        tick,
        [
            Pod(
                metadata["namespace"],
                pod,
                pod_uid,
                ENERGY_J,
                GPU_SECONDS,
                owner_kind="Job",
                owner_name=metadata["name"],
                owner_uid=metadata["uid"],
                team="vision",
            )
        ],
    )


def job_annotations(admin: KubeClient, namespace: str, name: str) -> dict[str, str]:
    job = admin.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    return {k: v for k, v in (job["metadata"].get("annotations") or {}).items() if k.startswith("jouleledger.io/")}


# --- a fake agent ----------------------------------------------------------------------------------------------


class FakeAgent:
    """An HTTP server on ``host:port`` answering ``/metrics`` with :attr:`text` (changeable between scrapes)."""

    def __init__(self, host: str, port: int, text: str = "") -> None:
        self.text = text
        self.scrapes = 0
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                agent.scrapes += 1
                payload = agent.text.encode()
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
                return

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake-agent-{host}", daemon=True)

    def __enter__(self) -> FakeAgent:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- the chart's operator as a process -------------------------------------------------------------------------


def helm_cli(helm: str, controlplane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(controlplane.kubeconfig),
        "HELM_CACHE_HOME": str(controlplane.workdir / "helm"),
    }
    env["HELM_CONFIG_HOME"] = env["HELM_DATA_HOME"] = env["HELM_CACHE_HOME"]
    result = subprocess.run([helm, *args], capture_output=True, text=True, check=False, timeout=180, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def chart_operator_args(objects: Sequence[Mapping[str, Any]], namespace: str) -> list[str]:
    """The operator container's arguments from the rendered Deployment, with ``$(POD_NAMESPACE)`` resolved."""
    deployment = next(
        o for o in objects if o.get("kind") == "Deployment" and o["metadata"]["name"].endswith("operator")
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return [str(arg).replace("$(POD_NAMESPACE)", namespace) for arg in container["args"]]


@dataclass
class OperatorRun:
    returncode: int
    output: str
    args: list[str] = field(default_factory=list)


def _replace_option(args: list[str], option: str, value: str) -> list[str]:
    result = list(args)
    if option in result:
        result[result.index(option) + 1] = value
    else:
        result += [option, value]
    return result


def operator_command(
    chart_args: Sequence[str], config: Path, *, agent_port: int, extra: Sequence[str] = ()
) -> list[str]:
    """The chart's operator command line, pointed at a local config file, loopback metrics and ``agent_port``."""
    args = list(chart_args)
    args = _replace_option(args, "--config", str(config))
    args = _replace_option(args, "--listen-address", "127.0.0.1")
    args = _replace_option(args, "--port", str(free_port()))
    args = _replace_option(args, "--agent-port", str(agent_port))
    return [sys.executable, "-m", "jouleledger", "--log-level", "DEBUG", *args, *extra]


def operator_env(kubeconfig: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(kubeconfig)
    env["PYTHONPATH"] = str(REPO_ROOT / "operator")
    return env


def run_operator(
    chart_args: Sequence[str], config: Path, kubeconfig: Path, *, agent_port: int, timeout_s: float = 120.0
) -> OperatorRun:
    """``jouleledger operator --once`` with the chart's arguments, as the identity of ``kubeconfig``."""
    command = operator_command(chart_args, config, agent_port=agent_port, extra=["--once"])
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=timeout_s, env=operator_env(kubeconfig)
    )
    return OperatorRun(result.returncode, result.stdout + result.stderr, command)


def write_chart_config(objects: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The operator's config file from the rendered ConfigMap."""
    configmap = next(o for o in objects if o.get("kind") == "ConfigMap" and "config.yaml" in (o.get("data") or {}))
    path.write_text(configmap["data"]["config.yaml"])
    return path


def load_objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def events_of(client: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    answer = client.get(
        f"/api/v1/namespaces/{namespace}/events", params={"fieldSelector": f"involvedObject.name={name}"}
    )
    return list(answer.get("items") or [])


def json_dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


def iter_rules(clusterrole: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    for rule in clusterrole.get("rules") or ():
        for group in rule.get("apiGroups") or ():
            for resource in rule.get("resources") or ():
                for verb in rule.get("verbs") or ():
                    yield group, resource, verb


def chart_path() -> Path:
    return CHART


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds


@dataclass
class OperatorStack:
    """The chart installed as release ``jl`` in namespace ``jouleledger`` (privileged), the operator's command line
    and configuration as the chart renders them, a kubeconfig holding the chart's operator ServiceAccount token
    (TokenRequest API), one GPU node and one fake agent pod on it, served from 127.0.0.1."""

    namespace: str
    release: str
    objects: list[dict[str, Any]]
    args: list[str]
    config: Path
    kubeconfig: Path
    token: str
    node: str
    agent: FakeAgent
    agent_port: int

    controlplane: ControlPlane

    def client(self) -> KubeClient:
        """A client with the operator's ServiceAccount token."""
        return self.controlplane.client(token=self.token)

    def run_once(self) -> OperatorRun:
        return run_operator(self.args, self.config, self.kubeconfig, agent_port=self.agent_port)

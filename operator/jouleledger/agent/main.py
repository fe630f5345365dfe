"""``jouleledger agent``: the DaemonSet process.

Every tick it reads the node (NVML, the kubelet, ``/proc``; or a trace; or the simulated node), attributes the
interval's energy to pods, checkpoints its counters and serves them on ``/metrics``; ``/healthz`` says whether the
loop runs and what is degraded. SIGTERM and SIGINT stop it after a final checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from jouleledger.agent.runner import AgentRunner
from jouleledger.core.contract import AGENT_INTERVAL_S, AGENT_PORT
from jouleledger.core.flags import non_negative_float, port_number, positive_float, positive_int
from jouleledger.core.ledger import DEFAULT_RETENTION_S
from jouleledger.hardware.base import BackendError, NodeSource
from jouleledger.kube import KUBELET_SOCKET

if TYPE_CHECKING:
    from jouleledger.kube.podmeta import PodMetadataCache
    from jouleledger.metrics.server import MetricsServer
    from jouleledger.metrics.webconfig import WebConfig

__all__ = ["add_arguments", "build_source", "run", "serve_metrics"]

log = logging.getLogger("jouleledger.agent")

BACKENDS = ("nvml", "replay", "simulated")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=env("JOULELEDGER_BACKEND"),
        required=env("JOULELEDGER_BACKEND") is None,
        help="where readings come from; always explicit (env JOULELEDGER_BACKEND)",
    )
    parser.add_argument("--node-name", default=env("NODE_NAME", ""), help="this node's name (env NODE_NAME)")
    parser.add_argument(
        "--interval-s", type=positive_float, default=AGENT_INTERVAL_S, help="seconds between ticks (default 1)"
    )
    parser.add_argument("--listen-address", default="0.0.0.0", help="address for /metrics and /healthz")
    parser.add_argument("--port", type=port_number, default=AGENT_PORT, help="port for /metrics and /healthz (0: none)")
    parser.add_argument("--kubelet-socket", default=KUBELET_SOCKET, help="kubelet PodResources gRPC socket")
    parser.add_argument(
        "--extra-gpu-resources",
        type=_csv,
        default=(),
        help="further extended resource names that are GPUs (e.g. nvidia.com/gpu.shared), comma-separated",
    )
    parser.add_argument("--proc-root", default="/proc", help="the host's /proc (/host/proc in a pod)")
    parser.add_argument(
        "--checkpoint-path", type=Path, default=None, help="file for crash-safe counters (none: not kept)"
    )
    parser.add_argument(
        "--retention-s",
        type=non_negative_float,
        default=DEFAULT_RETENTION_S,
        help=f"how long finished pods stay exported (default {DEFAULT_RETENTION_S:g})",
    )
    parser.add_argument(
        "--label-allowlist", type=_csv, default=(), help="pod labels copied onto jouleledger_pod_info, comma-separated"
    )
    parser.add_argument(
        "--pod-metadata",
        choices=("api", "none"),
        default="api",
        help="read pod UIDs, labels and owners from the Kubernetes API (api) or not (none)",
    )
    parser.add_argument("--trace", type=Path, help="trace file for --backend replay")
    parser.add_argument("--seed", type=int, default=0, help="seed for --backend simulated")
    parser.add_argument("--gpus", type=positive_int, default=4, help="GPUs of the simulated node")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="measure, attribute and serve /metrics, but neither read nor write the checkpoint",
    )
    parser.add_argument("--once", action="store_true", help="run a single tick, print the status and exit")
    parser.add_argument("--max-ticks", type=positive_int, default=None, help="stop after this many ticks")
    parser.add_argument(
        "--web-config-file", type=Path, default=None, help="TLS and basic auth of /metrics (exporter-toolkit YAML)"
    )


def _pod_metadata(node: str) -> PodMetadataCache | None:
    from kubernetes import client, config

    from jouleledger.kube.podmeta import PodMetadataCache

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as error:
            log.warning("no Kubernetes API access (%s): pods will have no UID, labels or owner", error)
            return None
    api: Any = client.CoreV1Api()
    return PodMetadataCache(api, node)


def build_source(args: argparse.Namespace) -> NodeSource:
    """The backend named by ``--backend``; never falls back from real to fake data."""
    if args.backend == "simulated":
        from jouleledger.hardware.simulated import SimulatedNode

        log.warning("backend 'simulated': every number this agent exports is SIMULATED, not measured")
        return SimulatedNode(
            node=args.node_name or "sim-gpu-node",
            gpus=args.gpus,
            seed=args.seed,
            interval_s=args.interval_s,
            start_s=time.time(),
        )
    if args.backend == "replay":
        from jouleledger.hardware.replay import ReplaySource

        if args.trace is None:
            raise BackendError("--backend replay needs --trace FILE")
        return ReplaySource(args.trace)
    from jouleledger.agent.live import LiveNodeSource
    from jouleledger.hardware.nvml import NvmlMeter
    from jouleledger.hardware.proc import ProcMap
    from jouleledger.kube.podresources import PodResourcesClient
    from jouleledger.kube.pods import KubeletPodSource

    if not args.node_name:
        raise BackendError("--node-name (or NODE_NAME) is required with --backend nvml")
    meter = NvmlMeter()
    metadata = _pod_metadata(args.node_name) if args.pod_metadata == "api" else None
    pods = KubeletPodSource(PodResourcesClient(args.kubelet_socket, extra_resources=args.extra_gpu_resources), metadata)
    return LiveNodeSource(args.node_name, meter, pods, ProcMap(args.proc_root))


def serve_metrics(
    runner: AgentRunner, host: str, port: int, web_config: WebConfig | None = None
) -> MetricsServer | None:
    """Serve the runner's ``/metrics`` and ``/healthz`` on ``host:port`` (port 0: not at all)."""
    if port == 0:
        return None
    from prometheus_client import CollectorRegistry

    from jouleledger.metrics.agent import AgentCollector, scoped_registry
    from jouleledger.metrics.server import MetricsServer

    registry = CollectorRegistry()
    registry.register(AgentCollector(runner.view))
    server = MetricsServer(registry, runner.health, web_config=web_config, scoped=scoped_registry(runner.view))
    server.start(host, port)
    return server


def _checkpoint_problem(path: Path) -> str | None:
    """Why the agent could not keep its checkpoint at ``path`` (None when it can): checked before it starts."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create its directory ({error.strerror or error})"
    if path.is_dir():
        return "is a directory"
    probe = path.with_name(f".{path.name}.probe")
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"cannot write there ({error.strerror or error})"
    return None


def run(args: argparse.Namespace) -> int:
    from jouleledger.metrics.webconfig import WebConfigError, load_web_config

    try:
        web_config = None if args.web_config_file is None else load_web_config(args.web_config_file)
    except WebConfigError as error:
        print(f"jouleledger agent: {error}", file=sys.stderr)
        return 2
    try:
        source = build_source(args)
    except (BackendError, ValueError) as error:
        print(f"jouleledger agent: {error}", file=sys.stderr)
        return 1
    if args.dry_run and args.checkpoint_path is not None:
        log.info("--dry-run: the checkpoint %s is neither read nor written", args.checkpoint_path)
        args.checkpoint_path = None
    if args.checkpoint_path is not None:
        problem = _checkpoint_problem(args.checkpoint_path)
        if problem is not None:
            source.close()
            print(f"jouleledger agent: --checkpoint-path {args.checkpoint_path}: {problem}", file=sys.stderr)
            return 1
    runner = AgentRunner(
        source,
        backend=args.backend,
        interval_s=args.interval_s,
        retention_s=args.retention_s,
        checkpoint_path=args.checkpoint_path,
        label_allowlist=args.label_allowlist,
    )
    try:
        server = None if args.once else serve_metrics(runner, args.listen_address, args.port, web_config)
    except OSError as error:
        runner.close()
        source.close()
        print(
            f"jouleledger agent: cannot serve on {args.listen_address}:{args.port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this tick", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "agent on node %s: backend %s, %d GPUs, tick every %.3g s",
        runner.header.node,
        args.backend,
        len(runner.header.gpus),
        args.interval_s,
    )
    try:
        runner.run(stop, max_ticks=1 if args.once else args.max_ticks)
    finally:
        runner.save_checkpoint()
        if server is not None:
            server.stop()
        source.close()
    if args.once:
        healthy, body = runner.health()
        print(json.dumps(body, indent=2))
        return 0 if healthy else 1
    return 0

"""``jouleledger operator``: the command line of the operator (kopf, started as a library, never ``kopf run``).

::

    jouleledger operator --config /etc/jouleledger/config.yaml --listen-address 0.0.0.0 --port 9471 \\
      --agent-namespace "$(POD_NAMESPACE)" --agent-selector app.kubernetes.io/component=agent --agent-port 9470 \\
      --scrape-interval-s 15 [--standalone | --peering NAME] [--dry-run] [--once] \\
      [--shard N --total-shards M | --shard-from-pod-name --total-shards M] \\
      [--source prometheus --prometheus-url URL [--prometheus-org-id ID] [--prometheus-ca-file F] ...]

``--shard N --total-shards M`` makes this process one of M shards: it accounts and writes only the workloads whose
UID hashes to N (:mod:`jouleledger.core.sharding`). ``--shard-from-pod-name`` takes N from the ordinal of the pod
name in ``$POD_NAME`` (a StatefulSet's ``name-N``). Shards do not coordinate: run each with ``--standalone``.

``--source prometheus`` reads the agents' counters from the Prometheus HTTP API (Prometheus, Thanos Querier, Mimir)
with one instant query per pass instead of scraping every agent (:mod:`jouleledger.controller.promsource`); the
ledger's rules are the same. See docs/scaling.md for when to switch.

``--completion-poll-s`` (2 s; 0 turns it off) is how often, between and during passes, the operator reads only
the agents of the nodes that finished Jobs still wait for, so that a Job whose pods it has all seen is recorded
without waiting for the next pass (docs/architecture.md, "Completion reads").

``--dry-run`` computes and logs everything and writes nothing to the API (reads still happen). ``--once`` runs
one accounting pass without kopf and exits 0 (1 when the ledger could not be restored from the API).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from jouleledger.controller.config import load_config
from jouleledger.core.contract import AGENT_PORT, AGENT_SELECTOR, COMPLETION_POLL_S, OPERATOR_PORT, SCRAPE_INTERVAL_S
from jouleledger.core.flags import non_negative_float, non_negative_int, port_number, positive_float
from jouleledger.core.labels import one_line
from jouleledger.core.promsource import agent_query
from jouleledger.core.sharding import ShardSpec, shard_from_pod_name
from jouleledger.promapi import Connection, PrometheusError, build_client

if TYPE_CHECKING:
    from jouleledger.controller.app import OperatorApp

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def prometheus_connection(args: argparse.Namespace) -> Connection | None:
    """The Prometheus connection of ``--source prometheus`` (None for the direct scrape); checked now."""
    if args.source != "prometheus":
        if args.prometheus_url:
            raise ValueError("--prometheus-url needs --source prometheus")
        return None
    if not args.prometheus_url:
        raise ValueError("--source prometheus needs --prometheus-url URL")
    connection = Connection(
        base_url=args.prometheus_url,
        org_id=args.prometheus_org_id or None,
        bearer_token_file=args.prometheus_bearer_token_file,
        basic_auth_user=args.prometheus_basic_auth_user or None,
        basic_auth_password_file=args.prometheus_basic_auth_password_file,
        ca_file=args.prometheus_ca_file,
        timeout_s=args.prometheus_timeout_s,
    )
    build_client(connection).close()  # a bad URL, CA or credentials file is an error now, not at the first pass
    agent_query(args.prometheus_selector)
    return connection


def shard_spec(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ShardSpec:
    """The shard of this process from ``--shard``/``--shard-from-pod-name`` and ``--total-shards``."""
    shard = args.shard
    if args.shard_from_pod_name:
        pod_name = (os.environ if environ is None else environ).get("POD_NAME", "")
        if not pod_name:
            raise ValueError("--shard-from-pod-name needs the POD_NAME environment variable (the downward API)")
        shard = shard_from_pod_name(pod_name)
    return ShardSpec(shard, args.total_shards)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="operator configuration file (YAML); default: built-ins")
    parser.add_argument("--listen-address", default="0.0.0.0", help="address of /metrics and /healthz")
    parser.add_argument("--port", type=port_number, default=OPERATOR_PORT, help="port of /metrics and /healthz")
    parser.add_argument("--agent-namespace", default="", help="namespace of the agent pods (default: all)")
    parser.add_argument(
        "--agent-selector",
        default=AGENT_SELECTOR,
        help="label selector of the agent pods (key=value[,key=value])",
    )
    parser.add_argument("--agent-port", type=port_number, default=AGENT_PORT, help="the agents' metrics port")
    parser.add_argument(
        "--scrape-interval-s", type=positive_float, default=SCRAPE_INTERVAL_S, help="seconds between passes"
    )
    parser.add_argument(
        "--completion-poll-s",
        type=non_negative_float,
        default=COMPLETION_POLL_S,
        help="seconds between completion reads: the agents finished Jobs wait for, read between passes (0: off)",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="run without kopf peering")
    peering.add_argument("--peering", default=None, metavar="NAME", help="kopf peering object name")
    parser.add_argument("--dry-run", action="store_true", help="compute and log; write nothing to the API")
    parser.add_argument("--once", action="store_true", help="run one accounting pass, then exit")
    parser.add_argument(
        "--web-config-file", type=Path, default=None, help="TLS and basic auth of /metrics (exporter-toolkit YAML)"
    )
    sharding = parser.add_argument_group("sharding: several operators, each owning the workloads hashed to it")
    which = sharding.add_mutually_exclusive_group()
    which.add_argument("--shard", type=non_negative_int, default=0, help="this process's shard (default: 0)")
    which.add_argument(
        "--shard-from-pod-name", action="store_true", help="the shard is the StatefulSet ordinal of $POD_NAME"
    )
    sharding.add_argument("--total-shards", type=int, default=1, help="number of shards (default: 1, unsharded)")
    source = parser.add_argument_group("where the agents' counters are read")
    source.add_argument(
        "--source",
        choices=("agents", "prometheus"),
        default="agents",
        help="agents: scrape every agent (default); prometheus: one instant query of the Prometheus HTTP API",
    )
    source.add_argument("--prometheus-url", default="", help="Prometheus, Thanos Querier or Mimir (with its prefix)")
    source.add_argument("--prometheus-org-id", default="", help="tenant (X-Scope-OrgID) for Mimir or Cortex")
    source.add_argument("--prometheus-bearer-token-file", type=Path, default=None, help="bearer token file")
    source.add_argument("--prometheus-basic-auth-user", default="", help="basic auth user (with a password file)")
    source.add_argument("--prometheus-basic-auth-password-file", type=Path, default=None, help="its password file")
    source.add_argument("--prometheus-ca-file", type=Path, default=None, help="CA of the Prometheus certificate")
    source.add_argument("--prometheus-timeout-s", type=positive_float, default=30.0, help="query timeout")
    source.add_argument(
        "--prometheus-selector", default="", help='label matchers of the agents\' series, e.g. job="jouleledger-agent"'
    )
    agents = parser.add_argument_group("scraping agents whose /metrics needs TLS or credentials")
    agents.add_argument("--agent-scheme", choices=("http", "https"), default="http", help="default: http")
    agents.add_argument("--agent-ca-file", type=Path, default=None, help="CA that signed the agents' certificate")
    agents.add_argument("--agent-server-name", default="", help="name the agents' certificate is checked against")
    agents.add_argument("--agent-cert-file", type=Path, default=None, help="client certificate (with its key)")
    agents.add_argument("--agent-key-file", type=Path, default=None, help="the client certificate's key")
    agents.add_argument("--agent-basic-auth-username", default="", help="basic auth user (with a password file)")
    agents.add_argument("--agent-basic-auth-password-file", type=Path, default=None, help="read at every pass")
    agents.add_argument("--agent-bearer-token-file", type=Path, default=None, help="read at every pass")


def _app(args: argparse.Namespace) -> OperatorApp:
    """The operator the flags describe. Every file they name and every connection setting is checked now, not at
    the first pass: ValueError (ConfigError, a bad web config), OSError (ssl.SSLError), PrometheusError."""
    from jouleledger.controller.app import OperatorApp, OperatorOptions
    from jouleledger.controller.scrape import AgentClientConfig
    from jouleledger.intensity import build_provider
    from jouleledger.metrics.webconfig import load_web_config

    config = load_config(args.config)
    provider = build_provider(config.intensity)
    agent_client = AgentClientConfig(
        scheme=args.agent_scheme,
        ca_file=args.agent_ca_file,
        cert_file=args.agent_cert_file,
        key_file=args.agent_key_file,
        server_name=args.agent_server_name,
        username=args.agent_basic_auth_username,
        password_file=args.agent_basic_auth_password_file,
        bearer_token_file=args.agent_bearer_token_file,
    )
    agent_client.ssl_context()  # a bad CA or client certificate
    options = OperatorOptions(
        listen_address=args.listen_address,
        port=args.port,
        agent_namespace=args.agent_namespace,
        agent_selector=args.agent_selector,
        agent_port=args.agent_port,
        scrape_interval_s=args.scrape_interval_s,
        completion_poll_s=args.completion_poll_s,
        standalone=args.standalone,
        peering=args.peering,
        dry_run=args.dry_run,
        serve_metrics=not args.once,
        web_config=None if args.web_config_file is None else load_web_config(args.web_config_file),
        agent_client=agent_client,
        shard=shard_spec(args),
        prometheus=prometheus_connection(args),
        prometheus_selector=args.prometheus_selector,
    )
    return OperatorApp(options, config, provider)


GC_THRESHOLDS: Final = (50_000, 20, 10)
"""The operator's garbage-collector thresholds (CPython's default: 700, 10, 10). A pass allocates a container per
sample, label set and series key (millions at 100,000 pods), so at the default a young collection ran every 700
allocations and the full ones scanned the whole ledger over and over: 28 % of the CPU of decoding and parsing a
Prometheus answer (``bench/promsource_parse.py``). 50,000 young objects are a few MiB."""


def tune_garbage_collector() -> None:
    """Raise the collector's thresholds (:data:`GC_THRESHOLDS`) for this process: called by :func:`run` only."""
    gc.set_threshold(*GC_THRESHOLDS)


def run(args: argparse.Namespace) -> int:
    tune_garbage_collector()
    try:
        app = _app(args)
    except (ValueError, OSError, PrometheusError) as error:
        print(f"jouleledger operator: {one_line(str(error))}", file=sys.stderr)
        return 2
    from kopf import LoginError

    try:
        if args.once:
            summary = asyncio.run(app.once())
            log.info("one pass: %s", summary)
            return 0 if summary.restored else 1
        asyncio.run(app.operate())
    except LoginError as error:
        print(f"jouleledger operator: no Kubernetes cluster to talk to: {error}", file=sys.stderr)
        return 1
    return 0

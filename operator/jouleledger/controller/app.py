"""The operator process: kopf observes the cluster, one accounting task does the rest.

kopf watches Jobs, ReplicaSets, nodes and the agent pods (server-side label and field selectors: workload pods are
not watched, the agents report them) with ``@kopf.on.event`` handlers only (no finalizers, no patches of user
objects: they feed :class:`ClusterState`). The accounting loop is one asyncio task, started by a startup
handler and stopped by a cleanup handler; it reads and writes through :class:`KubeApi` (the official
``kubernetes`` client) built from the same credentials kopf logs in with. ``/metrics`` and ``/healthz`` are
served on a background thread.

``--once`` does not start kopf: it lists the same objects, runs one pass and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import kopf
from prometheus_client import CollectorRegistry

from jouleledger.controller.accountant import Accountant, PassSummary
from jouleledger.controller.agent_http import AgentHttpClient
from jouleledger.controller.cluster import JOBS, NODES, PODS, REPLICASETS, ClusterState, parse_selector
from jouleledger.controller.config import OperatorConfig
from jouleledger.controller.promsource import AccountingSource, PrometheusSource
from jouleledger.controller.relist import LIST_PATHS, list_params
from jouleledger.controller.scrape import AgentClientConfig, AgentScraper, build_agent_client
from jouleledger.controller.serving import ServingAccounting
from jouleledger.core.contract import AGENT_PORT, AGENT_SELECTOR, COMPLETION_POLL_S, OPERATOR_PORT, SCRAPE_INTERVAL_S
from jouleledger.core.footprints import CLOCK_SKEW_ALLOWANCE_S
from jouleledger.core.sharding import UNSHARDED, ShardSpec
from jouleledger.intensity import IntensityProvider
from jouleledger.kube.api import ApiError, KubeApi, build_api_client
from jouleledger.metrics.operator_collector import OperatorCollector
from jouleledger.metrics.server import MetricsServer
from jouleledger.metrics.serving import ServingCollector
from jouleledger.metrics.webconfig import WebConfig
from jouleledger.promapi import Connection, PrometheusApi, build_client

__all__ = ["OperatorApp", "OperatorOptions", "configure_watching", "default_login"]

log = logging.getLogger(__name__)

WATCHED: tuple[tuple[str, str, str], ...] = (
    ("", "v1", PODS),
    ("batch", "v1", JOBS),
    ("apps", "v1", REPLICASETS),
    ("", "v1", NODES),
)
"""``(group, version, plural)`` of every resource the operator observes."""


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """The command-line options of ``jouleledger operator``."""

    listen_address: str = "0.0.0.0"
    port: int = OPERATOR_PORT
    agent_namespace: str = ""
    agent_selector: str = AGENT_SELECTOR
    agent_port: int = AGENT_PORT
    scrape_interval_s: float = SCRAPE_INTERVAL_S
    completion_poll_s: float = COMPLETION_POLL_S  # completion reads between passes (0: none)
    standalone: bool = False
    peering: str | None = None
    dry_run: bool = False
    serve_metrics: bool = True
    web_config: WebConfig | None = None  # TLS and basic auth of /metrics (--web-config-file)
    agent_client: AgentClientConfig = field(default_factory=AgentClientConfig)  # how the agents are scraped
    shard: ShardSpec = UNSHARDED  # --shard/--total-shards: the workloads this process owns (core/sharding.py)
    prometheus: Connection | None = None  # --source prometheus: read the agents' counters there (promsource.py)
    prometheus_selector: str = ""  # extra label matchers of the agents' series in Prometheus


WATCH_SERVER_TIMEOUT_S: Final = 300  # whole seconds: the API server refuses "300.0" (400 Bad Request)
"""Each watch asks the API server to end it after this (``timeoutSeconds``); kopf then watches again."""
WATCH_CLIENT_TIMEOUT_S: Final = 330.0
"""A watch still open after this is dropped by the operator itself and watched again: a connection that hangs (the
server neither sends nor closes it, a half-open TCP connection through a dead load balancer) costs at most this."""
KOPF_RESTART_BACKOFF_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before starting kopf again after it stopped with an error nobody asked for (then 30 s each time)."""


def configure_watching(settings: kopf.OperatorSettings) -> None:
    """Finite watch timeouts (kopf's defaults wait on a silent connection for ever): the production values, except
    where ``settings`` already set one (tests hang a watch and set a short client timeout). kopf's own inactivity
    timeout (70 s without an event or a bookmark) stays as it is."""
    watching = settings.watching
    if watching.server_timeout is None:
        watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    if watching.client_timeout is None:
        watching.client_timeout = WATCH_CLIENT_TIMEOUT_S


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The in-cluster service account, else the kubeconfig (through the Kubernetes client library)."""
    info = kopf.login_with_service_account(**kwargs)
    if info is not None:
        return info
    result = kopf.login_via_client(**kwargs)
    return result if isinstance(result, kopf.ConnectionInfo) else None


class OperatorApp:
    """Everything the operator runs, wired together; collaborators are injectable for tests."""

    def __init__(
        self,
        options: OperatorOptions,
        config: OperatorConfig,
        provider: IntensityProvider,
        *,
        connection: kopf.ConnectionInfo | None = None,
        login: Callable[..., kopf.ConnectionInfo | None] = default_login,
        clock: Callable[[], float] = time.time,
        metrics_registry: CollectorRegistry | None = None,
        write_interval_s: float | None = None,
        finalize_deadline_s: float | None = None,
        clock_skew_s: float = CLOCK_SKEW_ALLOWANCE_S,
        api_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        restart_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.config = config
        self.provider = provider
        self.connection = connection
        self._login = login
        self._relogin = connection is None  # credentials given to the constructor are final
        self._clock = clock
        self._write_interval_s = write_interval_s
        self._finalize_deadline_s = finalize_deadline_s
        self._clock_skew_s = clock_skew_s
        self._api_sleep = api_sleep  # how the API client waits before a retry
        self._restart_sleep = restart_sleep  # how operate() waits before starting kopf again
        self.kopf_restarts = 0
        self.cluster = ClusterState(
            team_label=config.team_label,
            agent_namespace=options.agent_namespace,
            agent_selector=parse_selector(options.agent_selector),
            agent_port=options.agent_port,
            zone_of=config.zone_of,
        )
        self.metrics_registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
        self.serving = ServingAccounting()
        self.accountant: Accountant | None = None
        self.metrics_port: int | None = None
        self._kube: KubeApi | None = None
        self._agent_client: AgentHttpClient | None = None
        self._source: PrometheusSource | None = None
        self._completion_client: AgentHttpClient | None = None  # the direct completion reads' own connections
        self._completion_source: PrometheusSource | None = None
        self._stop = asyncio.Event()
        self._flushed = True  # nothing to flush before accounting started
        self._task: asyncio.Task[None] | None = None
        self._server: MetricsServer | None = None

    # --- wiring ------------------------------------------------------------------------------------------------

    def _connect(self, *, again: bool = False, **login_kwargs: Any) -> kopf.ConnectionInfo:
        """kopf's credentials, which :class:`KubeApi` is built from too. kopf asks again (``again``) after a 401,
        when a rotated token's predecessor was refused: the login then runs anew (the service-account token is read
        from its file again) rather than handing kopf back what the server refused."""
        if self.connection is None or (again and self._relogin):
            self.connection = self._login(**login_kwargs) or self.connection
        if self.connection is None:
            raise kopf.PermanentError("no Kubernetes credentials: neither a service account nor a kubeconfig")
        return self.connection

    def _agent_scraper(self, client: AgentHttpClient) -> AgentScraper:
        return AgentScraper(
            client,
            timeout_s=self.config.scrape_timeout_s,
            concurrency=self.config.scrape_concurrency,
            backoff_base_s=self.options.scrape_interval_s,
            backoff_max_s=8 * self.options.scrape_interval_s,
            agent_client=self.options.agent_client,
        )

    def _build(self, connection: kopf.ConnectionInfo) -> Accountant:
        self._kube = KubeApi(build_api_client(connection), sleep=self._api_sleep)
        self._agent_client = build_agent_client(self.options.agent_client)
        scraper: AccountingSource = self._agent_scraper(self._agent_client)
        completions: AccountingSource | None = None
        if self.options.prometheus is not None:
            self._source = PrometheusSource(
                PrometheusApi(build_client(self.options.prometheus)),
                selector=self.options.prometheus_selector,
                clock=self._clock,
                live_pods=self.cluster.pods,
            )
            scraper = self._source
            if self.options.completion_poll_s > 0:
                # A completion read asks for a few hundred series: it waits for Prometheus as long as a direct read
                # waits for an agent (scrape.timeoutSeconds), so one stalled query cannot hold every finished Job
                # until the whole-answer timeout; the next read asks again, and the passes cover what it missed.
                bounded = min(self.options.prometheus.timeout_s, self.config.scrape_timeout_s)
                completions = self._completion_source = PrometheusSource(
                    PrometheusApi(build_client(replace(self.options.prometheus, timeout_s=bounded))),
                    selector=self.options.prometheus_selector,
                    clock=self._clock,
                    live_pods=self.cluster.pods,
                    targets_only=True,
                )
        elif self.options.completion_poll_s > 0:
            self._completion_client = build_agent_client(self.options.agent_client)
            completions = self._agent_scraper(self._completion_client)
        self.accountant = Accountant(
            config=self.config,
            provider=self.provider,
            api=self._kube,
            scraper=scraper,
            cluster=self.cluster,
            scrape_interval_s=self.options.scrape_interval_s,
            dry_run=self.options.dry_run,
            clock=self._clock,
            write_interval_s=self._write_interval_s,
            finalize_deadline_s=self._finalize_deadline_s,
            clock_skew_s=self._clock_skew_s,
            serving=self.serving,
            shard=self.options.shard,
            completion_source=completions,
            completion_poll_s=self.options.completion_poll_s,
        )
        return self.accountant

    def _start_metrics(self, accountant: Accountant) -> None:
        if not self.options.serve_metrics:
            return
        self.metrics_registry.register(OperatorCollector(accountant.view))
        self.metrics_registry.register(ServingCollector(self.serving.view))
        self._server = MetricsServer(
            self.metrics_registry, accountant.health, web_config=self.options.web_config, prefer_text=True
        )
        self.metrics_port = self._server.start(self.options.listen_address, self.options.port)

    async def start_accounting(self, **login_kwargs: Any) -> Accountant:
        """Build the accountant, serve metrics, start the accounting task (the startup handler calls this)."""
        accountant = self._build(self._connect(**login_kwargs))
        self._start_metrics(accountant)
        self._stop.clear()
        self._flushed = False
        self._task = asyncio.create_task(accountant.run_forever(self._stop), name="jouleledger accounting")
        return accountant

    async def stop_accounting(self) -> None:
        """Stop the accounting task, persist every changed footprint (SIGTERM, kopf shutdown), stop the metrics server
        and the HTTP clients (the cleanup handler calls this)."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=max(5.0, 2 * self.options.scrape_interval_s))
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self.accountant is not None and not self._flushed:
            self._flushed = True
            try:
                await self.accountant.flush()
            except Exception:  # shutting down: log, never hang the exit
                log.exception("flushing the footprints at shutdown failed")
        if self._server is not None:
            self._server.stop()
            self._server = None
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self._kube is not None:
            await self._kube.aclose()
        if self._agent_client is not None:
            await self._agent_client.aclose()
        self._kube = self._agent_client = None
        if self._source is not None:
            await self._source.aclose()
            self._source = None
        if self._completion_client is not None:
            await self._completion_client.aclose()
            self._completion_client = None
        if self._completion_source is not None:
            await self._completion_source.aclose()
            self._completion_source = None
        await self.serving.aclose()
        with contextlib.suppress(Exception):
            await self.provider.aclose()

    # --- kopf --------------------------------------------------------------------------------------------------

    def kopf_registry(self) -> kopf.OperatorRegistry:
        """A fresh registry with the operator's handlers (never the global default registry)."""
        registry = kopf.OperatorRegistry()
        app = self

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo:
            return app._connect(again=True, **kwargs)

        @kopf.on.startup(registry=registry)
        async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
            settings.posting.enabled = False  # the operator posts its own Events, on Jobs only
            settings.scanning.disabled = True
            configure_watching(settings)
            # Only agent pods are watched (server-side selectors): 10,000 workload pods cost kopf nothing.
            settings.watching.label_selectors["pods"] = app.options.agent_selector
            if app.options.agent_namespace:
                settings.watching.field_selectors["pods"] = f"metadata.namespace={app.options.agent_namespace}"
            await app.start_accounting(settings=settings, logger=kwargs.get("logger", log))

        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            await app.stop_accounting()

        for group, version, plural in WATCHED:
            registry_handler = _observer(app.cluster, plural)
            kopf.on.event(group, version, plural, registry=registry, id=f"observe-{plural}")(registry_handler)
        return registry

    async def operate(
        self,
        *,
        stop_flag: asyncio.Event | None = None,
        ready_flag: asyncio.Event | None = None,
        settings: kopf.OperatorSettings | None = None,
    ) -> None:
        """Run kopf (cluster-wide) with the operator's handlers until stopped or cancelled.

        kopf stops with an error when one of its watch streams fails in a way it does not retry (seen: a 401 makes
        kopf close the session of the refused credentials, and another watch still reading from it gets aiohttp's
        ``RuntimeError: Connection closed``); it then skips its cleanup handlers. Unless a stop was asked for, the
        accounting is stopped and flushed and kopf is started again after a backoff (the new start restores the
        footprints from the API, as after any restart)."""
        while True:
            try:
                await kopf.operator(
                    registry=self.kopf_registry(),
                    settings=settings,
                    clusterwide=True,
                    standalone=True if self.options.standalone else None,
                    peering_name=self.options.peering,
                    stop_flag=stop_flag,
                    ready_flag=ready_flag,
                )
                return
            except kopf.LoginError:
                raise  # no cluster to talk to: the command says so
            except Exception as error:  # kopf's own failure, whatever its type: never exit without a flush
                await self.stop_accounting()
                if stop_flag is not None and stop_flag.is_set():
                    log.warning("kopf stopped with an error while shutting down: %r", error)
                    return
                delay_s = KOPF_RESTART_BACKOFF_S[min(self.kopf_restarts, len(KOPF_RESTART_BACKOFF_S) - 1)]
                self.kopf_restarts += 1
                log.error("kopf stopped with an error (%r); starting it again in %.0f s", error, delay_s)
                await self._restart_sleep(delay_s)

    # --- --once ------------------------------------------------------------------------------------------------

    async def once(self) -> PassSummary:
        """List what kopf would watch, run one accounting pass (writing every change), close everything."""
        async with self.listed() as accountant:
            return await accountant.run_pass()

    @contextlib.asynccontextmanager
    async def listed(self) -> AsyncIterator[Accountant]:
        """The accountant of ``--once``: connected, the cluster listed once as kopf would watch it, every change
        written at each pass; its clients closed on exit."""
        accountant = self._build(self._connect(settings=kopf.OperatorSettings(), logger=log))
        accountant.write_interval_s = 0.0
        try:
            for plural, path in LIST_PATHS.items():
                params = list_params(plural, self.options.agent_selector, self.options.agent_namespace)
                try:
                    objects = await accountant.api.list(path, params=params)
                except ApiError as error:
                    log.error("cannot list %s: %s", plural, error)
                    continue
                for obj in objects:
                    self.cluster.apply(plural, None, obj)
            yield accountant
        finally:
            await self._close_clients()


def _observer(cluster: ClusterState, plural: str) -> Callable[..., None]:
    def observe(event: Any, body: Any, **_: Any) -> None:
        cluster.apply(plural, event.get("type"), body)

    observe.__name__ = f"observe_{plural}"
    return observe

"""Serving pods' request and token counters, read once per accounting pass, against the ledger's per-pod energy.

:class:`ServingAccounting` keeps the serving pods it has seen (pods annotated ``jouleledger.io/serving``, from the
same pod events the operator already watches), gets every per-pod energy delta the ledger folds
(:meth:`ServingAccounting.add_deltas`), and after each fold reads each serving pod's ``/metrics`` over HTTP
(:meth:`ServingAccounting.read_all`). The arithmetic is :mod:`jouleledger.core.serving`; the view it publishes is
exported by :class:`jouleledger.metrics.serving.ServingCollector`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from jouleledger.controller.scrape import BodyTooLargeError, fetch_bounded
from jouleledger.core.carbon import operational_g
from jouleledger.core.deltas import ScrapeDeltas
from jouleledger.core.footprints import IntervalRates
from jouleledger.core.serving import (
    ANNOTATION,
    ServingConfigError,
    ServingInterval,
    ServingMeter,
    ServingProfile,
    ServingTotals,
    ServingView,
    WorkloadServing,
    combine,
    read_counters,
    serving_profile,
)
from jouleledger.kube.api import ApiError, KubeApi
from jouleledger.metrics.operator_collector import ExpositionError, parse_exposition

__all__ = ["ServingAccounting", "ServingTarget", "serving_target"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 16 * 1024 * 1024
RESULTS: Final = ("ok", "error", "timeout", "invalid", "list_error")


@dataclass(frozen=True, slots=True)
class ServingTarget:
    uid: str
    namespace: str
    pod: str
    workload_kind: str
    workload: str
    url: str
    profile: ServingProfile


def serving_target(body: Mapping[str, Any]) -> ServingTarget | None:
    """The serving target a Pod object describes; None when it did not opt in or has no IP yet.

    A pod opts in with the label ``jouleledger.io/serving`` (so that the operator can list serving pods with a
    label selector) or the annotation of the same name (the annotation wins), port, path and metric names in
    annotations. ServingConfigError for settings that cannot be used."""
    metadata = body.get("metadata") or {}
    settings = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
    label = (metadata.get("labels") or {}).get(ANNOTATION)
    if label is not None:
        settings.setdefault(ANNOTATION, str(label))
    profile = serving_profile(settings)
    if profile is None:
        return None
    ip = str((body.get("status") or {}).get("podIP") or "")
    uid = str(metadata.get("uid") or "")
    if not ip or not uid:
        return None
    owner = next((ref for ref in metadata.get("ownerReferences") or () if ref.get("controller")), None)
    name = str(metadata.get("name") or "")
    kind, workload = (str(owner.get("kind")), str(owner.get("name"))) if owner else ("Pod", name)
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{profile.port}{profile.path}"
    try:
        httpx.URL(url)  # reading an invalid URL would raise httpx.InvalidURL, which is no httpx.HTTPError
    except httpx.InvalidURL as error:
        raise ServingConfigError(f"not a URL the operator can read: {url[:80]!r} ({error})") from None
    return ServingTarget(uid, str(metadata.get("namespace") or ""), name, kind, workload, url, profile)


class ServingAccounting:
    """Serving pods, their meter and their reads (``client`` injectable: ``httpx.MockTransport`` in tests)."""

    def __init__(self, client: httpx.AsyncClient | None = None, *, timeout_s: float = 5.0, concurrency: int = 16):
        self._client = client
        self._own_client = client is None
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self.targets: dict[str, ServingTarget] = {}
        self.meter = ServingMeter()
        self.reads: Counter[str] = Counter()
        self._workload_totals: dict[tuple[str, str, str], ServingTotals] = {}
        self._view = ServingView()

    def view(self) -> ServingView:
        return self._view

    def observe_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A pod event (the operator's pod watch): track or forget the pod as a serving target."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        if event_type == "DELETED":
            self.targets.pop(uid, None)
            self.meter.forget(uid)
            return
        try:
            target = serving_target(body)
        except ServingConfigError as error:
            log.warning("pod %s: serving annotations ignored: %s", uid, error)
            self.reads["invalid"] += 1
            target = None
        if target is None:
            if self.targets.pop(uid, None) is not None:
                self.meter.forget(uid)
            return
        self.targets[uid] = target

    async def refresh(self, api: KubeApi) -> None:
        """List the pods labelled ``jouleledger.io/serving`` (any namespace) and track exactly those."""
        try:
            pods = await api.list("/api/v1/pods", params={"labelSelector": ANNOTATION})
        except ApiError as error:
            log.warning("cannot list serving pods (keeping the previous list): %s", error)
            self.reads["list_error"] += 1
            return
        seen: set[str] = set()
        for body in pods:
            if (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            self.observe_pod("MODIFIED", body)
            seen.add(str((body.get("metadata") or {}).get("uid") or ""))
        for uid in set(self.targets) - seen:
            self.observe_pod("DELETED", {"metadata": {"uid": uid}})

    async def run_pass(self, api: KubeApi, now: float) -> None:
        """The operator's hook after each fold: refresh the serving pods, then read them."""
        await self.refresh(api)
        await self.read_all(now)

    def add_deltas(self, deltas: ScrapeDeltas, rates: IntervalRates) -> None:
        """The per-pod energy deltas the ledger just folded (their operational carbon at the same rates)."""
        for delta in deltas.pods:
            if delta.energy_mj and delta.pod.uid in self.targets:
                grams = operational_g(delta.energy_mj, rates.pue, rates.intensity_g_per_kwh)
                self.meter.add_energy(delta.pod.uid, delta.energy_mj, grams)

    async def _read(self, client: httpx.AsyncClient, target: ServingTarget, now: float) -> str:
        async with self._slots:
            try:  # a tenant's pod: the whole read is bounded in time and size (see fetch_bounded)
                status, body = await fetch_bounded(
                    client, target.url, timeout_s=self.timeout_s, max_body_bytes=MAX_BODY_BYTES
                )
            except (TimeoutError, httpx.TimeoutException):
                return "timeout"
            except (httpx.HTTPError, OSError, BodyTooLargeError) as error:
                log.debug("serving pod %s/%s: %s", target.namespace, target.pod, error)
                return "error"
        if status != 200:
            return "error"
        try:
            counters = read_counters(parse_exposition(body.decode("utf-8")), target.profile)
        except (ExpositionError, ValueError) as error:
            log.warning("serving pod %s/%s: %s", target.namespace, target.pod, error)
            return "invalid"
        interval = self.meter.observe(target.uid, now, counters)
        if interval is not None:
            key = (target.namespace, target.workload_kind, target.workload)
            self._workload_totals.setdefault(key, ServingTotals()).add(interval)
        return "ok"

    async def read_all(self, now: float) -> None:
        """Read every serving pod's counters (after the pass's fold) and publish a fresh view."""
        if self.targets:
            if self._client is None:
                self._client = httpx.AsyncClient(follow_redirects=False)
            client = self._client
            results = await asyncio.gather(*(self._read(client, t, now) for t in list(self.targets.values())))
            self.reads.update(results)
        self._publish()

    def _publish(self) -> None:
        latest: dict[tuple[str, str, str], list[ServingInterval]] = {}
        for uid, target in self.targets.items():
            interval = self.meter.latest.get(uid)
            if interval is not None:
                latest.setdefault((target.namespace, target.workload_kind, target.workload), []).append(interval)
        workloads = tuple(
            WorkloadServing(*key, combine(latest.get(key, ())), totals)
            for key, totals in sorted(self._workload_totals.items())
        )
        self._view = ServingView(workloads, dict(self.reads), self.meter.resets)

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None

"""The operator's serving hook (controller/serving.py) and its metrics (metrics/serving.py): serving pods listed
by label, their counters read over HTTP (httpx.MockTransport), energy from the ledger's per-pod deltas."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from jouleledger.controller.serving import ServingAccounting, serving_target
from jouleledger.core.deltas import PodDelta, PodIdentity, ScrapeDeltas, SeriesKey
from jouleledger.core.footprints import IntervalRates
from jouleledger.core.serving import ServingInterval, ServingTotals, ServingView, WorkloadServing
from jouleledger.kube.api import ApiError
from jouleledger.metrics.serving import ServingCollector
from tests._tools import require_tool

RATES = IntervalRates(0.0, 15.0, "z", 250.0, "static", 1.2, 0.2, "EUR", "measured-nvml-energy-counter")


def _pod(name: str, ip: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name, "namespace": "serving", "uid": f"uid-{name}",
            "labels": {"jouleledger.io/serving": "vllm"}, "annotations": annotations,
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{name}-rs", "controller": True}],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }  # fmt: skip


class FakeApi:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.calls: list[tuple[str, Mapping[str, str] | None]] = []
        self.fail = False

    async def list(self, path: str, *, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        self.calls.append((path, params))
        if self.fail:
            raise ApiError("GET", path, 503, "Unavailable", "down")
        return self.pods


class Servers:
    """Each pod IP's vLLM counters."""

    def __init__(self) -> None:
        self.counters: dict[str, tuple[float, float, float]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host not in self.counters:
            return httpx.Response(503)
        requests, prompt, output = self.counters[host]
        body = (
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="stop"}} {requests}\n'
            f"vllm:prompt_tokens_total {prompt}\nvllm:generation_tokens_total {output}\n"
        )
        return httpx.Response(200, text=body)


def _delta(uid: str, name: str, energy_mj: int) -> PodDelta:
    key = SeriesKey("n1", "serving", name, "vllm", "GPU-1")
    return PodDelta(key, PodIdentity("serving", name, uid), energy_mj, 15.0, "counter", energy_mj, 15.0)


def _value(registry: CollectorRegistry, name: str, workload: str) -> float | None:
    labels = {"namespace": "serving", "workload_kind": "ReplicaSet", "workload": workload}
    return registry.get_sample_value(name, labels)


async def test_two_serving_pods_get_their_own_figures() -> None:
    servers = Servers()
    client = httpx.AsyncClient(transport=httpx.MockTransport(servers))
    serving = ServingAccounting(client)
    api = FakeApi([_pod("chat-a", "10.0.0.1"), _pod("chat-b", "10.0.0.2")])
    servers.counters = {"10.0.0.1": (100, 10_000, 5_000), "10.0.0.2": (7, 700, 70)}
    await serving.run_pass(api, 0.0)  # type: ignore[arg-type]
    assert api.calls == [("/api/v1/pods", {"labelSelector": "jouleledger.io/serving"})]
    pods = (_delta("uid-chat-a", "chat-a", 30_000_000), _delta("uid-chat-b", "chat-b", 10_000_000))
    serving.add_deltas(ScrapeDeltas("n1", False, pods, {}), RATES)
    servers.counters = {"10.0.0.1": (130, 13_000, 8_000), "10.0.0.2": (7, 700, 70)}  # b served nothing
    await serving.run_pass(api, 15.0)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(ServingCollector(serving.view))
    assert _value(registry, "jouleledger_workload_energy_joules_per_request", "chat-a-rs") == pytest.approx(1000.0)
    assert _value(registry, "jouleledger_workload_energy_joules_per_output_token", "chat-a-rs") == pytest.approx(10.0)
    assert _value(registry, "jouleledger_workload_energy_joules_per_token", "chat-a-rs") == pytest.approx(5.0)
    grams = 30_000_000 / 3_600_000_000 * 1.2 * 250.0
    assert _value(registry, "jouleledger_workload_carbon_grams_per_1000_requests", "chat-a-rs") == pytest.approx(
        grams / 30 * 1000
    )
    assert _value(registry, "jouleledger_workload_serving_interval_seconds", "chat-a-rs") == 15.0
    # no request in the interval: no ratio at all (not 0, not +Inf), the energy still counted
    assert _value(registry, "jouleledger_workload_energy_joules_per_request", "chat-b-rs") is None
    assert _value(registry, "jouleledger_workload_serving_energy_joules_total", "chat-b-rs") == 10_000.0
    assert _value(registry, "jouleledger_workload_serving_requests_total", "chat-a-rs") == 30.0
    assert registry.get_sample_value("jouleledger_operator_serving_reads_total", {"result": "ok"}) == 4.0
    await client.aclose()


async def test_failures_are_counted_and_pods_that_leave_are_forgotten() -> None:
    servers = Servers()
    client = httpx.AsyncClient(transport=httpx.MockTransport(servers))
    serving = ServingAccounting(client)
    api = FakeApi([_pod("chat-a", "10.0.0.1"), _pod("bad", "10.0.0.3", **{"jouleledger.io/serving-port": "x"})])
    await serving.run_pass(api, 0.0)  # type: ignore[arg-type]
    assert set(serving.targets) == {"uid-chat-a"}
    assert serving.reads["invalid"] == 1
    assert serving.reads["error"] == 1  # 503 from the server
    api.fail = True
    await serving.run_pass(api, 15.0)  # type: ignore[arg-type]
    assert serving.reads["list_error"] == 1
    assert set(serving.targets) == {"uid-chat-a"}  # kept the previous list
    api.fail = False
    api.pods = []
    await serving.run_pass(api, 30.0)  # type: ignore[arg-type]
    assert serving.targets == {}
    await client.aclose()


def test_target_from_a_pod() -> None:
    target = serving_target(_pod("chat-a", "fd00::5", **{"jouleledger.io/serving-port": "9000"}))
    assert target is not None
    assert (target.url, target.workload_kind, target.workload) == ("http://[fd00::5]:9000/metrics", "ReplicaSet",
                                                                   "chat-a-rs")  # fmt: skip
    assert serving_target(_pod("no-ip", "")) is None
    plain = _pod("plain", "10.0.0.9")
    plain["metadata"]["labels"] = {}
    assert serving_target(plain) is None


def test_exposition_passes_promtool() -> None:
    promtool = require_tool("promtool")
    interval = ServingInterval(0.0, 15.0, 30_000_000, 2.5, 30.0, 3000.0, 3000.0)
    totals = ServingTotals(30_000_000, 2.5, 30.0, 3000.0, 3000.0)
    view = ServingView((WorkloadServing("serving", "ReplicaSet", "chat-a-rs", interval, totals),), {"ok": 2}, 0)
    registry = CollectorRegistry()
    registry.register(ServingCollector(lambda: view))
    answer = subprocess.run([promtool, "check", "metrics"], input=generate_latest(registry), capture_output=True,
                            timeout=60, check=False)  # fmt: skip
    assert answer.returncode == 0, answer.stdout + answer.stderr

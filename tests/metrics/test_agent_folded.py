"""``/metrics?folded_until=T``: a consumer that has folded the agent's finished pods stops paying for them.

Times refer to ``tests/metrics/_views.py``: web-0's old record finished at T0+20, batch-0's two records at T0+30
and T0+60, done-0 at T0+50; train-0, infer-0 and web-0's new record run.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.core import contract as names
from jouleledger.metrics.agent import AgentCollector, scoped_registry
from jouleledger.metrics.server import MetricsServer
from tests.metrics._views import T0, example_view


def _pod_energy(body: bytes) -> dict[tuple[str, str], float]:
    """Summed energy per (namespace, pod) of the exposition."""
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == f"{names.POD_ENERGY}_total":
                key = (sample.labels["namespace"], sample.labels["pod"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _finished(body: bytes) -> dict[str, float]:
    return {
        sample.labels["pod"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == names.POD_FINISHED
    }


def _render(folded_until_s: float | None) -> bytes:
    registry = CollectorRegistry()
    registry.register(AgentCollector(example_view, folded_until_s=folded_until_s))
    return generate_latest(registry)


def test_pods_finished_at_or_before_the_folded_time_are_left_out() -> None:
    everything = _render(None)
    body = _render(T0 + 50)
    assert _pod_energy(everything)[("team-a", "done-0")] == 0.25
    energy = _pod_energy(body)
    # done-0 (T0+50) and web-0's old record (T0+20) and batch-0's first (T0+30) are folded; batch-0's second
    # (T0+60) is not, so the name stays with that record's totals only
    assert ("team-a", "done-0") not in energy
    assert energy[("team-a", "web-0")] == 0.25
    assert energy[("team-a", "batch-0")] == 3.0
    assert energy[("team-a", "train-0")] == _pod_energy(everything)[("team-a", "train-0")]
    assert _finished(body) == {"batch-0": T0 + 60}
    assert b"uid-done-0" not in body
    assert b"uid-web-old" not in body
    assert b"uid-web-new" in body
    # GPU totals are not the pods': unchanged
    gpu_lines = [line for line in everything.splitlines() if line.startswith(names.GPU_ENERGY.encode())]
    assert gpu_lines
    assert all(line in body.splitlines() for line in gpu_lines)


def test_a_folded_time_before_every_finish_changes_nothing() -> None:
    assert _render(T0) == _render(None)


def test_a_folded_time_after_the_agents_latest_sample_is_ignored() -> None:
    """The view's sample time is T0+100: a later T cannot come from these counters (clock stepped back)."""
    assert _render(T0 + 100.5) == _render(None)
    assert _render(T0 + 100) != _render(None)


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(example_view))
    metrics_server = MetricsServer(
        registry, lambda: (True, {}), request_timeout_s=5.0, scoped=scoped_registry(example_view)
    )
    metrics_server.start("127.0.0.1", 0)
    yield metrics_server
    metrics_server.stop()


def _get(server: MetricsServer, query: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics{query}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_server_renders_for_the_query(server: MetricsServer) -> None:
    status, full = _get(server, "")
    assert status == 200
    assert ("team-a", "done-0") in _pod_energy(full)
    status, scoped = _get(server, f"?folded_until={T0 + 50}")
    assert status == 200
    assert ("team-a", "done-0") not in _pod_energy(scoped)
    # other parameters (a Prometheus scrape config's params) leave the exposition whole
    assert _get(server, "?module=gpu") == (200, full)


@pytest.mark.parametrize(
    "query", ["?folded_until=soon", "?folded_until=nan", "?folded_until=inf", "?folded_until=1&folded_until=2"]
)
def test_a_bad_folded_time_is_a_400_naming_the_parameter(server: MetricsServer, query: str) -> None:
    status, body = _get(server, query)
    assert status == 400
    assert b"folded_until" in body
    assert body.count(b"\n") == 1

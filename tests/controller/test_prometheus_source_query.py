"""The Prometheus source's query and its answer: target labels dropped by the source (also when one agent's series
are stored under several targets), and the order of a re-created pod's records."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Container
from typing import Any

import httpx
import pytest

from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.promsource import PrometheusSource
from jouleledger.controller.scrape import ERROR, OK
from jouleledger.core.deltas import parse_agent_samples
from jouleledger.core.promsource import agent_query, node_matcher
from jouleledger.metrics.operator_collector import parse_exposition
from jouleledger.promapi import PrometheusApi
from tests.controller._exposition import Pod, agent_text

TEXT = agent_text("n1", 100.0, [Pod("ml", "a", "uid-a", 12.5, 3.0, "Job", "j", "job-1")], epoch="ab" * 8)
TARGET = AgentTarget("n1", "agent-n1", "10.0.0.1", 9470)


def _source(prometheus: Callable[[httpx.Request], httpx.Response], live_pods: Container[str] = ()) -> PrometheusSource:
    transport = httpx.MockTransport(prometheus)
    return PrometheusSource(PrometheusApi(httpx.Client(base_url="http://p", transport=transport)), live_pods=live_pods)


def _vector(with_target_labels: bool) -> dict[str, Any]:
    target = {"job": "a", "instance": "10.0.0.1:9470"} if with_target_labels else {}
    result = [
        {"metric": {"__name__": name, **labels, **target}, "value": [100.0, repr(value)]}
        for name, labels, value in parse_exposition(TEXT)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


async def test_the_answer_with_target_labels_reads_as_the_direct_scrape() -> None:
    asked: list[str] = []

    def prometheus(request: httpx.Request) -> httpx.Response:
        asked.append(urllib.parse.parse_qs(request.content.decode())["query"][0])
        return httpx.Response(200, content=json.dumps(_vector(with_target_labels=True)))

    outcomes = await _source(prometheus).scrape_all([TARGET])
    assert asked == [agent_query()]
    assert [outcome.result for outcome in outcomes] == [OK]
    assert outcomes[0].scrape == parse_agent_samples(parse_exposition(TEXT), expected_node="n1")


async def test_one_agent_stored_under_two_targets_is_read_once() -> None:
    """Two scrape jobs (or an HA pair without deduplication) store the same agent's samples twice: the copies are
    identical once the target labels are dropped, and harmless."""
    vector = _vector(with_target_labels=True)
    copies = [{**item, "metric": {**item["metric"], "job": "b"}} for item in vector["data"]["result"]]
    vector["data"]["result"].extend(copies)
    outcomes = await _source(lambda _: httpx.Response(200, content=json.dumps(vector))).scrape_all([TARGET])
    assert [outcome.result for outcome in outcomes] == [OK]
    assert outcomes[0].scrape == parse_agent_samples(parse_exposition(TEXT), expected_node="n1")


async def test_the_source_reads_which_pods_exist_at_every_pass_to_order_a_re_created_pod() -> None:
    """A pod re-created under its name: new energy is the pod's that exists now, as the pod watch says at that pass
    (the agent's own order of the two records is lost in Prometheus)."""
    old, new = Pod("ml", "train", "uid-z-old", 0.0, 0.0), Pod("ml", "train", "uid-b-new", 8.0, 2.0)
    text = agent_text("n1", 100.0, [new], extra_info=[old], epoch="ab" * 8)
    result = [
        {"metric": {"__name__": name, **labels}, "value": [100.0, repr(value)]}
        for name, labels, value in parse_exposition(text)
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}, separators=(",", ":"))
    live: dict[str, object] = {"uid-z-old": object()}  # the watch has not seen the deletion yet
    source = _source(lambda _: httpx.Response(200, content=body.encode()), live)

    async def newest() -> str:
        (outcome,) = await source.scrape_all([TARGET])
        assert outcome.result == OK
        assert outcome.scrape is not None
        pod = outcome.scrape.newest_pod("ml", "train")
        assert pod is not None
        return pod.uid

    assert await newest() == "uid-z-old"
    del live["uid-z-old"]  # the watch sees the deletion and the new pod, in the same mapping
    live["uid-b-new"] = object()
    assert await newest() == "uid-b-new"


async def test_a_completion_reads_source_asks_for_its_targets_nodes_only() -> None:
    asked: list[str] = []

    def prometheus(request: httpx.Request) -> httpx.Response:
        asked.append(urllib.parse.parse_qs(request.content.decode())["query"][0])
        return httpx.Response(200, content=json.dumps(_vector(with_target_labels=True)))

    transport = httpx.MockTransport(prometheus)
    api = PrometheusApi(httpx.Client(base_url="http://p", transport=transport))
    source = PrometheusSource(api, selector='job="a"', targets_only=True)
    other = AgentTarget("gpu-1.rack-2", "agent-x", "10.0.0.2", 9470)
    outcomes = await source.scrape_all([TARGET, other])
    assert asked == [agent_query('job="a"', ["n1", "gpu-1.rack-2"])]
    assert asked[0].endswith(r',job="a",node=~"gpu-1\\.rack-2|n1"}')
    assert [outcome.result for outcome in outcomes] == [OK, ERROR]  # Prometheus holds no series of the other node
    assert await source.scrape_all([]) == []
    assert len(asked) == 1

    bad = AgentTarget('n1"}', "agent-y", "10.0.0.3", 9470)
    assert [outcome.result for outcome in await source.scrape_all([bad])] == [ERROR]  # never written into a query
    assert len(asked) == 1


async def test_a_completion_read_that_prometheus_does_not_answer_in_time_fails_alone() -> None:
    """A stalled query is every target's error, and the next read asks again (and is read as usual)."""
    answers = ["stall", "answer"]

    def prometheus(request: httpx.Request) -> httpx.Response:
        if answers.pop(0) == "stall":
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200, content=json.dumps(_vector(with_target_labels=True)))

    api = PrometheusApi(httpx.Client(base_url="http://p", transport=httpx.MockTransport(prometheus), timeout=5.0))
    source = PrometheusSource(api, targets_only=True)
    assert source.timeout_s == 5.0
    [stalled] = await source.scrape_all([TARGET])
    assert (stalled.result, stalled.error) == (
        ERROR,
        "Prometheus at http://p/api/v1/query did not answer in time (ReadTimeout)",
    )
    [read] = await source.scrape_all([TARGET])
    assert read.result == OK
    assert read.scrape == parse_agent_samples(parse_exposition(TEXT), expected_node="n1")


def test_the_node_matcher_takes_kubernetes_node_names_only() -> None:
    assert node_matcher(["b", "a", "a"]) == 'node=~"a|b"'
    for bad in ("", "N1", 'n1"', "n1|n2", "-n1", "n" * 254):
        with pytest.raises(ValueError, match="node"):
            node_matcher([bad])
    with pytest.raises(ValueError, match="at least one"):
        node_matcher([])

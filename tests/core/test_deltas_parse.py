"""Parsing an agent's scrape (``parse_agent_samples``): series, identities, millijoules, rejections."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from jouleledger.core.deltas import ParseMemo, ScrapeFormatError, SeriesKey, SeriesValue, parse_agent_samples
from jouleledger.core.model import Owner
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import agent_text
from tests.core._footprints import H100, job_pod, scrape_of


def test_parse_maps_series_to_pod_identity_in_millijoules() -> None:
    scrape = scrape_of(agent_text("n1", 1000.5, [job_pod(12.3456, 7.5)], unallocated_j=2.5))
    key = SeriesKey("n1", "ml", "train-x", "main", "GPU-a")
    assert scrape.series == {key: SeriesValue(12346, 7.5)}  # 12.3456 J -> 12345.6 mJ -> 12346 mJ
    assert scrape.last_tick_unix_s == 1000.5
    assert scrape.backend == "nvml"
    assert scrape.unallocated_mj == {"GPU-a": 2500}
    pod = scrape.newest_pod("ml", "train-x")
    assert pod is not None
    assert (pod.uid, pod.owner, pod.labels["team"]) == ("pod-1", Owner("Job", "train", "job-1"), "vision")
    assert scrape.model_of("GPU-a") == H100
    assert scrape.model_of("MIG-zz") == H100  # a single model on the node
    assert scrape.rejected == ()


def test_parse_rejects_untrusted_values_and_counts_them() -> None:
    text = agent_text("n1", 10.0, [job_pod(5.0, 1.0)])
    text += (
        'jouleledger_pod_gpu_energy_joules_total{container="c",gpu="GPU-a",namespace="ml",node="n1",pod="ghost"} 3\n'
    )
    text = text.replace(
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-a",node="n1"} 0.0',
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-a",node="n1"} NaN\n'
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-b",node="n1"} -4\n'
        'jouleledger_gpu_unallocated_energy_joules_total{gpu="GPU-c",node="n2"} 4',
    )
    scrape = scrape_of(text)
    reasons = sorted(rejection.reason for rejection in scrape.rejected)
    assert reasons == ["negative", "no_pod_info", "not_finite", "wrong_node"]
    assert scrape.unallocated_mj == {}
    assert list(scrape.series) == [SeriesKey("n1", "ml", "train-x", "main", "GPU-a")]


def test_a_pod_series_of_another_node_is_rejected_wherever_it_comes_in_the_exposition() -> None:
    other = 'jouleledger_pod_gpu_energy_joules_total{container="main",gpu="GPU-a",namespace="ml",node="n2",pod="x"} 9\n'
    text = agent_text("n1", 10.0, [job_pod(5.0, 1.0)])
    for exposition in (other + text, text + other):  # before the agent's info too: read once its node is known
        scrape = scrape_of(exposition)
        assert [(bad.sample, bad.reason) for bad in scrape.rejected] == [
            ("jouleledger_pod_gpu_energy_joules_total", "wrong_node")
        ]
        assert scrape.series == {SeriesKey("n1", "ml", "train-x", "main", "GPU-a"): SeriesValue(5000, 1.0)}
    cache: dict[str, Mapping[str, str]] = {}
    memo = ParseMemo()
    for _ in range(2):  # the same label mappings at the next scrape: still checked, still rejected
        again = parse_agent_samples(parse_exposition(text + other, cache), expected_node="n1", memo=memo)
        assert [bad.reason for bad in again.rejected] == ["wrong_node"]


def test_parse_refuses_what_is_not_an_agent_of_that_node() -> None:
    with pytest.raises(ScrapeFormatError, match="not a Joule Ledger agent"):
        parse_agent_samples([("up", {}, 1.0)])
    with pytest.raises(ScrapeFormatError, match="runs on node 'n2'"):
        scrape_of(agent_text("n1", 1.0), node="n2")
    text = agent_text("n1", 1.0).replace("last_tick_timestamp_seconds", "other_gauge")
    with pytest.raises(ScrapeFormatError, match="last_tick"):
        scrape_of(text)


def test_a_memo_gives_the_same_scrape_and_reuses_only_the_very_same_label_mappings() -> None:
    cache: dict[str, Mapping[str, str]] = {}
    memo = ParseMemo()
    first_text = agent_text("n1", 10.0, [job_pod(5.0, 1.0)])
    first = parse_agent_samples(parse_exposition(first_text, cache), expected_node="n1", memo=memo)
    assert first == parse_agent_samples(parse_exposition(first_text), expected_node="n1")
    # The next scrape: the same label mappings (the exposition parser's cache), so the same identity object.
    second = parse_agent_samples(parse_exposition(agent_text("n1", 11.0, [job_pod(6.0, 1.5)]), cache), memo=memo)
    assert second.newest_pod("ml", "train-x") is first.newest_pod("ml", "train-x")
    assert second.series[SeriesKey("n1", "ml", "train-x", "main", "GPU-a")] == SeriesValue(6000, 1.5)
    # New label mappings (a parse without the cache) are never taken for remembered ones.
    fresh = parse_exposition(agent_text("n1", 12.0, [job_pod(7.0, 2.0)]).replace('uid="pod-1"', 'uid="pod-2"'))
    third = parse_agent_samples(fresh, expected_node="n1", memo=memo)
    pod = third.newest_pod("ml", "train-x")
    assert pod is not None
    assert pod.uid == "pod-2"
    assert set(third.series) == {SeriesKey("n1", "ml", "train-x", "main", "GPU-a")}

"""The Prometheus source's pure half: the instant query, and its result back into each agent's own samples."""

from __future__ import annotations

import pytest

from jouleledger.core.deltas import DeltaTracker, SeriesValue, parse_agent_samples
from jouleledger.core.promsource import AGENT_SAMPLE_NAMES, RegroupMemo, agent_query, samples_by_node
from jouleledger.metrics.operator_collector import parse_exposition
from tests.controller._exposition import Pod, agent_text


def _as_prometheus_returns(text: str, **target: str) -> list[tuple[dict[str, str], float]]:
    """An exposition as an instant query returns it: ``__name__`` a label, target labels added, no order."""
    result = [({"__name__": name, **labels, **target}, value) for name, labels, value in parse_exposition(text)]
    return list(reversed(result))


def test_the_query_names_every_sample_the_ledger_reads_and_the_selector() -> None:
    query = agent_query('job="jouleledger-agent", cluster=~"eu-.*"')
    for name in AGENT_SAMPLE_NAMES:
        assert name in query
    assert query.endswith(',job="jouleledger-agent", cluster=~"eu-.*"}')


@pytest.mark.parametrize("selector", ["job", 'job="a"}', "job=a", '{job="a"}'])
def test_a_selector_that_is_not_label_matchers_is_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="--prometheus-selector"):
        agent_query(selector)


def test_the_query_result_parses_to_the_same_scrape_as_the_exposition() -> None:
    pods = [Pod("ml", "a", "uid-a", 12.5, 3.0, "Job", "j", "job-1", "vision"), Pod("ml", "b", "uid-b", 1.0, 1.0)]
    texts = {node: agent_text(node, 100.0, pods, unallocated_j=7.0, epoch="ab" * 8) for node in ("n1", "n2")}
    result = [
        sample
        for node, text in texts.items()
        for sample in _as_prometheus_returns(text, job="jouleledger-agent", instance=f"{node}:9470")
    ]
    by_node = samples_by_node(result)
    assert sorted(by_node) == ["n1", "n2"]
    for node, text in texts.items():
        direct = parse_agent_samples(parse_exposition(text), expected_node=node)
        assert parse_agent_samples(by_node[node], expected_node=node) == direct


def test_agent_labels_renamed_by_prometheus_win_back() -> None:
    # Without honor_labels a target label clashing with an agent label makes Prometheus rename the agent's.
    text = agent_text("n1", 100.0, [Pod("ml", "a", "uid-a", 12.5, 3.0)])
    result = [
        (
            {
                **{f"exported_{k}" if k in ("node", "namespace", "pod") else k: v for k, v in labels.items()},
                "node": "scraper-node",
                "namespace": "monitoring",
                "pod": "agent-xyz",
            },
            value,
        )
        for labels, value in _as_prometheus_returns(text)
    ]
    by_node = samples_by_node(result)
    assert list(by_node) == ["n1"]
    assert parse_agent_samples(by_node["n1"]) == parse_agent_samples(parse_exposition(text))


def test_a_regroup_memo_gives_the_same_samples_and_keeps_each_mapping_apart() -> None:
    text = agent_text("n1", 100.0, [Pod("ml", "a", "uid-a", 12.5, 3.0), Pod("ml", "b", "uid-b", 1.0, 1.0)])
    result = _as_prometheus_returns(text, job="jouleledger-agent")
    memo = RegroupMemo()
    first = samples_by_node(result, memo)
    assert first == samples_by_node(result)
    again = samples_by_node(result, memo)
    assert [labels for _, labels, _ in again["n1"]] == [labels for _, labels, _ in first["n1"]]
    assert all(a[1] is b[1] for a, b in zip(first["n1"], again["n1"], strict=True))  # the same agent labels
    # New mappings are regrouped from their own labels.
    moved = [({**labels, "node": "n2"}, value) for labels, value in result]
    assert sorted(samples_by_node(moved, memo)) == ["n2"]


def test_new_energy_of_a_re_created_pod_goes_to_the_pod_that_exists_not_to_the_last_uid_in_label_order() -> None:
    # The old record of "train" is retained by the agent (written first: the agent orders records as it saw them);
    # its UID sorts after the new pod's, so label order alone would make the old pod the newest.
    old = Pod("ml", "train", "uid-z-old", 0.0, 0.0)
    new = Pod("ml", "train", "uid-b-new", 8.0, 2.0)
    text = agent_text("n1", 100.0, [new], extra_info=[old], epoch="ab" * 8)
    direct = parse_agent_samples(parse_exposition(text), expected_node="n1")
    result = _as_prometheus_returns(text, job="jouleledger-agent")

    unordered = parse_agent_samples(samples_by_node(result)["n1"], expected_node="n1")
    pod = unordered.newest_pod("ml", "train")
    assert pod is not None
    assert pod.uid == "uid-z-old"  # what label order alone gives

    ordered = parse_agent_samples(samples_by_node(result, live_pods={"uid-b-new"})["n1"], expected_node="n1")
    assert ordered.pods == direct.pods
    tracker = DeltaTracker()
    tracker.restore(next(iter(ordered.series)), "uid-z-old", SeriesValue(5000, 1.0, "ab" * 8))
    deltas = tracker.observe(ordered)
    assert [(delta.pod.uid, delta.energy_mj) for delta in deltas.pods] == [("uid-b-new", 3000)]

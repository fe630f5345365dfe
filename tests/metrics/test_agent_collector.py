"""The agent collector against a hand-built export view (see ``_views.py`` for the numbers)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from jouleledger.core import contract as names
from jouleledger.core.snapshot import ExportView
from jouleledger.metrics.agent import AgentCollector, label_name_for, pod_info_label_names
from tests.metrics._views import NODE, T0, example_view, running_pods_view

POD_LABEL_SET = {"namespace", "pod", "container", "node", "gpu"}


def _registry(view: ExportView) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: view))
    return registry


@pytest.fixture
def registry() -> CollectorRegistry:
    return _registry(example_view())


def _pod(namespace: str, pod: str, container: str, gpu: str) -> dict[str, str]:
    return {"namespace": namespace, "pod": pod, "container": container, "node": NODE, "gpu": gpu}


@pytest.mark.parametrize(
    ("labels", "joules", "gpu_seconds"),
    [
        (_pod("team-a", "train-0", "main", "GPU-aaaa"), 3000.0, 100.0),
        (_pod("team-a", "train-0", "sidecar", "GPU-aaaa"), 1.5, 0.25),
        (_pod("team-b", "infer-0", "server", "MIG-cccc"), 123.456, 30.25),
        (_pod("team-a", "done-0", "main", "GPU-bbbb"), 0.25, 0.5),
        # re-created pods: one series, the sum of both records (750 + 250 mJ, 3 + 1.5 s; 2000 + 3000 mJ, 1 + 2 s)
        (_pod("team-a", "web-0", "c", "GPU-aaaa"), 1.0, 4.5),
        (_pod("team-a", "batch-0", "main", "GPU-bbbb"), 5.0, 3.0),
    ],
)
def test_per_pod_energy_and_gpu_seconds(
    registry: CollectorRegistry, labels: dict[str, str], joules: float, gpu_seconds: float
) -> None:
    assert registry.get_sample_value(f"{names.POD_ENERGY}_total", labels) == pytest.approx(joules, abs=1e-9)
    assert registry.get_sample_value(f"{names.POD_GPU_SECONDS}_total", labels) == pytest.approx(gpu_seconds)


def _samples(registry: CollectorRegistry, sample_name: str) -> list[dict[str, str]]:
    return [
        dict(sample.labels) for family in registry.collect() for sample in family.samples if sample.name == sample_name
    ]


def test_per_pod_series_carry_only_the_five_labels_and_one_series_per_container_device(
    registry: CollectorRegistry,
) -> None:
    for name in (f"{names.POD_ENERGY}_total", f"{names.POD_GPU_SECONDS}_total"):
        samples = _samples(registry, name)
        assert len(samples) == 6  # 8 ledger rows, two pairs of re-created pods merged
        assert all(set(labels) == POD_LABEL_SET for labels in samples)
        assert len({tuple(sorted(labels.items())) for labels in samples}) == 6


def test_pod_info_has_identity_owner_and_allow_listed_labels_only(registry: CollectorRegistry) -> None:
    infos = {labels["uid"]: labels for labels in _samples(registry, f"{names.POD_INFO}_info")}
    assert set(infos) == {
        "uid-train-0",
        "uid-infer-0",
        "uid-done-0",
        "uid-web-old",
        "uid-web-new",
        "uid-batch-1",
        "uid-batch-2",
    }
    assert infos["uid-train-0"] == {
        "namespace": "team-a",
        "pod": "train-0",
        "node": NODE,
        "uid": "uid-train-0",
        "owner_kind": "Job",
        "owner_name": "train",
        "owner_uid": "uid-job-train",
        "label_app_kubernetes_io_name": "trainer",
        "label_team": "a",
    }
    # no owner, a missing allow-listed label: empty strings, same label set
    assert infos["uid-infer-0"] == {
        "namespace": "team-b",
        "pod": "infer-0",
        "node": NODE,
        "uid": "uid-infer-0",
        "owner_kind": "",
        "owner_name": "",
        "owner_uid": "",
        "label_app_kubernetes_io_name": "",
        "label_team": "b",
    }
    assert all(set(labels) == set(infos["uid-train-0"]) for labels in infos.values())
    assert registry.get_sample_value(f"{names.POD_INFO}_info", infos["uid-web-new"]) == 1.0


def test_finished_timestamp_only_for_finished_pod_names(registry: CollectorRegistry) -> None:
    finished = {(labels["namespace"], labels["pod"]): labels for labels in _samples(registry, names.POD_FINISHED)}
    # web-0: the old record finished but the re-created one runs, so the (summed) series is still live
    assert set(finished) == {("team-a", "done-0"), ("team-a", "batch-0")}
    done = {"namespace": "team-a", "pod": "done-0", "node": NODE}
    batch = {"namespace": "team-a", "pod": "batch-0", "node": NODE}
    assert registry.get_sample_value(names.POD_FINISHED, done) == T0 + 50
    assert registry.get_sample_value(names.POD_FINISHED, batch) == T0 + 60  # the later of the two records


def test_per_gpu_measured_unallocated_and_power(registry: CollectorRegistry) -> None:
    aaaa = {"node": NODE, "gpu": "GPU-aaaa"}
    bbbb = {"node": NODE, "gpu": "GPU-bbbb"}
    energy = f"{names.GPU_ENERGY}_total"
    assert registry.get_sample_value(energy, {**aaaa, "model": "NVIDIA H100 80GB HBM3"}) == 5000.0
    assert registry.get_sample_value(energy, {**bbbb, "model": "NVIDIA A100-SXM4-40GB"}) == 2000.0
    assert registry.get_sample_value(f"{names.GPU_UNALLOCATED}_total", aaaa) == 1997.5
    assert registry.get_sample_value(f"{names.GPU_UNALLOCATED}_total", bbbb) == 1994.75
    assert registry.get_sample_value(names.GPU_POWER, aaaa) == 312.5
    assert registry.get_sample_value(names.GPU_POWER, bbbb) is None  # no power reading: no sample, not 0
    assert registry.get_sample_value(names.GPU_POWER_LIMIT, aaaa) == 700.0  # the operator's bound for this GPU
    assert registry.get_sample_value(names.GPU_POWER_LIMIT, bbbb) is None  # limit unknown: no sample


def test_pod_and_unallocated_energy_add_up_to_measured(registry: CollectorRegistry) -> None:
    pods_j = sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == f"{names.POD_ENERGY}_total" and sample.labels["gpu"] in ("GPU-aaaa", "GPU-bbbb")
    )
    unallocated_j = sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == f"{names.GPU_UNALLOCATED}_total"
    )
    assert pods_j + unallocated_j == pytest.approx(7000.0)


def test_agent_self_metrics(registry: CollectorRegistry) -> None:
    node = {"node": NODE}
    assert (
        registry.get_sample_value(
            f"{names.AGENT_INFO}_info",
            {"node": NODE, "backend": "nvml", "simulated": "false", "version": "0.1.0", "epoch": "0123456789abcdef"},
        )
        == 1.0
    )
    assert registry.get_sample_value(f"{names.AGENT_TICKS}_total", node) == 42
    assert registry.get_sample_value(f"{names.AGENT_TICK_CPU}_total", node) == 1.25
    assert registry.get_sample_value(names.AGENT_LAST_TICK, node) == T0 + 100.5
    assert registry.get_sample_value(names.AGENT_POD_SOURCE_UP, node) == 0.0
    assert registry.get_sample_value(f"{names.AGENT_POD_SOURCE_ERRORS}_total", node) == 3
    assert registry.get_sample_value(f"{names.AGENT_CHECKPOINT_WRITES}_total", node) == 7
    assert registry.get_sample_value(f"{names.AGENT_CHECKPOINT_ERRORS}_total", node) == 1
    assert (
        registry.get_sample_value(
            f"{names.AGENT_REJECTED}_total", {"node": NODE, "gpu": "GPU-aaaa", "reason": "above_power_limit"}
        )
        == 4
    )
    assert (
        registry.get_sample_value(
            f"{names.AGENT_READ_ERRORS}_total", {"node": NODE, "gpu": "GPU-bbbb", "kind": "gpu_lost"}
        )
        == 2
    )


def test_simulated_agent_says_so() -> None:
    registry = _registry(running_pods_view(0))
    info = _samples(registry, f"{names.AGENT_INFO}_info")
    assert info == [{"node": NODE, "backend": "replay", "simulated": "true", "version": "t", "epoch": ""}]


def test_every_exported_family_is_named_in_the_contract(registry: CollectorRegistry) -> None:
    contract = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)}
    exported = {family.name for family in registry.collect()}
    assert exported <= contract
    assert len(exported) == 20  # 5 per pod, 5 per GPU (with its power limit), 10 self


def test_scrape_reads_the_latest_view_and_drops_what_it_no_longer_holds() -> None:
    views = [running_pods_view(3)]
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: views[-1]))
    gone = _pod("ns", "pod-2", "main", "GPU-2")
    assert registry.get_sample_value(f"{names.POD_ENERGY}_total", gone) == 1.0
    views.append(running_pods_view(2))
    assert registry.get_sample_value(f"{names.POD_ENERGY}_total", gone) is None
    assert len(_samples(registry, f"{names.POD_ENERGY}_total")) == 2


def test_exposition_grows_linearly_with_pods() -> None:
    def lines(count: int) -> int:
        return generate_latest(_registry(running_pods_view(count))).decode().count("\n")

    base = lines(0)
    # a running pod with one container on one device: energy, GPU-seconds and info lines
    assert [lines(count) - base for count in (1, 10, 100)] == [3, 30, 300]


def test_describe_names_the_families_without_reading_a_view() -> None:
    def no_view() -> ExportView:
        raise AssertionError("describe must not read the view")

    registry = CollectorRegistry()
    registry.register(AgentCollector(no_view))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(AgentCollector(no_view))


def test_openmetrics_exposition_parses(registry: CollectorRegistry) -> None:
    text = generate_openmetrics(registry).decode()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families[names.POD_INFO].type == "info"
    assert families[names.POD_ENERGY].type == "counter"
    assert len(families[names.POD_ENERGY].samples) == 6


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("app.kubernetes.io/name", "label_app_kubernetes_io_name"),
        ("team", "label_team"),
        ("9lives", "label_9lives"),
        ("cost-center", "label_cost_center"),
        ("ÉQUIPE", "label__QUIPE"),
    ],
)
def test_label_name_for(key: str, label: str) -> None:
    assert label_name_for(key) == label


def test_label_name_for_rejects_an_empty_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        label_name_for("")


def test_colliding_allow_list_keys() -> None:
    keys = ("a.b", "team", "a_b", "team")
    assert pod_info_label_names(keys) == (("a.b", "label_a_b"), ("team", "label_team"))
    with pytest.raises(ValueError, match=re.escape("'a.b' and 'a_b'")):
        pod_info_label_names(keys, strict=True)

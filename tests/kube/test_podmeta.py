"""PodMetadataCache over a fake CoreV1Api returning real kubernetes client models."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from kubernetes import client as k8s

from jouleledger.core.model import Owner
from jouleledger.kube.podmeta import PodMeta, PodMetadataCache, pod_meta_from_object, strip_container_id
from tests.kube._fakes import FakeClock, FakeCoreV1Api, api_pod, owner_ref


def make_cache(api: FakeCoreV1Api, clock: FakeClock, **kwargs: float) -> PodMetadataCache:
    return PodMetadataCache(api, "gpu-node-1", refresh_interval_s=30.0, retry_interval_s=5.0, clock=clock, **kwargs)


def test_pod_fields_are_converted() -> None:
    pod = api_pod(
        "team-a",
        "train-0-x7k2p",
        "5f0c-uid",
        labels={"team": "a", "job-name": "train"},
        owners=[
            owner_ref("Node", "gpu-node-1", "node-uid", controller=None),
            owner_ref("Job", "train", "9d1e-uid"),
        ],
        container_ids={"main": "containerd://abc123", "logger": "cri-o://def456", "starting": None},
        init_container_ids={"setup": "docker://0f0f"},
    )

    meta = pod_meta_from_object(pod)

    assert meta == PodMeta(
        namespace="team-a",
        name="train-0-x7k2p",
        uid="5f0c-uid",
        phase="Running",
        labels={"team": "a", "job-name": "train"},
        owner=Owner(kind="Job", name="train", uid="9d1e-uid"),
        container_ids={"setup": "0f0f", "main": "abc123", "logger": "def456"},
    )


def test_pod_without_controller_owner_or_labels() -> None:
    meta = pod_meta_from_object(
        api_pod("default", "bare", "u1", phase="Pending", owners=[owner_ref("Foo", "f", "u", controller=False)])
    )

    assert (meta.owner, dict(meta.labels), dict(meta.container_ids), meta.phase) == (None, {}, {}, "Pending")


@pytest.mark.parametrize(
    ("raw", "stripped"),
    [("containerd://abc", "abc"), ("cri-o://abc", "abc"), ("docker://abc", "abc"), ("abc", "abc")],
)
def test_strip_container_id(raw: str, stripped: str) -> None:
    assert strip_container_id(raw) == stripped


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (k8s.V1Pod(metadata=None), "without metadata"),
        (k8s.V1Pod(metadata=k8s.V1ObjectMeta(namespace="ns", name="p")), "metadata.uid is not a string"),
        (k8s.V1Pod(metadata=k8s.V1ObjectMeta(namespace="ns", name="p", uid="")), "without namespace, name or uid"),
        (
            # the client models validate labels; a duck-typed object from elsewhere may not
            SimpleNamespace(metadata=SimpleNamespace(namespace="ns", name="p", uid="u", labels={"team": 7})),
            "labels are not a string map",
        ),
    ],
)
def test_malformed_pods_are_rejected(pod: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pod_meta_from_object(pod)


def test_lists_only_this_node_with_a_timeout() -> None:
    api = FakeCoreV1Api([api_pod("team-a", "train-0", "u1")])
    cache = PodMetadataCache(api, "gpu-node-1", request_timeout_s=3.0, clock=FakeClock())

    view = cache.lookup()

    assert api.calls == [{"field_selector": "spec.nodeName=gpu-node-1", "_request_timeout": 3.0}]
    assert view[("team-a", "train-0")].uid == "u1"
    assert cache.up
    assert cache.refreshes_total == 1


def test_refreshes_only_when_stale() -> None:
    api = FakeCoreV1Api([api_pod("team-a", "train-0", "u1")])
    clock = FakeClock()
    cache = make_cache(api, clock)

    cache.lookup([("team-a", "train-0")])
    clock.advance(29.9)
    cache.lookup([("team-a", "train-0")])
    assert len(api.calls) == 1

    api.pods = [api_pod("team-a", "train-1", "u2")]
    clock.advance(0.1)
    view = cache.lookup()
    assert len(api.calls) == 2
    assert set(view) == {("team-a", "train-1")}  # deleted pods leave the view


def test_an_unknown_pod_triggers_an_early_refresh_at_most_every_retry_interval() -> None:
    api = FakeCoreV1Api([])
    clock = FakeClock()
    cache = make_cache(api, clock)
    cache.lookup()

    clock.advance(4.0)
    assert ("team-a", "new") not in cache.lookup([("team-a", "new")])
    assert len(api.calls) == 1  # too soon after the last list

    api.pods = [api_pod("team-a", "new", "u-new")]
    clock.advance(1.0)
    assert cache.lookup([("team-a", "new")])[("team-a", "new")].uid == "u-new"
    assert len(api.calls) == 2


def test_api_errors_keep_the_last_good_view(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeCoreV1Api([api_pod("team-a", "train-0", "u1")])
    clock = FakeClock()
    cache = make_cache(api, clock)
    cache.lookup()

    api.error = k8s.ApiException(status=503, reason="Service Unavailable")
    clock.advance(30.0)
    with caplog.at_level(logging.WARNING, logger="jouleledger.kube.podmeta"):
        view = cache.lookup()

    assert view[("team-a", "train-0")].uid == "u1"
    assert not cache.up
    assert cache.errors_total == 1
    assert "503" in cache.last_error
    assert "keeping the last 1 known" in caplog.text

    clock.advance(4.0)  # down: retried every retry_interval_s, not refresh_interval_s
    cache.lookup()
    assert len(api.calls) == 2
    clock.advance(1.0)
    cache.lookup()
    assert len(api.calls) == 3
    assert cache.errors_total == 2

    api.error = None
    api.pods = []
    clock.advance(5.0)
    assert cache.lookup() == {}
    assert cache.up
    assert cache.last_error == ""


def test_api_down_from_the_start_gives_an_empty_view() -> None:
    api = FakeCoreV1Api()
    api.error = OSError("connection refused")
    cache = make_cache(api, FakeClock())

    assert cache.lookup([("team-a", "train-0")]) == {}
    assert not cache.up
    assert cache.last_error == "OSError: connection refused"


def test_malformed_items_are_skipped_and_counted() -> None:
    api = FakeCoreV1Api([k8s.V1Pod(metadata=None), api_pod("team-a", "ok", "u1")])
    cache = make_cache(api, FakeClock())

    assert set(cache.lookup()) == {("team-a", "ok")}
    assert cache.view is cache.lookup()  # fresh: no second list
    assert cache.rejected_total == 1
    assert cache.up


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node_name": ""}, "node_name must not be empty"),
        ({"refresh_interval_s": 0.0}, "refresh_interval_s must be positive"),
        ({"retry_interval_s": -1.0}, "retry_interval_s must be positive"),
        ({"request_timeout_s": 0.0}, "request_timeout_s must be positive"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"node_name": "gpu-node-1", **kwargs}
    with pytest.raises(ValueError, match=message):
        PodMetadataCache(FakeCoreV1Api(), **arguments)  # type: ignore[arg-type]

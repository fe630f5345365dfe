"""The agent's pod-metadata lookup (field selector on its node) and the operator's agent discovery (label selector
and namespace), against the real API server's selectors and with the chart's own ServiceAccounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from jouleledger.agent.main import _pod_metadata
from tests.controller._exposition import agent_text
from tests.realkube._cluster import (
    FakeAgent,
    OperatorStack,
    create_namespace,
    create_node,
    service_account_token,
    set_pod_running,
)
from tests.realkube._controlplane import ControlPlane, KubeClient

NAMESPACE = "discovery"


def _pod(
    name: str, node: str, labels: dict[str, str] | None = None, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.invalid/x:1"}]},
    }


def test_the_agent_lists_the_pods_of_its_node_only_with_its_own_service_account(
    controlplane: ControlPlane, admin: KubeClient, stack: OperatorStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_namespace(admin, NAMESPACE)
    for node in ("meta-a", "meta-b"):
        create_node(admin, node)
    owner_map = admin.create(
        f"/api/v1/namespaces/{NAMESPACE}/configmaps", {"metadata": {"name": "owner"}, "data": {}}
    )  # any object can own a pod; the owner reference must name a real UID for the garbage collector
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner_map["metadata"]["uid"],
        "controller": True,
    }
    created = admin.create(f"/api/v1/namespaces/{NAMESPACE}/pods", _pod("on-a", "meta-a", {"team": "vision"}, owner))
    admin.create(f"/api/v1/namespaces/{NAMESPACE}/pods", _pod("on-b", "meta-b"))
    set_pod_running(admin, NAMESPACE, "on-a", "127.0.0.9")

    agent_account = next(
        o["metadata"]["name"]
        for o in stack.objects
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"].endswith("agent")
    )
    token = service_account_token(admin, stack.namespace, agent_account)
    kubeconfig = controlplane.token_kubeconfig(tmp_path / "agent.kubeconfig", token)
    # The client library reads $KUBECONFIG when imported; point its default there, and keep its global default
    # configuration (which load_kube_config replaces) as it was for the other tests.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cache = _pod_metadata("meta-a")  # the agent's own wiring: kubeconfig -> CoreV1Api -> cache
    assert cache is not None

    view = cache.lookup([(NAMESPACE, "on-a")])
    assert cache.up, cache.last_error
    mine = {key: meta for key, meta in view.items() if key[0] == NAMESPACE}
    assert list(mine) == [(NAMESPACE, "on-a")]  # the server's field selector: not the pod on meta-b
    meta = mine[(NAMESPACE, "on-a")]
    assert meta.uid == created["metadata"]["uid"]
    assert meta.phase == "Running"
    assert dict(meta.labels) == {"team": "vision"}
    assert meta.owner is not None
    assert (meta.owner.kind, meta.owner.name) == ("ConfigMap", "owner")
    assert dict(meta.container_ids) == {"main": "on-a-main"}

    # The chart's agent role reads pods, nothing else: the same identity cannot read Secrets.
    client = controlplane.client(token=token)
    try:
        assert client.raw("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets").status_code == 403
    finally:
        client.close()


def test_the_operator_scrapes_only_the_agent_pods_its_selector_and_namespace_match(
    admin: KubeClient, stack: OperatorStack
) -> None:
    create_namespace(admin, NAMESPACE)
    selector = stack.args[stack.args.index("--agent-selector") + 1]
    labels = dict(item.split("=", 1) for item in selector.split(","))
    decoys = {
        # The right labels in another namespace, another release's agent, and a pod that is not Running yet.
        "127.0.0.2": (NAMESPACE, "decoy-namespace", labels, True),
        "127.0.0.3": (stack.namespace, "decoy-release", {**labels, "app.kubernetes.io/instance": "other"}, True),
        "127.0.0.4": (stack.namespace, "decoy-pending", labels, False),
    }
    for index, (ip, (namespace, name, pod_labels, running)) in enumerate(decoys.items()):
        node = f"decoy-{index}"
        create_node(admin, node)
        admin.create(f"/api/v1/namespaces/{namespace}/pods", _pod(name, node, pod_labels))
        if running:
            set_pod_running(admin, namespace, name, ip)
    agents = [FakeAgent(ip, stack.agent_port, agent_text(f"decoy-{i}", 1.0)) for i, ip in enumerate(decoys)]
    for agent in agents:
        agent.__enter__()
    try:
        before = stack.agent.scrapes
        run = stack.run_once()
        assert run.returncode == 0, run.output
        assert stack.agent.scrapes == before + 1
        assert [agent.scrapes for agent in agents] == [0, 0, 0]
    finally:
        for agent in agents:
            agent.__exit__(None, None, None)

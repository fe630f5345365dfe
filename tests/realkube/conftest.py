"""Fixtures of the real-control-plane tests: one etcd + kube-apiserver + kube-controller-manager for the session.

The binaries come from ``make controlplane``. Where they are missing the tests skip with the reason, except in CI
(``CI=true``), where they fail: CI always builds the control plane, so a green CI run means they ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._tools import require_tool
from tests.chart._helm import CHART
from tests.realkube._cluster import (
    FakeAgent,
    OperatorStack,
    chart_operator_args,
    create_namespace,
    create_node,
    helm_cli,
    load_objects,
    service_account_token,
    set_pod_running,
    write_chart_config,
)
from tests.realkube._controlplane import (
    BINARIES,
    ControlPlane,
    KubeClient,
    binaries_dir,
    free_port,
    start_control_plane,
)

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.realkube)
            item.add_marker(pytest.mark.slow)


def _require_binaries() -> Path:
    bin_dir = binaries_dir()
    missing = [name for name in BINARIES if not (bin_dir / name).is_file()]
    if not missing:
        return bin_dir
    message = (
        f"the real Kubernetes control plane is not built ({', '.join(missing)} missing in {bin_dir}): "
        "run `make controlplane` (needs the Go toolchain)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must build it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = _require_binaries()
    with start_control_plane(bin_dir, tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin(controlplane: ControlPlane) -> Iterator[KubeClient]:
    client = controlplane.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="session")
def stack(
    controlplane: ControlPlane, admin: KubeClient, helm: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorStack]:
    namespace, release, node = "jouleledger", "jl", "gpu-node-1"
    workdir = tmp_path_factory.mktemp("stack")
    create_namespace(admin, namespace, {"pod-security.kubernetes.io/enforce": "privileged"})
    helm_cli(helm, controlplane, "install", release, str(CHART), "--namespace", namespace)
    rendered = helm_cli(helm, controlplane, "get", "manifest", release, "--namespace", namespace).stdout
    objects = load_objects(rendered)
    service_account = next(
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"].endswith("operator")
    )
    token = service_account_token(admin, namespace, service_account)
    kubeconfig = controlplane.token_kubeconfig(workdir / "operator.kubeconfig", token)
    create_node(admin, node, zone="eu-west-1")
    agent_port = free_port()
    selector = chart_operator_args(objects, namespace)
    labels = dict(item.split("=", 1) for item in selector[selector.index("--agent-selector") + 1].split(","))
    admin.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"agent-{node}", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]},
        },
    )
    set_pod_running(admin, namespace, f"agent-{node}", "127.0.0.1")
    with FakeAgent("127.0.0.1", agent_port) as agent:
        yield OperatorStack(
            namespace,
            release,
            objects,
            chart_operator_args(objects, namespace),
            write_chart_config(objects, workdir / "config.yaml"),
            kubeconfig,
            token,
            node,
            agent,
            agent_port,
            controlplane,
        )


@pytest.fixture(scope="session")
def workloads(admin: KubeClient) -> str:
    """The namespace of the test Jobs (no Pod Security label: the cluster's default, privileged)."""
    create_namespace(admin, "team-a")
    return "team-a"

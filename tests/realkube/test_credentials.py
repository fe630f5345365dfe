"""The operator's API client (the official ``kubernetes`` client behind ``kube/api.py``) logs in for real: with a
kubeconfig's x509 client certificate, as the operator's own login finds it, and with a projected service-account
token that the kubelet rotates (the old token stops working; the client follows the file)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest

from jouleledger.controller.app import default_login
from jouleledger.kube.api import ApiError, KubeApi, build_api_client
from tests.realkube._cluster import create_namespace
from tests.realkube._controlplane import ApiCallError, ControlPlane, KubeClient, wait_for

NAMESPACE = "rotation"
ACCOUNT = "operator"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


async def whoami(api: KubeApi) -> dict[str, Any]:
    """The identity the API server authenticated the request as (SelfSubjectReview: any user may ask)."""
    answer = await api.create("/apis/authentication.k8s.io/v1/selfsubjectreviews", REVIEW)
    user: dict[str, Any] = answer["status"]["userInfo"]
    return user


async def test_a_kubeconfig_with_a_client_certificate_logs_in_as_its_subject(
    controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(controlplane.kubeconfig))
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = default_login(settings=kopf.OperatorSettings(), logger=logging.getLogger(__name__))  # the operator's
    assert info is not None
    assert info.certificate_path
    assert not info.token
    async with KubeApi(build_api_client(info), attempts=1) as api:
        user = await whoami(api)
        assert "system:masters" in user["groups"]
        namespaces = await api.list("/api/v1/namespaces")
    assert "kube-system" in {n["metadata"]["name"] for n in namespaces}


def _bound_token(admin: KubeClient, secret: str) -> str:
    """A token of the service account bound to ``secret``: deleting the Secret revokes it."""
    uid = admin.create(
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "type": "Opaque"},
    )["metadata"]["uid"]
    answer = admin.create(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{ACCOUNT}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": uid},
            },
        },
    )
    token: str = answer["status"]["token"]
    return token


def _refused(controlplane: ControlPlane, token: str) -> bool:
    client = controlplane.client(token=token)
    try:
        client.create("/apis/authentication.k8s.io/v1/selfsubjectreviews", REVIEW)
    except ApiCallError as error:
        return error.status == 401
    finally:
        client.close()
    return False


async def test_a_rotated_service_account_token_is_followed_after_the_old_one_is_revoked(
    controlplane: ControlPlane, admin: KubeClient, tmp_path: Path
) -> None:
    create_namespace(admin, NAMESPACE)
    admin.create(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}},
    )
    first, second = _bound_token(admin, "bind-first"), _bound_token(admin, "bind-second")
    token_file = tmp_path / "token"  # the projected volume's file
    token_file.write_text(first)
    info = kopf.ConnectionInfo(server=controlplane.server, ca_path=str(controlplane.ca), token=first)
    following = KubeApi(build_api_client(info, token_path=token_file), attempts=1)
    static = KubeApi(build_api_client(info, token_path=tmp_path / "elsewhere"), attempts=1)
    try:
        assert (await whoami(following))["username"] == f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
        assert (await whoami(static))["username"] == f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"

        token_file.write_text(second)  # the kubelet rotates the token ...
        os.utime(token_file, ns=(1, 1))
        admin.delete(f"/api/v1/namespaces/{NAMESPACE}/secrets/bind-first")  # ... and the old one stops working
        wait_for("the first token to be refused", lambda: _refused(controlplane, first), 60, 0.5)

        assert (await whoami(following))["username"] == f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
        with pytest.raises(ApiError) as refused:  # a client that kept the first token
            await whoami(static)
        assert refused.value.status == 401
    finally:
        await following.aclose()
        await static.aclose()

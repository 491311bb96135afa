"""The emulated API server's SubjectAccessReview (aigw_fakes/kube/rbac.py), driven with the official
`kubernetes` client: decided by the Role/RoleBinding/ClusterRole/ClusterRoleBinding objects stored
in it, with the real server's RBAC matching (resourceNames only match named requests, ServiceAccount
subjects default to the binding's namespace, system:masters bypasses) and 422 on malformed specs."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aigw_fakes.kube_apiserver import KubeAPIServer
from tests.kube_api import apply_yaml

RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: gw-secrets, namespace: team-a}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [openai-key, gw-cert]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: envoy-gw-secrets, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: gw-secrets}
subjects:
- {kind: ServiceAccount, name: envoy}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: read-leases}
rules:
- {apiGroups: [coordination.k8s.io], resources: ["*"], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: auditors-read-leases}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read-leases}
subjects:
- {kind: Group, name: auditors}
"""


def _review(api: KubeAPIServer, user: str, groups: list[str] | None = None, **attributes: Any) -> Any:
    body = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user, groups=groups, resource_attributes=client.V1ResourceAttributes(**attributes)
        )
    )
    return client.AuthorizationV1Api(api.admin_client()).create_subject_access_review(body).status


def _secret(name: str, namespace: str = "team-a", verb: str = "get") -> dict[str, Any]:
    return {"verb": verb, "group": "", "resource": "secrets", "namespace": namespace, "name": name}


@pytest.fixture
def api(kube_api: KubeAPIServer) -> KubeAPIServer:
    apply_yaml(kube_api, RBAC)
    return kube_api


def test_a_role_binding_allows_its_service_account_the_named_secrets_only(api: KubeAPIServer) -> None:
    envoy = "system:serviceaccount:team-a:envoy"
    allowed = _review(api, envoy, **_secret("openai-key"))
    assert allowed.allowed is True
    assert allowed.reason == (
        'RBAC: allowed by RoleBinding "envoy-gw-secrets/team-a" of Role "gw-secrets" to ServiceAccount "envoy/team-a"'
    )
    assert _review(api, envoy, **_secret("gw-cert")).allowed is True
    assert not _review(api, envoy, **_secret("other-key")).allowed  # not among resourceNames
    assert not _review(api, envoy, **_secret("openai-key", verb="list")).allowed  # verb
    assert not _review(api, envoy, **_secret("openai-key", namespace="team-b")).allowed  # the Role's namespace only
    # resourceNames never match a request without a name (a list of every Secret)
    assert not _review(api, envoy, verb="get", group="", resource="secrets", namespace="team-a").allowed
    # another ServiceAccount of the same namespace, the same name in another namespace
    assert not _review(api, "system:serviceaccount:team-a:default", **_secret("openai-key")).allowed
    assert not _review(api, "system:serviceaccount:team-b:envoy", **_secret("openai-key")).allowed


def test_cluster_role_bindings_groups_wildcards_and_the_superuser(api: KubeAPIServer) -> None:
    lease: dict[str, Any] = {"verb": "list", "group": "coordination.k8s.io", "resource": "leases", "namespace": "x"}
    assert _review(api, "jane", ["auditors"], **lease).allowed is True
    assert not _review(api, "jane", ["developers"], **lease).allowed
    assert not _review(api, "jane", ["auditors"], **{**lease, "verb": "delete"}).allowed
    assert _review(api, "root", ["system:masters"], **_secret("anything", "kube-system")).allowed is True
    api.delete("RoleBinding", "team-a", "envoy-gw-secrets")  # RBAC changes are decided at once
    assert not _review(api, "system:serviceaccount:team-a:envoy", **_secret("openai-key")).allowed


def test_a_malformed_review_is_422_as_the_real_server_answers(api: KubeAPIServer) -> None:
    authorization = client.AuthorizationV1Api(api.admin_client())
    no_subject = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(**_secret("k")))
    )
    with pytest.raises(ApiException) as refused:
        authorization.create_subject_access_review(no_subject)
    assert refused.value.status == 422
    assert "at least one of user or group must be specified" in str(refused.value.body)
    no_attributes = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(user="jane"))
    with pytest.raises(ApiException) as refused:
        authorization.create_subject_access_review(no_attributes)
    assert refused.value.status == 422
    assert "exactly one of nonResourceAttributes or resourceAttributes" in str(refused.value.body)

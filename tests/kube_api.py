"""The emulated Kubernetes API server (fakes/aigw_fakes/kube_apiserver.py: a stand-in, since no
kube-apiserver can run on these machines) serving the kinds aigw-xds reads, and a helper that
applies YAML text to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds.sources.kube_kinds import WATCHED

KINDS: list[dict[str, Any]] = [
    {"kind": k.kind, "group": k.group, "version": k.version, "plural": k.plural, "namespaced": k.namespaced}
    for k in WATCHED
]


@contextmanager
def running_api(bookmark_interval: float = 0.5) -> Iterator[KubeAPIServer]:
    with KubeAPIServer(KINDS, bookmark_interval=bookmark_interval).running() as server:
        yield server


def apply_yaml(server: KubeAPIServer, text: str) -> None:
    """Create or replace every document of the YAML text, as `kubectl apply -f` would."""
    for doc in yaml.safe_load_all(text):
        if doc:
            server.apply(doc)


def grant_secrets(server: KubeAPIServer, namespace: str, service_account: str, secrets: list[str]) -> None:
    """RBAC as deploy/kubernetes ships it for an Envoy pod: a Role allowing `get` on these Secrets
    of the namespace by name, bound to the ServiceAccount (the emulated SubjectAccessReview decides
    by these objects)."""
    role = f"{service_account}-gateway-secrets"
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role, "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": secrets}],
        }
    )
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        }
    )

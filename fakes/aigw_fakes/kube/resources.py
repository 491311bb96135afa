"""The resource types the emulated API server serves: built from the table of kinds a test passes in
(plain data: this package never imports aigw_xds), plus the few built-ins every cluster has
(coordination.k8s.io Lease, authentication.k8s.io TokenReview).

Served versions follow what the real CRDs and API groups serve: every aigateway.envoyproxy.io kind
under both v1beta1 and v1alpha1, BackendTLSPolicy under gateway.networking.k8s.io v1 and v1alpha3;
one stored object answers under each (its apiVersion rewritten per request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GATEWAY_API = "gateway.networking.k8s.io"
ENVOY_GATEWAY = "gateway.envoyproxy.io"
AI_GATEWAY = "aigateway.envoyproxy.io"
INFERENCE = "inference.networking.k8s.io"

# groups whose kinds are custom resources with a status subresource (as their CRDs declare)
_STATUS_GROUPS = frozenset({GATEWAY_API, ENVOY_GATEWAY, AI_GATEWAY, INFERENCE})
# groups whose status conditions the CRD schemas bound to 8 (Gateway API's, Envoy AI Gateway's)
_BOUNDED_CONDITION_GROUPS = frozenset({GATEWAY_API, AI_GATEWAY})
# groups compiled into the API server: built-in types (strategic merge patch, unconditional update)
BUILT_IN_GROUPS = frozenset(
    {
        "",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "rbac.authorization.k8s.io",
    }
)
RBAC_GROUP = "rbac.authorization.k8s.io"
# The RBAC kinds every server serves (they decide SubjectAccessReviews: rbac.py).
_RBAC_KINDS = (
    ("Role", "roles", True),
    ("RoleBinding", "rolebindings", True),
    ("ClusterRole", "clusterroles", False),
    ("ClusterRoleBinding", "clusterrolebindings", False),
)
# built-in types whose DELETE answers the deleted object (the others answer a Success Status)
_DELETE_RETURNS_OBJECT = frozenset({("", "services")})
# built-in types whose update (PUT) needs metadata.resourceVersion, like every custom resource
_CONDITIONAL_UPDATE_BUILT_INS = frozenset({("coordination.k8s.io", "leases")})

_EXTRA_VERSIONS: Mapping[tuple[str, str], tuple[str, ...]] = {
    (GATEWAY_API, "BackendTLSPolicy"): ("v1", "v1alpha3"),
}
_GROUP_VERSIONS: Mapping[str, tuple[str, ...]] = {AI_GATEWAY: ("v1beta1", "v1alpha1")}

VERBS_ALL = ("create", "delete", "get", "list", "patch", "update", "watch")
VERBS_STATUS = ("get", "patch", "update")


@dataclass(frozen=True)
class ResourceType:
    """One served resource (group + plural), with the versions it answers under."""

    kind: str
    group: str  # "" for the core API
    plural: str
    namespaced: bool
    storage_version: str
    versions: tuple[str, ...]
    status_subresource: bool = False
    validate_conditions: bool = False  # metav1.Condition schema on status writes
    max_conditions: int | None = None  # maxItems of every conditions list (Gateway API: 8)
    verbs: tuple[str, ...] = VERBS_ALL
    stored: bool = True  # False for TokenReview (create only, nothing kept)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def built_in(self) -> bool:
        return self.group in BUILT_IN_GROUPS

    @property
    def unconditional_update(self) -> bool:
        """Whether PUT without metadata.resourceVersion is allowed (built-ins mostly; never a CR)."""
        return self.built_in and self.key not in _CONDITIONAL_UPDATE_BUILT_INS

    @property
    def delete_returns_object(self) -> bool:
        return not self.built_in or self.key in _DELETE_RETURNS_OBJECT

    @property
    def qualified(self) -> str:
        """``plural.group`` as the real server's messages name a resource (``secrets`` for core)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Kind.group`` as the real server's Invalid messages name a kind (``Secret`` for core)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str | None = None) -> str:
        v = version or self.storage_version
        return f"{self.group}/{v}" if self.group else v


def _kind_fields(entry: Mapping[str, Any] | Iterable[Any]) -> tuple[str, str, str, str, bool]:
    if isinstance(entry, Mapping):
        return (
            str(entry["kind"]),
            str(entry["group"]),
            str(entry["version"]),
            str(entry["plural"]),
            bool(entry.get("namespaced", True)),
        )
    kind, group, version, plural, namespaced = tuple(entry)[:5]
    return str(kind), str(group), str(version), str(plural), bool(namespaced)


def build_resources(kinds: Iterable[Mapping[str, Any] | Iterable[Any]]) -> list[ResourceType]:
    """The resource types to serve: ``kinds`` (dicts with kind, group, version, plural, namespaced,
    or tuples in that order) plus Lease, the RBAC kinds, TokenReview and SubjectAccessReview. A kind
    listed twice is served once, under every version listed."""
    found: dict[tuple[str, str], tuple[str, str, bool, list[str]]] = {}
    for entry in kinds:
        kind, group, version, plural, namespaced = _kind_fields(entry)
        extra = _EXTRA_VERSIONS.get((group, kind), _GROUP_VERSIONS.get(group, ()))
        if (group, plural) in found:
            versions = found[(group, plural)][3]
        else:
            versions = []
            found[(group, plural)] = (kind, version, namespaced, versions)
        for v in (version, *extra):
            if v not in versions:
                versions.append(v)
    found.setdefault(("coordination.k8s.io", "leases"), ("Lease", "v1", True, ["v1"]))
    for kind, plural, namespaced in _RBAC_KINDS:
        found.setdefault((RBAC_GROUP, plural), (kind, "v1", namespaced, ["v1"]))
    out = [
        ResourceType(
            kind=kind,
            group=group,
            plural=plural,
            namespaced=namespaced,
            storage_version=version,
            versions=tuple(versions),
            status_subresource=group in _STATUS_GROUPS or (group, plural) == ("", "services"),
            validate_conditions=group in _STATUS_GROUPS,
            max_conditions=8 if group in _BOUNDED_CONDITION_GROUPS else None,
        )
        for (group, plural), (kind, version, namespaced, versions) in found.items()
    ]
    out.append(
        ResourceType(
            kind="TokenReview",
            group="authentication.k8s.io",
            plural="tokenreviews",
            namespaced=False,
            storage_version="v1",
            versions=("v1",),
            verbs=("create",),
            stored=False,
        )
    )
    out.append(
        ResourceType(
            kind="SubjectAccessReview",
            group="authorization.k8s.io",
            plural="subjectaccessreviews",
            namespaced=False,
            storage_version="v1",
            versions=("v1",),
            verbs=("create",),
            stored=False,
        )
    )
    return out


def discovery_resources(resources: Iterable[ResourceType], group: str, version: str) -> list[dict[str, Any]]:
    """The APIResourceList ``resources`` of one group version, with ``<plural>/status`` entries."""
    out: list[dict[str, Any]] = []
    for r in sorted(resources, key=lambda r: r.plural):
        if r.group != group or version not in r.versions:
            continue
        out.append(
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
            }
        )
        if r.status_subresource:
            out.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(VERBS_STATUS),
                }
            )
    return out


def discovery_groups(resources: Iterable[ResourceType]) -> list[dict[str, Any]]:
    """The APIGroupList ``groups`` (every named group; preferred version: the storage version of the
    group's first kind)."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for r in resources:
        if not r.group:
            continue
        preferred, versions = groups.setdefault(r.group, (r.storage_version, []))
        for v in r.versions:
            if v not in versions:
                versions.append(v)
    return [
        {
            "name": name,
            "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred},
        }
        for name, (preferred, versions) in sorted(groups.items())
    ]

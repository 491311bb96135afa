"""The Kubernetes kinds aigw-xds reads from the API: where each is served (group, version, plural),
whether it is namespaced, and whether only the objects some resource references are kept.

One table, read by the Kubernetes source (what to list and watch), the RBAC manifest's test (the
verbs granted are exactly these) and the emulated API server in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.base import GATEWAY_API_GROUP


@dataclass(frozen=True)
class KubeKind:
    kind: str
    group: str  # "" for the core API
    version: str
    plural: str
    namespaced: bool = True
    # Secrets, ConfigMaps, Services and EndpointSlices: the cluster holds many that are none of our
    # business (and pods churn EndpointSlices all day); only the ones our resources reference (an
    # EndpointSlice: through its Service) are kept in memory, the others are seen by name only.
    referenced_only: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection (in one namespace, or across all) or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name is not None else base


# The controllerName of the GatewayClasses whose Gateways aigw-xds serves, unless told another.
DEFAULT_CONTROLLER_NAME = "aigw-xds.io/gateway-controller"

ENVOY_GATEWAY = "gateway.envoyproxy.io"
AI_GATEWAY = "aigateway.envoyproxy.io"
INFERENCE = "inference.networking.k8s.io"

WATCHED: tuple[KubeKind, ...] = (
    KubeKind("GatewayClass", GATEWAY_API_GROUP, "v1", "gatewayclasses", namespaced=False),
    KubeKind("Gateway", GATEWAY_API_GROUP, "v1", "gateways"),
    KubeKind("ReferenceGrant", GATEWAY_API_GROUP, "v1beta1", "referencegrants"),
    KubeKind("BackendTLSPolicy", GATEWAY_API_GROUP, "v1", "backendtlspolicies"),
    KubeKind("Backend", ENVOY_GATEWAY, "v1alpha1", "backends"),
    KubeKind("BackendTrafficPolicy", ENVOY_GATEWAY, "v1alpha1", "backendtrafficpolicies"),
    KubeKind("ClientTrafficPolicy", ENVOY_GATEWAY, "v1alpha1", "clienttrafficpolicies"),
    KubeKind("SecurityPolicy", ENVOY_GATEWAY, "v1alpha1", "securitypolicies"),
    KubeKind("AIGatewayRoute", AI_GATEWAY, "v1beta1", "aigatewayroutes"),
    KubeKind("AIServiceBackend", AI_GATEWAY, "v1beta1", "aiservicebackends"),
    KubeKind("BackendSecurityPolicy", AI_GATEWAY, "v1beta1", "backendsecuritypolicies"),
    KubeKind("GatewayConfig", AI_GATEWAY, "v1beta1", "gatewayconfigs"),
    KubeKind("MCPRoute", AI_GATEWAY, "v1beta1", "mcproutes"),
    KubeKind("QuotaPolicy", AI_GATEWAY, "v1alpha1", "quotapolicies"),
    KubeKind("InferencePool", INFERENCE, "v1", "inferencepools"),
    KubeKind("Service", "", "v1", "services", referenced_only=True),
    KubeKind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", referenced_only=True),
    KubeKind("Secret", "", "v1", "secrets", referenced_only=True),
    KubeKind("ConfigMap", "", "v1", "configmaps", referenced_only=True),
)

BY_KIND = {k.kind: k for k in WATCHED}

# Kinds whose status is the Gateway API's PolicyStatus: status.ancestors, an entry per Gateway and
# controller (Envoy Gateway's policies and BackendTLSPolicy), of which the leader writes its own.
POLICY_STATUS_KINDS = ("BackendTLSPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy", "SecurityPolicy")

# Kinds whose status the leader writes (through the status subresource).
STATUS_KINDS = (
    "GatewayClass",
    "Gateway",
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "QuotaPolicy",
    "MCPRoute",
    "InferencePool",  # its status.parents: an entry per Gateway of ours built from it
    *POLICY_STATUS_KINDS,
)

# Leader election (status writing) and the translators' identities.
LEASE = KubeKind("Lease", "coordination.k8s.io", "v1", "leases")
TOKEN_REVIEW = KubeKind("TokenReview", "authentication.k8s.io", "v1", "tokenreviews", namespaced=False)

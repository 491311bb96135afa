"""Which (apiVersion, kind) pairs aigw-xds reads, which it knowingly ignores, and the model of each."""

from __future__ import annotations

from pydantic import BaseModel

from . import kinds

_AIGW = ("aigateway.envoyproxy.io/v1beta1", "aigateway.envoyproxy.io/v1alpha1")
_GWAPI = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")
_EG = ("gateway.envoyproxy.io/v1alpha1",)
_INFERENCE = ("inference.networking.k8s.io/v1", "inference.networking.x-k8s.io/v1alpha2")

MODELS: dict[str, tuple[tuple[str, ...], type[BaseModel]]] = {
    "GatewayClass": (_GWAPI, kinds.GatewayClass),
    "Gateway": (_GWAPI, kinds.Gateway),
    "ReferenceGrant": (("gateway.networking.k8s.io/v1beta1", "gateway.networking.k8s.io/v1"), kinds.ReferenceGrant),
    "BackendTLSPolicy": (
        ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha3", "gateway.networking.k8s.io/v1alpha2"),
        kinds.BackendTLSPolicy,
    ),
    "Backend": (_EG, kinds.Backend),
    "ClientTrafficPolicy": (_EG, kinds.ClientTrafficPolicy),
    "SecurityPolicy": (_EG, kinds.SecurityPolicy),
    "BackendTrafficPolicy": (_EG, kinds.BackendTrafficPolicy),
    "Secret": (("v1",), kinds.Secret),
    "ConfigMap": (("v1",), kinds.ConfigMap),
    "Service": (("v1",), kinds.Service),
    "EndpointSlice": (("discovery.k8s.io/v1",), kinds.EndpointSlice),
    "AIGatewayRoute": (_AIGW, kinds.AIGatewayRoute),
    "AIServiceBackend": (_AIGW, kinds.AIServiceBackend),
    "BackendSecurityPolicy": (_AIGW, kinds.BackendSecurityPolicy),
    "GatewayConfig": (_AIGW, kinds.GatewayConfig),
    "MCPRoute": (_AIGW, kinds.MCPRoute),
    "QuotaPolicy": (("aigateway.envoyproxy.io/v1alpha1",), kinds.QuotaPolicy),
    "InferencePool": (_INFERENCE, kinds.InferencePool),
}

# Kinds that users of Envoy AI Gateway keep in the same files, which aigw-xds does not act on.
IGNORED_KINDS = {
    "EnvoyProxy": "Envoy deployment settings: aigw-xds does not deploy Envoy",
    "EnvoyExtensionPolicy": "Envoy Gateway EnvoyExtensionPolicy is not supported",
    "EnvoyPatchPolicy": "Envoy Gateway EnvoyPatchPolicy is not supported",
    "HTTPRoute": "plain HTTPRoutes are not served; use AIGatewayRoute",
    "HTTPRouteFilter": "HTTPRouteFilter is not supported",
    "InferenceObjective": "InferenceObjective is read by the endpoint picker, not by aigw-xds",
    "InferenceModel": "InferenceModel is read by the endpoint picker, not by aigw-xds",
}

# Kubernetes workload and cluster kinds that appear beside gateway resources in example files.
KUBERNETES_KINDS = {
    "Namespace",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ServiceAccount",
    "Pod",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Job",
    "CronJob",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "PersistentVolumeClaim",
}

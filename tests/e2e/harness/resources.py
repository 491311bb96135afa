"""YAML builders for the translator's end-to-end tests: the Envoy AI Gateway resources a user writes
(AIGatewayRoute, AIServiceBackend + Backend, BackendSecurityPolicy + Secret, GatewayConfig,
ClientTrafficPolicy). They extend tests/resource_text.py with what those tests need: the three
API-key policy types, credentialOverride, llmRequestCosts, priorities, modelNameOverride,
backendRef header/body mutations, schema version and FQDN endpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tests import resource_text

NAMESPACE = "default"
GATEWAY = "gw"
FLEET = f"{NAMESPACE}/{GATEWAY}"


def flow(value: object) -> str:
    """A YAML flow value (JSON is YAML)."""
    return json.dumps(value)


def gateway(port: int | str, *, config: str | None = None, name: str = GATEWAY) -> str:
    return resource_text.gateway(name, NAMESPACE, port, config=config)


def gateway_config(name: str, costs: list[dict[str, str]], forward_proxy: str | None = None) -> str:
    proxy = f"  forwardProxy: {{address: {flow(forward_proxy)}}}\n" if forward_proxy else ""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: GatewayConfig
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  globalLLMRequestCosts: {flow(costs)}
{proxy}"""


def buffer_limit(limit: str, gateway_name: str = GATEWAY) -> str:
    return resource_text.client_traffic_policy(
        f"connection: {{bufferLimit: {limit}}}", f"{gateway_name}-buffer", gateway_name, NAMESPACE
    )


@dataclass
class Ref:
    """One backendRef of a rule."""

    backend: str
    priority: int = 0
    weight: int = 1
    model_name_override: str | None = None
    header_mutation: dict | None = None
    body_mutation: dict | None = None

    def yaml(self) -> str:
        fields: dict[str, object] = {"name": self.backend, "priority": self.priority, "weight": self.weight}
        if self.model_name_override:
            fields["modelNameOverride"] = self.model_name_override
        if self.header_mutation:
            fields["headerMutation"] = self.header_mutation
        if self.body_mutation:
            fields["bodyMutation"] = self.body_mutation
        return flow(fields)


@dataclass
class Rule:
    models: list[str]
    refs: list[Ref]


@dataclass
class Route:
    name: str
    rules: list[Rule]
    costs: list[dict[str, str]] = field(default_factory=list)

    def backend_name(self, rule: int, ref: int) -> str:
        """The name the control plane gives a backendRef (endpoint metadata, access log, config)."""
        return f"{NAMESPACE}/{self.rules[rule].refs[ref].backend}/route/{self.name}/rule/{rule}/ref/{ref}"

    @property
    def ref(self) -> str:
        return f"{NAMESPACE}/{self.name}"

    def yaml(self, gateway_name: str = GATEWAY) -> str:
        rules = []
        for rule in self.rules:
            matches = ", ".join(
                f"{{headers: [{{type: Exact, name: x-ai-eg-model, value: {flow(m)}}}]}}" for m in rule.models
            )
            refs = "\n".join(f"        - {r.yaml()}" for r in rule.refs)
            rules.append(f"    - matches: [{matches}]\n      backendRefs:\n{refs}")
        extra = f"  llmRequestCosts: {flow(self.costs)}\n" if self.costs else ""
        return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {self.name}, namespace: {NAMESPACE}}}
spec:
  parentRefs:
    - {{name: {gateway_name}, kind: Gateway, group: gateway.networking.k8s.io}}
{extra}  rules:
""" + "\n".join(rules)


def backend(
    name: str,
    port: int,
    schema: str = "OpenAI",
    *,
    version: str | None = None,
    hostname: str | None = None,
) -> str:
    """An AIServiceBackend and its Backend: 127.0.0.1:port, or the FQDN `hostname`:port (a
    STRICT_DNS cluster whose Host header is that name)."""
    schema_fields: dict[str, str] = {"name": schema}
    if version:
        schema_fields["version"] = version
    endpoint = (
        f"fqdn: {{hostname: {hostname}, port: {port}}}" if hostname else f"ip: {{address: 127.0.0.1, port: {port}}}"
    )
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  schema: {flow(schema_fields)}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  endpoints:
    - {endpoint}
"""


_KEY_FIELDS = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey", "AzureAPIKey": "azureAPIKey"}


def api_key(backend_name: str, key: str, kind: str = "APIKey", *, override_header: str | None = None) -> str:
    """A BackendSecurityPolicy of type APIKey, AnthropicAPIKey or AzureAPIKey for one backend, its
    Secret, and optionally a credentialOverride from a request header."""
    override = ""
    if override_header:
        override = f"  credentialOverride: {{fromRequestHeaders: {{header: {override_header}}}}}\n"
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {backend_name}-key, namespace: {NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend_name}}}
  type: {kind}
  {_KEY_FIELDS[kind]}:
    secretRef: {{name: {backend_name}-key}}
{override}---
apiVersion: v1
kind: Secret
metadata: {{name: {backend_name}-key, namespace: {NAMESPACE}}}
stringData: {{apiKey: {flow(key)}}}
"""


def traffic_policy(route: str, body: str) -> str:
    """A BackendTrafficPolicy `<route>-traffic` on the HTTPRoute named after AIGatewayRoute `route`,
    its spec besides the target being `body` (YAML)."""
    spec = "\n".join("  " + line for line in body.strip("\n").splitlines())
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {route}-traffic, namespace: {NAMESPACE}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]
{spec}
"""

"""What the control plane emits so credentials never cross backends or attempts: each ext_proc
filter names its phase, the upstream filter forwards the namespaces credential overrides read, and
a BackendSecurityPolicy may let provider-scoped client headers pass."""

from __future__ import annotations

from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

import aigw_contract as contract
from aigw_xds.compile import compile_resources
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import HTTP_PROTOCOL_OPTIONS, BuildSettings, build_fleet
from tests.resource_text import backend, gateway, resources, route


def _policy(name: str, override: str, annotation: str | None = None) -> str:
    annotations = f", annotations: {{{contract.PASS_CLIENT_HEADERS_ANNOTATION}: {annotation!r}}}" if annotation else ""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}-key, namespace: default{annotations}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}
  type: APIKey
  apiKey:
    secretRef: {{name: {name}-key}}
  credentialOverride: {override}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-key, namespace: default}}
stringData: {{apiKey: sk-x}}
"""


TEXT = (
    gateway()
    + route("r", {"m1": "a", "m2": "b", "m3": [("a", 0, 1), ("c", 1, 1)]})
    + backend("a", 9001)
    + backend("b", 9002)
    + backend("c", 9003)
    + _policy("a", "{fromDynamicMetadata: {namespace: tenant.auth, key: api_key}}")
    + _policy(
        "b",
        "{fromRequestHeaders: {header: x-b-key}}",
        "openai-organization, Cookie, authorization, x-goog-request-params",
    )
    + _policy("c", "{fromDynamicMetadata: {namespace: other.ns, key: k, fallbackToConfigured: true}}")
)


def _compiled():
    return compile_resources(resources(TEXT))


def _ext_procs(fleet) -> dict[str, ext_proc_pb2.ExternalProcessor]:
    """The upstream ext_proc of each cluster, and the router-level one under "listener"."""
    out = {}
    for name, cluster in fleet.messages(type_urls.CLUSTER).items():
        if name == contract.TRANSLATOR_CLUSTER_NAME:
            continue
        options = http_protocol_options_pb2.HttpProtocolOptions()
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
        for f in options.http_filters:
            if f.name == contract.UPSTREAM_EXT_PROC_FILTER_NAME:
                ext = ext_proc_pb2.ExternalProcessor()
                f.typed_config.Unpack(ext)
                out[name] = ext
    [listener] = fleet.by_type[type_urls.LISTENER].values()
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    [router_level] = [f for f in manager.http_filters if f.name == contract.EXT_PROC_FILTER_NAME]
    ext = ext_proc_pb2.ExternalProcessor()
    router_level.typed_config.Unpack(ext)
    out["listener"] = ext
    return out


def test_each_ext_proc_filter_names_its_phase() -> None:
    procs = _ext_procs(build_fleet(_compiled().gateways["default/gw"], BuildSettings()))
    for name, ext in procs.items():
        metadata = {h.key: h.value for h in ext.grpc_service.initial_metadata}
        expected = contract.ROUTER_PHASE if name == "listener" else contract.UPSTREAM_PHASE
        assert metadata[contract.PHASE_METADATA_KEY] == expected, name
        assert metadata[contract.FLEET_METADATA_KEY] == "default/gw"


def test_upstream_filter_forwards_the_namespaces_its_backends_overrides_read() -> None:
    procs = _ext_procs(build_fleet(_compiled().gateways["default/gw"], BuildSettings()))
    forwarded = {name: list(ext.metadata_options.forwarding_namespaces.untyped) for name, ext in procs.items()}
    assert forwarded == {
        "default/r/rule/0": [contract.METADATA_NAMESPACE, "tenant.auth"],
        "default/r/rule/1": [contract.METADATA_NAMESPACE],
        "default/r/rule/2": [contract.METADATA_NAMESPACE, "other.ns", "tenant.auth"],
        "listener": [contract.METADATA_NAMESPACE],
    }
    for ext in procs.values():  # the translator writes only its own namespace
        assert list(ext.metadata_options.receiving_namespaces.untyped) == [contract.METADATA_NAMESPACE]


def test_policy_annotation_passes_provider_scoped_headers_only() -> None:
    result = _compiled()
    backends = {b.service_backend: b for b in result.gateways["default/gw"].translator.backends}
    assert list(backends["default/b"].auth.pass_client_headers) == ["openai-organization", "cookie"]
    assert not backends["default/a"].auth.pass_client_headers
    warnings = [d for d in result.diagnostics if contract.PASS_CLIENT_HEADERS_ANNOTATION in d.field]
    assert [w.message.split(": only")[0] for w in warnings] == [
        "'authorization' cannot be passed",
        "'x-goog-request-params' cannot be passed",
    ]
    assert warnings[0].message.endswith("(client credentials never reach a provider; other headers are not stripped)")
    assert warnings[1].message.endswith("(stripped with every client header under its prefix)")
    assert not any(w.is_error for w in warnings)


def test_passing_a_fleet_override_header_is_a_warning() -> None:
    """Backend b's override header is x-goog-api-key; c's policy lists it to pass: the translator never
    passes it, and compile says so on c's policy."""
    text = (
        gateway()
        + route("r", {"m1": "b", "m2": "c"})
        + backend("b", 9002)
        + backend("c", 9003)
        + _policy("b", "{fromRequestHeaders: {header: X-Goog-Api-Key}}")
        + _policy("c", "{fromDynamicMetadata: {namespace: n, key: k}}", "x-goog-api-key, cookie")
    )
    result = compile_resources(resources(text))
    assert "default/gw" in result.gateways
    [warning] = [d for d in result.diagnostics if "credential override header" in d.message]
    assert "'x-goog-api-key'" in warning.message and "default/b" in warning.message
    assert warning.resource is not None and warning.resource.name == "c-key"
    assert contract.PASS_CLIENT_HEADERS_ANNOTATION in warning.field
    assert not warning.is_error


def test_azure_schema_without_version_is_a_warning() -> None:
    text = gateway() + route("r", {"m1": "z", "m2": "y"}) + backend("z", 9004, "AzureOpenAI") + backend("y", 9005)
    result = compile_resources(resources(text))
    assert "default/gw" in result.gateways
    [warning] = [d for d in result.diagnostics if d.field == "spec.schema.version"]
    assert warning.resource is not None and warning.resource.name == "z"
    assert contract.AZURE_DEFAULT_API_VERSION in warning.message
    assert not warning.is_error

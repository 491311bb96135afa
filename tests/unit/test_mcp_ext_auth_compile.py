"""An MCPRoute's securityPolicy.extAuth compiled: Envoy's ext_authz filter (off but on the route), its
service's cluster, and the errors that name what cannot be served (a reference that does not
resolve, a Secret's value that would land in Envoy's configuration, a gateway header the service
would set)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from aigw_xds.api.decode import decode_text
from aigw_xds.compile import compile_resources
from aigw_xds.console import mcp_lines
from aigw_xds.resources import build_resource_set
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import JWT_FILTER_NAME
from aigw_xds.xds.ext_authz import stripped_client_headers
from tests.resource_text import gateway, resources
from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route
from tests.unit.test_mcp_security_compile import OAUTH, ROUTE, _built, _compiled, _diagnostics, _manager

FILTER = "envoy.filters.http.ext_authz/default/tools"
CLUSTER = "aigw-extauth/default/tools"

AUTH_SERVICES = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: authz, namespace: default}
spec: {endpoints: [{fqdn: {hostname: authz.example.com, port: 9443}}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: authz-tls, namespace: default}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: authz}]
  validation: {wellKnownCACertificates: System, hostname: authz.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: opa, namespace: security}
spec: {ports: [{port: 8181}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: tenancy, namespace: default}
data: {tenant: acme}
"""

GRPC = """
  securityPolicy:
    extAuth:
      grpc:
        backendRef: {name: authz, kind: Backend, group: gateway.envoyproxy.io}
        backendSettings:
          retry: {numRetries: 2, perRetry: {backOff: {baseInterval: 100ms, maxInterval: 1s}}}
          circuitBreaker: {maxConnections: 7}
          timeout: {tcp: {connectTimeout: 2s}}
      timeout: 250ms
      failOpen: true
      statusOnError: 503
      includeRouteMetadata: true
      headersToExtAuth: [x-access-control]
      bodyToExtAuth: {maxRequestBytes: 4096}
      contextExtensions:
        - {name: team, value: tools}
        - {name: tenant, type: ValueRef, valueRef: {kind: ConfigMap, name: tenancy, key: tenant}}"""


def _ext_authz(built) -> tuple[list[str], ext_authz_pb2.ExtAuthz, bool]:
    """The listener's filter names, and the service's filter's config and whether it is off."""
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    found = manager.http_filters[names.index(FILTER)]
    config = ext_authz_pb2.ExtAuthz()
    found.typed_config.Unpack(config)
    return names, config, found.disabled


def _routes(built) -> dict[str, object]:
    [routes] = built.messages(type_urls.ROUTE).values()
    assert isinstance(routes, route_pb2.RouteConfiguration)
    return {route.name: route for vhost in routes.virtual_hosts for route in vhost.routes}


def test_a_grpc_service_is_asked_on_the_route_only_with_what_the_policy_says():
    _, built = _built(GRPC, AUTH_SERVICES)
    names, config, disabled = _ext_authz(built)
    assert disabled  # only its route turns it on
    assert names.index(FILTER) < names.index("envoy.filters.http.ext_proc/aigateway")
    service = config.grpc_service
    assert service.envoy_grpc.cluster_name == CLUSTER
    assert service.envoy_grpc.authority == "authz.example.com:9443"
    assert service.timeout.ToMilliseconds() == 250
    assert service.retry_policy.num_retries.value == 2
    assert service.retry_policy.retry_back_off.base_interval.ToMilliseconds() == 100
    assert config.failure_mode_allow and config.status_on_error.code == 503
    assert config.with_request_body.max_request_bytes == 4096
    assert [(p.exact, p.ignore_case) for p in config.allowed_headers.patterns] == [("x-access-control", True)]
    assert list(config.route_metadata_context_namespaces) == ["envoy-gateway"]
    # The gateway's own headers (what Envoy verified) are not the service's to set.
    assert config.decoder_header_mutation_rules.disallow_expression.regex == "x-aigw-.*"
    routes = _routes(built)
    [route] = [r for name, r in routes.items() if name.endswith("/mcp/default/tools")]
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    route.typed_per_filter_config[FILTER].Unpack(per_route)  # type: ignore[attr-defined]
    assert dict(per_route.check_settings.context_extensions) == {"team": "tools", "tenant": "acme"}
    resources = route.metadata.filter_metadata["envoy-gateway"]["resources"]  # type: ignore[attr-defined]
    assert [dict(r) for r in resources] == [{"kind": "MCPRoute", "namespace": "default", "name": "tools"}]
    assert all(FILTER not in r.typed_per_filter_config for name, r in routes.items() if "/mcp/" not in name)  # type: ignore[attr-defined]


def test_a_grpc_services_cluster_speaks_http2_over_its_backends_tls():
    _, built = _built(GRPC, AUTH_SERVICES)
    cluster = built.messages(type_urls.CLUSTER)[CLUSTER]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    assert cluster.connect_timeout.seconds == 2
    assert cluster.circuit_breakers.thresholds[0].max_connections.value == 7
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")
    [match] = cluster.transport_socket_matches
    context = tls_pb2.UpstreamTlsContext()
    match.transport_socket.typed_config.Unpack(context)
    assert context.sni == "authz.example.com" and list(context.common_tls_context.alpn_protocols) == ["h2"]
    [endpoint] = cluster.load_assignment.endpoints[0].lb_endpoints
    assert endpoint.endpoint.address.socket_address.port_value == 9443


def test_backend_refs_weights_and_fallbacks_are_localities_and_priorities():
    policy = """
  securityPolicy:
    extAuth:
      grpc:
        backendRefs:
          - {name: authz, kind: Backend, group: gateway.envoyproxy.io, weight: 3}
          - {name: opa, namespace: security, port: 8181, weight: 1}
          - {name: opa, namespace: security, port: 8181, fallback: true}
          - {name: authz, kind: Backend, group: gateway.envoyproxy.io, weight: 0}"""
    _, built = _built(policy, AUTH_SERVICES + GRANT)
    cluster = built.messages(type_urls.CLUSTER)[CLUSTER]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    localities = [
        (e.locality.sub_zone, e.load_balancing_weight.value, e.priority) for e in cluster.load_assignment.endpoints
    ]
    assert localities == [("default/authz", 3, 0), ("security/opa", 1, 0), ("security/opa", 1, 1)]


HTTP = """
  securityPolicy:
    extAuth:
      http:
        backendRef: {name: opa, namespace: security, port: 8181}
        path: /v1/check
        headersToBackend: [x-user]"""
GRANT = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: mcp-to-opa, namespace: security}
spec:
  from: [{group: aigateway.envoyproxy.io, kind: MCPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"""


def test_an_http_service_in_another_namespace_needs_a_reference_grant():
    result = _compiled(HTTP, AUTH_SERVICES)
    [error] = result.errors
    assert error.field == "spec.securityPolicy.extAuth.http.backendRef.namespace"
    assert "needs a ReferenceGrant in namespace security" in error.message
    assert "default/gw" in result.failed  # its last good configuration kept
    _, built = _built(HTTP, AUTH_SERVICES + GRANT)
    _, config, _ = _ext_authz(built)
    service = config.http_service
    assert service.server_uri.uri == "http://opa.security.svc:8181/v1/check"
    assert service.server_uri.cluster == CLUSTER and service.path_prefix == "/v1/check"
    assert [p.exact for p in service.authorization_response.allowed_upstream_headers.patterns] == ["x-user"]


def test_a_grant_to_the_security_policy_envoy_ai_gateway_would_make_is_taken_too():
    grant = GRANT.replace(
        "{group: aigateway.envoyproxy.io, kind: MCPRoute", "{group: gateway.envoyproxy.io, kind: SecurityPolicy"
    )
    assert "SecurityPolicy" in grant
    _, built = _built(HTTP, AUTH_SERVICES + grant)
    assert _ext_authz(built)[1].http_service.server_uri.cluster == CLUSTER


@pytest.mark.parametrize(
    ("retry", "retry_on", "retries"),
    [
        ("{}", "connect-failure,refused-stream,unavailable,cancelled", 1),
        (
            "{numRetries: 4, retryOn: {httpStatusCodes: [503]}}",
            "connect-failure,refused-stream,unavailable,cancelled",
            4,
        ),
        ("{retryOn: {triggers: [reset]}}", "reset", 1),
    ],
)
def test_a_retry_of_the_checks_is_envoy_gateways_outside_routing(retry, retry_on, retries):
    policy = f"""
  securityPolicy:
    extAuth:
      grpc:
        backendRef: {{name: authz, kind: Backend, group: gateway.envoyproxy.io}}
        backendSettings: {{retry: {retry}}}"""
    _, built = _built(policy, AUTH_SERVICES)
    policy_built = _ext_authz(built)[1].grpc_service.retry_policy
    assert (policy_built.retry_on, policy_built.num_retries.value) == (retry_on, retries)


def test_path_override_is_written_as_envoys_field():
    """HttpService.path_override (field 10) is in Envoy 1.40, not in the protos the build uses."""
    override = HTTP.replace("path: /v1/check", "pathOverride: /authorize")
    _, built = _built(override, AUTH_SERVICES + GRANT)
    _, config, _ = _ext_authz(built)
    assert config.http_service.path_prefix == "" and config.http_service.server_uri.uri.endswith(":8181/authorize")
    assert config.http_service.SerializeToString().endswith(b"\x52\x0a/authorize")


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("backendRef: {name: nothere, kind: Backend, group: gateway.envoyproxy.io}", "backendRef.name", "not found"),
        ("backendRef: {name: opa, namespace: security}", "backendRef.port", "needs its port"),
        (
            "backendRef: {name: opa, kind: ServiceImport, group: multicluster.x-k8s.io}",
            "backendRef.kind",
            "not ServiceImport",
        ),
    ],
)
def test_a_backend_that_does_not_resolve_is_an_error_and_the_route_is_not_served(extra, field, words):
    policy = f"""
  securityPolicy:
    extAuth:
      grpc: {{{extra}}}"""
    result = _compiled(policy, AUTH_SERVICES + GRANT)
    [error] = result.errors
    assert error.resource == ROUTE and error.field == f"spec.securityPolicy.extAuth.grpc.{field}"
    assert words in error.message
    statuses = {c.type: c.status for c in result.statuses[ROUTE]}
    assert statuses["ResolvedRefs"] is False and "Accepted" not in statuses  # not served


def test_a_secrets_value_never_goes_into_envoys_configuration():
    policy = """
  securityPolicy:
    extAuth:
      grpc: {backendRef: {name: authz, kind: Backend, group: gateway.envoyproxy.io}}
      contextExtensions: [{name: key, type: ValueRef, valueRef: {kind: Secret, name: two-key, key: apiKey}}]"""
    result = _compiled(policy, AUTH_SERVICES)
    [error] = result.errors
    assert error.field == "spec.securityPolicy.extAuth.contextExtensions[0].valueRef.kind"
    assert "holds no secret" in error.message


def test_the_service_may_not_be_given_a_gateway_header():
    policy = """
  securityPolicy:
    extAuth:
      http:
        backendRef: {name: authz, kind: Backend, group: gateway.envoyproxy.io}
        headersToBackend: [x-user, X-AIGW-JWT-Payload]"""
    [error] = _compiled(policy, AUTH_SERVICES).errors
    assert error.field == "spec.securityPolicy.extAuth.http.headersToBackend"
    assert "X-AIGW-JWT-Payload is a header of the gateway's own" in error.message


def test_backend_settings_not_built_are_warned_about():
    policy = GRPC.replace("circuitBreaker: {maxConnections: 7}", "loadBalancer: {type: Random}")
    result, _ = _built(policy, AUTH_SERVICES)
    [warned] = [d for d in _diagnostics(result) if "backendSettings" in d.field]
    assert warned.severity == "warning"
    assert warned.field == "spec.securityPolicy.extAuth.grpc.backendSettings.loadBalancer"


def test_oauth_then_the_service_and_the_metadata_is_not_checked():
    policy = OAUTH + GRPC.removeprefix("\n  securityPolicy:")
    _, built = _built(policy, AUTH_SERVICES)
    names, _, _ = _ext_authz(built)
    assert names.index(JWT_FILTER_NAME) < names.index(FILTER)
    routes = _routes(built)
    metadata = next(r for name, r in routes.items() if name.endswith("/metadata"))
    assert FILTER not in metadata.typed_per_filter_config  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("ext_auth", "words"),
    [
        ("{}", "one of grpc or http must be specified"),
        (
            "{grpc: {backendRef: {name: a}}, http: {backendRef: {name: a}}}",
            "only one of grpc or http can be specified",
        ),
        ("{grpc: {}}", "backendRef or backendRefs needs to be set"),
        ("{grpc: {backendRef: {name: a}}, statusOnError: 299}", "statusOnError 299"),
        ("{http: {backendRef: {name: a}, path: /a, pathOverride: /b}}", "only one of path or pathOverride"),
        ("{grpc: {backendRef: {name: a}}, contextExtensions: [{name: a}]}", "Exactly one of value or valueRef"),
        (
            "{grpc: {backendRef: {name: a}}, contextExtensions: [{name: a, valueRef: {kind: ConfigMap, name: c, key: k}}]}",  # noqa: E501
            "a valueRef needs type: ValueRef",
        ),
    ],
)
def test_envoy_gateways_schema_rules_hold(ext_auth, words):
    text = gateway() + mcp_route(spec_extra=f"\n  securityPolicy: {{extAuth: {ext_auth}}}") + MCP_BACKENDS
    result = compile_resources(resources(text))
    assert any(words in d.message for d in result.errors), result.errors


def test_errors_of_a_kept_last_good_version_say_so():
    """An edit that does not read keeps the route's last good version, which has errors of its own
    (a new user fixed one and met it again, as if still in the file): they say they are its."""
    secret_extension = """
  securityPolicy:
    extAuth:
      grpc: {backendRef: {name: authz, kind: Backend, group: gateway.envoyproxy.io}}
      contextExtensions: [{name: key, type: ValueRef, valueRef: {kind: Secret, name: two-key, key: apiKey}}]"""
    both = secret_extension.replace("grpc:", "http: {backendRef: {name: authz}}\n      grpc:")
    text = gateway() + mcp_route(spec_extra=secret_extension) + MCP_BACKENDS + AUTH_SERVICES
    first = build_resource_set(decode_text(textwrap.dedent(text), "test.yaml"))
    edited = text.replace(secret_extension, both)
    second = build_resource_set(decode_text(textwrap.dedent(edited), "test.yaml"), previous=first)
    errors = compile_resources(second).errors
    assert any("only one of grpc or http" in e.message for e in errors)
    [kept] = [e for e in errors if e.field.endswith("valueRef.kind")]
    assert kept.message.endswith("(in the last good version, compiled in place of the one that does not read)")


def test_runs_mcp_line_says_the_route_is_checked_by_the_service():
    result, _ = _built(GRPC, AUTH_SERVICES)
    [line] = mcp_lines(result.gateways["default/gw"])
    assert line.endswith("; clients: external authorization (gRPC, fail open)")


CHECKED = """
    extAuth:
      grpc: {backendRef: {name: authz, kind: Backend, group: gateway.envoyproxy.io}}"""
REROUTING = CHECKED + "\n      recomputeRoute: true"


@pytest.mark.parametrize(
    ("vip_port", "vip_security", "served"),
    [
        # Another listener of the same port: one Envoy listener, one route table (any host).
        (8080, CHECKED, ["default/vip"]),
        (8080, OAUTH.split("securityPolicy:")[1], ["default/vip"]),
        # API keys are the proxy's, for the route finally matched: nothing skipped.
        (
            8080,
            "\n    apiKeyAuth: {credentialRefs: [{name: two-key}], extractFrom: [{headers: [x-api-key]}]}",
            ["default/gate", "default/vip"],
        ),
        # Another port: another route table, which a request never reaches from this one.
        (9090, CHECKED, ["default/gate", "default/vip"]),
    ],
    ids=["extauth-same-port", "oauth-same-port", "api-keys-same-port", "extauth-other-port"],
)
def test_a_route_that_may_be_routed_again_is_not_served_beside_another_checked_one_on_its_port(
    vip_port, vip_security, served
):
    """Envoy runs the checks of the route a request first matched: routed again to another route
    Envoy checks clients for, it would skip that one's checks (shown on real Envoy)."""
    listeners = f"    - {{name: b, protocol: HTTP, port: {vip_port}, hostname: b.example.com}}"
    text = gateway(extra_listeners=listeners) + mcp_route("gate", f"\n  securityPolicy:{REROUTING}", section="http")
    vip = f"\n  headers: [{{name: x-tier, value: vip}}]\n  securityPolicy:{vip_security}"
    text += mcp_route("vip", vip, section="b")
    result = compile_resources(resources(text + MCP_BACKENDS + AUTH_SERVICES))
    assert result.errors == [], result.errors
    assert sorted(r.name for r in result.gateways["default/gw"].translator.mcp_routes) == served
    warned = [d for d in result.diagnostics if d.field.endswith("recomputeRoute")]
    assert bool(warned) == ("default/gate" not in served)
    if warned:
        assert "beside MCPRoute default/vip" in warned[0].message and "same port" in warned[0].message


def test_the_client_headers_removed_are_those_the_service_sets_and_is_not_sent():
    """A token exchange reads the client's Authorization and answers another: the client's is left
    for the service (Envoy sends it an HTTP service always), as one headersToExtAuth names."""
    policy = HTTP.replace("headersToBackend: [x-user]", "headersToBackend: [X-User, Authorization, x-team]")
    policy += "\n      headersToExtAuth: [X-Team]"
    result, _ = _built(policy, AUTH_SERVICES + GRANT)
    [mcp] = [m for ln in result.gateways["default/gw"].listeners for v in ln.virtual_hosts for m in v.mcp_routes]
    assert mcp.ext_auth is not None and stripped_client_headers(mcp.ext_auth) == ("x-user",)


def test_a_body_too_large_for_the_service_is_shaped_on_its_route_alone():
    _, built = _built(GRPC, AUTH_SERVICES)
    expressions = [
        m.filter.extension_filter.typed_config.value.decode(errors="replace")
        for m in _manager(built).local_reply_config.mappers
        if m.filter.HasField("extension_filter")
    ]
    [too_large] = [e for e in expressions if "request_payload_too_large" in e]
    assert "xds.route_name.endsWith('/mcp/default/tools')" in too_large and "contains" not in too_large


def test_the_mcp_examples_ext_auth_snippet_compiles_into_its_route():
    """examples/mcp/README.md's extAuth YAML, put into the example's MCPRoute with a Backend for the
    service: served, and asking the service at the path it says."""
    example = Path(__file__).parents[2] / "examples" / "mcp"
    [snippet] = [
        b
        for b in re.findall(r"^```yaml\n(.*?)^```", (example / "README.md").read_text(), re.S | re.M)
        if "extAuth" in b
    ]
    documents = list(yaml.safe_load_all((example / "mcp.yaml").read_text()))
    [route] = [d for d in documents if d and d["kind"] == "MCPRoute"]
    route["spec"].update(yaml.safe_load(snippet)["spec"])
    service = {"endpoints": [{"ip": {"address": "127.0.0.1", "port": 9191}}]}
    backend = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "authz", "namespace": "default"},
        "spec": service,
    }
    text = yaml.safe_dump_all([d for d in documents if d] + [backend])
    result = compile_resources(build_resource_set(decode_text(text, "mcp.yaml")))
    assert result.errors == [], result.errors
    [served] = [m for ln in result.gateways["default/mcp"].listeners for v in ln.virtual_hosts for m in v.mcp_routes]
    assert served.ext_auth is not None and served.ext_auth.path_prefix == "/check"


def test_a_grpc_service_failing_open_is_warned_of_for_the_headers_forwarded():
    """A new user's trial: the client's own x-tenant reached the MCP server when the service was
    down (a gRPC service's headers are not declared, so not removed from clients first)."""
    result, _ = _built(GRPC, AUTH_SERVICES)  # mcp_route's first backend forwards x-tenant
    [warned] = [d for d in _diagnostics(result) if d.field.endswith("failOpen")]
    assert "the client's own x-tenant (forwardHeaders)" in warned.message
    quiet, _ = _built(GRPC.replace("failOpen: true", "failOpen: false"), AUTH_SERVICES)
    assert not [d for d in _diagnostics(quiet) if d.field.endswith("failOpen")]


def test_an_mcproute_on_one_listener_of_a_shared_port_is_reached_through_its_hostname_only():
    listeners = "    - {name: b, protocol: HTTP, port: 8080, hostname: b.example.com}"
    text = gateway(extra_listeners=listeners) + mcp_route("on-b", section="b") + mcp_route("on-any", section="http")
    [listener] = compile_resources(resources(text + MCP_BACKENDS)).gateways["default/gw"].listeners
    vhosts = {v.domains[0]: [m.name for m in v.mcp_routes] for v in listener.virtual_hosts}
    assert vhosts == {"b.example.com": ["default/on-b"], "*": ["default/on-any"]}

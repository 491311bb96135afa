"""An MCPRoute's securityPolicy compiled: Envoy's JWT check and challenge, the protected resource
metadata, the JWKS cluster, and the MCP proxy's API keys and authorization rules; the errors that
name what is wrong, and the keys that must never reach Envoy."""

from __future__ import annotations

import json

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from aigw_xds.compile import compile_resources
from aigw_xds.compile.context import IssuerMetadata
from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import JWT_FILTER_NAME, BuildSettings, build_fleet
from tests.resource_text import gateway, resources
from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route

ROUTE = ResourceKey("MCPRoute", "default", "tools")
JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]})

OAUTH = """
  path: /tools/mcp
  securityPolicy:
    oauth:
      issuer: https://auth.example.com/realms/main
      audiences: [https://api.example.com/tools/mcp]
      jwks: {remoteJWKS: {uri: "https://auth.example.com/realms/main/certs", cacheDuration: 120s}}
      claimToHeaders: [{claim: sub, header: x-user}, {claim: org.team, header: x-team}]
      protectedResourceMetadata:
        resource: https://api.example.com/tools/mcp
        resourceName: Tools
        scopesSupported: [tools.read, tools.write]"""

API_KEYS = """
---
apiVersion: v1
kind: Secret
metadata: {name: clients, namespace: default}
stringData: {beta: key-of-beta-0123, alpha: key-of-alpha-0123}"""


def _compiled(extra: str, more: str = ""):
    return compile_resources(resources(gateway() + mcp_route(spec_extra=extra) + MCP_BACKENDS + more))


def _built(extra: str, more: str = ""):
    result = _compiled(extra, more)
    assert result.errors == [], result.errors
    return result, build_fleet(result.gateways["default/gw"], BuildSettings(system_ca_bundle="/etc/ca.pem"))


def _manager(built) -> hcm_pb2.HttpConnectionManager:
    [listener] = built.messages(type_urls.LISTENER).values()
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def _diagnostics(result) -> list:
    return [d for d in result.diagnostics if d.resource == ROUTE]


def test_oauth_has_envoy_check_the_token_of_the_issuer_for_the_audiences_on_the_route_only():
    _, built = _built(OAUTH)
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    # After the route scope's filter (the route known), before the translator's.
    assert names.index(JWT_FILTER_NAME) < names.index("envoy.filters.http.ext_proc/aigateway")
    config = jwt_pb2.JwtAuthentication()
    manager.http_filters[names.index(JWT_FILTER_NAME)].typed_config.Unpack(config)
    assert list(config.rules) == [] and config.bypass_cors_preflight  # only a route's own config asks
    provider = config.providers["default/tools"]
    assert provider.issuer == "https://auth.example.com/realms/main"
    assert list(provider.audiences) == ["https://api.example.com/tools/mcp"]
    assert not provider.forward and [(h.name, h.value_prefix) for h in provider.from_headers] == [
        ("Authorization", "Bearer "),
        ("Authorization", "bearer "),
    ]
    assert provider.remote_jwks.http_uri.uri == "https://auth.example.com/realms/main/certs"
    assert provider.remote_jwks.cache_duration.seconds == 120
    assert config.requirement_map["default/tools"].provider_name == "default/tools"
    [routes] = built.messages(type_urls.ROUTE).values()
    by_name = {r.name: r for r in routes.virtual_hosts[0].routes}
    mcp = next(r for r in by_name.values() if r.match.path == "/tools/mcp")
    required = jwt_pb2.PerRouteConfig()
    mcp.typed_per_filter_config[JWT_FILTER_NAME].Unpack(required)
    assert required.requirement_name == "default/tools"
    others = [r for r in by_name.values() if r is not mcp]
    assert others and all(JWT_FILTER_NAME not in r.typed_per_filter_config for r in others)


def test_the_jwks_cluster_is_the_uris_host_over_tls_verified_for_its_name():
    _, built = _built(OAUTH)
    cluster = built.messages(type_urls.CLUSTER)["aigw-jwks/https/auth.example.com:443"]
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (cluster.type, address.address, address.port_value) == (cluster.STRICT_DNS, "auth.example.com", 443)
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    validation = context.common_tls_context.validation_context
    assert context.sni == "auth.example.com" and validation.trusted_ca.filename == "/etc/ca.pem"
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == ["auth.example.com"]


def test_the_protected_resource_metadata_is_served_where_the_challenge_says():
    _, built = _built(OAUTH)
    [routes] = built.messages(type_urls.ROUTE).values()
    served = {r.match.path: r for r in routes.virtual_hosts[0].routes if r.HasField("direct_response")}
    metadata = served.pop("/.well-known/oauth-protected-resource/tools/mcp")
    assert not [path for path in served if "well-known" in path]
    document = json.loads(metadata.direct_response.body.inline_string)
    assert document == {
        "resource": "https://api.example.com/tools/mcp",
        "authorization_servers": ["https://auth.example.com/realms/main"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Tools",
        "scopes_supported": ["tools.read", "tools.write"],
    }
    headers = {h.header.key: h.header.value for h in metadata.response_headers_to_add}
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"  # a page's script may read it
    assert "envoy.filters.http.ext_proc/aigateway" in metadata.typed_per_filter_config


def test_a_resource_at_another_path_than_the_routes_is_warned_about():
    """An MCP client checks that the metadata's resource is the URL it connects to."""
    result, _ = _built(
        OAUTH.replace("resource: https://api.example.com/tools/mcp", "resource: https://api.example.com/mcp")
    )
    [warned] = _diagnostics(result)
    assert warned.field == "spec.securityPolicy.oauth.protectedResourceMetadata.resource"
    assert "clients reach this route at /tools/mcp" in warned.message


def _challenges(built) -> list[tuple[int, dict[str, str]]]:
    mappers = _manager(built).local_reply_config.mappers
    return [(m.status_code.value, {h.header.key: h.header.value for h in m.headers_to_add}) for m in mappers]


def test_the_challenge_names_the_metadata_and_the_scopes_and_overrides_jwt_authns_status():
    _, built = _built(OAUTH)
    unavailable, missing, invalid = _challenges(built)[:3]
    metadata = "https://api.example.com/.well-known/oauth-protected-resource/tools/mcp"
    about = f'resource_metadata="{metadata}", scope="tools.read tools.write"'
    assert missing == (401, {**missing[1], "WWW-Authenticate": f"Bearer {about}"})
    assert invalid[0] == 401 and invalid[1]["WWW-Authenticate"].startswith('Bearer error="invalid_token", ')
    assert invalid[1]["WWW-Authenticate"].endswith(about)
    # The issuer's keys not fetched yet: not the token's fault.
    assert unavailable == (503, {"Retry-After": "5"})


def test_a_percent_in_the_resource_url_is_not_read_as_a_format_command():
    resource = "resource: https://api.example.com/tools/mcp"
    _, built = _built(OAUTH.replace(resource, "resource: https://api.example.com/tools%20x/mcp"))
    challenge = _challenges(built)[1][1]["WWW-Authenticate"]
    assert "/oauth-protected-resource/tools%%20x/mcp" in challenge


def test_the_proxy_gets_the_metadata_url_and_the_claim_headers():
    result, _ = _built(OAUTH)
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    assert entry.oauth.resource_metadata_url == "https://api.example.com/.well-known/oauth-protected-resource/tools/mcp"
    assert [(c.claim, c.header) for c in entry.oauth.claim_headers] == [("sub", "x-user"), ("org.team", "x-team")]


def test_no_audiences_is_a_warning_and_the_route_is_served():
    result, _ = _built(OAUTH.replace("      audiences: [https://api.example.com/tools/mcp]\n", ""))
    [warned] = _diagnostics(result)
    assert warned.severity == "warning" and warned.field == "spec.securityPolicy.oauth.audiences"
    assert [r.name for r in result.gateways["default/gw"].translator.mcp_routes] == ["default/tools"]


NO_JWKS = OAUTH.replace(
    '      jwks: {remoteJWKS: {uri: "https://auth.example.com/realms/main/certs", cacheDuration: 120s}}\n', ""
)
ISSUER = "https://auth.example.com/realms/main"


def test_oauth_without_jwks_takes_the_jwks_uri_the_control_plane_learnt_from_the_issuer():
    learnt = {ISSUER: IssuerMetadata(jwks_uri="https://auth.example.com/realms/main/protocol/openid-connect/certs")}
    result = compile_resources(resources(gateway() + mcp_route(spec_extra=NO_JWKS) + MCP_BACKENDS), issuers=learnt)
    assert result.errors == [] and _diagnostics(result) == []
    built = build_fleet(result.gateways["default/gw"], BuildSettings(system_ca_bundle="/etc/ca.pem"))
    config = jwt_pb2.JwtAuthentication()
    manager = _manager(built)
    manager.http_filters[[f.name for f in manager.http_filters].index(JWT_FILTER_NAME)].typed_config.Unpack(config)
    remote = config.providers["default/tools"].remote_jwks
    assert remote.http_uri.uri == learnt[ISSUER].jwks_uri and not remote.HasField("cache_duration")
    assert "aigw-jwks/https/auth.example.com:443" in built.messages(type_urls.CLUSTER)


@pytest.mark.parametrize(
    ("learnt", "reason", "words"),
    [
        (
            None,
            "IssuerMetadataPending",
            f"the jwks_uri of {ISSUER} is being fetched from its metadata (served once it is known)",
        ),
        (
            IssuerMetadata(
                problem="https://auth.example.com/.well-known/openid-configuration/realms/main answered 503"
            ),
            "IssuerMetadataUnavailable",
            "is not known: https://auth.example.com/.well-known/openid-configuration/realms/main answered 503",
        ),
    ],
)
def test_oauth_without_jwks_is_not_served_until_the_issuer_told_its_jwks_uri(learnt, reason, words):
    """Served without the keys, the route would be open to every client: it waits, saying why."""
    issuers = {ISSUER: learnt} if learnt else {}
    result = compile_resources(resources(gateway() + mcp_route(spec_extra=NO_JWKS) + MCP_BACKENDS), issuers=issuers)
    assert result.errors == []
    [warned] = _diagnostics(result)
    assert warned.field == "spec.securityPolicy.oauth.jwks" and words in warned.message
    assert warned.message.endswith("this MCPRoute is not served")
    assert list(result.gateways["default/gw"].translator.mcp_routes) == []
    [accepted] = [c for c in result.status.snapshot()[ROUTE] if c.type == "Accepted"]
    assert (accepted.status, accepted.reason) == (False, reason)


def test_local_jwks_inline_or_from_a_configmap():
    remote = 'jwks: {remoteJWKS: {uri: "https://auth.example.com/realms/main/certs", cacheDuration: 120s}}'
    inline = OAUTH.replace(remote, f"jwks: {{localJWKS: {{inline: '{JWKS}'}}}}")
    _, built = _built(inline)
    config = jwt_pb2.JwtAuthentication()
    manager = _manager(built)
    next(f for f in manager.http_filters if f.name == JWT_FILTER_NAME).typed_config.Unpack(config)
    assert config.providers["default/tools"].local_jwks.inline_string == JWKS
    assert not any(name.startswith("aigw-jwks/") for name in built.messages(type_urls.CLUSTER))
    by_ref = OAUTH.replace(remote, "jwks: {localJWKS: {type: ValueRef, valueRef: {name: keys}}}")
    configmap = "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys, namespace: default}\n"
    configmap += f"data: {{jwks: '{JWKS}'}}"
    _built(by_ref, configmap)
    missing = _compiled(by_ref)
    [err] = missing.errors
    assert err.field == "spec.securityPolicy.oauth.jwks.localJWKS.valueRef.name" and "default/gw" in missing.failed
    broken = _compiled(OAUTH.replace(remote, "jwks: {localJWKS: {inline: '{\"keys\": []}'}}"))
    [err] = broken.errors
    assert err.field == "spec.securityPolicy.oauth.jwks.localJWKS.inline" and "JSON Web Key Set" in err.message


def test_api_key_auth_gives_the_proxy_every_client_and_envoy_none_of_the_keys():
    extra = """
  securityPolicy:
    apiKeyAuth:
      credentialRefs: [{name: clients}]
      extractFrom: [{headers: [x-api-key, Authorization]}, {params: [key]}]
      forwardClientIDHeader: x-client
      sanitize: true"""
    result, built = _built(extra, API_KEYS)
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    keys = entry.client_keys
    assert [(k.client_id, k.key) for k in keys.keys] == [("alpha", "key-of-alpha-0123"), ("beta", "key-of-beta-0123")]
    sources = [(s.WhichOneof("source"), getattr(s, s.WhichOneof("source"))) for s in keys.sources]
    assert sources == [("header", "x-api-key"), ("header", "Authorization"), ("query_param", "key")]
    assert keys.client_id_header == "x-client" and keys.sanitize
    everything = b"".join(m.SerializeToString() for t in built.by_type for m in built.messages(t).values())
    assert b"key-of-alpha" not in everything and b"key-of-beta" not in everything
    assert JWT_FILTER_NAME not in [f.name for f in _manager(built).http_filters]


def test_api_key_auth_references_that_do_not_resolve_hold_the_gateway():
    extra = (
        "\n  securityPolicy: {apiKeyAuth: {credentialRefs: [{name: cleints}], extractFrom: [{headers: [x-api-key]}]}}"
    )
    result = _compiled(extra, API_KEYS)
    [err] = result.errors
    assert err.field == "spec.securityPolicy.apiKeyAuth.credentialRefs[0].name"
    assert "Secret default/cleints not found" in err.message
    assert "default/gw" in result.failed
    refs = "credentialRefs: [{name: clients, namespace: vault}], extractFrom: [{headers: [k]}]"
    other = f"\n  securityPolicy: {{apiKeyAuth: {{{refs}}}}}"
    result = _compiled(other, API_KEYS.replace("namespace: default", "namespace: vault"))
    [err] = result.errors
    assert err.field == "spec.securityPolicy.apiKeyAuth.credentialRefs[0].namespace" and "ReferenceGrant" in err.message


def test_authorization_rules_reach_the_proxy_in_order():
    extra = (
        OAUTH
        + """
    authorization:
      rules:
        - source: {jwt: {scopes: [tools.write], claims: [{name: org.teams, valueType: StringArray, values: [a, b]}]}}
          target: {tools: [{backend: one, tool: echo}]}
        - cel: request.headers["x-tenant"] == "t1"
          action: Deny
        - target: {tools: [{backend: two, tool: search}]}"""
    )
    result, _ = _built(extra)
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    first, second, third = entry.authorization.rules
    assert list(first.scopes) == ["tools.write"] and not first.deny
    assert [(c.name, c.array, list(c.values)) for c in first.claims] == [("org.teams", True, ["a", "b"])]
    assert [(t.backend, t.tool) for t in first.tools] == [("one", "echo")]
    assert second.cel == 'request.headers["x-tenant"] == "t1"' and second.deny and not second.scopes
    assert [(t.backend, t.tool) for t in third.tools] == [("two", "search")] and not third.claims
    assert not entry.authorization.default_allow  # Envoy AI Gateway's default: deny


@pytest.mark.parametrize(
    ("rules", "field", "words"),
    [
        (
            "[{target: {tools: [{backend: three, tool: x}]}}]",
            "spec.securityPolicy.authorization.rules[0].target.tools[0].backend",
            "not a backendRef",
        ),
        (
            "[{cel: 'request.headers[ ==', action: Deny}]",
            "spec.securityPolicy.authorization.rules[0].cel",
            "not a CEL expression of the rule: it does not parse at line 1",
        ),
        (
            "[{cel: 'reqest.mcp.tool == \"add\"', action: Deny}]",
            "spec.securityPolicy.authorization.rules[0].cel",
            "names 'reqest', not a variable of the rule's: request (did you mean request?)",
        ),
        ("[{cel: '[1].exists(x, x > 0) && x > 1'}]", "spec.securityPolicy.authorization.rules[0].cel", "names 'x'"),
        ("[{cel: 'request.__class__ != null'}]", "spec.securityPolicy.authorization.rules[0].cel", "names '__class__'"),
        (
            "[{cel: 'request.headers.exists(a, request.headers.exists(b, a == b))'}]",
            "spec.securityPolicy.authorization.rules[0].cel",
            "a macro's expression (exists) reads request",
        ),
    ],
)
def test_an_authorization_rule_that_cannot_apply_is_an_error_on_its_field(rules: str, field: str, words: str):
    result = _compiled(f"\n  securityPolicy: {{authorization: {{rules: {rules}}}}}")
    [err] = result.errors
    assert err.field == field and words in err.message and "default/gw" in result.failed


def test_a_jwt_source_without_oauth_is_refused_by_validation():
    """Its claims would come from a token no one verified."""
    result = _compiled("\n  securityPolicy: {authorization: {rules: [{source: {jwt: {scopes: [a]}}}]}}")
    [err] = result.errors
    assert err.field == "spec.securityPolicy" and "oauth must be configured" in err.message


def test_two_clients_with_one_key_are_an_error_that_does_not_show_the_key():
    extra = "\n  securityPolicy: {apiKeyAuth: {credentialRefs: [{name: clients}], extractFrom: [{headers: [k]}]}}"
    result = _compiled(extra, API_KEYS.replace("key-of-beta-0123", "key-of-alpha-0123"))
    [err] = result.errors
    assert "clients alpha and beta have the same key" in err.message and "key-of" not in err.message


def test_a_cel_macros_variable_is_its_own_inside_the_macro():
    rules = '[{cel: \'request.auth.jwt.scopes.exists(s, s == "a") && request.headers.all(h, h != "")\'}]'
    result = _compiled(OAUTH + f"\n    authorization: {{rules: {rules}}}")
    assert result.errors == []


def test_a_macros_expression_may_read_the_calls_short_strings():
    """request.mcp's backend, tool and method cost a step nothing (a review: a backendSelector's
    `claims.tenants.exists(t, t + "-tools" == request.mcp.backend)`, which Envoy AI Gateway takes)."""
    cel = 'request.auth.jwt.claims.tenants.exists(t, t + "-" + request.mcp.tool == request.mcp.backend)'
    result = _compiled(OAUTH + f"\n    authorization: {{rules: [{{cel: '{cel}'}}]}}")
    assert result.errors == []


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("Mcp-Session-Id", "Mcp-Session-Id is the MCP transport's own header"),
        ("x-api-key", "x-api-key carries backend two's API key"),
    ],
)
def test_the_client_id_header_is_not_one_the_transport_or_a_backends_key_takes(header: str, words: str):
    keys = "credentialRefs: [{name: clients}], extractFrom: [{headers: [k]}]"
    result = _compiled(f"\n  securityPolicy: {{apiKeyAuth: {{{keys}, forwardClientIDHeader: {header}}}}}", API_KEYS)
    [err] = result.errors
    assert err.field == "spec.securityPolicy.apiKeyAuth.forwardClientIDHeader" and words in err.message


def test_a_claim_header_is_not_one_the_transport_or_a_backends_key_takes():
    for header, words in (
        ("content-length", "is the MCP transport's own header"),
        ("Authorization", "carries backend one's"),
    ):
        result = _compiled(OAUTH.replace("header: x-user", f"header: {header}"))
        [err] = result.errors
        assert err.field.startswith("spec.securityPolicy.oauth.claimToHeaders[0]") and words in err.message


def test_a_key_set_with_private_parts_is_an_error_that_shows_none_of_them():
    remote = 'jwks: {remoteJWKS: {uri: "https://auth.example.com/realms/main/certs", cacheDuration: 120s}}'
    private = json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "c2VjcmV0LWV4cG9uZW50"}]})
    result = _compiled(OAUTH.replace(remote, f"jwks: {{localJWKS: {{inline: '{private}'}}}}"))
    [err] = result.errors
    assert "private or secret parts (d)" in err.message and "c2VjcmV0" not in err.message


def test_keys_fetched_in_clear_text_from_another_host_are_warned_about():
    for uri, warned in (("http://auth.example.com/certs", True), ("http://127.0.0.1:8080/certs", False)):
        remote = 'uri: "https://auth.example.com/realms/main/certs"'
        result, _ = _built(OAUTH.replace(remote, f'uri: "{uri}"'))
        fields = [d.field for d in _diagnostics(result)]
        assert ("spec.securityPolicy.oauth.jwks.remoteJWKS.uri" in fields) is warned, uri


def test_an_oauth_route_passes_no_backend_the_clients_token():
    backends = """
    - name: one
      kind: Backend
      group: gateway.envoyproxy.io
      forwardHeaders: [{name: Authorization, backendHeader: x-upstream-token}]"""
    text = gateway() + mcp_route(spec_extra=OAUTH, backends=backends) + MCP_BACKENDS
    result = compile_resources(resources(text))
    [err] = result.errors
    assert err.field == "spec.backendRefs[0].forwardHeaders" and "MCP specification forbids" in err.message


@pytest.mark.parametrize(
    ("cel", "words"),
    [
        (
            "request.heders['x'] == 'a'",
            "request has no field 'heders' (auth, headers, headers_all, host, mcp, method, path) (did you mean",
        ),
        ("request.mcp.tol == 'x'", "request.mcp has no field 'tol'"),
        ("request.path.startWith('/a')", "it calls startWith, not a CEL function (did you mean startsWith?)"),
        ("type(request){a: 1} != null", "constructs an object"),
        (".request.path == '/'", "leading-dot"),
        ("request.mcp.params.arguments.items.all(x, x in request.headers_all['a'])", "reads request"),
    ],
)
def test_cel_that_would_fail_at_every_call_or_cost_the_square_is_refused(cel: str, words: str):
    from aigw_contract import mcp_cel

    problem = mcp_cel.problem(cel)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    "cel",
    [
        "request.mcp.params.arguments.text.startsWith('hello') && request.headers['x-tenant'] == 't1'",
        "request.mcp.params.arguments.rows.exists(row, row.cells.map(c, c * 2).size() > 1)",
        "request.auth.jwt.claims.org.team in ['a', 'b'] && size(request.auth.jwt.scopes) > 0",
        "has(request.mcp.params.arguments.text) && request.method == 'POST'",
    ],
)
def test_cel_a_rule_may_have(cel: str):
    from aigw_contract import mcp_cel

    assert mcp_cel.problem(cel) is None


def test_a_forwarded_header_is_never_given_a_gateway_headers_name():
    backends = """
    - name: one
      kind: Backend
      group: gateway.envoyproxy.io
      forwardHeaders: [{name: x-route, backendHeader: x-aigw-mcp-route}]"""
    result = compile_resources(resources(gateway() + mcp_route(backends=backends) + MCP_BACKENDS))
    [err] = result.errors
    assert err.field == "spec.backendRefs[0].forwardHeaders[0].backendHeader" and "gateway's own headers" in err.message


def test_a_forwarded_header_is_never_one_envoy_removes_from_clients():
    backends = """
    - name: one
      kind: Backend
      group: gateway.envoyproxy.io
      forwardHeaders: [{name: X-Envoy-Tenant}]"""
    [err] = compile_resources(resources(gateway() + mcp_route(backends=backends) + MCP_BACKENDS)).errors
    assert err.field == "spec.backendRefs[0].forwardHeaders[0]"
    assert "x-envoy-* headers a client sends are removed" in err.message


def test_two_oauth_routes_telling_of_themselves_at_one_place_serve_the_first_only():
    """Told where the metadata is, the other route's clients would read the first's issuer (the
    first: Envoy tries the route with more headers first)."""
    other = OAUTH.replace("https://auth.example.com/realms/main", "https://other.example.com").replace(
        "path: /tools/mcp", "path: /tools/mcp\n  headers: [{name: x-tenant, value: b}]"
    )
    text = gateway() + mcp_route(spec_extra=OAUTH) + mcp_route("second", spec_extra=other) + MCP_BACKENDS
    result = compile_resources(resources(text))
    assert [r.name for r in result.gateways["default/gw"].translator.mcp_routes] == ["default/second"]
    [warned] = [d for d in result.diagnostics if d.resource == ROUTE]
    assert "metadata served at the same place" in warned.message


def _cors_of(built, path: str):
    from envoy.extensions.filters.http.cors.v3 import cors_pb2

    [routes] = built.messages(type_urls.ROUTE).values()
    [route] = [r for r in routes.virtual_hosts[0].routes if r.match.path == path]
    if "envoy.filters.http.cors" not in route.typed_per_filter_config:
        return None
    policy = cors_pb2.CorsPolicy()
    route.typed_per_filter_config["envoy.filters.http.cors"].Unpack(policy)
    return policy


def test_a_route_whose_clients_sign_in_has_cors_with_its_key_header_and_an_open_one_none():
    extra = (
        "\n  securityPolicy: {apiKeyAuth: {credentialRefs: [{name: clients}], extractFrom: [{headers: [X-Api-Key]}]}}"
    )
    _, built = _built(extra, API_KEYS)
    policy = _cors_of(built, "/mcp")
    assert policy is not None and "x-api-key" in policy.allow_headers.split(", ")
    assert "x-tenant" in policy.allow_headers.split(", ")  # a header forwarded to a backend
    assert "envoy.filters.http.cors" in [f.name for f in _manager(built).http_filters]
    _, open_built = _built("")
    assert _cors_of(open_built, "/mcp") is None
    assert "envoy.filters.http.cors" not in [f.name for f in _manager(open_built).http_filters]

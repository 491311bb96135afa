"""SecurityPolicies aigw-xds enforces (jwt, cors), compiled and built: which policy applies where
(a route's over its listener's over its Gateway's, the oldest of two at one level), what Envoy is
given (jwt_authn providers and requirements, per host and per route; CORS; the claim headers
removed first; the find-model route and the second check after the router phase), and the errors
that keep a Gateway closed rather than open."""

from __future__ import annotations

import hashlib
import json

import pytest
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from envoy.extensions.matching.input_matchers.ip.v3 import ip_pb2
from envoy.extensions.matching.input_matchers.metadata.v3 import metadata_pb2 as metadata_input_pb2
from envoy.type.matcher.v3 import http_inputs_pb2

import aigw_contract as contract
from aigw_xds.compile import compile_resources
from aigw_xds.keys import ResourceKey
from aigw_xds.wire import Serialized
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import REQUEST_BODY_FILTER_NAME, BuildSettings, build_fleet
from aigw_xds.xds.client_checks import (
    AUTHORIZATION_FILTER,
    AUTHORIZATION_ROUTED_FILTER,
    CLAIM_HEADERS_FILTER,
    CLIENT_KEYS_FILTER,
    CORS_FILTER_NAME,
    CREDENTIALS_REMOVED_FILTER,
    JWT_FILTER_NAME,
    VERIFIED_FILTER,
)
from tests.resource_text import any_model_route, api_key, backend, gateway, resources, route
from tests.resource_text import security_policy as policy
from tests.unit.test_mcp_security_compile import _manager

JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]})
BASE = gateway() + route("a", {"model-a": "x"}) + route("b", {"model-b": "x"}) + backend("x", 1)
GATEWAY_TARGET = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]"
ROUTE_A = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a}]"
REMOTE = "remoteJWKS: {uri: https://issuer.example.com/jwks, cacheDuration: 120s}"


def jwt(provider: str = "idp", keys: str = REMOTE, more: str = "") -> str:
    return f"""
jwt:
  providers:
    - name: {provider}
      issuer: https://issuer.example.com
      audiences: [gateway]
      {keys}{more}
"""


CLAIMS = "\n      claimToHeaders: [{claim: sub, header: x-user-id}]"


def _built(text: str):
    result = compile_resources(resources(text))
    assert result.errors == [], result.errors
    return result, build_fleet(result.gateways["default/gw"], BuildSettings(system_ca_bundle="/etc/ca.pem"))


def _jwt_config(manager: hcm_pb2.HttpConnectionManager, name: str = JWT_FILTER_NAME) -> jwt_pb2.JwtAuthentication:
    config = jwt_pb2.JwtAuthentication()
    next(f for f in manager.http_filters if f.name == name).typed_config.Unpack(config)
    return config


def _vhost(built) -> route_components_pb2.VirtualHost:
    [configuration] = built.messages(type_urls.ROUTE).values()
    [vhost] = configuration.virtual_hosts
    return vhost


def _requirement(entry: route_components_pb2.Route | route_components_pb2.VirtualHost, name: str = JWT_FILTER_NAME):
    if name not in entry.typed_per_filter_config:
        return None
    config = jwt_pb2.PerRouteConfig()
    entry.typed_per_filter_config[name].Unpack(config)
    return "disabled" if config.disabled else config.requirement_name


def _verified_by(entry: route_components_pb2.Route) -> tuple[str, ...] | None:
    """The providers the route's RBAC asks to have verified the request's token (None: it asks none)."""
    if VERIFIED_FILTER not in entry.typed_per_filter_config:
        return None
    config = rbac_filter_pb2.RBACPerRoute()
    entry.typed_per_filter_config[VERIFIED_FILTER].Unpack(config)
    [policy] = config.rbac.rules.policies.values()
    [every] = policy.principals
    needed = []
    for principal in every.and_ids.ids:  # (a JWT of any of the providers; a key)
        alternatives = principal.or_ids.ids if principal.HasField("or_ids") else [principal]
        needed += [p.sourced_metadata.metadata_matcher.path[0].key for p in alternatives]
    return tuple(needed)


def _each_policy(requirement: jwt_pb2.JwtRequirement) -> list[list[str]]:
    """The providers of each policy an "every policy, each if it can" requirement verifies a token
    for (each list also taking anything: the rule reached decides)."""
    out = []
    every = requirement.requires_all.requirements if requirement.HasField("requires_all") else [requirement]
    for each in every:
        *providers, anything = each.requires_any.requirements
        assert anything.HasField("allow_missing_or_failed")
        out.append([p.provider_name for p in providers])
    return out


def _removed(
    entry: route_components_pb2.Route | route_components_pb2.VirtualHost, name: str
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The headers and query parameters a header_mutation's per-route configuration removes."""
    if name not in entry.typed_per_filter_config:
        return None
    config = header_mutation_pb2.HeaderMutationPerRoute()
    entry.typed_per_filter_config[name].Unpack(config)
    headers = tuple(m.remove for m in config.mutations.request_mutations)
    return headers, tuple(m.remove for m in config.mutations.query_parameter_mutations)


def _routes_of(vhost: route_components_pb2.VirtualHost, route: str) -> list[route_components_pb2.Route]:
    return [r for r in vhost.routes if r.name.startswith(f"default/{route}/")]


def test_a_gateway_policy_has_envoy_check_every_request_for_a_jwt_of_its_providers() -> None:
    _, built = _built(BASE + policy(GATEWAY_TARGET, jwt(more=CLAIMS)))
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    # After the body's model is read (the route is the rule's), before the translator reads anything.
    assert names.index(REQUEST_BODY_FILTER_NAME) < names.index(CLAIM_HEADERS_FILTER)
    assert names.index(CLAIM_HEADERS_FILTER) < names.index(JWT_FILTER_NAME)
    assert names.index(JWT_FILTER_NAME) < names.index("envoy.filters.http.ext_proc/aigateway")
    assert VERIFIED_FILTER not in names  # every rule asks what the host asks
    # On for every request: Envoy picks the filters a request meets before its body picks its rule.
    assert not any(f.disabled for f in manager.http_filters if f.name in (CLAIM_HEADERS_FILTER, JWT_FILTER_NAME))
    config = _jwt_config(manager)
    provider = config.providers["policy:default/auth/idp"]
    assert (provider.issuer, list(provider.audiences)) == ("https://issuer.example.com", ["gateway"])
    # Read from Authorization alone (not a query parameter, which would reach the provider's URL).
    assert [(h.name, h.value_prefix) for h in provider.from_headers] == [("Authorization", "Bearer ")]
    assert not provider.from_params
    assert provider.remote_jwks.http_uri.uri == "https://issuer.example.com/jwks"
    assert provider.remote_jwks.cache_duration.seconds == 120
    assert [(c.header_name, c.claim_name) for c in provider.claim_to_headers] == [("x-user-id", "sub")]
    assert config.requirement_map["policy:default/auth"].provider_name == "policy:default/auth/idp"
    vhost = _vhost(built)
    # On the host: every route, the model list and the answers to requests no rule took included.
    assert _requirement(vhost) == "policy:default/auth"
    assert all(_requirement(r) is None for r in vhost.routes)
    assert _removed(vhost, CLAIM_HEADERS_FILTER) == (("x-user-id",), ())
    # The token stays for the other policies' providers, and is taken off once they all checked it.
    assert provider.forward
    assert names.index(JWT_FILTER_NAME) < names.index(CREDENTIALS_REMOVED_FILTER)
    assert names.index(CREDENTIALS_REMOVED_FILTER) < names.index("envoy.filters.http.ext_proc/aigateway")
    assert _removed(vhost, CREDENTIALS_REMOVED_FILTER) == (("authorization",), ())
    # A browser's preflight, which jwt_authn lets by, goes to a route of its own, before any rule.
    assert vhost.routes[0].name == "default/gw/*/cors-preflight"
    clusters = built.messages(type_urls.CLUSTER)
    assert provider.remote_jwks.http_uri.cluster in clusters


def test_a_route_policy_takes_the_place_of_the_gateway_policy_for_its_rules() -> None:
    text = (
        BASE
        + policy(GATEWAY_TARGET, jwt())
        + policy(ROUTE_A, "cors: {allowOrigins: ['https://app.example.com']}", "web")
    )
    _, built = _built(text)
    vhost = _vhost(built)
    assert _requirement(vhost) == "policy:default/auth"
    # Route a's policy asks for no JWT: its rules' routes turn the host's check off, and take its CORS.
    for entry in _routes_of(vhost, "a"):
        assert _requirement(entry) == "disabled"
        cors = cors_pb2.CorsPolicy()
        entry.typed_per_filter_config[CORS_FILTER_NAME].Unpack(cors)
        assert [m.exact for m in cors.allow_origin_string_match] == ["https://app.example.com"]
    assert all(_requirement(r) is None for r in _routes_of(vhost, "b"))


def test_a_request_the_router_phase_routes_again_is_checked_again_on_the_rule_it_reaches() -> None:
    """Route a asks for a JWT, route b for none. A request whose model Envoy cannot read (a multipart
    form) is first checked on the answer the router phase looks at (no-model, find-model,
    check-model), which takes any token of the host's policies or anything at all (route b takes a
    request without one, and its clients' Authorization is no JWT: the OpenAI SDK's key); then,
    once routed, by an RBAC filter after the router phase on every route of the rule it reaches:
    the token verified for that rule's policy (its x-ai-eg-model routes, and those of a rule that
    matches no model)."""
    catch_all = any_model_route("c", "name: x")
    route_c = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: c}]"
    _, built = _built(BASE + policy(ROUTE_A, jwt()) + catch_all + policy(route_c, jwt(), "c-auth"))
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    assert names.index("envoy.filters.http.ext_proc/aigateway") < names.index(VERIFIED_FILTER)
    config = _jwt_config(manager)
    vhost = _vhost(built)
    assert _requirement(vhost) is None
    answers = [r for r in vhost.routes if r.name.endswith(("no-model", "/find-model", "/check-model"))]
    assert len(answers) == 5  # no-model for each client API, find-model, check-model
    [loose] = {_requirement(r) for r in answers}
    assert _each_policy(config.requirement_map[loose]) == [["policy:default/auth/idp"], ["policy:default/c-auth/idp"]]
    for route_name, requirement in (("a", "policy:default/auth"), ("c", "policy:default/c-auth")):
        routes = _routes_of(vhost, route_name)
        assert {_verified_by(r) for r in routes} == {(requirement + "/idp",)}
    assert {_requirement(r) for r in _routes_of(vhost, "a")} == {"policy:default/auth"}
    # Route c takes requests of any model: those whose model Envoy could not read too, which the
    # router phase may route to another rule (b, open): jwt_authn takes what the answers take there.
    assert {_requirement(r) for r in _routes_of(vhost, "c")} == {loose}
    # (c matches no model: one of its routes takes requests whose model Envoy did not read)
    [unread] = [r for r in _routes_of(vhost, "c") if r.name.endswith("/unread")]
    [absent] = unread.match.dynamic_metadata
    assert absent.invert and absent.value.present_match
    assert all(_verified_by(r) is None for r in _routes_of(vhost, "b"))
    assert all(p.payload_in_metadata == name for name, p in config.providers.items())


def test_under_a_gateway_policy_a_route_with_its_own_is_checked_again_as_its_own_asks() -> None:
    text = BASE + policy(GATEWAY_TARGET, jwt()) + policy(ROUTE_A, jwt("other"), "a-auth")
    _, built = _built(text)
    vhost = _vhost(built)
    assert _requirement(vhost) == "policy:default/auth"
    assert {_verified_by(r) for r in _routes_of(vhost, "a")} == {("policy:default/a-auth/other",)}
    assert {_verified_by(r) for r in _routes_of(vhost, "b")} == {("policy:default/auth/idp",)}
    answers = [r for r in vhost.routes if r.name.endswith("/find-model")]
    requirement = _jwt_config(_manager(built)).requirement_map[_requirement(answers[0])]
    # The token verified for each policy whose providers take it; the rule reached decides.
    assert _each_policy(requirement) == [["policy:default/auth/idp"], ["policy:default/a-auth/other"]]


def test_optional_and_fail_open_let_requests_without_a_good_token_pass() -> None:
    _, built = _built(BASE + policy(GATEWAY_TARGET, jwt().replace("jwt:\n", "jwt:\n  optional: true\n")))
    requirement = _jwt_config(_manager(built)).requirement_map["policy:default/auth"]
    assert requirement.requires_any.requirements[-1].HasField("allow_missing")
    _, built = _built(BASE + policy(GATEWAY_TARGET, jwt().replace("jwt:\n", "jwt:\n  failOpen: true\n")))
    requirement = _jwt_config(_manager(built)).requirement_map["policy:default/auth"]
    assert requirement.requires_any.requirements[-1].HasField("allow_missing_or_failed")


def test_of_two_policies_on_the_gateway_the_oldest_applies() -> None:
    text = (
        BASE
        + policy(GATEWAY_TARGET, jwt("new-idp"), "newer", created="2026-02-01T00:00:00Z")
        + policy(GATEWAY_TARGET, jwt("old-idp"), "older", created="2026-01-01T00:00:00Z")
    )
    result, built = _built(text)
    assert _requirement(_vhost(built)) == "policy:default/older"
    [warning] = [d for d in result.diagnostics if d.resource == ResourceKey("SecurityPolicy", "default", "newer")]
    assert "default/older, the oldest SecurityPolicy targeting Gateway default/gw" in warning.message


def test_a_listener_policy_takes_the_place_of_the_gateway_policy_on_its_listener() -> None:
    listener = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}]"
    _, built = _built(BASE + policy(GATEWAY_TARGET, jwt()) + policy(listener, jwt("other"), "http-only"))
    assert _requirement(_vhost(built)) == "policy:default/http-only"


def test_cors_answers_the_origins_it_names() -> None:
    body = """
cors:
  allowOrigins: ["https://*.example.com", "https://app.example.org:8443"]
  allowMethods: [POST, GET]
  allowHeaders: [authorization, content-type]
  exposeHeaders: [x-request-id]
  maxAge: 10m
  allowCredentials: true
"""
    _, built = _built(BASE + policy(GATEWAY_TARGET, body))
    manager = _manager(built)
    assert CORS_FILTER_NAME in [f.name for f in manager.http_filters]
    assert JWT_FILTER_NAME not in [f.name for f in manager.http_filters]
    cors = cors_pb2.CorsPolicy()
    _vhost(built).typed_per_filter_config[CORS_FILTER_NAME].Unpack(cors)
    wildcard, exact = cors.allow_origin_string_match
    assert exact.exact == "https://app.example.org:8443"
    assert wildcard.safe_regex.regex == r"https://.*\.example\.com"  # (as Envoy Gateway has it)
    assert (cors.allow_methods, cors.allow_headers, cors.expose_headers) == (
        "POST, GET",
        "authorization, content-type",
        "x-request-id",
    )
    assert (cors.max_age, cors.allow_credentials.value) == ("600", True)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("jwtt: {}", "spec.jwtt", "jwtt is not a field of Envoy Gateway's SecurityPolicy"),
        (
            jwt(more="\n      extractFrom: {params: [token]}"),
            "spec.jwt.providers[0].extractFrom.params",
            "a token in a query parameter or a cookie is not supported",
        ),
        ("oidc: {clientID: gw}", "spec.oidc", "oidc is not supported yet"),
        (
            jwt(keys='localJWKS: {type: Inline, inline: \'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}\'}'),
            "spec.jwt.providers[0].localJWKS.inline",
            "a key holds private or secret parts (k)",
        ),
    ],
)
def test_a_policy_that_cannot_be_enforced_keeps_the_gateway_closed(body: str, field: str, words: str) -> None:
    result = compile_resources(resources(BASE + policy(GATEWAY_TARGET, body)))
    _refused(result, field, words)


def _refused(result, field: str, words: str) -> None:
    assert "default/gw" in result.failed and "default/gw" not in result.gateways
    [error] = [e for e in result.errors if e.resource == ResourceKey("SecurityPolicy", "default", "auth")]
    assert error.field == field and words in error.message


def test_a_local_key_set_is_given_to_envoy() -> None:
    keys = f"localJWKS: {{type: Inline, inline: '{JWKS}'}}"
    _, built = _built(BASE + policy(GATEWAY_TARGET, jwt(keys=keys)))
    provider = _jwt_config(_manager(built)).providers["policy:default/auth/idp"]
    assert json.loads(provider.local_jwks.inline_string) == json.loads(JWKS)
    assert not any(name.startswith("aigw-jwks/") for name in built.messages(type_urls.CLUSTER))


def test_a_policy_is_accepted_when_it_applies() -> None:
    result, _ = _built(BASE + policy(GATEWAY_TARGET, jwt()))
    accepted = {c.type: (c.status, c.reason) for c in result.statuses[ResourceKey("SecurityPolicy", "default", "auth")]}
    assert accepted["Accepted"] == (True, "Accepted")


def test_a_policy_on_one_rule_of_a_route_is_refused_not_applied_to_the_whole_route() -> None:
    """Envoy Gateway applies a policy naming a route's sectionName to that rule alone: applied to the
    whole route, an optional or CORS-only one would open its other rules."""
    one_rule = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a, sectionName: rule-0}]"
    result = compile_resources(resources(BASE + policy(GATEWAY_TARGET, jwt()) + policy(one_rule, jwt(), "one")))
    [error] = [e for e in result.errors if e.resource == ResourceKey("SecurityPolicy", "default", "one")]
    assert error.field == "spec.targetRefs[0].sectionName" and "one rule of a route is not supported" in error.message
    assert "default/gw" in result.failed


def test_a_policy_and_an_mcp_route_of_one_name_keep_their_own_requirements() -> None:
    from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route
    from tests.unit.test_mcp_security_compile import OAUTH

    text = gateway() + mcp_route(spec_extra=OAUTH) + MCP_BACKENDS + policy(GATEWAY_TARGET, jwt(), "tools")
    _, built = _built(text)
    config = _jwt_config(_manager(built))
    assert config.requirement_map["default/tools"].provider_name == "default/tools"  # the MCPRoute's own
    assert config.requirement_map["policy:default/tools"].provider_name == "policy:default/tools/idp"


KEYS = """
---
apiVersion: v1
kind: Secret
metadata: {name: client-keys, namespace: default}
stringData: {alice: gw-key-of-alice-0123, bob: gw-key-of-bob-0123}
"""
API_KEYS = """
apiKeyAuth:
  credentialRefs: [{name: client-keys}]
  extractFrom: [{headers: [authorization]}]
  forwardClientIDHeader: x-client-id
"""


def _keys_check(entry: route_components_pb2.Route | route_components_pb2.VirtualHost) -> tuple[str, bool] | str | None:
    """(the policies a request's key may be of, whether none passes too), "off", or None (nothing said)."""
    if CLIENT_KEYS_FILTER not in entry.typed_per_filter_config:
        return None
    config = ext_authz_pb2.ExtAuthzPerRoute()
    entry.typed_per_filter_config[CLIENT_KEYS_FILTER].Unpack(config)
    if config.disabled:
        return "off"
    extensions = config.check_settings.context_extensions
    return extensions[contract.CLIENT_KEY_POLICIES], extensions.get(contract.CLIENT_KEY_OPTIONAL) == "1"


def test_an_api_key_policy_has_envoy_ask_the_translator_which_alone_holds_the_keys() -> None:
    result, built = _built(BASE + KEYS + policy(GATEWAY_TARGET, API_KEYS))
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    assert names.index(CLAIM_HEADERS_FILTER) < names.index(CLIENT_KEYS_FILTER)
    assert names.index(CLIENT_KEYS_FILTER) < names.index("envoy.filters.http.ext_proc/aigateway")
    config = ext_authz_pb2.ExtAuthz()
    next(f for f in manager.http_filters if f.name == CLIENT_KEYS_FILTER).typed_config.Unpack(config)
    assert config.grpc_service.envoy_grpc.cluster_name == contract.TRANSLATOR_CLUSTER_NAME
    assert {(m.key, m.value) for m in config.grpc_service.initial_metadata} >= {
        (contract.FLEET_METADATA_KEY, "default/gw"),
        (contract.PHASE_METADATA_KEY, contract.CLIENT_KEYS_PHASE),
    }
    assert not config.failure_mode_allow and config.status_on_error.code == 503
    vhost = _vhost(built)
    assert _keys_check(vhost) == ("default/auth", False)
    assert _removed(vhost, CLAIM_HEADERS_FILTER) == (("x-client-id",), ())  # (a client's own goes)
    assert _removed(vhost, CREDENTIALS_REMOVED_FILTER) == (("authorization",), ())
    # The keys: in the translator's configuration, nowhere in Envoy's.
    [held] = result.gateways["default/gw"].translator.client_key_policies
    assert held.policy == "default/auth" and {k.client_id for k in held.keys.keys} == {"alice", "bob"}
    envoy_config = b"".join(m.SerializeToString() for t in type_urls.ENVOY_ORDER for m in built.messages(t).values())
    assert b"gw-key-of-alice" not in envoy_config and b"gw-key-of-bob" not in envoy_config


def test_a_route_api_key_policy_is_asked_on_its_rules_and_checked_again_once_routed() -> None:
    _, built = _built(BASE + KEYS + policy(ROUTE_A, API_KEYS))
    vhost = _vhost(built)
    assert _keys_check(vhost) == "off"
    assert {_keys_check(r) for r in _routes_of(vhost, "a")} == {("default/auth", False)}
    assert {_verified_by(r) for r in _routes_of(vhost, "a")} == {("aigw.client_key/default/auth",)}
    assert all(_keys_check(r) is None and _verified_by(r) is None for r in _routes_of(vhost, "b"))
    [find_model] = [r for r in vhost.routes if r.name.endswith("/find-model")]
    assert _keys_check(find_model) == ("default/auth", True)  # (route b takes requests without one)


def test_without_a_translator_a_host_whose_policy_asks_for_keys_serves_nothing() -> None:
    result = compile_resources(resources(BASE + KEYS + policy(GATEWAY_TARGET, API_KEYS)))
    built = build_fleet(result.gateways["default/gw"], BuildSettings(translator_enabled=False))
    routes = _vhost(built).routes
    assert routes and {r.direct_response.status for r in routes} == {500}
    assert all("apiKeyAuth" in r.direct_response.body.inline_string for r in routes)


def test_an_mcp_route_with_its_own_security_policy_takes_none_of_the_gateways_checks() -> None:
    """From an expert review: an MCPRoute whose securityPolicy takes API keys (the MCP proxy checks
    them) was asked for the Gateway's key too, and its key taken off before the proxy read it."""
    from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route
    from tests.unit.test_mcp_security_compile import OAUTH

    text = gateway() + mcp_route(spec_extra=OAUTH) + MCP_BACKENDS + KEYS
    _, built = _built(text + policy(GATEWAY_TARGET, API_KEYS + jwt()))  # (a policy of both)
    vhost = _vhost(built)
    assert _keys_check(vhost) == ("default/auth", False) and _requirement(vhost) == "policy:default/auth"
    [mcp] = [r for r in vhost.routes if r.name.endswith("/mcp/default/tools")]
    assert _keys_check(mcp) == "off"
    assert _requirement(mcp) == "default/tools"  # (its own OAuth)
    [metadata] = [r for r in vhost.routes if r.name.endswith("/metadata")]
    assert _keys_check(metadata) == "off" and _requirement(metadata) == "disabled"  # (public)


def test_a_route_of_any_model_without_a_policy_takes_what_the_hosts_answers_take() -> None:
    """From an expert review: a rule of any model without a policy of its own, beside one asking for
    a JWT. A multipart request meets the checks on the rule of any model, then the router phase may
    route it to the JWT's rule: its token is verified there, for the policy it may reach."""
    _, built = _built(BASE + policy(ROUTE_A, jwt()) + any_model_route("c", "name: x"))
    vhost = _vhost(built)
    [loose] = {_requirement(r) for r in vhost.routes if r.name.endswith("/find-model")}
    assert loose and {_requirement(r) for r in _routes_of(vhost, "c")} == {loose}
    assert all(_verified_by(r) is None for r in _routes_of(vhost, "c"))  # (c itself asks nothing)


def test_a_host_whose_rules_differ_in_keys_alone_asks_jwt_authn_for_nothing_more() -> None:
    """From an expert review: with jwt_authn on the listener for another reason (an OAuth MCPRoute),
    a host whose rules differ in keys alone had an empty requirement, which Envoy refuses."""
    from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route
    from tests.unit.test_mcp_security_compile import OAUTH

    text = BASE + mcp_route(spec_extra=OAUTH) + MCP_BACKENDS + KEYS + policy(ROUTE_A, API_KEYS)
    _, built = _built(text)
    requirements = _jwt_config(_manager(built)).requirement_map
    assert set(requirements) == {"default/tools"}  # (the MCPRoute's own)


def test_the_keys_an_mcp_route_of_its_own_policy_reads_are_left_on_its_requests() -> None:
    """Envoy applies a host's header removals on every route of it (a route cannot take them back):
    the headers and query parameters an MCPRoute's own apiKeyAuth reads are left to its MCP proxy."""
    from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route

    own = """
  securityPolicy:
    apiKeyAuth:
      credentialRefs: [{name: client-keys}]
      extractFrom: [{headers: [x-api-key]}, {params: [api_key]}]"""
    gateway_keys = API_KEYS.replace("[{headers: [authorization]}]", "[{headers: [x-api-key]}, {params: [api_key]}]")
    text = gateway() + mcp_route(spec_extra=own) + MCP_BACKENDS + KEYS + policy(GATEWAY_TARGET, gateway_keys)
    _, built = _built(text + jwt_only_route())
    assert _removed(_vhost(built), CREDENTIALS_REMOVED_FILTER) == (("authorization",), ())


def jwt_only_route() -> str:
    """A route and a policy of a JWT on it (read from Authorization)."""
    return route("a", {"model-a": "x"}) + backend("x", 1) + policy(ROUTE_A, jwt(), "a-jwt")


AUTHORIZATION = """
authorization:
  defaultAction: Deny
  rules:
    - name: banned
      action: Deny
      principal: {jwt: {provider: idp, claims: [{name: org.team, values: [red, blue]}]}}
    - name: readers
      action: Allow
      operation: {methods: [GET, POST]}
      principal:
        jwt: {provider: idp, scopes: [models.read], claims: [{name: groups, valueType: StringArray, values: [ml]}]}
        clientCIDRs: [10.1.2.3/8]
        headers: [{name: X-Team, values: [ml]}]
"""


def _rbac(entry, name: str) -> rbac_filter_pb2.RBACPerRoute | None:
    if name not in entry.typed_per_filter_config:
        return None
    config = rbac_filter_pb2.RBACPerRoute()
    entry.typed_per_filter_config[name].Unpack(config)
    return config


def test_authorization_rules_are_envoys_rbac_matchers_the_first_that_matches_deciding() -> None:
    """Envoy Gateway's authorization as RBAC's unified matcher, in the rules' order: a rule's
    conditions all met (a claim's values, a scope in `scope` or `scp`, the client's address in a
    range, a header's values, the method: one of each list), its action; none, the default. The
    filter sits after the token check and before the router phase; tokens' scopes become lists."""
    _, built = _built(BASE + policy(GATEWAY_TARGET, jwt() + AUTHORIZATION))
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    assert names.index(JWT_FILTER_NAME) < names.index(AUTHORIZATION_FILTER) < names.index(contract.EXT_PROC_FILTER_NAME)
    assert AUTHORIZATION_ROUTED_FILTER not in names  # (every rule takes the Gateway's policy)
    [provider] = _jwt_config(manager).providers.values()
    assert list(provider.normalize_payload_in_metadata.space_delimited_claims) == ["scope", "scp"]
    vhost = _vhost(built)
    config = _rbac(vhost, AUTHORIZATION_FILTER)
    assert config is not None
    matcher = config.rbac.matcher
    assert [m.on_match.action.name for m in matcher.matcher_list.matchers] == [
        "aigw-authorization/banned",
        "aigw-authorization/readers",
    ]
    assert matcher.on_no_match.action.name == "aigw-authorization/default"
    actions = []
    for on_match in (*(m.on_match for m in matcher.matcher_list.matchers), matcher.on_no_match):
        action = rbac_config_pb2.Action()
        on_match.action.typed_config.Unpack(action)
        actions.append(action.action)
    assert actions == [rbac_config_pb2.RBAC.DENY, rbac_config_pb2.RBAC.ALLOW, rbac_config_pb2.RBAC.DENY]
    banned, readers = (m.predicate for m in matcher.matcher_list.matchers)
    # The banned rule: one claim, either value (a nested claim's path under the provider's payload).
    values = []
    for each in banned.or_matcher.predicate:
        claim = network_inputs_pb2.DynamicMetadataInput()
        each.single_predicate.input.typed_config.Unpack(claim)
        assert claim.filter == JWT_FILTER_NAME
        assert [s.key for s in claim.path] == ["policy:default/auth/idp", "org", "team"]
        value = metadata_input_pb2.Metadata()
        each.single_predicate.custom_match.typed_config.Unpack(value)
        values.append(value.value.string_match.exact)
    assert values == ["red", "blue"]
    # The readers rule: the method, the address, the claim, the scope and the header, all.
    methods, address, groups, scope, header = readers.and_matcher.predicate
    assert [p.single_predicate.value_match.exact for p in methods.or_matcher.predicate] == ["GET", "POST"]
    ip = ip_pb2.Ip()
    address.single_predicate.custom_match.typed_config.Unpack(ip)
    assert [(r.address_prefix, r.prefix_len.value) for r in ip.cidr_ranges] == [("10.0.0.0", 8)]
    listed = metadata_input_pb2.Metadata()
    groups.single_predicate.custom_match.typed_config.Unpack(listed)
    assert listed.value.list_match.one_of.string_match.exact == "ml"
    keys = []
    for each in scope.or_matcher.predicate:
        claim = network_inputs_pb2.DynamicMetadataInput()
        each.single_predicate.input.typed_config.Unpack(claim)
        keys.append(claim.path[-1].key)
    assert keys == ["scope", "scp"]
    team = http_inputs_pb2.HttpRequestHeaderMatchInput()
    header.single_predicate.input.typed_config.Unpack(team)
    assert (team.header_name, header.single_predicate.value_match.exact) == ("x-team", "ml")


def test_a_routes_own_authorization_decides_before_the_router_phase_or_after_it_where_it_routes_again() -> None:
    """Route a's policy has rules, the Gateway's none. Route a's requests that Envoy serves alone
    (or the translator on one stream, where it rewrites the request) are decided before the router
    phase, and after it; those it translates per attempt, which a request the router phase routes
    again may reach (a form's, on x-ai-eg-model), after it. The host's answers decide nothing (the rule the
    request reaches does), nor does route b."""
    text = (
        BASE + api_key("x") + policy(GATEWAY_TARGET, jwt(), "whole") + policy(ROUTE_A, jwt() + AUTHORIZATION, "rules")
    )
    result = compile_resources(resources(text))
    assert result.errors == [], result.errors
    # (Envoy may hold the backend's key: the routes it serves alone exist)
    built = build_fleet(result.gateways["default/gw"], BuildSettings(envoy_credentials=True))
    manager = _manager(built)
    names = [f.name for f in manager.http_filters]
    assert names.index(contract.EXT_PROC_FILTER_NAME) < names.index(AUTHORIZATION_ROUTED_FILTER)
    vhost = _vhost(built)
    assert _rbac(vhost, AUTHORIZATION_FILTER) is None
    by_name = {r.name.removeprefix("default/a/rule/0/match/0"): r for r in _routes_of(vhost, "a")}
    assert set(by_name) == {"/native", "/native-not-streaming", "", "/header"}
    for suffix in ("/native", "/native-not-streaming", ""):  # (NATIVE; ROUTE: one stream)
        settled = _rbac(by_name[suffix], AUTHORIZATION_FILTER)
        assert settled is not None and settled.rbac.matcher.matcher_list.matchers
        # (and after it, for a request routed there from another rule's route: a review found one
        # whose JSON model Envoy read and whose form model the translator found put in another scope)
        assert _rbac(by_name[suffix], AUTHORIZATION_ROUTED_FILTER) == settled
    routed = by_name["/header"]
    assert not _rbac(routed, AUTHORIZATION_FILTER).HasField("rbac")  # (off)
    assert _rbac(routed, AUTHORIZATION_ROUTED_FILTER).rbac.matcher.matcher_list.matchers
    answers = [r for r in vhost.routes if r.name.endswith(("no-model", "/find-model", "/check-model"))]
    assert answers and all(_rbac(r, AUTHORIZATION_ROUTED_FILTER) is None for r in answers)
    for entry in _routes_of(vhost, "b"):  # (off, or not said)
        assert not any(
            (config := _rbac(entry, name)) is not None and config.HasField("rbac")
            for name in (AUTHORIZATION_FILTER, AUTHORIZATION_ROUTED_FILTER)
        )


@pytest.mark.parametrize(
    ("rule", "field", "says"),
    [
        ("{action: Allow, cel: 'request.method == \"GET\"'}", "rules[0].cel", "cel is not supported yet"),
        (
            "{action: Allow, operation: {path: {value: /v1}}, principal: {clientCIDRs: [10.0.0.0/8]}}",
            "rules[0].operation.path",
            "operation.path is not supported yet",
        ),
        (
            "{action: Allow, principal: {clientIPGeoLocations: [{country: FR}]}}",
            "rules[0].principal.clientIPGeoLocations",
            "not supported yet",
        ),
        ("{action: Allow, principal: {clientCIDRs: [10.0.0.300/8]}}", "clientCIDRs[0]", "not an IP address range"),
        ("{action: Allow, principal: {jwt: {provider: other, scopes: [a]}}}", "jwt.provider", "not a provider"),
        (
            "{action: Allow, principal: {headers: [{name: Authorization, values: [x]}]}}",
            "headers[0].name",
            "takes off, sets or routes by",
        ),
        (
            "{action: Allow, principal: {headers: [{name: x-ai-eg-model, values: [x]}]}}",
            "headers[0].name",
            "takes off, sets or routes by",
        ),
    ],
)
def test_an_authorization_rule_aigw_xds_cannot_enforce_is_an_error_and_the_gateway_closed(
    rule: str, field: str, says: str
) -> None:
    text = BASE + policy(GATEWAY_TARGET, jwt() + f"authorization:\n  rules: [{rule}]\n")
    result = compile_resources(resources(text))
    [error] = [e for e in result.errors if e.resource == ResourceKey("SecurityPolicy", "default", "auth")]
    assert error.field.startswith("spec.authorization.") and error.field.endswith(field), error.field
    assert says in error.message and "served closed" in error.message


def _htpasswd(lines: str) -> str:
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: staff, namespace: default}}
stringData: {{.htpasswd: {json.dumps(lines)}}}
"""


SHA_OF_SECRET = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="  # (htpasswd -s: "secret")


def test_basic_auth_users_go_to_the_translator_and_never_to_envoy() -> None:
    """basicAuth is checked as apiKeyAuth is (Envoy's ext_authz asks the translator, which holds
    the users' password digests), reading Authorization."""
    text = BASE + _htpasswd(f"# staff\nalice:{SHA_OF_SECRET}\n\nbob:{SHA_OF_SECRET}\n")
    text += policy(GATEWAY_TARGET, "basicAuth: {users: {name: staff}, forwardUsernameHeader: x-user}")
    result, built = _built(text)
    names = [f.name for f in _manager(built).http_filters]
    assert CLIENT_KEYS_FILTER in names and JWT_FILTER_NAME not in names
    digest = hashlib.sha1(b"secret").digest()
    for by_name in built.by_type.values():  # (every type: listeners, routes, clusters, secrets...)
        for resource in by_name.values():
            packed = bytes(resource.data) if isinstance(resource, Serialized) else resource.SerializeToString()
            assert digest not in packed and b"5en6G6Mez" not in packed
    [keys] = result.gateways["default/gw"].translator.client_key_policies
    assert keys.policy == "default/auth" and not keys.keys.keys
    assert [u.name for u in keys.keys.basic_users] == ["alice", "bob"]
    assert keys.keys.basic_users[0].password_sha1 == hashlib.sha1(b"secret").digest()
    assert keys.keys.client_id_header == "x-user"


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ("alice:$apr1$xyz$abc", "line 1 (user alice): only SHA passwords"),
        ("alice:{SHA}not-base64!", "line 1 (user alice): not a SHA-1 digest"),
        (f"alice:{SHA_OF_SECRET}\nalice:{SHA_OF_SECRET}", "line 2: user alice is there twice"),
        ("# nobody\n", "holds no user"),
        ("just-a-name", "line 1 is not a user"),
    ],
)
def test_an_htpasswd_aigw_xds_cannot_read_is_an_error_naming_its_line_not_its_content(lines: str, words: str) -> None:
    text = BASE + _htpasswd(lines) + policy(GATEWAY_TARGET, "basicAuth: {users: {name: staff}}")
    result = compile_resources(resources(text))
    [error] = [e for e in result.errors if e.resource == ResourceKey("SecurityPolicy", "default", "auth")]
    assert error.field == "spec.basicAuth.users" and words in error.message, error.message
    assert "$apr1$" not in error.message and SHA_OF_SECRET not in error.message
    assert "default/gw" in result.failed


def test_basic_auth_beside_api_key_auth_is_an_error() -> None:
    keys = "apiKeyAuth: {credentialRefs: [{name: staff}], extractFrom: [{headers: [x-api-key]}]}"
    body = f"{keys}\nbasicAuth: {{users: {{name: staff}}}}"
    result = compile_resources(resources(BASE + _htpasswd(f"a:{SHA_OF_SECRET}") + policy(GATEWAY_TARGET, body)))
    _refused(result, "spec.basicAuth", "basicAuth beside apiKeyAuth is not supported")

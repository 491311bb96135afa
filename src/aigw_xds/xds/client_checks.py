"""SecurityPolicies (ir.ClientChecks) as Envoy checks them, pure: jwt_authn's providers and
requirements; ext_authz asking the translator whether a request carries a client key of an
apiKeyAuth (the translator holds the keys: aigw_translator/key_check.py); CORS policies; and the
removal of a client's own values of the headers a JWT's claims and a key's client id are written to.

Where a policy applies (compile/security_policies.py): a host's own (its Gateway listener's, or its
Gateway's) is its virtual host's per-filter configuration, so every route of the host has it, the
answers to requests no rule took included; a route's policy is on its rules' routes in place of the
host's (Envoy Gateway merges nothing): the checks the host's policy asks for and the route's does
not are off there. Every filter here is on for every request (Envoy chooses the filters a request
meets on the route its headers alone pick, before the body's model is read) and reads its
per-route configuration once the route is the rule's.

Envoy picks a rule on the body's model, which it reads before the checks (json_to_metadata), so
they run on the rule's own route. A request whose model Envoy could not read (a multipart form)
meets them on one of the host's answers the router phase looks at (no-model, find-model,
check-model), or on a rule of any model, from which it routes the request again once it has found
the model. Where the host's rules ask for different checks (HostChecks.again), those routes take
anything, having the token verified for each policy of the host whose providers take it and the key
looked up for each apiKeyAuth; after the router phase an RBAC filter (VERIFIED_FILTER) on every
rule's routes lets a request by only when jwt_authn verified its token for a provider of the rule's
policy (the payload it leaves in the request's metadata), and the translator its key for the policy
(the metadata its answer leaves). (A second jwt_authn could not read the token again: the router
phase puts the provider's credential in Authorization.) Tokens and keys stay on the request through
the checks, then are taken off (CREDENTIALS_REMOVED_FILTER). Browsers' preflights, which jwt_authn
lets by, go to a route of their own (build's preflight route), never a rule's.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from envoy.extensions.matching.input_matchers.ip.v3 import ip_pb2
from envoy.extensions.matching.input_matchers.metadata.v3 import metadata_pb2 as metadata_input_pb2
from envoy.type.matcher.v3 import http_inputs_pb2, metadata_pb2, regex_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2
from google.protobuf import any_pb2, empty_pb2, wrappers_pb2
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2 as xds_matcher_pb2
from xds.type.matcher.v3 import string_pb2 as xds_string_pb2

import aigw_contract as contract

from ..compile import ir
from .messages import duration, packed

JWT_FILTER_NAME = "envoy.filters.http.jwt_authn"
# After the router phase: a request it routed again had its token (and key) verified for the rule's policy.
VERIFIED_FILTER = "aigw.client_verified"
# Asks the translator whether a request carries a client key of an apiKeyAuth.
CLIENT_KEYS_FILTER = "aigw.client_keys"
# Where ext_authz leaves the metadata of the service's answer (the policy and the key's client).
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
CORS_FILTER_NAME = "envoy.filters.http.cors"
# Removes a client's own values of the headers a JWT's claims (or a key's client id) are written to,
# before the checks: a token without the claim would leave the client's value (a user id that a rate
# limit counts by). Those of every policy of the host, on every route of it.
CLAIM_HEADERS_FILTER = "aigw.jwt_claim_headers"
# After the checks: the headers (and query parameters) the host's policies read tokens and keys
# from, taken off (the checks keep them for one another: a token read by two policies' providers).
CREDENTIALS_REMOVED_FILTER = "aigw.client_credentials_removed"
# The metadata key (in EXT_AUTHZ_NAMESPACE) of a policy whose key the translator found.
KEY_METADATA_PREFIX = contract.CLIENT_KEY_METADATA_PREFIX
# The clusters Envoy fetches signing keys from: this, then the URI's scheme, host and port.
JWKS_CLUSTER_PREFIX = "aigw-jwks/"
# What jwt_authn's replies say in their details (then the reason, spaces as underscores, in braces).
JWT_DENIED = "jwt_authn_access_denied"
# A SecurityPolicy's authorization rules (Envoy's RBAC), before the router phase: on the routes Envoy
# picked on the body's model (those the translator serves on one stream, or Envoy alone), and on
# every route of a host whose rules all take its policy.
AUTHORIZATION_FILTER = "aigw.client_authorization"
# ... and after it, where the host's rules ask for other checks than it does: on the routes a
# request the router phase routes again may reach (those it translates per attempt, where it changes
# none of the client's headers, and again on the routes above).
AUTHORIZATION_ROUTED_FILTER = "aigw.client_authorization_routed"
# The names of the authorization's actions (what RBAC's refusal names in its details: "<prefix><rule>").
AUTHORIZATION_ACTION_PREFIX = "aigw-authorization/"

_JWT_OFF = packed(jwt_pb2.PerRouteConfig(disabled=True))
_RBAC_OFF = packed(rbac_filter_pb2.RBACPerRoute())
_KEYS_OFF = packed(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))
# A CORS policy that answers nothing: a route whose policy has no CORS, under a host's that has.
_CORS_OFF = packed(
    cors_pb2.CorsPolicy(
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(numerator=0))
    )
)


def jwks_cluster_name(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return f"{JWKS_CLUSTER_PREFIX}{parts.scheme}/{parts.hostname}:{uri_port(parts)}"


def uri_port(parts: urllib.parse.SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def set_signing_keys(
    provider: jwt_pb2.JwtProvider, jwks_uri: str | None, cache_s: float | None, local_jwks: str | None
) -> None:
    """Where `provider` takes its issuer's keys: fetched from `jwks_uri` (as the listener starts,
    not by the first client, which would wait; again before the cache expires), or given."""
    if jwks_uri is None:
        provider.local_jwks.inline_string = local_jwks or ""
        return
    remote = jwt_pb2.RemoteJwks(
        http_uri=http_uri_pb2.HttpUri(uri=jwks_uri, cluster=jwks_cluster_name(jwks_uri), timeout=duration(5)),
        async_fetch=jwt_pb2.JwksAsyncFetch(fast_listener=True),
        retry_policy=base_pb2.RetryPolicy(num_retries=wrappers_pb2.UInt32Value(value=3)),
    )
    if cache_s is not None:
        remote.cache_duration.CopyFrom(duration(cache_s))
    provider.remote_jwks.CopyFrom(remote)


def jwks_uris(checks: Iterable[ir.ClientChecks]) -> set[str]:
    return {p.jwks_uri for c in checks for p in c.jwt if p.jwks_uri is not None}


def hosts_checks(vhosts: Iterable[ir.VirtualHost]) -> tuple[ir.ClientChecks, ...]:
    """Every policy of these hosts, each once, in order."""
    return hosts_checks_of(vhost.client_checks for vhost in vhosts if vhost.client_checks is not None)


def hosts_checks_of(hosts: Iterable[ir.HostChecks]) -> tuple[ir.ClientChecks, ...]:
    return tuple({c.name: c for host in hosts for c in host.every_checks}.values())


def add_providers(config: jwt_pb2.JwtAuthentication, vhosts: Iterable[ir.VirtualHost]) -> None:
    """The hosts' policies' providers and requirements (one per policy), and for each host whose
    rules ask for other checks than it does, its answers' requirement."""
    for vhost in vhosts:
        host = vhost.client_checks
        if host is None:
            continue
        for checks in host.every_checks:
            for p in checks.jwt:
                config.providers[_provider_name(checks, p.name)].CopyFrom(_provider(checks, p))
            if checks.jwt:
                config.requirement_map[_requirement_name(checks)].CopyFrom(_requirement(checks))
        if host.again and any(c.jwt for c in host.every_checks):
            config.requirement_map[_any_rule_name(host)].CopyFrom(_any_rule(host))


# Names in jwt_authn's maps, apart from the MCPRoutes' (named "<ns>/<name>").
def _requirement_name(checks: ir.ClientChecks) -> str:
    return f"policy:{checks.name}"


def _provider_name(checks: ir.ClientChecks, provider: str) -> str:
    """A policy's provider (by its name) in jwt_authn's map: the metadata key of the payload of a
    token it verified too (payload_in_metadata)."""
    return f"policy:{checks.name}/{provider}"


def _any_rule_name(host: ir.HostChecks) -> str:
    return f"host:{host.host}/any-rule"


def _provider(checks: ir.ClientChecks, p: ir.JwtProvider) -> jwt_pb2.JwtProvider:
    name = _provider_name(checks, p.name)
    provider = jwt_pb2.JwtProvider(
        issuer=p.issuer,
        audiences=p.audiences,
        # Kept for the other policies' providers (CREDENTIALS_REMOVED_FILTER takes it off after them).
        forward=True,
        # (Envoy Gateway's default reads the access_token query parameter too, which would reach the
        # provider in the path: only headers here.)
        from_headers=[jwt_pb2.JwtHeader(name=header, value_prefix=prefix) for header, prefix in p.headers]
        or [jwt_pb2.JwtHeader(name="Authorization", value_prefix="Bearer ")],
        claim_to_headers=[jwt_pb2.JwtClaimToHeader(header_name=h, claim_name=c) for h, c in p.claim_to_headers],
        clear_route_cache=p.recompute_route,
        # What VERIFIED_FILTER reads: the provider verified the request's token.
        payload_in_metadata=name,
        # Verified tokens are kept (their signatures not checked again on every request).
        jwt_cache_config=jwt_pb2.JwtCacheConfig(jwt_cache_size=1000),
        # Scopes as lists, which authorization rules' scopes are matched in (RFC 6749's and Azure's names).
        normalize_payload_in_metadata=jwt_pb2.JwtProvider.NormalizePayload(space_delimited_claims=["scope", "scp"]),
    )
    set_signing_keys(provider, p.jwks_uri, p.jwks_cache_s, p.local_jwks)
    return provider


def _requirement(checks: ir.ClientChecks) -> jwt_pb2.JwtRequirement:
    """A token of any of the policy's providers (or none, `optional`; or a bad one, `fail_open`)."""
    options = _by_providers(checks)
    if checks.fail_open:
        options.append(jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty()))
    elif checks.optional:
        options.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    if len(options) == 1:
        return options[0]
    return jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=options))


def _by_providers(checks: ir.ClientChecks) -> list[jwt_pb2.JwtRequirement]:
    """A token verified by each of the policy's providers, each a requirement."""
    return [jwt_pb2.JwtRequirement(provider_name=_provider_name(checks, p.name)) for p in checks.jwt]


def _any_rule(host: ir.HostChecks) -> jwt_pb2.JwtRequirement:
    """What the answers the router phase routes again from (and rules of any model) take: anything,
    with the token verified for each policy of the host whose providers take it (the payload
    VERIFIED_FILTER reads on the route the request reaches). Each policy apart: one provider's
    success ends an "any" list, and two policies may take the same tokens. (A client of an open
    route sends what it likes as Authorization: the OpenAI SDK its key.)"""
    policies = {c.name: c for c in host.every_checks if c.jwt}.values()
    anything = jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty())
    each = [
        jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=[*_by_providers(c), anything]))
        for c in policies
    ]
    if len(each) == 1:  # (Envoy takes a list of two or more)
        return each[0]
    return jwt_pb2.JwtRequirement(requires_all=jwt_pb2.JwtRequirementAndList(requirements=each))


def jwt_filter(config: jwt_pb2.JwtAuthentication) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=JWT_FILTER_NAME, typed_config=packed(config))


def client_keys_filter(translator: grpc_service_pb2.GrpcService) -> hcm_pb2.HttpFilter:
    """ext_authz to the translator's Authorization service: on for every request (off on hosts and
    routes that ask for no key: host_config, _checks_config); the translator not answering, a 503."""
    config = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.V3,
        grpc_service=translator,
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
    )
    return hcm_pb2.HttpFilter(name=CLIENT_KEYS_FILTER, typed_config=packed(config))


def _keys_check(policies: Iterable[str], optional: bool = False) -> any_pb2.Any:
    """A key of any of `policies` asked for (`optional`: or none)."""
    extensions = {contract.CLIENT_KEY_POLICIES: ",".join(policies)}
    if optional:
        extensions[contract.CLIENT_KEY_OPTIONAL] = "1"
    return packed(
        ext_authz_pb2.ExtAuthzPerRoute(check_settings=ext_authz_pb2.CheckSettings(context_extensions=extensions))
    )


def verified_filter() -> hcm_pb2.HttpFilter:
    """Lets every request by unless its route asks for a provider's verification (rule_config)."""
    return hcm_pb2.HttpFilter(name=VERIFIED_FILTER, typed_config=packed(rbac_filter_pb2.RBAC()))


def authorization_filter(name: str) -> hcm_pb2.HttpFilter:
    """AUTHORIZATION_FILTER or AUTHORIZATION_ROUTED_FILTER: lets every request by unless its route
    (or host) has authorization rules."""
    return hcm_pb2.HttpFilter(name=name, typed_config=packed(rbac_filter_pb2.RBAC()))


def cors_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=CORS_FILTER_NAME, typed_config=packed(cors_pb2.Cors()))


# A header_mutation that removes nothing by itself: what its host's configuration says (every level's
# mutations apply in Envoy, a route's cannot take a host's back).
_HOST_MUTATIONS = packed(header_mutation_pb2.HeaderMutation())


def claim_headers_filter() -> hcm_pb2.HttpFilter:
    """Removes what a host says (host_config)."""
    return hcm_pb2.HttpFilter(name=CLAIM_HEADERS_FILTER, typed_config=_HOST_MUTATIONS)


def credentials_removed_filter() -> hcm_pb2.HttpFilter:
    """Removes what a host says (host_config)."""
    return hcm_pb2.HttpFilter(name=CREDENTIALS_REMOVED_FILTER, typed_config=_HOST_MUTATIONS)


@dataclass(frozen=True, slots=True)
class ListenerNeeds:
    """What a listener's hosts' SecurityPolicies ask of its filters."""

    cors: bool = False
    claims: bool = False  # CLAIM_HEADERS_FILTER
    jwt: bool = False
    keys: bool = False  # CLIENT_KEYS_FILTER
    credentials: bool = False  # CREDENTIALS_REMOVED_FILTER
    again: bool = False  # VERIFIED_FILTER
    authorization: bool = False  # AUTHORIZATION_FILTER
    authorization_routed: bool = False  # AUTHORIZATION_ROUTED_FILTER

    @classmethod
    def of(cls, vhosts: Iterable[ir.VirtualHost]) -> ListenerNeeds:
        hosts = [vhost.client_checks for vhost in vhosts if vhost.client_checks is not None]
        every = hosts_checks_of(hosts)
        return cls(
            cors=any(c.cors is not None for c in every),
            claims=any(c.claim_headers for c in every),
            jwt=any(c.jwt for c in every),
            keys=any(c.api_keys for c in every),
            credentials=any(c.reads_credentials for c in every),
            authorization=any(c.authorization is not None for c in every),
            authorization_routed=any(_authorized_again(host) for host in hosts),
            again=any(host.again for host in hosts),
        )


def host_config(
    host: ir.HostChecks | None, keys_filter: bool, kept: tuple[tuple[str, str], ...] = ()
) -> dict[str, any_pb2.Any]:
    """The host's own policy, for every route of it (a route's own per-filter configuration replaces
    it); and on every route of it, whichever policy applies, the claim headers of every policy of
    the host removed before the checks, and the credentials they read after them, but those `kept`
    (("header" or "query_param", name): what MCPRoutes of their own securityPolicy read their keys
    from, which their MCP proxy checks; the translator, and the routes Envoy serves alone, take a
    client's Authorization, x-api-key and api-key off the AI routes' requests anyway). `keys_filter`:
    the listener asks the translator for keys (off here unless the host asks)."""
    out = _checks_config(host.checks, None) if host is not None and host.checks is not None else {}
    if keys_filter and CLIENT_KEYS_FILTER not in out:
        out[CLIENT_KEYS_FILTER] = _KEYS_OFF
    every = host.every_checks if host is not None else ()
    claims = tuple(dict.fromkeys(h for c in every for h in c.claim_headers))
    if claims:
        out[CLAIM_HEADERS_FILTER] = _removed(claims)
    left = {name.lower() for kind, name in kept if kind == "header"}
    headers = tuple(dict.fromkeys(h for c in every for h in c.credential_headers if h not in left))
    left_params = {name for kind, name in kept if kind == "query_param"}
    every_param = (name for c in every for kind, name in c.key_sources if kind == "query_param")
    params = tuple(dict.fromkeys(name for name in every_param if name not in left_params))
    if headers or params:
        out[CREDENTIALS_REMOVED_FILTER] = _removed(headers, params)
    return out


def own_policy_config(host: ir.HostChecks | None) -> dict[str, any_pb2.Any]:
    """A route with a securityPolicy of its own (an MCPRoute's, which its MCP proxy checks), or one
    every client may read (an MCPRoute's protected resource metadata): none of the host's checks
    (the credentials its own policy reads are left on: host_config's `kept`)."""
    if host is None:
        return {}
    out: dict[str, any_pb2.Any] = {}
    every = host.every_checks
    if any(c.jwt for c in every):
        out[JWT_FILTER_NAME] = _JWT_OFF
    if any(c.api_keys for c in every):
        out[CLIENT_KEYS_FILTER] = _KEYS_OFF
    if any(c.authorization for c in every):
        out[AUTHORIZATION_FILTER] = _RBAC_OFF
    return out


def preflights(host: ir.HostChecks | None) -> bool:
    """Whether the host answers browsers' preflights on a route of their own: it has a CORS policy
    to answer them with, or a JWT check they pass (they must not reach a rule)."""
    return host is not None and any(c.cors is not None or c.jwt for c in host.every_checks)


def rule_config(host: ir.HostChecks | None, route: str, any_model: bool = False) -> dict[str, any_pb2.Any]:
    """The per-filter configuration of a rule's routes of `route` (an AIGatewayRoute "<ns>/<name>"):
    its policy's, when it has one, in place of the host's; and where the host's rules ask for other
    checks than it does, VERIFIED_FILTER's: a token verified for the rule's policy (its own, or the
    host's), unless that policy takes a request without one. `any_model`: a rule that matches no
    model, whose routes take requests whose model Envoy could not read too (the router phase may
    route them to another rule): jwt_authn takes there what the host's answers take
    (routing_again_config), VERIFIED_FILTER deciding."""
    if host is None:
        return {}
    own = next((c for r, c in host.route_checks if r == route), None)
    out = _checks_config(own, host.checks) if own is not None else {}
    checks = own or host.checks
    if host.again:
        if any_model:
            out |= routing_again_config(host)
        verified = _verified_by(checks) if checks is not None else None
        if verified is not None:
            out[VERIFIED_FILTER] = verified
    return out


def _verified_by(checks: ir.ClientChecks) -> any_pb2.Any | None:
    """VERIFIED_FILTER's configuration: the request's token verified by one of the policy's
    providers (unless it takes a request without one), and its key by the translator for the
    policy; None: it asks neither."""
    needed = []
    if checks.jwt and not (checks.optional or checks.fail_open):
        by_any = [_present(JWT_FILTER_NAME, _provider_name(checks, p.name)) for p in checks.jwt]
        needed.append(rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=by_any)))
    if checks.api_keys:
        needed.append(_present(EXT_AUTHZ_NAMESPACE, KEY_METADATA_PREFIX + checks.name))
    if not needed:
        return None
    policy = rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)],
        principals=[rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=needed))],
    )
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={checks.name: policy})
    return packed(rbac_filter_pb2.RBACPerRoute(rbac=rbac_filter_pb2.RBAC(rules=rules)))


def _present(namespace: str, key: str) -> rbac_pb2.Principal:
    """The request's metadata of `namespace` has `key`."""
    return rbac_pb2.Principal(
        sourced_metadata=rbac_pb2.SourcedMetadata(
            metadata_matcher=metadata_pb2.MetadataMatcher(
                filter=namespace,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)],
                value=value_pb2.ValueMatcher(present_match=True),
            )
        )
    )


def routing_again_config(host: ir.HostChecks | None) -> dict[str, any_pb2.Any]:
    """The configuration of the answers from which the router phase routes again (no-model,
    find-model, check-model), where the host's rules ask for other checks than it does: a token
    verified for each policy that takes it (_any_rule), a key of any (or none, where a rule asks for
    none)."""
    if host is None or not host.again:
        return {}
    out: dict[str, any_pb2.Any] = {}
    every = (host.checks or ir.ClientChecks(""), *(c for _, c in host.route_checks))
    if any(c.jwt for c in every):
        out[JWT_FILTER_NAME] = packed(jwt_pb2.PerRouteConfig(requirement_name=_any_rule_name(host)))
    keyed = [c.name for c in every if c.api_keys]
    if keyed:
        out[CLIENT_KEYS_FILTER] = _keys_check(keyed, optional=not all(c.api_keys for c in every))
    if host.checks is not None and host.checks.authorization is not None:
        # Decided on the rule's route once routed (authorization_configs); the answers the router
        # phase gives itself (a 404, a form's 400) are not authorized (the model list has a route of
        # its own, under the host's policy).
        out[AUTHORIZATION_FILTER] = _RBAC_OFF
    return out


def authorization_configs(
    host: ir.HostChecks | None, route: str
) -> tuple[dict[str, any_pb2.Any], dict[str, any_pb2.Any]]:
    """The authorization filters' configuration of a rule's routes of `route`, where the host's
    rules ask for other checks than it does: (settled, routed): of its routes Envoy picked on the
    body's model (Envoy serves them alone, or the translator on one stream, where it rewrites the
    request: checked before it, AUTHORIZATION_FILTER, and again after it, for a request the router
    phase routed there from another rule's route: the model it found may put the request in
    another route scope), and of the others (translated per attempt, which a request the router
    phase routes again may reach: checked after it, AUTHORIZATION_ROUTED_FILTER, on the client's
    headers as they came). Elsewhere (the host's own policy everywhere) the host's and
    rule_config's configuration does it all."""
    if host is None or not _authorized_again(host):
        return {}, {}
    own = next((c for r, c in host.route_checks if r == route), None)
    checks = own or host.checks
    rules = _authorization_config(checks) if checks is not None and checks.authorization is not None else _RBAC_OFF
    return {AUTHORIZATION_FILTER: rules, AUTHORIZATION_ROUTED_FILTER: rules}, {
        AUTHORIZATION_FILTER: _RBAC_OFF,
        AUTHORIZATION_ROUTED_FILTER: rules,
    }


def _authorized_again(host: ir.HostChecks) -> bool:
    """Whether a host's policies have authorization rules and its rules ask for other checks than
    it does: then a rule's routes decide by their own rules, after the router phase too."""
    return host.again and any(c.authorization for c in host.every_checks)


def _checks_config(checks: ir.ClientChecks, under: ir.ClientChecks | None) -> dict[str, any_pb2.Any]:
    """`checks` as per-filter configuration, turning off what `under` (the host's policy) turns on."""
    out: dict[str, any_pb2.Any] = {}
    if checks.jwt:
        out[JWT_FILTER_NAME] = packed(jwt_pb2.PerRouteConfig(requirement_name=_requirement_name(checks)))
    elif under is not None and under.jwt:
        out[JWT_FILTER_NAME] = _JWT_OFF
    if checks.cors is not None:
        out[CORS_FILTER_NAME] = _cors_policy(checks.cors)
    elif under is not None and under.cors is not None:
        out[CORS_FILTER_NAME] = _CORS_OFF
    if checks.api_keys:
        out[CLIENT_KEYS_FILTER] = _keys_check([checks.name])
    elif under is not None and under.api_keys:
        out[CLIENT_KEYS_FILTER] = _KEYS_OFF
    if checks.authorization is not None:
        out[AUTHORIZATION_FILTER] = _authorization_config(checks)
    elif under is not None and under.authorization is not None:
        out[AUTHORIZATION_FILTER] = _RBAC_OFF
    return out


# Envoy's unified matcher, which RBAC's authorization rules are written in: the first rule that
# matches decides (Envoy Gateway's order), with actions of RBAC.
_Matcher = xds_matcher_pb2.Matcher
_Predicate = _Matcher.MatcherList.Predicate
_PredicateT = Any  # (a _Predicate: the xds protos carry no type information)


def _authorization_config(checks: ir.ClientChecks) -> any_pb2.Any:
    """The policy's authorization rules as RBAC's per-route configuration: each rule a field
    matcher (its conditions all met) whose action allows or denies, in order; none matching, the
    default action. An action's name says which rule decided (RBAC's refusal names it)."""
    authorization = checks.authorization
    assert authorization is not None
    matcher = _Matcher(on_no_match=_action("default", authorization.default_allow))
    if authorization.rules:
        matcher.matcher_list.CopyFrom(
            _Matcher.MatcherList(
                matchers=[
                    _Matcher.MatcherList.FieldMatcher(
                        predicate=_every(_conditions(checks, rule)), on_match=_action(rule.name, rule.allow)
                    )
                    for rule in authorization.rules
                ]
            )
        )
    return packed(rbac_filter_pb2.RBACPerRoute(rbac=rbac_filter_pb2.RBAC(matcher=matcher)))


def _action(name: str, allow: bool) -> Any:
    named = AUTHORIZATION_ACTION_PREFIX + name
    action = rbac_pb2.Action(name=named, action=rbac_pb2.RBAC.ALLOW if allow else rbac_pb2.RBAC.DENY)
    return _Matcher.OnMatch(action=xds_extension_pb2.TypedExtensionConfig(name=named, typed_config=packed(action)))


def _conditions(checks: ir.ClientChecks, rule: ir.AuthorizationRule) -> list[_PredicateT]:
    """What a rule asks, each a predicate: all must hold (of the values each lists, one)."""
    out = []
    if rule.methods:
        out.append(_any_of([_header_is(":method", method) for method in rule.methods]))
    if rule.cidrs:
        out.append(_source_in(rule.cidrs))
    payload = _provider_name(checks, rule.jwt_provider)  # (where jwt_authn leaves the token's payload)
    for name, listed, values in rule.claims:
        path = [payload, *name.split(".")]
        out.append(_any_of([_claim_is(path, value, listed) for value in values]))
    for scope in rule.scopes:
        out.append(_any_of([_claim_is([payload, key], scope, True) for key in ("scope", "scp")]))
    for header, values in rule.headers:
        out.append(_any_of([_header_is(header, value) for value in values]))
    return out


def _every(predicates: list[_PredicateT]) -> _PredicateT:
    if len(predicates) == 1:
        return predicates[0]
    return _Predicate(and_matcher=_Predicate.PredicateList(predicate=predicates))


def _any_of(predicates: list[_PredicateT]) -> _PredicateT:
    if len(predicates) == 1:
        return predicates[0]
    return _Predicate(or_matcher=_Predicate.PredicateList(predicate=predicates))


def _input(name: str, message: Any) -> xds_extension_pb2.TypedExtensionConfig:
    return xds_extension_pb2.TypedExtensionConfig(name=name, typed_config=packed(message))


def _header_is(name: str, value: str) -> _PredicateT:
    return _Predicate(
        single_predicate=_Predicate.SinglePredicate(
            input=_input(name, http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=name)),
            value_match=xds_string_pb2.StringMatcher(exact=value),
        )
    )


def _source_in(cidrs: tuple[str, ...]) -> _PredicateT:
    """The client's address (as the listener's ClientTrafficPolicy detects it) in one of `cidrs`."""
    ranges = []
    for cidr in cidrs:
        address, _, length = cidr.partition("/")
        ranges.append(
            address_pb2.CidrRange(address_prefix=address, prefix_len=wrappers_pb2.UInt32Value(value=int(length)))
        )
    return _Predicate(
        single_predicate=_Predicate.SinglePredicate(
            input=_input("source_ip", network_inputs_pb2.SourceIPInput()),
            custom_match=_input("client_cidrs", ip_pb2.Ip(cidr_ranges=ranges, stat_prefix="aigw_authorization")),
        )
    )


def _claim_is(path: list[str], value: str, listed: bool) -> _PredicateT:
    """The verified token's claim at `path` (its payload's metadata key, then the claim's) is
    `value`, or (`listed`) a list that holds it."""
    exact = value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=value))
    matcher = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=exact)) if listed else exact
    segments = [network_inputs_pb2.DynamicMetadataInput.PathSegment(key=key) for key in path]
    return _Predicate(
        single_predicate=_Predicate.SinglePredicate(
            input=_input("claim", network_inputs_pb2.DynamicMetadataInput(filter=JWT_FILTER_NAME, path=segments)),
            custom_match=_input("claim_value", metadata_input_pb2.Metadata(value=matcher)),
        )
    )


def _removed(headers: tuple[str, ...], params: tuple[str, ...] = ()) -> any_pb2.Any:
    """A header_mutation's per-route configuration removing `headers` and query parameters `params`."""
    mutations = header_mutation_pb2.Mutations(
        request_mutations=[mutation_rules_pb2.HeaderMutation(remove=name) for name in headers],
        query_parameter_mutations=[base_pb2.KeyValueMutation(remove=name) for name in params],
    )
    return packed(header_mutation_pb2.HeaderMutationPerRoute(mutations=mutations))


def _cors_policy(cors: ir.Cors) -> any_pb2.Any:
    """Envoy Gateway's CORS: origins "*" (any) or with "*" standing for any part of a host; "*" in
    a list of methods or headers, any. A preflight from an origin it does not allow is answered by
    Envoy (without CORS headers), never passed on."""
    policy = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin_matcher(origin) for origin in cors.allow_origins],
        allow_methods=_listed(cors.allow_methods),
        allow_headers=_listed(cors.allow_headers),
        expose_headers=_listed(cors.expose_headers),
        allow_credentials=wrappers_pb2.BoolValue(value=cors.allow_credentials),
        forward_not_matching_preflights=wrappers_pb2.BoolValue(value=False),
    )
    if cors.max_age_s is not None:
        policy.max_age = str(cors.max_age_s)
    return packed(policy)


def _listed(values: tuple[str, ...]) -> str:
    return "*" if "*" in values else ", ".join(values)


def _origin_matcher(origin: str) -> string_pb2.StringMatcher:
    if origin == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    if "*" not in origin:
        return string_pb2.StringMatcher(exact=origin)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=re.escape(origin).replace(r"\*", ".*")))

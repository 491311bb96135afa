"""SecurityPolicies (ir.ClientChecks) as Envoy checks them, pure: jwt_authn's providers and
requirements, CORS policies, and the removal of a client's own values of the headers a JWT's claims
are written to.

Where a policy applies (compile/security_policies.py): a host's own (its Gateway listener's, or its
Gateway's) is its virtual host's per-filter configuration, so every route of the host has it, the
answers to requests no rule took included; a route's policy is on its rules' routes in place of the
host's (Envoy Gateway merges nothing): the checks the host's policy asks for and the route's does
not are off there.

Envoy picks a rule on the body's model, which it reads before the checks (json_to_metadata), so
they run on the rule's own route. A request whose model Envoy could not read (a multipart form)
meets them on the host's find-model route, from which the router phase routes it again once it has
found the model: that route takes a token any of the host's policies would take (or none, where one
of them asks for none), and a second jwt_authn after the router phase (ROUTED_AGAIN_JWT_FILTER)
checks the token again on the routes such requests go to (the rules' x-ai-eg-model routes), as
each rule's policy asks.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, http_uri_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, empty_pb2, wrappers_pb2

from ..compile import ir
from .messages import duration, packed

JWT_FILTER_NAME = "envoy.filters.http.jwt_authn"
# The second jwt_authn, after the router phase.
ROUTED_AGAIN_JWT_FILTER = "aigw.jwt_authn.routed_again"
CORS_FILTER_NAME = "envoy.filters.http.cors"
# Removes a client's own values of the headers a JWT's claims are written to, before jwt_authn: a
# token without the claim would leave the client's value (a user id that a rate limit counts by).
CLAIM_HEADERS_FILTER = "aigw.jwt_claim_headers"
# The clusters Envoy fetches signing keys from: this, then the URI's scheme, host and port.
JWKS_CLUSTER_PREFIX = "aigw-jwks/"
# What jwt_authn's replies say in their details (then the reason, spaces as underscores, in braces).
JWT_DENIED = "jwt_authn_access_denied"

_JWT_OFF = packed(jwt_pb2.PerRouteConfig(disabled=True))
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
    every = (c for vhost in vhosts if vhost.client_checks is not None for c in vhost.client_checks.every_checks)
    return tuple({c.name: c for c in every}.values())


def add_providers(config: jwt_pb2.JwtAuthentication, vhosts: Iterable[ir.VirtualHost]) -> None:
    """The hosts' policies' providers and requirements (one per policy, named after it), and for
    each host whose rules ask for another JWT than it does, its find-model route's requirement."""
    for vhost in vhosts:
        host = vhost.client_checks
        if host is None:
            continue
        for checks in host.every_checks:
            for p in checks.jwt:
                config.providers[p.name].CopyFrom(_provider(p))
            if checks.jwt:
                config.requirement_map[checks.name].CopyFrom(_requirement(checks))
        if host.again:
            config.requirement_map[_any_rule_name(host)].CopyFrom(_any_rule(host))


def _any_rule_name(host: ir.HostChecks) -> str:
    return f"{host.host}/any-rule"


def _provider(p: ir.JwtProvider) -> jwt_pb2.JwtProvider:
    provider = jwt_pb2.JwtProvider(
        issuer=p.issuer,
        audiences=p.audiences,
        # The token goes no further than Envoy: a provider is not sent a client's credentials.
        forward=False,
        from_headers=[jwt_pb2.JwtHeader(name=name, value_prefix=prefix) for name, prefix in p.headers],
        from_params=p.params,
        from_cookies=p.cookies,
        claim_to_headers=[jwt_pb2.JwtClaimToHeader(header_name=h, claim_name=c) for h, c in p.claim_to_headers],
        clear_route_cache=p.recompute_route,
        # Verified tokens are kept (their signatures not checked again on every request).
        jwt_cache_config=jwt_pb2.JwtCacheConfig(jwt_cache_size=1000),
    )
    set_signing_keys(provider, p.jwks_uri, p.jwks_cache_s, p.local_jwks)
    return provider


def _requirement(checks: ir.ClientChecks) -> jwt_pb2.JwtRequirement:
    """A token of any of the policy's providers (or none, `optional`; or a bad one, `fail_open`)."""
    options = [jwt_pb2.JwtRequirement(provider_name=p.name) for p in checks.jwt]
    if checks.fail_open:
        options.append(jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty()))
    elif checks.optional:
        options.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    if len(options) == 1:
        return options[0]
    return jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=options))


def _any_rule(host: ir.HostChecks) -> jwt_pb2.JwtRequirement:
    """What the find-model route takes: a token any policy of the host takes; none where a policy
    (or the lack of one) takes none; a bad one where a policy fails open."""
    every = (host.checks or ir.ClientChecks(""), *(c for _, c in host.route_checks))
    names = dict.fromkeys(p.name for c in every for p in c.jwt)
    options = [jwt_pb2.JwtRequirement(provider_name=name) for name in names]
    if any(c.fail_open for c in every):
        options.append(jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty()))
    elif any(c.optional or not c.jwt for c in every):
        options.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    return jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=options))


def checks_again(vhosts: Iterable[ir.VirtualHost]) -> bool:
    """Whether a listener of these hosts needs the second jwt_authn."""
    return any(vhost.client_checks is not None and vhost.client_checks.again for vhost in vhosts)


def jwt_filter(config: jwt_pb2.JwtAuthentication, name: str = JWT_FILTER_NAME) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=name, typed_config=packed(config))


def cors_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=CORS_FILTER_NAME, typed_config=packed(cors_pb2.Cors()))


def claim_headers_filter() -> hcm_pb2.HttpFilter:
    """Off unless a host or route turns it on (_claim_headers_removed)."""
    return hcm_pb2.HttpFilter(
        name=CLAIM_HEADERS_FILTER, typed_config=packed(header_mutation_pb2.HeaderMutation()), disabled=True
    )


def any_cors(vhosts: Iterable[ir.VirtualHost]) -> bool:
    return any(c.cors is not None for c in hosts_checks(vhosts))


def any_claim_headers(vhosts: Iterable[ir.VirtualHost]) -> bool:
    return any(c.claim_headers for c in hosts_checks(vhosts))


def host_config(host: ir.HostChecks | None) -> dict[str, any_pb2.Any]:
    """The host's own policy, for every route of it (a route's own per-filter configuration replaces it)."""
    return _checks_config(host.checks, None) if host is not None and host.checks is not None else {}


def rule_config(host: ir.HostChecks | None, route: str, again: bool = False) -> dict[str, any_pb2.Any]:
    """The per-filter configuration of a rule's routes of `route` (an AIGatewayRoute "<ns>/<name>"):
    its policy's, when it has one, in place of the host's. `again`: one of its x-ai-eg-model routes,
    where the second jwt_authn asks for the rule's policy's JWT, if the host needs that."""
    if host is None:
        return {}
    own = next((c for r, c in host.route_checks if r == route), None)
    out = _checks_config(own, host.checks) if own is not None else {}
    checks = host.of_route(route)
    if again and host.again and checks is not None and checks.jwt:
        out[ROUTED_AGAIN_JWT_FILTER] = packed(jwt_pb2.PerRouteConfig(requirement_name=checks.name))
    return out


def find_model_config(host: ir.HostChecks | None) -> dict[str, any_pb2.Any]:
    """The find-model route's, where the host's rules ask for another JWT than it does: a token any
    rule's policy takes, and every policy's claim headers removed."""
    if host is None or not host.again:
        return {}
    out = {JWT_FILTER_NAME: packed(jwt_pb2.PerRouteConfig(requirement_name=_any_rule_name(host)))}
    claims = tuple(dict.fromkeys(h for c in host.every_checks for h in c.claim_headers))
    if claims:
        out[CLAIM_HEADERS_FILTER] = _claim_headers_removed(claims)
    return out


def public_config(host: ir.HostChecks | None) -> dict[str, any_pb2.Any]:
    """A route every client may read (an MCPRoute's protected resource metadata): no JWT asked."""
    return {JWT_FILTER_NAME: _JWT_OFF} if host is not None and host.checks is not None and host.checks.jwt else {}


def _checks_config(checks: ir.ClientChecks, under: ir.ClientChecks | None) -> dict[str, any_pb2.Any]:
    """`checks` as per-filter configuration, turning off what `under` (the host's policy) turns on."""
    out: dict[str, any_pb2.Any] = {}
    if checks.jwt:
        out[JWT_FILTER_NAME] = packed(jwt_pb2.PerRouteConfig(requirement_name=checks.name))
    elif under is not None and under.jwt:
        out[JWT_FILTER_NAME] = _JWT_OFF
    if checks.cors is not None:
        out[CORS_FILTER_NAME] = _cors_policy(checks.cors)
    elif under is not None and under.cors is not None:
        out[CORS_FILTER_NAME] = _CORS_OFF
    if checks.claim_headers:
        out[CLAIM_HEADERS_FILTER] = _claim_headers_removed(checks.claim_headers)
    elif under is not None and under.claim_headers:
        out[CLAIM_HEADERS_FILTER] = _claim_headers_removed(())
    return out


def _claim_headers_removed(headers: tuple[str, ...]) -> any_pb2.Any:
    removed = [mutation_rules_pb2.HeaderMutation(remove=name) for name in headers]
    mutations = header_mutation_pb2.Mutations(request_mutations=removed)
    return packed(header_mutation_pb2.HeaderMutationPerRoute(mutations=mutations))


def _cors_policy(cors: ir.Cors) -> any_pb2.Any:
    """Envoy Gateway's CORS: origins "*" (any), exact, or with a "*." host (any subdomain)."""
    policy = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin_matcher(origin) for origin in cors.allow_origins],
        allow_methods=", ".join(cors.allow_methods),
        allow_headers=", ".join(cors.allow_headers),
        expose_headers=", ".join(cors.expose_headers),
        allow_credentials=wrappers_pb2.BoolValue(value=cors.allow_credentials),
    )
    if cors.max_age_s is not None:
        policy.max_age = str(cors.max_age_s)
    return packed(policy)


def _origin_matcher(origin: str) -> string_pb2.StringMatcher:
    if origin == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    if "*" not in origin:
        return string_pb2.StringMatcher(exact=origin)
    # A wildcard host ("https://*.example.com", or a scheme's every host): any name there.
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=re.escape(origin).replace(r"\*", "[^/:]+")))

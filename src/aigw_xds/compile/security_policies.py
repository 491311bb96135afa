"""Envoy Gateway's SecurityPolicy: who may use a Gateway or a route -> ir.ClientChecks, which
Envoy checks (xds/client_checks.py): a JWT (jwt_authn), a client key (apiKeyAuth: ext_authz asks the
translator, which holds the keys: GatewayChecks.client_keys; basicAuth's users alike), CORS, and
authorization rules (RBAC).

A policy applies to a Gateway (or one of its listeners, or the Gateway by its labels), or to routes
that name the Gateway in their parentRefs (an AIGatewayRoute, by its kind or as the HTTPRoute Envoy
AI Gateway makes of it, or by its labels). As in Envoy Gateway, the most specific policy applies,
whole (a route's over its listener's over its Gateway's: nothing is merged), and of two at one
level the oldest. A policy naming anything else (another controller's HTTPRoute) is not about what
aigw-xds serves.

What aigw-xds does not enforce yet (oidc, extAuth, csrf, mergeType; basicAuth beside apiKeyAuth;
an authorization rule's cel, operation.path or clientIPGeoLocations, or a header the gateway takes
off, sets or routes by; a policy on one rule of a route; a SecurityPolicy on an MCPRoute, whose own
securityPolicy is the way), a token or key read where it would reach the provider (a query
parameter, a cookie), a field Envoy Gateway does not have, or a policy that does not compile (its
keys, its users) is an error. What it
names is then served closed, in both modes, never at a last good configuration open to every
client (compile/excluding.py): without the routes it names, and every request refused when it
names the Gateway."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..api import kinds
from ..api.base import GATEWAY_API_GROUP
from ..keys import ResourceKey
from ..resources import Loaded, ResourceView
from . import ir
from .attachment import ROUTE_KINDS
from .client_traffic import policies_meant_for
from .context import CompileContext
from .mcp_security import client_keys, https_or_loopback, signing_keys
from .references import AIGW_GROUP
from .security import PLACEHOLDER_SECRET, referenced_secret, secret_key_value
from .traffic import oldest_first, outranked

# Envoy AI Gateway's name of the HTTPRoute it makes of an MCPRoute: this prefix, then its name (an
# AIGatewayRoute's HTTPRoute has the route's own name).
MCP_HTTPROUTE_PREFIX = "ai-eg-mcp-main-"
# Envoy Gateway's SecurityPolicy fields aigw-xds does not enforce yet.
NOT_ENFORCED = ("oidc", "extAuth", "csrf", "mergeType")
# The Secret key of basicAuth's users, in htpasswd's format (Envoy Gateway's).
HTPASSWD_KEY = ".htpasswd"
# Headers an authorization rule may not name: the gateway takes them off (a client's credentials,
# once checked), sets them (its own), or reads them to route (x-ai-eg-model, which the router phase
# sets to the body's model).
_UNREADABLE_HEADER_PREFIXES = (contract.OVERRIDE_HEADER_PREFIX, "x-envoy-", *contract.PROVIDER_SCOPED_PREFIXES)
_UNREADABLE_HEADERS = frozenset(
    {
        *contract.CLIENT_AUTH_HEADERS,
        *contract.PROVIDER_SCOPED_HEADERS,
        "proxy-authorization",
        contract.MODEL_HEADER,
        contract.ORIGINAL_PATH_HEADER,
    }
)


@dataclass
class GatewayChecks:
    """The SecurityPolicies that apply to a Gateway's requests: by Gateway listener name (None: the
    whole Gateway's), and by route ("<ns>/<name>", as ir.Rule.route)."""

    listeners: dict[str | None, ir.ClientChecks] = field(default_factory=dict)
    routes: dict[str, ir.ClientChecks] = field(default_factory=dict)
    # The client keys of the policies with apiKeyAuth, for the translator (never in Envoy's config).
    client_keys: list[config_pb2.PolicyClientKeys] = field(default_factory=list)

    def of_listener(self, name: str | None) -> ir.ClientChecks | None:
        return self.listeners.get(name) or self.listeners.get(None)


def gateway_checks(ctx: CompileContext, gateway: Loaded[Any]) -> GatewayChecks:
    """The checks of the SecurityPolicies naming `gateway`, or routes of it; an error (and
    Accepted False) on each that cannot be enforced."""
    gw: kinds.Gateway = gateway.resource
    listener_names = {listener.name for listener in gw.spec.listeners}
    policies_meant_for(ctx, gateway, "SecurityPolicy")
    by_target: dict[tuple[str, str | None], list[Loaded[Any]]] = {}
    for policy in ctx.resources.of_kind("SecurityPolicy"):
        spec: kinds.SecurityPolicySpec = policy.resource.spec
        named: list[tuple[str, str, tuple[str, str | None]]] = []  # (path, what, target)
        if policy.key.namespace == gateway.key.namespace:  # (a policy names a Gateway of its namespace)
            for path, ref in spec.targets:
                if what := _gateway_part(gateway, ref):
                    named.append((path, what, ("listener", ref.sectionName)))
            named += [(path, f"Gateway {gateway.key.ref}", ("listener", None)) for path in _selecting(spec, gw)]
        for path, key in targeted_routes(policy, ctx.resources):
            route = ctx.lookup(key.kind, key.namespace, key.name)
            parents = route.resource.spec.parentRefs if route is not None else []
            if any(
                (p.name, p.namespace or key.namespace) == (gateway.key.name, gateway.key.namespace) for p in parents
            ):
                named.append((path, f"{key} of Gateway {gateway.key.ref}", (key.kind, key.ref)))
        if not named:
            continue
        ctx.use(policy)
        problem = _not_enforced(policy, named)
        if problem is not None:
            path, detail = problem
            what = ", ".join(dict.fromkeys(what for _, what, _ in named))
            message = f"{detail}: {what} is served closed while this policy names it, not open to every client"
            ctx.error(message, policy, path)
            ctx.status.set(policy.key, "Accepted", False, "Invalid", message)
            continue
        missing = [(path, t) for path, _, t in named if t[0] == "listener" and t[1] not in (None, *listener_names)]
        for path, (_, section) in missing:
            message = f"Gateway {gateway.key.ref} has no listener {section}"
            ctx.error(message, policy, f"{path}.sectionName")
            ctx.status.set(policy.key, "Accepted", False, "Invalid", f"{path}.sectionName: {message}")
        if missing:
            continue
        for _, _, target in named:
            by_target.setdefault(target, []).append(policy)
    out = GatewayChecks()
    compiled: dict[ResourceKey, ir.ClientChecks | None] = {}
    for (kind, name), candidates in by_target.items():
        first, *others = oldest_first(candidates)
        where = f"{kind} {name}" if kind != "listener" else f"Gateway {gateway.key.ref}"
        if kind == "listener" and name is not None:
            where = f"listener {name} of {where}"
        for other in others:
            message = outranked("SecurityPolicy", first, where)
            ctx.warn(message, other, "spec")
            ctx.status.set(other.key, "Accepted", False, "Conflicted", message)
        if first.key not in compiled:
            compiled[first.key] = _compiled(ctx, first, out.client_keys)
        checks = compiled[first.key]
        if checks is None:
            continue
        if kind == "listener":
            out.listeners[name] = checks
        else:
            if checks.cors is not None:
                ctx.warn(
                    "a route's cors answers no preflight: a preflight carries no body, so no model to pick the "
                    "route by, and is answered by the policy of the Gateway (or its listener), which this one "
                    "takes the place of for the route's requests (put cors on the Gateway)",
                    first,
                    "spec.cors",
                )
            out.routes[name] = checks  # type: ignore[index]  # (a route's ref)
    _say_overridden(ctx, gateway, by_target)
    return out


def _say_overridden(
    ctx: CompileContext, gateway: Loaded[Any], by_target: dict[tuple[str, str | None], list[Loaded[Any]]]
) -> None:
    """On the Gateway's policy (and its listeners'), an Overridden condition naming what more
    specific policies take from it, as Envoy Gateway's: its listeners of their own (the Gateway's)
    and its routes of their own."""
    chosen = {target: oldest_first(candidates)[0] for target, candidates in by_target.items()}
    listeners = sorted(name for (kind, name) in chosen if kind == "listener" and name is not None)
    routes = sorted((kind, name) for (kind, name) in chosen if kind != "listener" and name is not None)
    for (kind, name), policy in chosen.items():
        if kind != "listener":
            continue
        below = [f"listener {n}" for n in listeners] if name is None else []
        below += [f"{k} {r}" for k, r in routes if name is None or {name, None} & _sections(ctx, gateway, k, r)]
        if below:
            message = f"other SecurityPolicies apply to {', '.join(below)} of Gateway {gateway.key.ref} instead"
            ctx.status.set(policy.key, "Overridden", True, "Overridden", message)


def _sections(ctx: CompileContext, gateway: Loaded[Any], kind: str, ref: str) -> set[str | None]:
    """The listeners of `gateway` a route ("<ns>/<name>") names in its parentRefs (None: all of them)."""
    namespace, _, name = ref.partition("/")
    route = ctx.lookup(kind, namespace, name)
    parents = route.resource.spec.parentRefs if route is not None else []
    return {
        p.sectionName
        for p in parents
        if (p.name, p.namespace or namespace) == (gateway.key.name, gateway.key.namespace)
    }


def _not_enforced(policy: Loaded[Any], named: list[tuple[str, str, tuple[str, str | None]]]) -> tuple[str, str] | None:
    """(field path, why) of what makes a policy one aigw-xds cannot enforce (None: it can)."""
    extra = policy.resource.spec.model_extra or {}
    unknown = [name for name in extra if name not in NOT_ENFORCED]
    if unknown:
        return f"spec.{unknown[0]}", f"{unknown[0]} is not a field of Envoy Gateway's SecurityPolicy"
    later = [name for name in NOT_ENFORCED if name in extra]
    if later:
        return (
            f"spec.{later[0]}",
            f"SecurityPolicy {', '.join(later)} is not supported yet "
            "(jwt, apiKeyAuth, basicAuth, cors and authorization are)",
        )
    if policy.resource.spec.apiKeyAuth is not None and policy.resource.spec.basicAuth is not None:
        return "spec.basicAuth", "basicAuth beside apiKeyAuth is not supported (both read the client's Authorization)"
    for path, _, (kind, _) in named:
        if kind == "MCPRoute":
            return path, "a SecurityPolicy on an MCPRoute is not supported: give the MCPRoute a securityPolicy"
    spec: kinds.SecurityPolicySpec = policy.resource.spec
    for path, ref in spec.targets:
        if ref.kind != "Gateway" and ref.sectionName:
            return f"{path}.sectionName", "a SecurityPolicy on one rule of a route is not supported yet (a route's is)"
    for index, source in enumerate(spec.apiKeyAuth.extractFrom if spec.apiKeyAuth is not None else ()):
        if source.cookies:
            where = f"spec.apiKeyAuth.extractFrom[{index}].cookies"
            return where, "a key in a cookie is not supported (it would reach the provider)"
    for index, provider in enumerate(spec.jwt.providers if spec.jwt is not None else ()):
        extract = provider.extractFrom
        if extract is not None and (extract.params or extract.cookies):
            where = f"spec.jwt.providers[{index}].extractFrom.{'params' if extract.params else 'cookies'}"
            return where, "a token in a query parameter or a cookie is not supported (it would reach the provider)"
    return None


def _compiled(
    ctx: CompileContext, policy: Loaded[Any], keys_out: list[config_pb2.PolicyClientKeys]
) -> ir.ClientChecks | None:
    """The policy's checks (its client keys added to `keys_out`); None when its signing keys or
    client keys are not good (an error said)."""
    spec: kinds.SecurityPolicySpec = policy.resource.spec
    api_keys = None
    if spec.apiKeyAuth is not None:
        api_keys = client_keys(ctx, policy, spec.apiKeyAuth, "spec.apiKeyAuth")
        if api_keys is None:
            return None
    elif spec.basicAuth is not None:  # (the translator checks its users as it checks keys)
        api_keys = _basic_users(ctx, policy, spec.basicAuth)
        if api_keys is None:
            return None
    providers: list[ir.JwtProvider] = []
    if spec.jwt is not None:
        for index, provider in enumerate(spec.jwt.providers):
            at = f"spec.jwt.providers[{index}]"
            keys = signing_keys(ctx, policy, provider.remoteJWKS, provider.localJWKS, at)
            if keys is None:
                return None
            jwks_uri, cache_s, local_jwks = keys
            if jwks_uri is not None and not https_or_loopback(jwks_uri):
                ctx.warn(
                    f"the signing keys are fetched in clear text ({jwks_uri}): whoever is on the way can give Envoy "
                    "keys of their own (use an https URI)",
                    policy,
                    f"{at}.remoteJWKS.uri",
                )
            extract = provider.extractFrom or kinds.JWTExtractor()
            providers.append(
                ir.JwtProvider(
                    name=provider.name,
                    issuer=provider.issuer,
                    audiences=tuple(provider.audiences),
                    jwks_uri=jwks_uri,
                    jwks_cache_s=cache_s,
                    local_jwks=local_jwks,
                    claim_to_headers=tuple((c.header, c.claim) for c in provider.claimToHeaders),
                    recompute_route=bool(provider.recomputeRoute),
                    headers=tuple((h.name, h.valuePrefix or "") for h in extract.headers),
                )
            )
    cors = None
    if spec.cors is not None:
        c = spec.cors
        cors = ir.Cors(
            allow_origins=tuple(c.allowOrigins),
            allow_methods=tuple(c.allowMethods),
            allow_headers=tuple(c.allowHeaders),
            expose_headers=tuple(c.exposeHeaders),
            max_age_s=int(kinds.parse_duration(c.maxAge)) if c.maxAge else None,
            allow_credentials=bool(c.allowCredentials),
        )
    authorization = None
    if spec.authorization is not None:
        authorization = _authorization(ctx, policy, spec.authorization, {p.name for p in providers})
        if authorization is None:
            return None
    jwt = spec.jwt
    if api_keys is not None:
        keys_out.append(config_pb2.PolicyClientKeys(policy=policy.key.ref, keys=api_keys))
    ctx.status.set(policy.key, "Accepted", True, "Accepted")
    return ir.ClientChecks(
        name=policy.key.ref,
        jwt=tuple(providers),
        optional=bool(jwt and jwt.optional),
        fail_open=bool(jwt and jwt.failOpen),
        cors=cors,
        api_keys=api_keys is not None,
        client_id_header=api_keys.client_id_header if api_keys is not None else "",
        key_sources=tuple(
            (kind, getattr(source, kind))
            for source in (api_keys.sources if api_keys is not None else ())
            if (kind := source.WhichOneof("source")) is not None
        ),
        authorization=authorization,
    )


def _basic_users(ctx: CompileContext, policy: Loaded[Any], auth: kinds.BasicAuth) -> config_pb2.MCPClientKeys | None:
    """basicAuth's users, read from its Secret's htpasswd lines ("name:{SHA}<base64 of the password's
    SHA-1>", the one format Envoy Gateway takes), for the translator, which checks a request's
    Authorization ("Basic ...") against them; None (an error said, naming the line, never its
    content) when one cannot be read."""
    at = "spec.basicAuth.users"
    secret = referenced_secret(ctx, policy, auth.users, at)
    if secret is None:
        return None
    text = secret_key_value(ctx, policy, secret, HTPASSWD_KEY, at)
    if text is None:
        return None
    users: dict[str, bytes] = {}
    lines = text.splitlines()
    if text == PLACEHOLDER_SECRET:  # (validate and translate without the Secret's content)
        users["placeholder"] = hashlib.sha1(text.encode(), usedforsecurity=False).digest()
        lines = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, hashed = line.partition(":")
        where = f"Secret {secret.key.ref} key {HTPASSWD_KEY!r} line {number}"
        problem = None
        if not colon or not name:
            problem = f"{where} is not a user (name:password hash)"
        elif not hashed.startswith("{SHA}"):
            problem = f"{where} (user {name}): only SHA passwords ({{SHA}}..., htpasswd -s) are supported"
        elif len(digest := _sha1(hashed.removeprefix("{SHA}"))) != 20:
            problem = f"{where} (user {name}): not a SHA-1 digest in base64"
        elif name in users:
            problem = f"{where}: user {name} is there twice"
        if problem is not None:
            ctx.error(problem, policy, at)
            return None
        users[name] = digest
    if not users:
        ctx.error(f"Secret {secret.key.ref} key {HTPASSWD_KEY!r} holds no user: no client could sign in", policy, at)
        return None
    return config_pb2.MCPClientKeys(
        basic_users=[config_pb2.MCPBasicUser(name=name, password_sha1=digest) for name, digest in users.items()],
        sources=[config_pb2.MCPKeySource(header="authorization")],
        client_id_header=auth.forwardUsernameHeader or "",
    )


def _sha1(encoded: str) -> bytes:
    """The digest base64 `encoded` holds (empty when it is not base64)."""
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return b""


def _authorization(
    ctx: CompileContext, policy: Loaded[Any], spec: kinds.Authorization, providers: set[str]
) -> ir.Authorization | None:
    """The policy's authorization; None (an error said, Accepted False) when a rule asks for what
    aigw-xds does not enforce yet or cannot read."""
    rules = []
    for index, rule in enumerate(spec.rules):
        at = f"spec.authorization.rules[{index}]"
        problem = _rule_problem(rule, providers)
        if problem is not None:
            path, detail = problem
            message = f"{detail}: the policy's targets are served closed while it names them, not open to every client"
            ctx.error(message, policy, f"{at}.{path}")
            ctx.status.set(policy.key, "Accepted", False, "Invalid", f"{at}.{path}: {message}")
            return None
        principal = rule.principal or kinds.Principal.model_construct()
        token = principal.jwt
        rules.append(
            ir.AuthorizationRule(
                name=rule.name or f"rule-{index}",
                allow=rule.action == "Allow",
                methods=tuple(rule.operation.methods) if rule.operation is not None else (),
                cidrs=tuple(str(ipaddress.ip_network(c, strict=False)) for c in principal.clientCIDRs or ()),
                jwt_provider=token.provider if token is not None else "",
                claims=tuple(
                    (c.name, c.valueType == "StringArray", tuple(c.values)) for c in (token.claims if token else ())
                ),
                scopes=tuple(token.scopes) if token is not None else (),
                headers=tuple((h.name.lower(), tuple(h.values)) for h in principal.headers or ()),
            )
        )
    return ir.Authorization(rules=tuple(rules), default_allow=spec.defaultAction == "Allow")


def _rule_problem(rule: kinds.AuthorizationRule, providers: set[str]) -> tuple[str, str] | None:
    """(field path below the rule, why) of what keeps an authorization rule from being enforced."""
    if rule.cel is not None:
        return "cel", "an authorization rule's cel is not supported yet (principal and operation.methods are)"
    if rule.operation is not None and rule.operation.path is not None:
        return "operation.path", "an authorization rule's operation.path is not supported yet (its methods are)"
    principal = rule.principal
    if principal is None:
        return None
    if principal.clientIPGeoLocations is not None:
        return "principal.clientIPGeoLocations", "clientIPGeoLocations is not supported yet"
    for index, cidr in enumerate(principal.clientCIDRs):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return f"principal.clientCIDRs[{index}]", f"{cidr!r} is not an IP address range"
    if principal.jwt is not None and principal.jwt.provider not in providers:
        known = ", ".join(sorted(providers)) or "none"
        return (
            "principal.jwt.provider",
            f"{principal.jwt.provider!r} is not a provider of this policy's jwt (it has {known}): a claim is read "
            "from a token that policy's own provider verified",
        )
    for index, header in enumerate(principal.headers):
        name = header.name.lower()
        if name in _UNREADABLE_HEADERS or name.startswith(_UNREADABLE_HEADER_PREFIXES):
            return (
                f"principal.headers[{index}].name",
                f"{header.name} is a header the gateway takes off, sets or routes by: authorize on a header of the "
                "client's own, or a JWT's claims",
            )
    return None


def targeted_routes(policy: Loaded[Any], resources: ResourceView) -> list[tuple[str, ResourceKey]]:
    """(field path, route) of each AIGatewayRoute and MCPRoute a SecurityPolicy names, in its own
    namespace, by targetRefs (the route's kind, or the HTTPRoute Envoy AI Gateway makes of it) or by
    targetSelectors (their labels, which Envoy AI Gateway copies to the HTTPRoutes it makes); named
    ones whether they are there or not."""
    namespace, spec = policy.key.namespace, policy.resource.spec
    out: list[tuple[str, ResourceKey]] = []
    for path, ref in spec.targets:
        for kind, name in _routes_named(ref.group, ref.kind, ref.name):
            out.append((path, ResourceKey(kind, namespace, name)))
    for index, selector in enumerate(spec.targetSelectors):
        for kind, _ in _routes_named(selector.group, selector.kind, ""):
            out += [
                (f"spec.targetSelectors[{index}]", route.key)
                for route in resources.of_kind(kind)
                if route.key.namespace == namespace and selector.selects(route.resource.metadata.labels)
            ]
    return out


def _routes_named(group: str, kind: str, name: str) -> list[tuple[str, str]]:
    """The (kind, name) of our routes a target of `group` and `kind` named `name` may be."""
    group = group or (AIGW_GROUP if kind in ROUTE_KINDS else GATEWAY_API_GROUP)  # (left out in a file)
    if (group, kind) == (GATEWAY_API_GROUP, "HTTPRoute"):
        mcp = [("MCPRoute", name.removeprefix(MCP_HTTPROUTE_PREFIX))] if name.startswith(MCP_HTTPROUTE_PREFIX) else []
        return [("AIGatewayRoute", name), *mcp] if name else [("AIGatewayRoute", ""), ("MCPRoute", "")]
    return [(kind, name)] if group == AIGW_GROUP and kind in ROUTE_KINDS else []


def names_gateway(policy: Loaded[Any], gateway: Loaded[Any]) -> bool:
    """Whether a SecurityPolicy names the Gateway itself (or a listener of it), by a targetRef or
    by its labels: all of the Gateway's routes are its."""
    spec: kinds.SecurityPolicySpec = policy.resource.spec
    if policy.key.namespace != gateway.key.namespace:
        return False
    return any(_gateway_part(gateway, ref) for _, ref in spec.targets) or bool(_selecting(spec, gateway.resource))


def _selecting(spec: kinds.SecurityPolicySpec, gw: kinds.Gateway) -> list[str]:
    """The paths of the targetSelectors that take the Gateway by its labels."""
    return [
        f"spec.targetSelectors[{index}]"
        for index, selector in enumerate(spec.targetSelectors)
        if (selector.group, selector.kind) == (GATEWAY_API_GROUP, "Gateway") and selector.selects(gw.metadata.labels)
    ]


def _gateway_part(gateway: Loaded[Any], ref: kinds.PolicyTargetReference) -> str:
    """What of `gateway` (of the policy's namespace) a target names ("" for nothing of it)."""
    if (ref.group or GATEWAY_API_GROUP, ref.kind, ref.name) != (GATEWAY_API_GROUP, "Gateway", gateway.key.name):
        return ""
    listener = f"listener {ref.sectionName} of " if ref.sectionName else ""
    return f"{listener}Gateway {gateway.key.ref}"

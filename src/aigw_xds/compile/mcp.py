"""MCPRoute -> what a Gateway serves of it: the virtual-host route that sends its clients to the
translator's MCP proxy (ir.McpRoute, by the listeners it attaches to) and the translator's
MCPRoute entry (its backends: where each MCP server is, its TLS, tool selector, API key and the
client headers passed to it).

An MCPRoute names MCP servers (Streamable HTTP) as Backends or Services of its own namespace, as
Envoy AI Gateway allows. A reference that does not resolve, a Secret that is not there or a TLS
policy in error is an error: its Gateway keeps its last good configuration. Its securityPolicy
(OAuth, API keys, an external authorization service, authorization rules) and its backendSelector
are mcp_security's. A route whose security needs what is not known yet (an issuer's keys) is not
served, with a warning: serving it without it would open what it closes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import Endpoint, resolve_path

from ..api import kinds
from ..keys import ResourceKey
from ..resources import Loaded
from . import ir
from .attachment import Reach
from .backends import CORE_GROUP, endpoint, upstream_tls
from .context import CompileContext
from .mcp_security import NotServed, RouteSecurity, backend_selector, route_security
from .references import EG_GROUP
from .security import secret_value

# What an API key travels in when the route names neither a header nor a query parameter; a key in
# this header gets the "Bearer " prefix (Envoy AI Gateway's rule), in any other it is sent as is.
API_KEY_HEADER = "Authorization"


@dataclass(frozen=True)
class CompiledMcpRoute:
    """An MCPRoute attached to the Gateway: its route, the Gateway listeners it attaches to, its
    hostnames (empty: every host of those listeners) and its translator entry."""

    route: ir.McpRoute
    listeners: frozenset[str]
    hostnames: tuple[str, ...]
    translator: config_pb2.MCPRoute


Attach = Callable[[CompileContext, Loaded[Any], Loaded[Any]], tuple[tuple[str, ...], Reach]]


def compile_mcp_routes(
    ctx: CompileContext, gateway: Loaded[Any], attach: Attach, attached: set[ResourceKey], root_prefix: str = "/"
) -> list[CompiledMcpRoute]:
    """The MCPRoutes attached to `gateway` that compile, in the order Envoy tries them: those that
    match more headers first, then the oldest (by creationTimestamp, then namespace and name, as
    Gateway API orders routes). `attach(ctx, gateway, route)` gives the listeners a route's
    parentRefs attach it to (the same rule as for AIGatewayRoutes); `attached` gets the key of
    every route attached. A route attaches to Gateways of its own namespace only: another
    namespace's cannot take an endpoint over, nor its clients' credentials. Of routes that match
    the same requests, the first is served and the others are not (a warning each); one on an AI
    endpoint's path is not served."""
    candidates: list[tuple[Loaded[Any], CompiledMcpRoute]] = []
    for loaded in ctx.resources.of_kind("MCPRoute"):
        route: kinds.MCPRoute = loaded.resource
        if gateway.key.namespace != loaded.key.namespace:
            # Envoy AI Gateway's rule: an MCPRoute attaches to Gateways of its own namespace only
            # (another namespace's route would take its endpoint, and its clients' credentials).
            named = [i for i, p in enumerate(route.spec.parentRefs) if (p.namespace, p.name) == gateway.key[1:]]
            if named:
                attached.add(loaded.key)
                message = f"an MCPRoute attaches to Gateways of its own namespace only, not {gateway.key.ref}"
                _not_served(ctx, loaded, f"spec.parentRefs[{named[0]}].namespace", "NotAllowedByListeners", message)
            continue
        listeners, _ = attach(ctx, gateway, loaded)
        if not listeners:
            continue
        attached.add(loaded.key)
        try:
            security = route_security(ctx, loaded, route.spec.path)
        except NotServed as exc:
            # Served without what it asks for, it would be open to every client.
            message = f"{exc}: this MCPRoute is not served"
            _not_served(ctx, loaded, exc.field_path, exc.reason, message)
            continue
        if security is None:
            continue
        selector = None
        if route.spec.backendSelector is not None:
            selector = backend_selector(ctx, loaded, route.spec.backendSelector)
            if selector is None:
                continue
        taken = resolve_path(route.spec.path, contract.root_prefix(root_prefix))
        if taken is not None and taken.endpoint != Endpoint.PASSTHROUGH:
            message = f"path {route.spec.path} is an AI endpoint of the Gateway: this MCPRoute is not served"
            _not_served(ctx, loaded, "spec.path", "Conflicted", message)
            continue
        ctx.status.set(loaded.key, "Accepted", True, "Accepted", f"attached to Gateway {gateway.key.ref}")
        _warn_forwarded_unchecked(ctx, loaded, security)
        backends = [_backend(ctx, loaded, index, ref) for index, ref in enumerate(route.spec.backendRefs)]
        if any(b is None for b in backends) or not _headers_apart(ctx, loaded, security, backends):
            continue
        ctx.use(loaded)
        ctx.status.set(loaded.key, "ResolvedRefs", True, "ResolvedRefs")
        compiled = CompiledMcpRoute(
            ir.McpRoute(
                gateway.key.ref,
                loaded.key.ref,
                route.spec.path,
                tuple(ir.HeaderMatch(h.name, h.value, h.type == "RegularExpression") for h in route.spec.headers),
                security.oauth,
                security.ext_auth,
                _cors_headers(route, security),
                route.spec.securityPolicy is not None,
                _own_credentials(security),
            ),
            frozenset(listeners),
            tuple(route.spec.hostnames),
            config_pb2.MCPRoute(
                name=loaded.key.ref,
                backends=[b for b in backends if b is not None],
                oauth=security.proxy_oauth,
                client_keys=security.client_keys,
                authorization=security.authorization,
                backend_selector=selector,
            ),
        )
        candidates.append((loaded, compiled))
    candidates.sort(key=lambda c: (-len(c[1].route.headers), c[0].resource.metadata.creationTimestamp or "", c[0].key))
    served: list[CompiledMcpRoute] = []
    for loaded, compiled in _checked_where_rerouted(ctx, gateway, candidates):
        winner = next((other for other in served if _same_requests(compiled, other)), None)
        if winner is not None:
            message = (
                f"MCPRoute {winner.route.name} matches the same requests on Gateway {gateway.key.ref} (path "
                f"{compiled.route.path}, hostnames and headers): it is older, or first by namespace and name, and "
                "served; this one is not"
            )
            _not_served(ctx, loaded, "spec.path", "Conflicted", message)
            continue
        winner = next((other for other in served if _same_metadata_place(compiled, other)), None)
        if winner is not None:
            message = (
                f"MCPRoute {winner.route.name} has its OAuth protected resource metadata served at the same place "
                "and says another thing: this one's clients would be told of the other's; this one is not served"
            )
            _not_served(
                ctx, loaded, "spec.securityPolicy.oauth.protectedResourceMetadata.resource", "Conflicted", message
            )
            continue
        served.append(compiled)
    return served


def _checked_where_rerouted(
    ctx: CompileContext, gateway: Loaded[Any], candidates: list[tuple[Loaded[Any], CompiledMcpRoute]]
) -> list[tuple[Loaded[Any], CompiledMcpRoute]]:
    """`candidates` without a route whose external authorization service may route a request again
    (recomputeRoute) to another MCPRoute Envoy checks clients for (an OAuth token, an external
    service) on one of its ports (one Envoy listener, one route table whatever the host): Envoy runs
    the filters of the route a request first matched, so one routed there would skip that route's
    checks. (API keys and authorization rules are the MCP proxy's, for the route finally matched.)"""
    ports: dict[str, int] = {listener.name: listener.port for listener in gateway.resource.spec.listeners}

    def ports_of(compiled: CompiledMcpRoute) -> set[int]:
        return {ports[name] for name in compiled.listeners if name in ports}

    kept = []
    for loaded, compiled in candidates:
        auth = compiled.route.ext_auth
        other = None
        if auth is not None and auth.recompute_route:
            other = next(
                (
                    o
                    for _, o in candidates
                    if o is not compiled
                    and (o.route.ext_auth is not None or o.route.oauth is not None)
                    and not ports_of(compiled).isdisjoint(ports_of(o))
                ),
                None,
            )
        if other is not None:
            message = (
                f"extAuth.recomputeRoute beside MCPRoute {other.route.name}, whose clients Envoy checks too (OAuth, "
                "extAuth), on the same port: a request this one's service routes there would skip those checks (Envoy "
                "runs the checks of the route a request first matched); this MCPRoute is not served"
            )
            _not_served(ctx, loaded, "spec.securityPolicy.extAuth.recomputeRoute", "Conflicted", message)
            continue
        kept.append((loaded, compiled))
    return kept


def _same_metadata_place(one: CompiledMcpRoute, other: CompiledMcpRoute) -> bool:
    """Whether two OAuth routes would have different metadata served at one path of a host."""
    mine, theirs = one.route.oauth, other.route.oauth
    if mine is None or theirs is None or mine.metadata_path != theirs.metadata_path or mine.metadata == theirs.metadata:
        return False
    return _meet(one, other)


def _own_credentials(security: RouteSecurity) -> tuple[tuple[str, str], ...]:
    """Where the route's own securityPolicy reads its clients' keys: ("header" or "query_param", name)."""
    sources = security.client_keys.sources if security.client_keys is not None else []
    return tuple(
        (kind, getattr(s, kind)) for s in sources if (kind := s.WhichOneof("source")) in ("header", "query_param")
    )


def _cors_headers(route: kinds.MCPRoute, security: RouteSecurity) -> tuple[str, ...] | None:
    """The request headers a browser page may send a route whose clients sign in, besides MCP's own:
    where its API key is, and what its backends are forwarded; None for an open route."""
    if security.oauth is None and security.client_keys is None:
        return None
    keys = security.client_keys.sources if security.client_keys is not None else []
    named = [s.header for s in keys if s.WhichOneof("source") == "header"]
    named += [f.name for ref in route.spec.backendRefs for f in ref.forwardHeaders]
    named += security.ext_auth.headers_to_ext_auth if security.ext_auth is not None else ()
    return tuple(sorted({name.lower() for name in named}))


def _headers_apart(
    ctx: CompileContext, loaded: Loaded[Any], security: RouteSecurity, backends: list[config_pb2.MCPBackend | None]
) -> bool:
    """Whether the headers the route's securityPolicy sends its MCP servers (the client's id, its
    claims) are not a backend's API key header, which would take their place, and no backend is
    passed an OAuth client's token (an error said otherwise)."""
    sent = {}
    if security.client_keys is not None and security.client_keys.client_id_header:
        sent[security.client_keys.client_id_header.lower()] = "spec.securityPolicy.apiKeyAuth.forwardClientIDHeader"
    if security.proxy_oauth is not None:
        for index, claim in enumerate(security.proxy_oauth.claim_headers):
            sent.setdefault(claim.header.lower(), f"spec.securityPolicy.oauth.claimToHeaders[{index}].header")
    for index, (backend, ref) in enumerate(zip(backends, loaded.resource.spec.backendRefs, strict=True)):
        if security.oauth is not None and any(f.name.lower() == "authorization" for f in ref.forwardHeaders):
            message = "passes the client's access token on to an MCP server, which the MCP specification forbids"
            ctx.error(message, loaded, f"spec.backendRefs[{index}].forwardHeaders")
            return False
        if backend is not None and backend.api_key.header.lower() in sent:
            field_path = sent[backend.api_key.header.lower()]
            ctx.error(
                f"{backend.api_key.header} carries backend {backend.name}'s API key: name another", loaded, field_path
            )
            return False
    return True


def _warn_forwarded_unchecked(ctx: CompileContext, loaded: Loaded[Any], security: RouteSecurity) -> None:
    """A gRPC service with failOpen: the headers it sets are not declared (an HTTP service's are,
    and a client's own are removed first), so a request it did not answer carries the client's own
    values of the headers forwarded to the MCP servers."""
    auth = security.ext_auth
    if auth is None or not auth.grpc or not auth.fail_open:
        return
    forwarded = sorted({f.name for ref in loaded.resource.spec.backendRefs for f in ref.forwardHeaders})
    if forwarded:
        ctx.warn(
            f"with failOpen, a request the gRPC service did not answer reaches the MCP servers with the client's own "
            f"{', '.join(forwarded)} (forwardHeaders): a header the service sets is not removed from clients first "
            "(an http service's headersToBackend are)",
            loaded,
            "spec.securityPolicy.extAuth.failOpen",
        )


def _same_requests(one: CompiledMcpRoute, other: CompiledMcpRoute) -> bool:
    """Whether two routes match the same requests on some listener: the same path and headers, and
    hostnames that overlap."""
    return (
        one.route.path == other.route.path and set(one.route.headers) == set(other.route.headers) and _meet(one, other)
    )


def _meet(one: CompiledMcpRoute, other: CompiledMcpRoute) -> bool:
    """Whether two routes share a listener and a host there (no hostnames: every host)."""
    hosts = not one.hostnames or not other.hostnames or bool(set(one.hostnames) & set(other.hostnames))
    return hosts and not one.listeners.isdisjoint(other.listeners)


def _not_served(ctx: CompileContext, loaded: Loaded[Any], field_path: str, reason: str, message: str) -> None:
    ctx.warn(message, loaded, field_path)
    ctx.status.set(loaded.key, "Accepted", False, reason, message)


def _backend(
    ctx: CompileContext, route: Loaded[Any], index: int, ref: kinds.MCPRouteBackendRef
) -> config_pb2.MCPBackend | None:
    """One backendRef as the MCP proxy reaches it; None (an error reported) when it does not resolve."""
    at = f"spec.backendRefs[{index}]"
    namespace = route.key.namespace
    if ref.namespace not in (None, namespace):
        ctx.error("an MCPRoute's backends must be in its own namespace", route, f"{at}.namespace")
        ctx.status.set(route.key, "ResolvedRefs", False, "RefNotPermitted")
        return None
    kind, group = ref.kind or "Service", ref.group or CORE_GROUP
    if (group, kind) not in ((EG_GROUP, "Backend"), (CORE_GROUP, "Service")):
        ctx.error(
            f"an MCP server is a Backend ({EG_GROUP}) or a Service, not {kind} ({group or 'core'})", route, f"{at}.kind"
        )
        ctx.status.set(route.key, "ResolvedRefs", False, "InvalidKind")
        return None
    loaded = ctx.lookup(kind, namespace, ref.name)
    if loaded is None:
        missing = ctx.absent(kind, namespace, ref.name)
        if ref.kind is None and ctx.lookup("Backend", namespace, ref.name) is not None:
            # A backendRef without kind is a Service (Gateway API's default): a Backend needs both.
            missing += f" (a Backend of that name is: set kind: Backend and group: {EG_GROUP})"
        else:
            names = [other.key.name for other in ctx.resources.of_kind(kind) if other.key.namespace == namespace]
            missing += "".join(f"; did you mean {close}?" for close in difflib.get_close_matches(ref.name, names, n=1))
        ctx.error(missing, route, f"{at}.name")
        ctx.status.set(route.key, "ResolvedRefs", False, "BackendNotFound")
        return None
    backend = config_pb2.MCPBackend(name=ref.name)
    path = ref.path or "/"
    if kind == "Backend":
        first = endpoint(loaded.resource.spec.endpoints[0])
        tls = upstream_tls(ctx, loaded)
        if tls is not None:
            backend.tls.CopyFrom(config_pb2.MCPBackendTLS(sni=tls.sni, ca_pem=tls.ca_pem or ""))
        scheme = "https" if tls is not None else "http"
        if first.kind == "unix":
            backend.url, backend.unix_socket = f"{scheme}://localhost{path}", first.address
        else:
            host = f"[{first.address}]" if ":" in first.address else first.address
            backend.url = f"{scheme}://{host}:{first.port}{path}"
        ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    else:
        service: kinds.Service = loaded.resource
        if ref.port is None:
            ctx.error("a Service backendRef needs its port", route, f"{at}.port")
            ctx.status.set(route.key, "ResolvedRefs", False, "UnsupportedValue")
            return None
        host = service.spec.externalName or f"{ref.name}.{namespace}.svc"
        backend.url = f"http://{host}:{ref.port}{path}"
    if ref.toolSelector is not None:
        selector = ref.toolSelector
        backend.tool_selector.CopyFrom(
            config_pb2.MCPToolSelector(
                include=selector.include,
                include_regex=selector.includeRegex,
                exclude=selector.exclude,
                exclude_regex=selector.excludeRegex,
            )
        )
    api_key = ref.securityPolicy.apiKey if ref.securityPolicy is not None else None
    if api_key is not None:
        if api_key.secretRef is not None:
            value = secret_value(ctx, route, api_key.secretRef, "apiKey", f"{at}.securityPolicy.apiKey.secretRef")
        else:
            value = api_key.inline
        if value is None:
            return None
        header = "" if api_key.queryParam else (api_key.header or API_KEY_HEADER)
        backend.api_key.CopyFrom(config_pb2.MCPAPIKey(key=value, header=header, query_param=api_key.queryParam or ""))
    for forwarded in ref.forwardHeaders:
        backend.forward_headers.append(
            config_pb2.MCPForwardHeader(name=forwarded.name, backend_header=forwarded.backendHeader or "")
        )
    return backend

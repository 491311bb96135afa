"""Envoy Gateway's SecurityPolicy: who may use a Gateway or a route (API keys, JWTs, external
authorization, CORS...). aigw-xds does not enforce one yet, and served without it, what it targets
would take every client and spend the providers' keys for them. So a SecurityPolicy naming a
Gateway (or one of its listeners, or selecting it by its labels), or a route that names the Gateway
in its parentRefs (an AIGatewayRoute or MCPRoute, by its kind or as the HTTPRoute Envoy AI Gateway
makes of it), is an error. The Gateway is then served closed, in both modes, never at a last good
configuration open to every client (compile/excluding.py): without the routes the policy names, and
every request refused when it names the Gateway. A policy naming anything else (another
controller's HTTPRoute) is not about what aigw-xds serves."""

from __future__ import annotations

from typing import Any

from ..api import kinds
from ..api.base import GATEWAY_API_GROUP
from ..keys import ResourceKey
from ..resources import Loaded, ResourceView
from .attachment import ROUTE_KINDS
from .client_traffic import policies_meant_for
from .context import CompileContext
from .references import AIGW_GROUP

# Envoy AI Gateway's name of the HTTPRoute it makes of an MCPRoute: this prefix, then its name (an
# AIGatewayRoute's HTTPRoute has the route's own name).
MCP_HTTPROUTE_PREFIX = "ai-eg-mcp-main-"


def refuse_security_policies(ctx: CompileContext, gateway: Loaded[Any]) -> None:
    """An error (and Accepted False) on each SecurityPolicy naming `gateway` or a route of it."""
    gw: kinds.Gateway = gateway.resource
    policies_meant_for(ctx, gateway, "SecurityPolicy")
    for policy in ctx.resources.of_kind("SecurityPolicy"):
        named: list[tuple[str, str]] = []
        if policy.key.namespace == gateway.key.namespace:  # (a policy names a Gateway of its namespace)
            spec: kinds.SecurityPolicySpec = policy.resource.spec
            named += [(path, what) for path, ref in spec.targets if (what := _gateway_part(gateway, ref))]
            named += [(path, f"Gateway {gateway.key.ref}") for path in _selecting(spec, gw)]
        for path, key in targeted_routes(policy, ctx.resources):
            route = ctx.lookup(key.kind, key.namespace, key.name)
            parents = route.resource.spec.parentRefs if route is not None else []
            if any(
                (p.name, p.namespace or key.namespace) == (gateway.key.name, gateway.key.namespace) for p in parents
            ):
                named.append((path, f"{key} of Gateway {gateway.key.ref}"))
        for path, what in named:
            ctx.use(policy)
            message = (
                f"SecurityPolicy is not supported yet: {what} is served closed while this policy names it, not "
                "open to clients aigw-xds cannot check as it asks (remove the policy to serve it open)"
            )
            ctx.error(message, policy, path)
            ctx.status.set(policy.key, "Accepted", False, "Invalid", message)


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

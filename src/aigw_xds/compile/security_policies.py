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
from ..resources import Loaded
from .client_traffic import policies_meant_for
from .context import CompileContext
from .references import AIGW_GROUP

# The route kinds a target may name (group, kind) -> the kinds of ours it means.
_ROUTE_TARGETS = {
    (GATEWAY_API_GROUP, "HTTPRoute"): ("AIGatewayRoute", "MCPRoute"),
    (AIGW_GROUP, "AIGatewayRoute"): ("AIGatewayRoute",),
    (AIGW_GROUP, "MCPRoute"): ("MCPRoute",),
}


def refuse_security_policies(ctx: CompileContext, gateway: Loaded[Any]) -> None:
    """An error (and Accepted False) on each SecurityPolicy naming `gateway` or a route of it."""
    gw: kinds.Gateway = gateway.resource
    policies_meant_for(ctx, gateway, "SecurityPolicy")
    for policy in ctx.resources.of_kind("SecurityPolicy"):
        if policy.key.namespace != gateway.key.namespace:  # (a policy's targets are in its namespace)
            continue
        spec: kinds.SecurityPolicySpec = policy.resource.spec
        named = [(path, what) for path, ref in spec.targets if (what := _named(ctx, gateway, ref))]
        named += [(path, f"Gateway {gateway.key.ref}") for path in _selecting(spec, gw)]
        for path, what in named:
            ctx.use(policy)
            message = (
                f"SecurityPolicy is not supported yet: {what} is served closed while this policy names it, not "
                "open to clients aigw-xds cannot check as it asks (remove the policy to serve it open)"
            )
            ctx.error(message, policy, path)
            ctx.status.set(policy.key, "Accepted", False, "Invalid", message)


def names_gateway(policy: Loaded[Any], gateway: Loaded[Any]) -> bool:
    """Whether a SecurityPolicy names the Gateway itself (or a listener of it), by a targetRef or
    by its labels: all of the Gateway's routes are its."""
    spec: kinds.SecurityPolicySpec = policy.resource.spec
    if policy.key.namespace != gateway.key.namespace:
        return False
    by_name = any(
        (ref.group or GATEWAY_API_GROUP, ref.kind, ref.name) == (GATEWAY_API_GROUP, "Gateway", gateway.key.name)
        for _, ref in spec.targets
    )
    return by_name or bool(_selecting(spec, gateway.resource))


def _selecting(spec: kinds.SecurityPolicySpec, gw: kinds.Gateway) -> list[str]:
    """The paths of the targetSelectors that take the Gateway by its labels."""
    return [
        f"spec.targetSelectors[{index}]"
        for index, selector in enumerate(spec.targetSelectors)
        if (selector.group, selector.kind) == (GATEWAY_API_GROUP, "Gateway") and selector.selects(gw.metadata.labels)
    ]


def _named(ctx: CompileContext, gateway: Loaded[Any], ref: kinds.PolicyTargetReference) -> str:
    """What of `gateway` a target names ("" for nothing of it)."""
    namespace = gateway.key.namespace
    group = ref.group or GATEWAY_API_GROUP  # (Gateway API's, when left out: named all the same)
    if (group, ref.kind) == (GATEWAY_API_GROUP, "Gateway"):
        if ref.name != gateway.key.name:
            return ""
        return (
            f"listener {ref.sectionName} of Gateway {gateway.key.ref}"
            if ref.sectionName
            else f"Gateway {gateway.key.ref}"
        )
    for kind in _ROUTE_TARGETS.get((group, ref.kind), ()):
        route = ctx.lookup(kind, namespace, ref.name)
        parents = route.resource.spec.parentRefs if route is not None else []
        if any((p.name, p.namespace or namespace) == (gateway.key.name, namespace) for p in parents):
            return f"{kind} {namespace}/{ref.name} of Gateway {gateway.key.ref}"
    return ""

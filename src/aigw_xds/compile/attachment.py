"""Gateway API's rules between a route and the listeners of a Gateway: which listeners it attaches
to (those its parentRefs name, whose allowedRoutes admit it and whose hostname meets one of its
own); that it is served through a listener at the intersection of their hostnames; and that a
request for a host belongs to the listener of its port whose hostname covers that host most
specifically (exact names, then the longest wildcard, then a listener without hostname). Pure:
the compile and the Kubernetes status (a listener's attachedRoutes) read the same answers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..api import kinds
from ..api.base import GATEWAY_API_GROUP
from ..keys import ResourceKey
from .references import AIGW_GROUP, hostname_matches

# The route kinds of ours, and the listener protocols that take them.
ROUTE_KINDS = ("AIGatewayRoute", "MCPRoute")
SERVED_PROTOCOLS = ("HTTP", "HTTPS")


@dataclass(frozen=True)
class Attachment:
    """The listeners of a Gateway a route attaches to, and those its parentRefs name that it does
    not: `refused` by their allowedRoutes (with why), `apart` for want of a hostname in common."""

    listeners: tuple[str, ...]
    refused: tuple[tuple[kinds.GatewayListener, str], ...] = ()
    apart: tuple[kinds.GatewayListener, ...] = ()


def attachment(gateway: ResourceKey, gw: kinds.Gateway, route: ResourceKey, spec: Any) -> Attachment:
    """Where a route (an AIGatewayRoute's or MCPRoute's spec) attaches on Gateway `gateway`."""
    names: list[str] = []
    refused: list[tuple[kinds.GatewayListener, str]] = []
    apart: list[kinds.GatewayListener] = []
    for ref in spec.parentRefs:
        if ref.name != gateway.name or (ref.namespace or route.namespace) != gateway.namespace:
            continue
        for listener in gw.spec.listeners:
            if (ref.sectionName and ref.sectionName != listener.name) or (ref.port and ref.port != listener.port):
                continue
            why = _refusal(listener, gateway, route)
            if why:
                refused.append((listener, why))
            elif spec.hostnames and shared(spec.hostnames, listener.hostname) == ():
                apart.append(listener)
            else:
                names.append(listener.name)
    if not (refused or apart):  # (as nearly every route: one object less each)
        return Attachment(tuple(dict.fromkeys(names)))
    return Attachment(tuple(dict.fromkeys(names)), tuple(refused), tuple(apart))


def _refusal(listener: kinds.GatewayListener, gateway: ResourceKey, route: ResourceKey) -> str:
    """Why a listener's allowedRoutes refuse a route ("" when they admit it)."""
    allowed = listener.allowedRoutes
    if listener.protocol not in SERVED_PROTOCOLS:
        return f"is a {listener.protocol} listener, which takes no {route.kind}"
    if not kinds_admit(listener, route.kind):
        return f"takes {', '.join(sorted(k.kind for k in allowed.kinds))} only (allowedRoutes kinds)"
    # A namespace Selector is not evaluated yet: it admits the Gateway's own namespace only (closed,
    # never wider than meant).
    if allowed.namespaces.from_ in ("Same", "Selector") and route.namespace != gateway.namespace:
        selector = allowed.namespaces.from_ == "Selector"
        why = "allowedRoutes namespaces Selector is not supported yet" if selector else "allowedRoutes"
        return f"allows routes from its own namespace only ({why})"
    return ""


def kinds_admit(listener: kinds.GatewayListener, route_kind: str) -> bool:
    """Whether a listener's allowedRoutes kinds (none: every kind it supports) admit `route_kind`."""
    named = listener.allowedRoutes.kinds
    return not named or any(takes_kind(k.group, k.kind, route_kind) for k in named)


def takes_kind(group: str, kind: str, route_kind: str) -> bool:
    """Whether an allowedRoutes kind admits a route of `route_kind` (an AIGatewayRoute or MCPRoute):
    itself, or HTTPRoute, which Envoy AI Gateway makes of it and Envoy Gateway checks against."""
    return (group, kind) in ((AIGW_GROUP, route_kind), (GATEWAY_API_GROUP, "HTTPRoute"))


def specificity(hostname: str | None) -> tuple[int, int]:
    """How specific a listener's hostname is: none, then wildcards by length, then exact names."""
    if hostname is None:
        return (0, 0)
    return (1 if hostname.startswith("*.") else 2, len(hostname))


def takers(host: str | None, listeners: Iterable[kinds.GatewayListener]) -> frozenset[str]:
    """The names of the listeners (of one port) a request for `host` is for: those with the most
    specific hostname covering it. `host` may be a wildcard (a virtual host's domain: the requests
    for its subdomains), or None (a host no listener names)."""
    covering = [
        (specificity(listener.hostname), listener.name)
        for listener in listeners
        if listener.hostname is None or (host is not None and hostname_matches(listener.hostname, host))
    ]
    best = max((rank for rank, _ in covering), default=None)
    return frozenset(name for rank, name in covering if rank == best)


def shared(route_hosts: Sequence[str], listener_host: str | None) -> tuple[str, ...] | None:
    """The hostnames a route serves through a listener, the intersection of theirs: None for every
    host (neither names one), () for none (their hostnames do not meet)."""
    if listener_host is None:
        return tuple(route_hosts) or None
    if not route_hosts:
        return (listener_host,)
    met = (
        host if hostname_matches(listener_host, host) else listener_host
        for host in route_hosts
        if hostname_matches(listener_host, host) or hostname_matches(host, listener_host)
    )
    return tuple(dict.fromkeys(met))


@dataclass(frozen=True)
class Reach:
    """The hosts a route's requests come from through the listeners it attaches to. `hosts`: None
    for every host, else those it serves (none: it reaches no request); `lost`: each hostname it
    would serve that a more specific listener of the same port takes, with that listener's names."""

    hosts: tuple[str, ...] | None
    lost: tuple[tuple[str, frozenset[str]], ...]


EVERY_HOST = Reach(None, ())


def reach(
    route_hosts: Sequence[str], attached: Sequence[kinds.GatewayListener], listeners: Sequence[kinds.GatewayListener]
) -> Reach:
    """Where a route with `route_hosts`, attached to `attached` of the Gateway's `listeners`, is
    reached. A hostname served through a listener is lost when the requests for it belong to
    another listener of that port, one the route does not attach to."""
    if not route_hosts and any(listener.hostname is None for listener in attached):
        return EVERY_HOST  # (through a listener of a hostname, a route of none loses nothing: it is that one's)
    names = {listener.name for listener in attached}
    every = False
    served: set[str] = set()
    lost: dict[str, frozenset[str]] = {}
    for listener in attached:
        through = shared(route_hosts, listener.hostname)
        if through is None:
            every = True
            continue
        port = [other for other in listeners if other.port == listener.port]
        for host in through:
            taking = takers(host, port)
            if names.isdisjoint(taking):
                lost.setdefault(host, taking)
            else:
                served.add(host)
    return Reach(None if every else tuple(sorted(served)), tuple((h, lost[h]) for h in sorted(lost) if h not in served))

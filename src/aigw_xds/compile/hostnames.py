"""Gateway API's hostname rules between a route and the listeners of a Gateway: a route is served
through a listener at the intersection of their hostnames, and a request for a host belongs to the
listener of its port whose hostname covers that host most specifically (exact names, then the
longest wildcard, then a listener without hostname)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..api import kinds
from .references import hostname_matches


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


def reach(
    route_hosts: Sequence[str], attached: Sequence[kinds.GatewayListener], listeners: Sequence[kinds.GatewayListener]
) -> Reach:
    """Where a route with `route_hosts`, attached to `attached` of the Gateway's `listeners`, is
    reached. A hostname served through a listener is lost when the requests for it belong to
    another listener of that port, one the route does not attach to."""
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

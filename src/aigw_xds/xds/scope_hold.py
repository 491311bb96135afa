"""Route scopes held while Envoy drains: the scopes a build no longer has stay in the fleet's snapshot
for Envoy's drain time.

A listener replaced or removed (a port edit, a listener deleted, a listener that leaves its scopes
or changes into them) is not gone from Envoy at once: the connections on its old filter chain
drain, for up to Envoy's --drain-time-s (600 s by default), and their requests are still routed by
the old connection manager. One with a route configuration keeps it (Envoy ignores an RDS removal);
one with scopes loses them as soon as an answer of scopes leaves them out (SRDS is one wildcard
subscription that every connection manager of the node shares, so its answer is all of them), and
its requests would get 404. So a scope the build dropped is held, with its route configuration, for
the drain time and a margin, then released (Controller.release_held, on a timer).

What this costs: a replica that saw the edit serves the held scopes for a while, one started after
it does not; both converge once the hold ends. A scope built again (the listener back in scopes)
is the build's at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from envoy.config.route.v3 import scoped_route_pb2

from . import type_urls
from .cache import Content, FleetResources, as_message

# Envoy starts to drain when it applies the update, a moment after the snapshot is published: a
# scope is held this much longer than the drain time.
MARGIN_S = 5.0
# A release that failed (a bug of ours) is tried again this much later, not at once in a loop.
RELEASE_RETRY_S = 30.0


@dataclass(frozen=True)
class HeldScope:
    """A scope the build no longer has, and its route configuration, served until `until` (the
    controller's clock)."""

    until: float
    scope: Content
    route_name: str
    route: Content


def held_scopes(
    served: Mapping[str, Mapping[str, Content]],
    built: FleetResources,
    held: Mapping[str, HeldScope],
    now: float,
    hold_s: float,
) -> dict[str, HeldScope]:
    """The scopes to hold after a build: those held before and not yet due, and those the fleet's
    served snapshot has (`served`: its resources by type) and the build does not, for `hold_s`
    from `now`. A scope the build has again is no longer held."""
    if hold_s <= 0:
        return {}
    scopes = built.by_type.get(type_urls.SCOPED_ROUTE, {})
    kept = {name: h for name, h in held.items() if h.until > now and name not in scopes}
    served_routes = served.get(type_urls.ROUTE, {})
    for name, scope in served.get(type_urls.SCOPED_ROUTE, {}).items():
        if name in scopes or name in held:  # held before: kept above, or due (never held again)
            continue
        route_name = _route_name(scope)
        route = served_routes.get(route_name)
        if route is not None:
            kept[name] = HeldScope(now + hold_s, scope, route_name, route)
    return kept


def with_held(built: FleetResources, held: Mapping[str, HeldScope]) -> FleetResources:
    """The build and the held scopes with their route configurations (the build's own where a name
    is both); `built` itself when nothing is held."""
    if not held:
        return built
    by_type = dict(built.by_type)
    scopes = by_type.get(type_urls.SCOPED_ROUTE, {})
    routes = by_type.get(type_urls.ROUTE, {})
    by_type[type_urls.SCOPED_ROUTE] = {**{n: h.scope for n, h in held.items()}, **scopes}
    by_type[type_urls.ROUTE] = {**{h.route_name: h.route for h in held.values()}, **routes}
    return replace(built, by_type=by_type)


def _route_name(scope: Content) -> str:
    message = as_message(scope)
    assert isinstance(message, scoped_route_pb2.ScopedRouteConfiguration)
    return message.route_configuration_name

"""Route configurations as Envoy applies them, for tests that read a route's retry policy: the
builder puts the retry policy most routes share on the virtual host (build._hoist_retry_policy);
Envoy uses a route's own policy when it has one (an empty one: no retries), else the host's."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2


def applied(config: route_pb2.RouteConfiguration) -> route_pb2.RouteConfiguration:
    """A copy where every forwarding route carries the retry policy that applies to it, and the
    virtual hosts none."""
    out = route_pb2.RouteConfiguration()
    out.CopyFrom(config)
    for host in out.virtual_hosts:
        for route in host.routes:
            if not route.HasField("route"):
                continue
            if not route.route.HasField("retry_policy"):
                if host.HasField("retry_policy"):
                    route.route.retry_policy.CopyFrom(host.retry_policy)
            elif route.route.retry_policy.ByteSize() == 0:
                route.route.ClearField("retry_policy")
        host.ClearField("retry_policy")
    return out

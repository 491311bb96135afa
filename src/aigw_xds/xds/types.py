"""Envoy resource type URLs, in the order ADS must send them (clusters before the endpoints and
listeners that use them, routes last)."""

from __future__ import annotations

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Secrets first: a listener or cluster that names an SDS secret warms until the secret arrives.
ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)

# Types whose SotW responses carry the full state (a missing name means deletion).
FULL_STATE = frozenset({CLUSTER, LISTENER})

SHORT = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS"}

"""Envoy resource type URLs, in the order ADS must send them (clusters before the endpoints and
listeners that use them, routes last)."""

from __future__ import annotations

import aigw_contract as contract

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# A large listener's routes come in scopes (build.py, route scopes): each scope names its route
# configuration, which RDS brings.
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# The translator configuration (with credentials): never part of an Envoy fleet's snapshot, served
# only to translator processes (see fleets.py); CSDS shows its state, never its contents.
TRANSLATOR = contract.TRANSLATOR_CONFIG_TYPE_URL

# Secrets first: a listener or cluster that names an SDS secret warms until the secret arrives.
ENVOY_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE)
ORDER = (*ENVOY_ORDER, TRANSLATOR)

# Types whose SotW responses carry the full state (a missing name means deletion), and which a
# client subscribes to as a wildcard. Envoy subscribes to scopes as a wildcard, and takes a SotW
# answer of scopes as all of them.
FULL_STATE = frozenset({CLUSTER, LISTENER, SCOPED_ROUTE})

# Types whose SotW answers carry only what changed (and what the client newly asks for), as
# delta's do: Envoy keeps a route configuration an answer leaves out (each has a watch of its own,
# and an answer without it is an empty update, which changes nothing). Not secrets: Envoy rejects
# an SDS answer that leaves out a secret it watches.
CHANGES_ONLY = frozenset({ROUTE})

SHORT = {
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    LISTENER: "LDS",
    SCOPED_ROUTE: "SRDS",
    ROUTE: "RDS",
    SECRET: "SDS",
    TRANSLATOR: "TRANSLATOR",
}

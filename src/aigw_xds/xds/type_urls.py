"""Envoy resource type URLs, in the order ADS must send them (clusters before the endpoints and
listeners that use them, routes last)."""

from __future__ import annotations

import aigw_contract as contract

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# The translator configuration (with credentials): never part of an Envoy fleet's snapshot, served
# only to translator processes (see fleets.py); CSDS shows its state, never its contents.
TRANSLATOR = contract.TRANSLATOR_CONFIG_TYPE_URL

# Secrets first: a listener or cluster that names an SDS secret warms until the secret arrives.
ENVOY_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)
ORDER = (*ENVOY_ORDER, TRANSLATOR)

# Types whose SotW responses carry the full state (a missing name means deletion).
FULL_STATE = frozenset({CLUSTER, LISTENER})

SHORT = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS", TRANSLATOR: "TRANSLATOR"}

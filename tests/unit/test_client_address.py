"""The client's address Envoy works with (what sourceCIDR rate limits count): the connection's, not
an x-forwarded-for the client writes, unless a ClientTrafficPolicy trusts proxies in front; and no
client address added to what providers get."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from tests.unit.test_traffic_policy import base, compiled


def _manager(result) -> hcm_pb2.HttpConnectionManager:
    fleet = build_fleet(result.gateways["default/gw"], BuildSettings())
    [listener] = fleet.messages(type_urls.LISTENER).values()
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_the_clients_address_is_the_connections_unless_a_client_traffic_policy_trusts_proxies_in_front():
    """use_remote_address (a client's own x-forwarded-for is not believed), no client address added
    to what providers get; a ClientTrafficPolicy's numTrustedHops believes that many proxies."""
    manager = _manager(compiled(base()))
    assert manager.use_remote_address.value and manager.skip_xff_append and manager.xff_num_trusted_hops == 0
    assert manager.preserve_external_request_id  # a client's x-request-id stays its own
    trusting = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: lb, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  clientIPDetection: {xForwardedFor: {numTrustedHops: 2, trustedCIDRs: [10.0.0.0/8]}, customHeader: {name: x-real-ip}}
"""
    result = compiled(base() + trusting)
    assert _manager(result).xff_num_trusted_hops == 2
    warned = {d.field for d in result.diagnostics if d.resource == ResourceKey("ClientTrafficPolicy", "default", "lb")}
    assert warned == {"spec.clientIPDetection.xForwardedFor.trustedCIDRs", "spec.clientIPDetection.customHeader"}


def test_no_route_configuration_sends_envoys_external_address_on():
    fleet = build_fleet(compiled(base()).gateways["default/gw"], BuildSettings())
    [config] = fleet.messages(type_urls.ROUTE).values()
    assert "x-envoy-external-address" in config.request_headers_to_remove

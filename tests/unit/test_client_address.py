"""The client's address Envoy works with (what sourceCIDR rate limits count): the connection's, not
an x-forwarded-for the client writes, unless a ClientTrafficPolicy trusts proxies in front; and no
client address added to what providers get."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.original_ip_detection.custom_header.v3 import custom_header_pb2
from envoy.extensions.http.original_ip_detection.xff.v3 import xff_pb2

from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from tests.resource_text import client_traffic_policy
from tests.unit.test_traffic_policy import base, compiled


def _manager(result) -> hcm_pb2.HttpConnectionManager:
    """The connection manager of the compiled Gateway's one listener."""
    fleet = build_fleet(result.gateways["default/gw"], BuildSettings())
    [listener] = fleet.messages(type_urls.LISTENER).values()
    return manager_of(listener)


def manager_of(listener) -> hcm_pb2.HttpConnectionManager:
    """A listener's connection manager (after the connection limit filter, when there is one)."""
    manager = hcm_pb2.HttpConnectionManager()
    [hcm] = [f for f in listener.filter_chains[0].filters if f.name == "envoy.filters.network.http_connection_manager"]
    hcm.typed_config.Unpack(manager)
    return manager


def _policy(detection: str) -> str:
    return client_traffic_policy(f"clientIPDetection: {detection}", name="lb")


def test_the_clients_address_is_the_connections_unless_a_client_traffic_policy_trusts_proxies_in_front():
    """use_remote_address (a client's own x-forwarded-for is not believed), no client address added
    to what providers get; a ClientTrafficPolicy's numTrustedHops believes that many proxies."""
    manager = _manager(compiled(base()))
    assert manager.use_remote_address.value and manager.skip_xff_append and manager.xff_num_trusted_hops == 0
    assert manager.preserve_external_request_id  # a client's x-request-id stays its own
    assert not manager.original_ip_detection_extensions
    hops = _manager(compiled(base() + _policy("{xForwardedFor: {numTrustedHops: 2}}")))
    assert hops.use_remote_address.value and hops.xff_num_trusted_hops == 2


def test_trusted_cidrs_and_a_header_are_envoys_original_ip_detection_extensions():
    """Envoy takes them only without use_remote_address."""
    cidrs = _manager(compiled(base() + _policy("{xForwardedFor: {trustedCIDRs: [10.1.2.3/8, 'fd00::/8']}}")))
    assert not cidrs.use_remote_address.value
    [extension] = cidrs.original_ip_detection_extensions
    config = xff_pb2.XffConfig()
    extension.typed_config.Unpack(config)
    assert [(c.address_prefix, c.prefix_len.value) for c in config.xff_trusted_cidrs.cidrs] == [
        ("10.0.0.0", 8),
        ("fd00::", 8),
    ]
    header = _manager(compiled(base() + _policy("{customHeader: {name: X-Real-IP, failClosed: true}}")))
    [extension] = header.original_ip_detection_extensions
    custom = custom_header_pb2.CustomHeaderConfig()
    extension.typed_config.Unpack(custom)
    assert custom.header_name == "x-real-ip" and custom.reject_with_status.code == 403


def test_two_ways_at_once_are_refused_naming_the_field():
    for detection, words in (
        ("{xForwardedFor: {numTrustedHops: 1, trustedCIDRs: [10.0.0.0/8]}}", "set numTrustedHops or trustedCIDRs"),
        ("{xForwardedFor: {numTrustedHops: 1}, customHeader: {name: x-real-ip}}", "set xForwardedFor or customHeader"),
        ("{xForwardedFor: {trustedCIDRs: [10.0.0.300/8]}}", "invalid CIDR '10.0.0.300/8'"),
    ):
        result = compiled(base() + _policy(detection))
        [error, *_] = [d for d in result.errors if d.resource == ResourceKey("ClientTrafficPolicy", "default", "lb")]
        assert error.field.startswith("spec.clientIPDetection") and words in error.message, (detection, error)


def test_no_route_configuration_sends_a_client_address_on():
    fleet = build_fleet(compiled(base()).gateways["default/gw"], BuildSettings())
    [config] = fleet.messages(type_urls.ROUTE).values()
    assert list(config.request_headers_to_remove) == ["x-forwarded-for", "x-envoy-external-address"]
    result = compiled(base() + _policy("{customHeader: {name: X-Real-IP}}"))
    [config] = build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.ROUTE).values()
    assert list(config.request_headers_to_remove)[-1] == "x-real-ip"


def test_the_oldest_client_traffic_policy_applies_whole_and_the_others_are_said_not_to():
    """As Envoy Gateway chooses among a Gateway's ClientTrafficPolicies: the oldest, none of the
    others' fields (a newer one's bufferLimit is not taken with the oldest's clientIPDetection)."""
    old = client_traffic_policy("clientIPDetection: {xForwardedFor: {numTrustedHops: 1}}", name="z-old")
    old = old.replace("name: z-old,", "name: z-old, creationTimestamp: '2020-01-01T00:00:00Z',")
    new = client_traffic_policy("connection: {bufferLimit: 1Mi}", name="a-new")
    new = new.replace("name: a-new,", "name: a-new, creationTimestamp: '2025-01-01T00:00:00Z',")
    result = compiled(base() + old + new)
    manager = _manager(result)
    assert manager.xff_num_trusted_hops == 1
    listener = result.gateways["default/gw"].listeners[0]
    assert listener.client.buffer_limit == 50 * 1024 * 1024
    [warned] = [d for d in result.diagnostics if d.resource == ResourceKey("ClientTrafficPolicy", "default", "a-new")]
    assert warned.field == "spec.targetRefs" and "default/z-old, the oldest ClientTrafficPolicy" in warned.message


def test_a_clients_x_envoy_headers_go_as_it_arrives_unless_one_holds_its_address():
    """Removed before Envoy reads any (what a provider would otherwise get of them); a customHeader
    named x-envoy-... (a front Envoy's x-envoy-external-address) must be read: then none is removed."""

    def early(result) -> list:
        return [e.name for e in _manager(result).early_header_mutation_extensions]

    assert early(compiled(base())) == ["envoy.http.early_header_mutation.header_mutation"]
    assert early(compiled(base() + _policy("{customHeader: {name: x-envoy-external-address}}"))) == []

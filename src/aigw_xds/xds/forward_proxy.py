"""A Gateway's forward proxy (GatewayConfig forwardProxy) in Envoy: each rule cluster's transport
sockets wrapped in Envoy's http_11_proxy transport socket, and the proxy's address on the locality
of each backend reached through it.

Envoy then connects to the proxy, sends `CONNECT <endpoint hostname>:<endpoint port>` (the
hostname is the name the backend's requests are addressed to: its Host and TLS name), waits for
the proxy's 200, and runs the backend's connection, TLS or plaintext, inside the tunnel; a locality
without the address (a Service's pods, a socket path) is connected to directly. The address rides
on the localities, not on the transport socket's default_proxy_address: Envoy tunnels plaintext
connections only then (with the default address it sends them to the proxy as they are, which a
CONNECT proxy refuses), and xds-protos has no default_proxy_address field."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.transport_sockets.http_11_proxy.v3 import upstream_http_11_connect_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2

from ..compile import ir
from .messages import packed

HTTP_11_PROXY = "envoy.transport_sockets.http_11_proxy"
# The key of the typed filter metadata Envoy reads a host's (or its locality's) proxy address from.
PROXY_ADDRESS_KEY = "envoy.http11_proxy_transport_socket.proxy_address"


def tunnel_sockets(cluster: cluster_pb2.Cluster) -> None:
    """Wraps the cluster's transport sockets (its default, plaintext, and each TLS match) in
    http_11_proxy: a connection to a host whose locality names a proxy goes through it."""
    plaintext = base_pb2.TransportSocket(
        name="envoy.transport_sockets.raw_buffer", typed_config=packed(raw_buffer_pb2.RawBuffer())
    )
    cluster.transport_socket.CopyFrom(_tunnelled(plaintext))
    for match in cluster.transport_socket_matches:
        match.transport_socket.CopyFrom(_tunnelled(match.transport_socket))


def _tunnelled(inner: base_pb2.TransportSocket) -> base_pb2.TransportSocket:
    wrapper = upstream_http_11_connect_pb2.Http11ProxyUpstreamTransport(transport_socket=inner)
    return base_pb2.TransportSocket(name=HTTP_11_PROXY, typed_config=packed(wrapper))


def name_proxy(locality: endpoint_components_pb2.LocalityLbEndpoints, proxy: ir.Endpoint) -> None:
    """The proxy the locality's hosts are connected through."""
    address = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=proxy.address, port_value=proxy.port)
    )
    locality.metadata.typed_filter_metadata[PROXY_ADDRESS_KEY].CopyFrom(packed(address))

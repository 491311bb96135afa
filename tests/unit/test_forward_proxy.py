"""GatewayConfig forwardProxy: its address (an IP and a port, as Envoy takes it), which backends are
reached through it (compile), and the Envoy clusters that tunnel through it (build)."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.extensions.transport_sockets.http_11_proxy.v3 import upstream_http_11_connect_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from aigw_xds.api.kinds import ip_and_port
from aigw_xds.compile import compile_resources
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.forward_proxy import HTTP_11_PROXY, PROXY_ADDRESS_KEY
from tests.resource_text import api_key, backend, gateway, resources, route
from tests.unit.test_service_backends import endpoint_slice, service, service_backend


def gateway_config(address: str) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: GatewayConfig
metadata: {{name: egress, namespace: default}}
spec:
  forwardProxy: {{address: "{address}"}}
"""


TLS_BACKEND = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: openai, namespace: default}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai, namespace: default}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: openai, namespace: default}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: openai}]
  validation: {wellKnownCACertificates: System, hostname: api.openai.com}
"""


def _config(*documents: str, proxy: str | None = "10.0.0.9:3128") -> str:
    text = gateway(config="egress" if proxy else None) + "".join(documents)
    return text + (gateway_config(proxy) if proxy else "")


def _fleet(text: str):
    result = compile_resources(resources(text))
    return result, build_fleet(result.gateways["default/gw"], BuildSettings(envoy_credentials=True))


def _unwrapped(socket) -> object:
    """The transport socket inside an http_11_proxy one."""
    assert socket.name == HTTP_11_PROXY
    wrapper = upstream_http_11_connect_pb2.Http11ProxyUpstreamTransport()
    socket.typed_config.Unpack(wrapper)
    return wrapper.transport_socket


def _proxy_of(locality) -> tuple[str, int] | None:
    packed = locality.metadata.typed_filter_metadata.get(PROXY_ADDRESS_KEY)
    if packed is None:
        return None
    address = address_pb2.Address()
    packed.Unpack(address)
    return address.socket_address.address, address.socket_address.port_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.9:3128", ("10.0.0.9", 3128)), ("[fd00::1]:8080", ("fd00::1", 8080)), ("[::1]:3128", ("::1", 3128))],
)
def test_an_ip_and_a_port_are_a_proxy_address(text: str, expected: tuple[str, int]):
    assert ip_and_port(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("squid.egress.svc:3128", "is not an IP address: Envoy connects to a forward proxy by IP address"),
        ("10.0.0.9", "must be IP:port"),
        ("10.0.0.9:0", "must be IP:port"),
        ("10.0.0.9:70000", "must be IP:port"),
        ("fd00::1:3128", "an IPv6 address takes brackets"),
        ("[10.0.0.9]:3128", "only an IPv6 address takes brackets"),
        ("0.0.0.0:3128", "not an address a proxy can be reached at"),
        ("[::]:3128", "not an address a proxy can be reached at"),
        ("[fe80::1%eth0]:3128", "not an address a proxy can be reached at"),
        ("10.0.0.9:\uff13\uff11\uff12\uff18", "must be IP:port"),  # full-width digits
    ],
)
def test_what_envoy_cannot_connect_to_is_refused_naming_the_field(text: str, says: str):
    """Envoy 1.40 refuses a cluster whose proxy address is a name ("malformed IP address"), which
    would take every route of the Gateway offline: the document is refused instead, naming why, and
    the Gateway is held at what it served."""
    result = compile_resources(resources(_config(route("r", {"m": "a"}), backend("a", 9001), proxy=text)))
    error, *held = [d for d in result.diagnostics if d.is_error]
    assert error.resource.kind == "GatewayConfig" and error.field == "spec.forwardProxy.address"
    assert says in error.message
    assert "this version is not served until the errors above are fixed" in held[-1].message


def test_every_rule_cluster_tunnels_and_each_backend_names_the_proxy():
    """TLS (an FQDN backend with its BackendTLSPolicy) and plaintext (an IP backend): the cluster's
    sockets are wrapped in http_11_proxy, each backend's locality carries the proxy's address, and
    the endpoints keep the name the proxy is asked for (their Host and TLS name)."""
    text = _config(route("r", {"gpt": [("openai", 0, 1), ("local", 1, 1)]}), TLS_BACKEND, backend("local", 9001))
    result, fleet = _fleet(text)
    assert not [d for d in result.diagnostics if d.is_error]
    cluster = fleet.messages(type_urls.CLUSTER)["default/r/rule/0"]
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS  # Envoy still resolves the FQDN itself
    assert _unwrapped(cluster.transport_socket).name == "envoy.transport_sockets.raw_buffer"
    [match] = cluster.transport_socket_matches
    inner = _unwrapped(match.transport_socket)
    tls = tls_pb2.UpstreamTlsContext()
    inner.typed_config.Unpack(tls)
    assert tls.sni == "api.openai.com"
    localities = cluster.load_assignment.endpoints
    assert [_proxy_of(locality) for locality in localities] == [("10.0.0.9", 3128)] * 2
    hostnames = [e.endpoint.hostname for locality in localities for e in locality.lb_endpoints]
    assert hostnames == ["api.openai.com", "127.0.0.1"]


def test_without_a_forward_proxy_nothing_is_wrapped():
    _, fleet = _fleet(_config(route("r", {"gpt": "openai"}), TLS_BACKEND, proxy=None))
    cluster = fleet.messages(type_urls.CLUSTER)["default/r/rule/0"]
    assert not cluster.HasField("transport_socket")
    assert cluster.transport_socket_matches[0].transport_socket.name == "envoy.transport_sockets.tls"
    assert _proxy_of(cluster.load_assignment.endpoints[0]) is None


def test_a_services_pods_and_a_socket_path_are_reached_directly():
    """A Kubernetes Service's pods are inside the cluster; a socket path cannot be tunnelled (warned).
    Their localities name no proxy, while the other backend of the same rule's does."""
    socket_backend = backend("sock", 0).replace("ip: {address: 127.0.0.1, port: 0}", "unix: {path: /run/llm.sock}")
    text = _config(
        route("r", {"gpt": [("llm", 0, 1), ("openai", 1, 1), ("sock", 2, 1)]}),
        service_backend(),
        service(),
        endpoint_slice("s", [("10.1.0.1", True)]),
        TLS_BACKEND,
        socket_backend,
    )
    result, fleet = _fleet(text)
    [warning] = [d for d in result.diagnostics if "forwardProxy" in d.message]
    assert warning.resource.name == "sock" and "is a socket path: reached directly" in warning.message
    cluster = fleet.messages(type_urls.CLUSTER)["default/r/rule/0"]
    localities = cluster.load_assignment.endpoints
    assert [_proxy_of(locality) for locality in localities] == [None, ("10.0.0.9", 3128), None]


def test_a_backend_of_several_endpoints_is_warned_that_the_proxy_is_asked_for_one_name():
    two = backend("a", 9001).replace(
        "    - ip: {address: 127.0.0.1, port: 9001}",
        "    - ip: {address: 10.0.0.1, port: 9001}\n    - ip: {address: 10.0.0.2, port: 9001}",
    )
    result, _ = _fleet(_config(route("r", {"m": "a"}), two, api_key("a")))
    [warning] = [d for d in result.diagnostics if "forwardProxy" in d.message]
    assert warning.resource.name == "a" and warning.field == "spec.endpoints"
    assert "asked of the proxy as 10.0.0.1" in warning.message and "not as 10.0.0.2" in warning.message


def test_a_tls_hostname_other_than_the_endpoint_is_warned_that_the_proxy_is_asked_for_it():
    """A PrivateLink endpoint under the provider's TLS name: Envoy's CONNECT names the TLS name (the
    Host), so the proxy, not the Backend, decides where the requests go."""
    vpce = TLS_BACKEND.replace("hostname: api.openai.com, port: 443", "hostname: vpce-0abc.openai.example, port: 443")
    result, _ = _fleet(_config(route("r", {"m": "openai"}), vpce))
    [warning] = [d for d in result.diagnostics if "forwardProxy" in d.message]
    assert "asked of the proxy as api.openai.com" in warning.message
    assert "not as vpce-0abc.openai.example" in warning.message
    result, _ = _fleet(_config(route("r", {"m": "openai"}), TLS_BACKEND))  # the same name: nothing to say
    assert [d for d in result.diagnostics if "forwardProxy" in d.message] == []

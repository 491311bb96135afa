"""What a backend request carries (backends.backend_headers, backend_url): pure functions."""

from __future__ import annotations

from multidict import CIMultiDict

from aigw.translator.v1 import config_pb2
from aigw_translator.mcp.backends import ClientHeaders, backend_headers, backend_url
from aigw_translator.mcp.sessions import BackendSession

CLIENT = ClientHeaders(
    CIMultiDict(
        {
            "Authorization": "Bearer client-token",
            "Cookie": "c=1",
            "X-User": "alice",
            "X-Tenant": "t1",
            "Mcp-Session-Id": "client-session",
        }
    )
)
SESSION = BackendSession("b", "backend-session", "2025-06-18", frozenset())


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_only_named_headers_are_forwarded_and_renamed() -> None:
    backend = config_pb2.MCPBackend(
        name="b",
        forward_headers=[
            config_pb2.MCPForwardHeader(name="x-user"),
            config_pb2.MCPForwardHeader(name="X-Tenant", backend_header="X-Org"),
            config_pb2.MCPForwardHeader(name="x-absent"),
        ],
    )
    headers = _lower(backend_headers(backend, CLIENT, SESSION))
    assert headers == {
        "x-user": "alice",
        "x-org": "t1",
        "x-aigw-mcp-hop": "1",  # the proxy refuses a request of its own
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-session-id": "backend-session",
        "mcp-protocol-version": "2025-06-18",
    }


def test_default_api_key_is_a_bearer_token_and_wins_over_a_forwarded_authorization() -> None:
    backend = config_pb2.MCPBackend(
        name="b",
        api_key=config_pb2.MCPAPIKey(key="k1"),
        forward_headers=[config_pb2.MCPForwardHeader(name="Authorization")],
    )
    assert _lower(backend_headers(backend, CLIENT, None))["authorization"] == "Bearer k1"


def test_api_key_in_a_named_header_is_the_raw_key() -> None:
    backend = config_pb2.MCPBackend(name="b", api_key=config_pb2.MCPAPIKey(key="k2", header="x-api-key"))
    headers = _lower(backend_headers(backend, CLIENT, None))
    assert headers["x-api-key"] == "k2"
    assert "authorization" not in headers


def test_api_key_as_query_parameter() -> None:
    backend = config_pb2.MCPBackend(
        name="b", url="http://h:1/mcp?x=1", api_key=config_pb2.MCPAPIKey(key="k 3", query_param="key")
    )
    assert str(backend_url(backend)) == "http://h:1/mcp?x=1&key=k+3"
    assert "authorization" not in _lower(backend_headers(backend, CLIENT, None))


def test_a_stateless_backend_gets_no_session_header() -> None:
    stateless = BackendSession("b", "", "2025-06-18", frozenset())
    assert "mcp-session-id" not in _lower(backend_headers(config_pb2.MCPBackend(name="b"), CLIENT, stateless))


def test_headers_the_proxy_adds_win_and_no_client_header_takes_their_names() -> None:
    """x-client-id stands in for the header the proxy sends the client's id in: a backend forwarding
    a client header under that name gets the proxy's value, or nothing when it has none."""
    backend = config_pb2.MCPBackend(
        name="b",
        forward_headers=[
            config_pb2.MCPForwardHeader(name="x-user", backend_header="x-client-id"),
            config_pb2.MCPForwardHeader(name="x-tenant", backend_header="X-Claim-Org"),
        ],
    )
    added = ClientHeaders(CLIENT.forwardable, {"x-client-id": "client-1"}, frozenset({"x-client-id", "x-claim-org"}))
    headers = _lower(backend_headers(backend, added, None))
    assert headers["x-client-id"] == "client-1"
    assert "x-claim-org" not in headers and "t1" not in headers.values()


def test_no_gateway_header_reaches_a_backend_whatever_names_it() -> None:
    """A backend that is the MCP proxy itself would take them for Envoy's (fleet, route, verified
    token); and every request carries the hop mark the proxy refuses."""
    backend = config_pb2.MCPBackend(
        name="b",
        forward_headers=[
            config_pb2.MCPForwardHeader(name="x-user", backend_header="x-aigw-mcp-route"),
            config_pb2.MCPForwardHeader(name="x-aigw-jwt-payload"),
        ],
    )
    client = ClientHeaders(CIMultiDict({"x-user": "alice", "x-aigw-jwt-payload": "e30"}), {"x-aigw-mcp-fleet": "f"})
    headers = _lower(backend_headers(backend, client, None))
    assert [name for name in headers if name.startswith("x-aigw-")] == ["x-aigw-mcp-hop"]

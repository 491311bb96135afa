"""An MCPRoute's securityPolicy.extAuth through a real Envoy fed by the control plane: Envoy asks an
external authorization service whether each request may pass, over gRPC (Envoy's Authorization
service) or HTTP. The service is the fakes' ExtAuthzFake, a stand-in for a real one (OPA, Authorino,
an in-house service): it allows a request whose x-access-control header holds its value. The MCP
server is the official SDK's MCPServer on uvicorn (a stand-in for a real one), the client the
official SDK's."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer

import aigw_contract as contract
from aigw_fakes import ExtAuthzFake, OIDCIssuerFake
from aigw_fakes.ext_authz import ACCESS_HEADER, DENIED_BODY, USER_HEADER
from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.e2e.translator.test_mcp_envoy import mcp_route
from tests.e2e.translator.test_mcp_security_envoy import HELLO, call_tool, initialize
from tests.translator.mcp.servers import served


def whoami_server() -> MCPServer:
    server = MCPServer("notes")

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The user the authorization service named (the header the route passes on)."""
        request = ctx.request_context.request
        assert request is not None
        return request.headers.get(USER_HEADER, "nobody")

    return server


def _documents(mcp_port: int, auth_port: int, ext_auth: str, security: str = "") -> str:
    """The MCPRoute `tools` to one MCP server (passing it the service's user header), protected by
    `ext_auth` (the extAuth's fields) and `security` (more securityPolicy fields); the service a
    Backend `authz` at `auth_port`."""
    authz = f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: authz, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {auth_port}}}}}]}}
"""
    return mcp_route(mcp_port, "notes", f"{security}\n    extAuth:{ext_auth}", authz, (USER_HEADER,))


GRPC = """
      grpc:
        backendRef: {name: authz, kind: Backend, group: gateway.envoyproxy.io}
      includeRouteMetadata: true
      contextExtensions: [{name: tenant, value: acme}]"""
HTTP = f"""
      http:
        backendRef: {{name: authz, kind: Backend, group: gateway.envoyproxy.io}}
        path: /check
        headersToBackend: [{USER_HEADER}]
      headersToExtAuth: [{ACCESS_HEADER}]
      bodyToExtAuth: {{maxRequestBytes: 8192}}"""


@asynccontextmanager
async def _gateway(
    ext_auth: str, grpc: bool = True, security: str = "", auth_port: int | None = None
) -> AsyncIterator[tuple[Gateway, ExtAuthzFake]]:
    """`auth_port`: where the route says the service is (default: the fake's port)."""
    with ExtAuthzFake(grpc=grpc) as authz:
        async with served(whoami_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            documents = _documents(port, authz.port if auth_port is None else auth_port, ext_auth, security)
            async with run_gateway(documents, mcp_proxy=True) as gw:
                yield gw, authz


async def _whoami(gw: Gateway, access: str, more: dict[str, str] | None = None) -> str:
    """The SDK's session with the access header (and `more`), and the answer of its whoami call."""
    async with (
        httpx2.AsyncClient(timeout=30, headers={ACCESS_HEADER: access, **(more or {})}) as http,
        streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("notes__whoami", {})
    assert not result.is_error, result
    return result.content[0].text  # type: ignore[union-attr]


async def _call_whoami(gw: Gateway, headers: dict[str, str]) -> httpx2.Response:
    """initialize, initialized, then tools/call notes__whoami, each with `headers`."""
    return await call_tool(gw, "notes__whoami", list(headers.items()), {})


@pytest.mark.parametrize("grpc", [True, False], ids=["grpc", "http"])
async def test_the_service_lets_an_allowed_client_through_and_refuses_the_others(grpc: bool) -> None:
    """An allowed client's session works end to end, the service's user header reaching the MCP
    server; a client the service refuses gets its 403 and its body, and never reaches the proxy."""
    async with _gateway(GRPC if grpc else HTTP, grpc=grpc) as (gw, authz):
        user = await _whoami(gw, "letmein")
        refused = await initialize(gw, headers={ACCESS_HEADER: "guess"})
        unnamed = await initialize(gw)
    assert user == "letmein"
    assert refused.status_code == 403 and refused.text == DENIED_BODY
    assert unnamed.status_code == 403
    # Every request of the session was checked: initialize, initialized, tools/list and tools/call.
    allowed = [c for c in authz.checks if c.headers.get(ACCESS_HEADER) == "letmein"]
    assert len(allowed) >= 3 and "POST" in {c.method for c in allowed}
    assert len(authz.checks) == len(allowed) + 2


async def test_a_grpc_service_is_sent_the_context_extensions_and_the_route() -> None:
    async with _gateway(GRPC) as (gw, authz):
        assert (await initialize(gw, headers={ACCESS_HEADER: "letmein"})).status_code == 200
    check = authz.checks[0]
    assert check.path == "/mcp" and check.method == "POST"
    assert check.context_extensions == {"tenant": "acme"}
    resources = check.route_metadata["envoy-gateway"]["resources"]
    assert resources == [{"kind": "MCPRoute", "namespace": "default", "name": "tools"}]


async def test_an_http_service_is_sent_the_path_below_its_own_the_headers_named_and_the_body() -> None:
    async with _gateway(HTTP, grpc=False) as (gw, authz):
        answer = await initialize(gw, headers={ACCESS_HEADER: "letmein", "x-other": "not sent"})
    assert answer.status_code == 200
    check = authz.checks[0]
    assert check.path == "/check/mcp"
    assert check.headers[ACCESS_HEADER] == "letmein" and "x-other" not in check.headers
    assert json.loads(check.body)["method"] == "initialize"


async def test_a_service_that_does_not_answer_fails_closed_with_status_on_error() -> None:
    """The route names a port where nothing listens: statusOnError, with a JSON-RPC error an MCP
    client reads; failOpen lets the request through instead."""
    closed = GRPC + "\n      statusOnError: 503"
    async with _gateway(closed, auth_port=9) as (gw, _):
        answer = await initialize(gw, headers={ACCESS_HEADER: "letmein"})
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].startswith("the gateway's authorization service could not decide")
    async with _gateway(GRPC + "\n      failOpen: true", auth_port=9) as (gw, _):
        opened = await initialize(gw, headers={ACCESS_HEADER: "letmein"})
    assert opened.status_code == 200 and opened.json()["result"]["serverInfo"]


async def test_the_service_cannot_set_the_claims_envoy_verified() -> None:
    """OAuth first, then the service: a service answering with the gateway's payload header (a
    forged subject) does not change the claims the authorization rules read."""
    only_admin = """
    authorization:
      rules: [{source: {jwt: {claims: [{name: sub, values: [admin]}]}}}]"""
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "admin"}).encode()).rstrip(b"=").decode()
    with OIDCIssuerFake(subject="mallory") as issuer:
        resource = "http://127.0.0.1/mcp"
        oauth = f"""
    oauth:
      issuer: {issuer.issuer}
      audiences: [{resource}]
      jwks: {{remoteJWKS: {{uri: {issuer.issuer}/jwks}}}}
      protectedResourceMetadata: {{resource: {resource}}}{only_admin}"""
        async with _gateway(GRPC, security=oauth) as (gw, authz):
            authz.set_headers = {contract.MCP_JWT_PAYLOAD_HEADER: forged}
            headers = {ACCESS_HEADER: "letmein", "authorization": f"Bearer {issuer.issue(resource)}"}
            called = await _call_whoami(gw, headers)
            async with httpx2.AsyncClient(timeout=30) as http:
                metadata = await http.get(f"{gw.url}/.well-known/oauth-protected-resource/mcp")
    assert called.status_code == 403 and "access denied" in called.json()["error"]["message"]
    # The service was asked after the token was checked, and saw the claims Envoy verified.
    payload = authz.checks[0].headers[contract.MCP_JWT_PAYLOAD_HEADER]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == "mallory"
    # The metadata a client reads before it signs in is not the service's to refuse.
    assert metadata.status_code == 200


async def test_an_http_service_with_path_override_is_asked_at_that_path_alone() -> None:
    """pathOverride (Envoy's HttpService.path_override, written as its field: see xds/ext_authz.py)."""
    async with _gateway(HTTP.replace("path: /check", "pathOverride: /authorize"), grpc=False) as (gw, authz):
        answer = await initialize(gw, headers={ACCESS_HEADER: "letmein"})
    assert answer.status_code == 200
    assert authz.checks[0].path == "/authorize"


async def test_the_headers_an_http_service_sets_are_never_the_clients() -> None:
    """A client's own value of a headersToBackend header is removed before the check: the service's
    reaches the MCP server; with failOpen and the service down, none does (not the client's)."""
    async with _gateway(HTTP, grpc=False) as (gw, _):
        answered = await _whoami(gw, "letmein", {USER_HEADER: "spoofed-admin"})
    async with _gateway(HTTP + "\n      failOpen: true", grpc=False, auth_port=9) as (gw, _):
        unchecked = await _whoami(gw, "letmein", {USER_HEADER: "spoofed-admin"})
    assert answered == "letmein"
    assert unchecked == "nobody"


async def test_a_body_over_what_the_service_may_be_sent_is_a_json_rpc_error() -> None:
    async with _gateway(HTTP, grpc=False) as (gw, authz):
        big = {**HELLO, "clientInfo": {"name": "x" * 10_000, "version": "1"}}
        async with httpx2.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"{gw.url}/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": big},
                headers={ACCESS_HEADER: "letmein", "accept": "application/json, text/event-stream"},
            )
    assert answer.status_code == 413 and not authz.checks
    assert (
        answer.json()["error"]["message"]
        == "the request is larger than the gateway's authorization service may be sent"
    )


REROUTED = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: gate, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  backendRefs: [{{name: notes, kind: Backend, group: gateway.envoyproxy.io}}]
  securityPolicy:
    extAuth:
      grpc: {{backendRef: {{name: gate-authz, kind: Backend, group: gateway.envoyproxy.io}}}}
      recomputeRoute: true
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: vip, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  headers: [{{name: x-tier, value: vip}}]
  backendRefs: [{{name: vipnotes, kind: Backend, group: gateway.envoyproxy.io}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: notes, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {mcp}}}}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: vipnotes, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {mcp}}}}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: gate-authz, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {gate}}}}}]}}
"""


async def test_recompute_route_sends_a_request_where_the_services_headers_match() -> None:
    """The gate's service sets the header another route matches: the request is routed again, to
    that route's MCP server (its tools are the ones listed)."""
    with ExtAuthzFake() as gate:
        gate.set_headers = {"x-tier": "vip"}
        async with served(whoami_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with (
                run_gateway(REROUTED.format(mcp=port, gate=gate.port), mcp_proxy=True) as gw,
                httpx2.AsyncClient(timeout=30, headers={ACCESS_HEADER: "letmein"}) as http,
                streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                tools = [tool.name for tool in (await session.list_tools()).tools]
    assert tools == ["vipnotes__whoami"] and gate.checks

"""MCPRoutes through a real Envoy fed by the control plane, with the in-process translator's MCP
proxy: what Envoy itself does on the MCP route. The MCP servers are made with the official SDK's
MCPServer (served by uvicorn in the test process, stand-ins for real MCP servers); clients are the
official SDK's, or plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from tests.e2e.harness.gateway import run_gateway
from tests.translator.mcp.servers import served

# Over the listener's 50 MiB buffer limit, which a filter buffering the answer would hit (a 500).
BIG_KB = 55 * 1024


def mcp_route(
    port: int, backend: str = "big", security: str = "", more: str = "", forward_headers: tuple[str, ...] = ()
) -> str:
    """The MCPRoute `tools` of the Gateway to one MCP server, the Backend `backend` at 127.0.0.1:port
    (passed the client headers `forward_headers`); `security`: its securityPolicy's fields (YAML,
    indented under it; none when empty); `more`: documents after it."""
    policy = f"\n  securityPolicy:{security}" if security else ""
    names = ", ".join(f"{{name: {name}}}" for name in forward_headers)
    forward = f", forwardHeaders: [{names}]" if forward_headers else ""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: tools, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  backendRefs:
    - {{name: {backend}, kind: Backend, group: gateway.envoyproxy.io{forward}}}{policy}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {backend}, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]}}
{more}"""


def _server() -> MCPServer:
    server = MCPServer("big")

    @server.tool()
    def blob(kb: int) -> str:
        """That many KiB of text."""
        return "x" * (kb * 1024)

    return server


async def test_a_tool_answer_larger_than_envoys_buffers_reaches_the_client() -> None:
    """No filter of the listener buffers an MCP answer (its body filters are off on the route)."""
    async with served(_server().streamable_http_app(json_response=True)) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with (
            run_gateway(mcp_route(port), mcp_proxy=True) as gw,
            httpx2.AsyncClient(timeout=120) as http,
            streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("big__blob", {"kb": BIG_KB})
    assert not result.is_error and len(result.content[0].text) == BIG_KB * 1024  # type: ignore[union-attr]


async def test_an_mcp_proxy_envoy_cannot_reach_answers_in_json_rpc() -> None:
    """A sidecar started without --mcp-listen: Envoy's own 503, in the shape an MCP client reads."""
    async with served(_server().streamable_http_app(json_response=True)) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with run_gateway(mcp_route(port), mcp_proxy=False) as gw:
            hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}).encode()
            request = urllib.request.Request(
                f"{gw.url}/mcp",
                data=body,
                headers={"content-type": "application/json", "accept": "application/json, text/event-stream"},
            )
            try:
                urllib.request.urlopen(request, timeout=30)
                raise AssertionError("answered without its MCP proxy")
            except urllib.error.HTTPError as error:
                status, answer = error.code, json.loads(error.read())
    assert status == 503
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None and answer["error"]["code"] == -32603
    assert answer["error"]["message"].startswith("the gateway's MCP proxy did not answer: ")


async def test_an_mcp_route_is_served_on_a_listener_whose_routes_are_in_scopes() -> None:
    """A listener with many models has its routes in scopes, chosen by a model an MCP request does
    not have: the MCP route is in every scope."""
    async with served(_server().streamable_http_app(json_response=True)) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with (
            run_gateway(mcp_route(port), mcp_proxy=True, route_scopes_from=0) as gw,
            httpx2.AsyncClient(timeout=30) as http,
            streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            scoped = gw.envoy.admin("/config_dump", timeout=10)
            await session.initialize()
            result = await session.call_tool("big__blob", {"kb": 1})
    assert "ScopedRoutesConfigDump" in scoped and "scoped_routes" in scoped and "/mcp/default/tools" in scoped
    assert len(result.content[0].text) == 1024  # type: ignore[union-attr]

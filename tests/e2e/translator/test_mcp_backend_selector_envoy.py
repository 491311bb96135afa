"""An MCPRoute's backendSelector through a real Envoy fed by the control plane: which of the route's
MCP servers a client's session joins, chosen when it initializes by Envoy AI Gateway's documented
example (a header listing the backends). The MCP servers are the official SDK's MCPServer on
uvicorn (stand-ins for real ones); the client is the official SDK's, or plain HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from aigw_xds.sources.files import FileSource
from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.translator.mcp.servers import alpha_server, beta_server, served

SUBSET_HEADER = "x-ai-eg-mcp-backend-subset"
# Envoy AI Gateway's example of a backendSelector rule (its API reference).
BY_HEADER = f'("," + request.headers["{SUBSET_HEADER}"] + ",").contains("," + request.mcp.backend + ",")'


def _route(alpha_port: int, beta_port: int, cel: str) -> str:
    backends = "".join(
        f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]}}"""
        for name, port in (("alpha", alpha_port), ("beta", beta_port))
    )
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: tools, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  backendRefs:
    - {{name: alpha, kind: Backend, group: gateway.envoyproxy.io}}
    - {{name: beta, kind: Backend, group: gateway.envoyproxy.io}}
  backendSelector:
    rules: [{{cel: {json.dumps(cel)}}}]
{backends}"""


@asynccontextmanager
async def _gateway(cel: str = BY_HEADER) -> AsyncIterator[Gateway]:
    async with (
        served(alpha_server().streamable_http_app(json_response=True)) as alpha,
        served(beta_server().streamable_http_app(json_response=True)) as beta,
    ):
        ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for url in (alpha, beta)]
        async with run_gateway(_route(*ports, cel), mcp_proxy=True) as gw:
            yield gw


@asynccontextmanager
async def _session(gw: Gateway, subset: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=30, headers={SUBSET_HEADER: subset}) as http,
        streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _initialize(gw: Gateway, subset: str) -> httpx2.Response:
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{gw.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
            headers={"accept": "application/json, text/event-stream", SUBSET_HEADER: subset},
        )


async def test_a_session_joins_the_backends_the_selector_chose_for_its_client() -> None:
    """The SDK client naming beta alone sees beta's tools alone and cannot call alpha's; naming both,
    it sees both servers' tools."""
    async with _gateway() as gw:
        async with _session(gw, "beta") as session:
            listed = sorted(tool.name for tool in (await session.list_tools()).tools)
            found = await session.call_tool("beta__search", {"query": "q"})
            with pytest.raises(MCPError) as refused:
                await session.call_tool("alpha__add", {"a": 1, "b": 2})
        async with _session(gw, "alpha,beta") as session:
            both = sorted(tool.name for tool in (await session.list_tools()).tools)
            added = await session.call_tool("alpha__add", {"a": 1, "b": 2})
    assert listed and all(name.startswith("beta__") for name in listed), listed
    assert found.content[0].text == "beta found:q"  # type: ignore[union-attr]
    assert "backend alpha is not in this session (not selected by the backendSelector" in str(refused.value)
    assert any(n.startswith("alpha__") for n in both) and any(n.startswith("beta__") for n in both), both
    assert added.content[0].text == "alpha:3"  # type: ignore[union-attr]


async def test_a_client_the_selector_gives_no_backend_is_refused_at_initialize() -> None:
    async with _gateway() as gw:
        refused = await _initialize(gw, "gamma")
        chosen = await _initialize(gw, "alpha")
    assert refused.status_code == 403, refused.text
    answer = refused.json()
    assert answer["id"] == 1 and answer["error"]["message"].startswith("access denied: the backendSelector selects")
    assert "mcp-session-id" not in refused.headers
    assert chosen.status_code == 200 and chosen.headers["mcp-session-id"], chosen.text


async def test_a_selector_edited_ends_the_sessions_it_chose_and_clients_start_again() -> None:
    """Sessions are bound to the selector that chose their backends: after an edit, one opened before
    is a 404 (the transport's "initialize again"), and a new session is chosen by the new rules."""
    async with _gateway() as gw:
        opened = await _initialize(gw, "alpha")
        token = opened.headers["mcp-session-id"]
        source = gw.plane.source
        assert isinstance(source, FileSource)
        config = source.path / "gateway.yaml"
        assert json.dumps(BY_HEADER) in config.read_text()
        beta_only = json.dumps('request.mcp.backend == "beta"')
        config.write_text(config.read_text().replace(json.dumps(BY_HEADER), beta_only))
        await gw.plane.read_again()
        async with httpx2.AsyncClient(timeout=30) as http:
            listed = await http.post(
                f"{gw.url}/mcp",
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream", "mcp-session-id": token},
            )
        async with _session(gw, "alpha") as session:
            now = sorted(tool.name for tool in (await session.list_tools()).tools)
    assert listed.status_code == 404 and "initialize a new one" in listed.text, listed.text
    assert now and all(name.startswith("beta__") for name in now), now

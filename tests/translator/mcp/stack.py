"""The proxy's test stack: two SDK MCP servers (servers.py) behind McpProxy on loopback ephemeral
ports, the configuration it reads, and clients of it (the official SDK's, or raw HTTP). The fleet
and route headers the clients set stand in for what Envoy sets on every request it sends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.mcp import McpProxy

from .servers import ALPHA_KEY, BETA_KEY, Recorder

FLEET = "ns/gw"
ROUTE = "ns/tools"


@dataclass
class Stack:
    """The backends, the proxy and the configuration it reads (replaceable mid-test, as a
    control-plane push replaces it)."""

    alpha: Recorder
    beta: Recorder
    alpha_url: str
    beta_url: str
    port: int
    proxy: McpProxy
    configs: dict[str, config_pb2.TranslatorConfig] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def alpha_backend(self, **overrides: Any) -> config_pb2.MCPBackend:
        fields: dict[str, Any] = {
            "name": "alpha",
            "url": self.alpha_url,
            "api_key": config_pb2.MCPAPIKey(key=ALPHA_KEY),
            "tool_selector": config_pb2.MCPToolSelector(exclude_regex=["internal_.*"]),
        }
        return config_pb2.MCPBackend(**{**fields, **overrides})

    def beta_backend(self, **overrides: Any) -> config_pb2.MCPBackend:
        fields: dict[str, Any] = {
            "name": "beta",
            "url": self.beta_url,
            "api_key": config_pb2.MCPAPIKey(key=BETA_KEY, header="x-api-key"),
            "tool_selector": config_pb2.MCPToolSelector(include=["search"]),
            "forward_headers": [config_pb2.MCPForwardHeader(name="x-user", backend_header="x-beta-user")],
        }
        return config_pb2.MCPBackend(**{**fields, **overrides})

    def use(self, *routes: config_pb2.MCPRoute, session_key: bytes = b"session-key") -> None:
        """The configuration as the control plane makes it: its session key from its own secret."""
        self.configs[FLEET] = config_pb2.TranslatorConfig(
            name=FLEET, seal_key=b"fleet-key", mcp_session_key=session_key, mcp_routes=list(routes)
        )

    def use_backends(self, *backends: config_pb2.MCPBackend) -> None:
        self.use(config_pb2.MCPRoute(name=ROUTE, backends=list(backends)))


@contextlib.asynccontextmanager
async def mcp_client(
    stack: Stack, route: str = ROUTE, headers: dict[str, str] | None = None, initialize: bool = True
) -> AsyncIterator[ClientSession]:
    """An SDK client session through the proxy (initialized unless told not to)."""
    routing = {contract.MCP_FLEET_HEADER: FLEET, contract.MCP_ROUTE_HEADER: route, **(headers or {})}
    async with (
        httpx2.AsyncClient(headers=routing) as http,
        streamable_http_client(stack.url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        if initialize:
            await session.initialize()
        yield session


# --- Raw HTTP ------------------------------------------------------------------------------------


def raw_headers(
    route: str = ROUTE, session: str | None = None, fleet: str = FLEET, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers of a raw request to the proxy (with `extra`'s)."""
    headers = {
        contract.MCP_FLEET_HEADER: fleet,
        contract.MCP_ROUTE_HEADER: route,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    if session is not None:
        headers["Mcp-Session-Id"] = session
    return {**headers, **(extra or {})}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


async def initialize(
    http: aiohttp.ClientSession, stack: Stack, route: str = ROUTE, extra: Mapping[str, str] | None = None
) -> str:
    """A session initialized with raw HTTP: its id."""
    async with http.post(stack.url, json=INITIALIZE, headers=raw_headers(route, extra=extra)) as response:
        assert response.status == 200
        body = await response.json()
        assert body["result"]["protocolVersion"] == "2025-06-18"
        return response.headers["Mcp-Session-Id"]

"""The MCP proxy: one Streamable HTTP MCP server per MCPRoute, made of the route's backends (MCP
servers), each tool and prompt named "<backend>__<name>". Envoy sends it what an MCPRoute matches,
naming the fleet and the route in request headers; sessions live in the session id itself (sealed
with the fleet's mcp_session_key), so any translator process of the fleet answers any request."""

from .proxy import McpProxy

__all__ = ["McpProxy"]

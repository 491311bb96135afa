"""The Bearer challenges (RFC 6750 §3, RFC 9728 §5.1) an MCP client reads on an MCPRoute whose
clients sign in: those of Envoy's own 401s (the control plane writes them into its local replies)
and those of the MCP proxy's 401s and 403s."""

from __future__ import annotations

# What a challenge says of a token that is missing or refused, and of one short of scopes.
INVALID_TOKEN = "The access token is missing or invalid"
MISSING_SCOPES = "The token is missing required scopes"


def challenge(*params: tuple[str, str]) -> str:
    """A WWW-Authenticate Bearer challenge of the params that have a value, in order."""
    return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in params if value)


def _quoted(value: str) -> str:
    cleaned = "".join(c for c in value if c.isprintable())
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'

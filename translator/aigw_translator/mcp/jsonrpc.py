"""JSON-RPC 2.0 messages as the MCP proxy reads and writes them: plain dicts, classified and built
here (the proxy forwards most of what it gets unchanged, so it never models them further)."""

from __future__ import annotations

import json
from typing import Any, Literal

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP's: the MCP-Protocol-Version a request carries is not one the server speaks.
UNSUPPORTED_PROTOCOL_VERSION = -32022
# The gateway's (in JSON-RPC's range for implementations): a client the route's security policy
# refuses, unauthenticated (HTTP 401) or not allowed what it asks (HTTP 403).
ACCESS_DENIED = -32001

Kind = Literal["request", "notification", "response", "invalid"]

Message = dict[str, Any]


def kind(message: object) -> Kind:
    """What a decoded JSON value is as a JSON-RPC message."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return "invalid"
    has_id = "id" in message and isinstance(message["id"], str | int) and not isinstance(message["id"], bool)
    if isinstance(message.get("method"), str):
        if "id" not in message:
            return "notification"
        return "request" if has_id else "invalid"
    if has_id and ("result" in message or "error" in message):
        return "response"
    return "invalid"


def params_of(message: Message) -> dict[str, Any]:
    """A request's params object ({} when absent or not an object)."""
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def result(request_id: object, value: Any) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: object, code: int, message: str, data: Any = None) -> Message:
    """An error response; request_id None for a message whose id is unknown."""
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def request(request_id: object, method: str, params: dict[str, Any] | None = None) -> Message:
    message: Message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> Message:
    message: Message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(body: bytes) -> object:
    """The JSON value of a body (a UTF-8 BOM and surrounding whitespace allowed); raises ValueError."""
    return json.loads(body.removeprefix(b"\xef\xbb\xbf").strip() or b"null")

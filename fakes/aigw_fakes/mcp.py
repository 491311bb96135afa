"""A stand-in for an MCP server (not any real one): an aiohttp server on loopback speaking the
Model Context Protocol over the Streamable HTTP transport at ``/mcp`` (spec 2025-06-18; clients of
2025-03-26 and 2025-11-25 are served at their own version), for the gateway's MCPRoute tests and
examples.

It accepts what the official SDK client sends and refuses what the official Python SDK's server
(``mcp`` 2.3.0, stateful, JSON responses) refuses, with the same HTTP status and JSON-RPC error
body ``{"jsonrpc": "2.0", "id": null, "error": {"code", "message"}}``:

* a configured key missing or wrong: 401 ``{"error": "invalid_token", "error_description"}`` (the
  SDK's bearer-auth answer), checked where the MCPRoute's ``securityPolicy.apiKey`` puts it:
  ``Authorization: Bearer <key>`` by default (and for a header named Authorization), the raw key
  in another named header (``key_header``), or a query parameter (``key_query_param``);
* an ``MCP-Protocol-Version`` header naming a version it does not serve: 400, code -32022 with
  ``data: {"supported", "requested"}`` (the SDK server's code for a version it refuses, and what
  the SDK client's ``server/discover`` probe reads to fall back to ``initialize``);
* an ``Mcp-Session-Id`` it did not issue, or ended: 404 -32600 "Session not found";
* a method other than GET, POST and DELETE: 405 with ``Allow: GET, POST, DELETE``;
* POST without an Accept that admits both application/json and text/event-stream (``*/*``,
  ``application/*``, ``text/*`` count): 406; a Content-Type other than application/json: 415;
  a body that is not JSON: 400 -32700; JSON that is not one JSON-RPC message (a batch included):
  400 -32602; anything but ``initialize`` without a session: 400 -32600 "Bad Request: Missing
  session ID";
* GET without text/event-stream in Accept: 406; without a session: 400; a second GET stream of a
  session while one is open: 409. A GET with a session opens the session's server-to-client SSE
  stream, as the SDK server does (the fake sends nothing on it); it ends with the session;
* DELETE without a session: 400; with one: 200, and the session is gone (404 from then on).

Sessions are issued at ``initialize`` (the answer's ``Mcp-Session-Id``); the version is the
client's when served, else 2025-06-18. Notifications and responses get 202. Requests get a JSON
answer, or an SSE stream (``event: message``) when the request says ``x-fake-mcp-sse: 1`` or calls
``slow_count`` with ``params._meta.progressToken`` (its ``notifications/progress`` go first); the
fault headers of ``common`` (``x-fake-stream-*``) apply to those streams. Methods: ``initialize``,
``ping``, ``tools/list`` (pages of ``page_size`` tools with ``nextCursor`` when constructed with
one; a cursor it did not issue: -32602), ``tools/call``, ``prompts/list``, ``prompts/get``,
``resources/list``, ``resources/templates/list`` (none), ``resources/read``, ``logging/setLevel``;
any other: -32601. Spec methods with malformed params: -32602. Tools:

    echo {text: string}           the text
    add {a: number, b: number}    the sum as text, and structuredContent {"sum": ...}
    slow_count {n: 0..10}         "counted to n", after n progress notifications when asked
    whoami {}                     the instance name (which backend answered)

A call naming no such tool, or with arguments its inputSchema refuses, is a result with
``isError: true`` (as the SDK server answers), not a JSON-RPC error. The prompt ``greeting``
{name} (missing or non-string arguments, an unknown prompt: -32602, the spec's code where the SDK
server sends 0) and the resource ``fake://info`` (JSON: the instance name, the session's protocol
version and log level, so a test can tell which backend answered and whether
``logging/setLevel`` reached it; another URI: -32602 with ``data.uri``, as the SDK) are there
too. A 2025-03-26 session does not see the fields later revisions added (``title``,
``outputSchema``, ``structuredContent``).

    with McpFake(api_key="k", key_header="x-api-key", page_size=2, name="github") as fake:
        url = fake.url            # http://127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .common import JSON_BODY, FakeProvider, SSEWriter, is_int, is_num

PATH = "/mcp"
# The revisions the fake serves, and the one it answers a client asking for another.
PROTOCOL_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
DEFAULT_PROTOCOL_VERSION = "2025-06-18"
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
# A request header asking for an SSE answer to a request that would get JSON.
SSE_HEADER = "x-fake-mcp-sse"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# How long slow_count takes per count.
COUNT_STEP_SECONDS = 0.01
# What 2025-03-26 did not have yet (2025-06-18 added them).
LATER_FIELDS = ("title", "outputSchema", "structuredContent")

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "echo",
        "title": "Echo",
        "description": "Returns the text it is given.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The text to return."}},
            "required": ["text"],
        },
    },
    {
        "name": "add",
        "title": "Add",
        "description": "Adds two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
        "outputSchema": {"type": "object", "properties": {"sum": {"type": "number"}}, "required": ["sum"]},
    },
    {
        "name": "slow_count",
        "title": "Slow count",
        "description": "Counts to n, reporting each count as progress when the call asks for progress.",
        "inputSchema": {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10}},
            "required": ["n"],
        },
    },
    {
        "name": "whoami",
        "title": "Who am I",
        "description": "Names the server instance that answers.",
        "inputSchema": {"type": "object", "properties": {}},
    },
)
PROMPTS: tuple[dict[str, Any], ...] = (
    {
        "name": "greeting",
        "title": "Greeting",
        "description": "Asks for a greeting for someone.",
        "arguments": [{"name": "name", "description": "Who to greet.", "required": True}],
    },
)
INFO_URI = "fake://info"
RESOURCES: tuple[dict[str, Any], ...] = (
    {
        "uri": INFO_URI,
        "name": "info",
        "title": "Fake server info",
        "description": "Which fake MCP server this is, and the session's protocol version and log level.",
        "mimeType": "application/json",
    },
)

Progress = Callable[[int, int, str], Awaitable[None]]


class RpcError(Exception):
    """A JSON-RPC error the fake answers a request with."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _invalid_params() -> RpcError:
    """The SDK server's answer to a spec method's params that fail its schema."""
    return RpcError(INVALID_PARAMS, "Invalid request parameters", "")


@dataclass
class Session:
    """One session the fake issued: its protocol version, log level and GET stream."""

    id: str
    protocol_version: str
    log_level: str = "info"
    get_stream_open: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Message:
    """A POST body that is one JSON-RPC message: a request (with an id), else a notification or
    a response (``method`` None)."""

    id: str | int | None
    method: str | None
    params: dict[str, Any]

    @property
    def is_request(self) -> bool:
        return self.id is not None and self.method is not None


def parse_message(body: Any) -> Message | None:
    """The JSON-RPC message `body` is, or None when it is none (what the SDK server parses: a
    request's id is a string or an integer; a message with another id is a notification)."""
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        return None
    msg_id = body.get("id")
    if "method" in body:
        params = body.get("params")
        if not isinstance(body["method"], str) or not isinstance(params, dict | None):
            return None
        request_id = msg_id if isinstance(msg_id, str) or is_int(msg_id) else None
        return Message(request_id, body["method"], params or {})
    if "result" in body:
        ok = isinstance(body["result"], dict) and (isinstance(msg_id, str) or is_int(msg_id))
        return Message(None, None, {}) if ok else None
    error = body.get("error")
    if isinstance(error, dict) and is_int(error.get("code")) and isinstance(error.get("message"), str):
        return Message(None, None, {})
    return None


def accepts(request: web.Request) -> tuple[bool, bool]:
    """Whether the request's Accept admits (application/json, text/event-stream), wildcards counted."""
    types = {part.split(";")[0].strip().lower() for part in request.headers.get("Accept", "").split(",")}
    json_ok = bool(types & {"*/*", "application/*", "application/json"})
    sse_ok = bool(types & {"*/*", "text/*", "text/event-stream"})
    return json_ok, sse_ok


def progress_token(params: dict[str, Any]) -> str | int | None:
    """A request's ``_meta.progressToken`` (a string or an integer), if it asks for progress."""
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if isinstance(token, str) or is_int(token) else None


def schema_errors(schema: dict[str, Any], args: dict[str, Any]) -> list[str]:
    """What in `args` the tools' simple inputSchemas (typed properties, required, bounds) refuse."""
    errors = [f"{name!r} is required" for name in schema.get("required", ()) if name not in args]
    kinds = {"string": lambda v: isinstance(v, str), "number": is_num, "integer": is_int}
    for name, prop in schema.get("properties", {}).items():
        if name not in args:
            continue
        value = args[name]
        if not kinds[prop["type"]](value):
            errors.append(f"{name!r} must be a {prop['type']}")
        elif "minimum" in prop and value < prop["minimum"]:
            errors.append(f"{name!r} must be at least {prop['minimum']}")
        elif "maximum" in prop and value > prop["maximum"]:
            errors.append(f"{name!r} must be at most {prop['maximum']}")
    return errors


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class McpFake(FakeProvider):
    """The fake MCP server. ``api_key``: the key every request must carry (None: any request);
    ``key_header`` / ``key_query_param``: where (an MCPRoute backendRef's ``apiKey.header`` /
    ``apiKey.queryParam``; neither: ``Authorization: Bearer``); ``page_size``: tools per
    ``tools/list`` page (None: one page)."""

    provider = "mcp"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        key_header: str | None = None,
        key_query_param: str | None = None,
        page_size: int | None = None,
        path: str = PATH,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        if key_header is not None and key_query_param is not None:
            raise ValueError("the key travels in a header or in a query parameter, not both")
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.api_key = api_key
        self.key_header = key_header or "Authorization"
        self.key_query_param = key_query_param
        self.page_size = page_size
        self.path = path
        self._sessions: dict[str, Session] = {}

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return self.base_url + self.path

    @property
    def session_ids(self) -> list[str]:
        """The sessions open now."""
        return list(self._sessions)

    # ---- FakeProvider hooks ----------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", self.path, self._endpoint)

    def error_response(self, status: int, message: str | None = None, **kw: Any) -> web.Response:
        """A JSON-RPC error body without an id (the transport's refusals, injected faults)."""
        code = INVALID_REQUEST if status < 500 else INTERNAL_ERROR
        return self._refuse(status, code, message or web.Response(status=status).reason or "Error")

    def not_found_response(self, request: web.Request) -> web.Response:
        """What an MCP server mounted at /mcp answers elsewhere: its web framework's 404."""
        return web.Response(status=404, text="Not Found")

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if self.key_query_param is not None:
            given = request.query.get(self.key_query_param)
            where = f"the {self.key_query_param} query parameter"
        elif self.key_header.lower() == "authorization":
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
            where = "Authorization: Bearer"
        else:
            given = request.headers.get(self.key_header)
            where = f"the {self.key_header} header"
        if given == self.api_key:
            return None
        description = f"Authentication required: a valid key in {where}"
        return web.json_response(
            {"error": "invalid_token", "error_description": description},
            status=401,
            headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
        )

    async def stop(self) -> None:
        """End the open sessions' GET streams, then stop."""
        for session in self._sessions.values():
            session.ended.set()
        self._sessions.clear()
        await super().stop()

    # ---- transport -------------------------------------------------------------------------
    @staticmethod
    def _refuse(
        status: int, code: int, message: str, data: Any = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"jsonrpc": "2.0", "id": None, "error": RpcError(code, message, data).to_json()}
        return web.json_response(body, status=status, headers=headers)

    async def _endpoint(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version not in PROTOCOL_VERSIONS:
            data = {"supported": list(PROTOCOL_VERSIONS), "requested": version}
            return self._refuse(400, UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", data)
        session: Session | None = None
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is not None:
            session = self._sessions.get(session_id)
            if session is None:
                return self._refuse(404, INVALID_REQUEST, "Session not found")
        if request.method == "POST":
            return await self._post(request, session)
        if request.method == "GET":
            return await self._get(request, session)
        if request.method == "DELETE":
            return self._delete(session)
        return self._refuse(405, INVALID_REQUEST, "Method Not Allowed", headers={"Allow": "GET, POST, DELETE"})

    async def _post(self, request: web.Request, session: Session | None) -> web.StreamResponse:
        has_json, has_sse = accepts(request)
        if not (has_json and has_sse):
            message = "Not Acceptable: Client must accept both application/json and text/event-stream"
            return self._refuse(406, INVALID_REQUEST, message)
        if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            message = "Unsupported Media Type: Content-Type must be application/json"
            return self._refuse(415, INVALID_REQUEST, message)
        if JSON_BODY not in request:
            return self._refuse(400, PARSE_ERROR, "Parse error: the body is not JSON")
        msg = parse_message(request[JSON_BODY])
        if msg is None:
            return self._refuse(400, INVALID_PARAMS, "Validation error: the body is not a JSON-RPC 2.0 message")
        if msg.is_request and msg.method == "initialize":
            return self._initialize(msg, session)
        if session is None:
            return self._refuse(400, INVALID_REQUEST, "Bad Request: Missing session ID")
        headers = {SESSION_HEADER: session.id}
        if not msg.is_request:
            return web.Response(status=202, headers=headers)
        token = progress_token(msg.params)
        progressing = token is not None and msg.method == "tools/call" and msg.params.get("name") == "slow_count"
        if not progressing and request.headers.get(SSE_HEADER) != "1":
            return web.json_response(await self._answer(session, msg, None), headers=headers)
        sse = SSEWriter(request, extra_headers=headers)

        async def progress(done: int, total: int, message: str) -> None:
            params = {"progressToken": token, "progress": done, "total": total, "message": message}
            await sse.send({"jsonrpc": "2.0", "method": "notifications/progress", "params": params}, "message")

        await sse.send(await self._answer(session, msg, progress if progressing else None), "message")
        return await sse.finish()

    def _initialize(self, msg: Message, session: Session | None) -> web.Response:
        """A new session (or the same one, initialized again) at the version the client asks for
        when the fake serves it."""
        params = msg.params
        info = params.get("clientInfo")
        if (
            not isinstance(params.get("protocolVersion"), str)
            or not isinstance(params.get("capabilities"), dict)
            or not isinstance(info, dict)
            or not isinstance(info.get("name"), str)
            or not isinstance(info.get("version"), str)
        ):
            body = {"jsonrpc": "2.0", "id": msg.id, "error": _invalid_params().to_json()}
            return web.json_response(body)
        requested = params["protocolVersion"]
        version = requested if requested in PROTOCOL_VERSIONS else DEFAULT_PROTOCOL_VERSION
        if session is None:
            session = Session(uuid.uuid4().hex, version)
            self._sessions[session.id] = session
        else:
            session.protocol_version = version
        server_info = {"name": "aigw-fake-mcp", "title": "aigw-xds fake MCP server", "version": "1.0.0"}
        result = {
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": False},
                "prompts": {"listChanged": False},
                "resources": {"subscribe": False, "listChanged": False},
                "logging": {},
            },
            "serverInfo": self._for(session, server_info),
        }
        return web.json_response(
            {"jsonrpc": "2.0", "id": msg.id, "result": result}, headers={SESSION_HEADER: session.id}
        )

    async def _get(self, request: web.Request, session: Session | None) -> web.StreamResponse:
        """The session's server-to-client stream: open until the session ends or the client goes."""
        if not accepts(request)[1]:
            return self._refuse(406, INVALID_REQUEST, "Not Acceptable: Client must accept text/event-stream")
        if session is None:
            return self._refuse(400, INVALID_REQUEST, "Bad Request: Missing session ID")
        if session.get_stream_open:
            return self._refuse(409, INVALID_REQUEST, "Conflict: Only one SSE stream is allowed per session")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", SESSION_HEADER: session.id}
        )
        session.get_stream_open = True
        try:
            await response.prepare(request)
            # aiohttp does not cancel a handler whose client left: look at the connection now and then.
            while not session.ended.is_set() and request.transport is not None and not request.transport.is_closing():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.ended.wait(), 0.5)
        finally:
            session.get_stream_open = False
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _delete(self, session: Session | None) -> web.Response:
        if session is None:
            return self._refuse(400, INVALID_REQUEST, "Bad Request: Missing session ID")
        session.ended.set()
        del self._sessions[session.id]
        return web.Response(status=200, content_type="application/json")

    # ---- methods ---------------------------------------------------------------------------
    async def _answer(self, session: Session, msg: Message, progress: Progress | None) -> dict[str, Any]:
        """The JSON-RPC response to a request."""
        try:
            result = await self._dispatch(session, msg.method or "", msg.params, progress)
        except RpcError as e:
            return {"jsonrpc": "2.0", "id": msg.id, "error": e.to_json()}
        return {"jsonrpc": "2.0", "id": msg.id, "result": result}

    async def _dispatch(
        self, session: Session, method: str, params: dict[str, Any], progress: Progress | None
    ) -> dict[str, Any]:
        if method == "ping":
            return {}
        if method == "tools/list":
            return self._list_tools(session, params)
        if method == "tools/call":
            return await self._call_tool(session, params, progress)
        if method == "prompts/list":
            return {"prompts": [self._for(session, p) for p in PROMPTS]}
        if method == "prompts/get":
            return self._get_prompt(params)
        if method == "resources/list":
            return {"resources": [self._for(session, r) for r in RESOURCES]}
        if method == "resources/templates/list":
            return {"resourceTemplates": []}
        if method == "resources/read":
            return self._read_resource(session, params)
        if method == "logging/setLevel":
            if params.get("level") not in LOG_LEVELS:
                raise _invalid_params()
            session.log_level = params["level"]
            return {}
        raise RpcError(METHOD_NOT_FOUND, "Method not found", method)

    @staticmethod
    def _for(session: Session, item: dict[str, Any]) -> dict[str, Any]:
        """`item` as the session's protocol version has it."""
        if session.protocol_version != "2025-03-26":
            return item
        return {k: v for k, v in item.items() if k not in LATER_FIELDS}

    def _list_tools(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise _invalid_params()
        start = 0
        if cursor is not None:
            try:
                kind, _, offset = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
                start = int(offset)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                kind = ""
            if kind != "tools" or not 0 < start < len(TOOLS):
                raise RpcError(INVALID_PARAMS, "Invalid cursor")
        end = len(TOOLS) if self.page_size is None else min(start + self.page_size, len(TOOLS))
        result: dict[str, Any] = {"tools": [self._for(session, t) for t in TOOLS[start:end]]}
        if end < len(TOOLS):
            result["nextCursor"] = base64.urlsafe_b64encode(f"tools:{end}".encode()).decode()
        return result

    async def _call_tool(self, session: Session, params: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        name, args = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not isinstance(args, dict | None):
            raise _invalid_params()
        args = args or {}
        tool = next((t for t in TOOLS if t["name"] == name), None)
        if tool is None:
            return {"content": [_text(f"Unknown tool: {name}")], "isError": True}
        errors = schema_errors(tool["inputSchema"], args)
        if errors:
            return {"content": [_text(f"Invalid arguments for tool {name}: {'; '.join(errors)}")], "isError": True}
        result: dict[str, Any]
        if name == "echo":
            result = {"content": [_text(args["text"])]}
        elif name == "add":
            total = args["a"] + args["b"]
            result = {"content": [_text(json.dumps(total))], "structuredContent": {"sum": total}}
        elif name == "slow_count":
            n = args["n"]
            for i in range(1, n + 1):
                await asyncio.sleep(COUNT_STEP_SECONDS)
                if progress is not None:
                    await progress(i, n, f"counted {i}")
            result = {"content": [_text(f"counted to {n}")]}
        else:
            result = {"content": [_text(self.name)]}
        return self._for(session, {**result, "isError": False})

    @staticmethod
    def _get_prompt(params: dict[str, Any]) -> dict[str, Any]:
        name, args = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not isinstance(args, dict | None):
            raise _invalid_params()
        args = args or {}
        prompt = next((p for p in PROMPTS if p["name"] == name), None)
        if prompt is None:
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        missing = [a["name"] for a in prompt["arguments"] if a.get("required") and a["name"] not in args]
        if missing:
            raise RpcError(INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
        if not all(isinstance(v, str) for v in args.values()):
            raise _invalid_params()
        text = f"Please greet {args['name']} warmly."
        return {"description": prompt["description"], "messages": [{"role": "user", "content": _text(text)}]}

    def _read_resource(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise _invalid_params()
        if uri != INFO_URI:
            raise RpcError(INVALID_PARAMS, f"Unknown resource: {uri}", {"uri": uri})
        info = {
            "name": self.name,
            "provider": self.provider,
            "protocolVersion": session.protocol_version,
            "logLevel": session.log_level,
        }
        return {"contents": [{"uri": uri, "mimeType": "application/json", "text": json.dumps(info)}]}

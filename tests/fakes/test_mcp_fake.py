"""The fake MCP server (aigw_fakes.mcp), a stand-in for a real MCP server behind an MCPRoute.

It speaks MCP over Streamable HTTP at /mcp and is checked here two ways: the official Python SDK
client (`mcp`, a test dependency only: the fake does not use the SDK's server) initializes,
lists and calls every tool, receives slow_count's progress notifications, gets the prompt, reads
the resource and pings; raw HTTP requests check what the fake refuses as the SDK's server does
(Accept 406, Content-Type 415, unparsable JSON 400/-32700, a non-message 400/-32602, a missing
session 400, an unknown or ended session 404, an unsupported MCP-Protocol-Version 400/-32022, GET
without an SSE Accept 406, other methods 405), the key where an MCPRoute's apiKey puts it
(Authorization: Bearer, a named header, a query parameter; else 401 with a JSON body), tools/list
pagination, and the session's GET stream and DELETE. Last, annotated.py gives a Backend's mcp
fake the key of the MCPRoute backendRef naming it.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from aigw_fakes import McpFake, providers
from aigw_fakes.annotated import MCPEndpoint, RunningFakes, _classes, _make, fake_providers
from aigw_xds.sources.files import FileSource

from ._fakehttp import raw, sse_events

ACCEPT = "application/json, text/event-stream"
JSON_HEADERS = {"accept": ACCEPT, "content-type": "application/json"}
TOOL_NAMES = ["echo", "add", "slow_count", "whoami"]
NOT_ACCEPTABLE = "Not Acceptable: Client must accept both application/json and text/event-stream"
NO_SESSION = "Bad Request: Missing session ID"
CONFLICT = "Conflict: Only one SSE stream is allowed per session"


@pytest.fixture(scope="module")
def fake() -> Iterator[McpFake]:
    with McpFake(name="mcp-a") as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: McpFake) -> None:
    fake.reset()


def _rpc(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


INITIALIZE = _rpc(
    "initialize",
    {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
)


def _post(
    url: str, body: Any, headers: dict[str, str] | None = None, session: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST with the headers an MCP client sends (plus `headers`); the body parsed when JSON."""
    hdrs = {**JSON_HEADERS, **(headers or {})}
    if session is not None:
        hdrs["mcp-session-id"] = session
    status, out_headers, payload = raw("POST", url, body if isinstance(body, bytes) else json.dumps(body), hdrs)
    parsed = json.loads(payload) if out_headers.get("content-type", "").startswith("application/json") else payload
    return status, out_headers, parsed


def _open_session(url: str, headers: dict[str, str] | None = None) -> str:
    status, out_headers, body = _post(url, INITIALIZE, headers)
    assert status == 200, body
    return out_headers["mcp-session-id"]


def _refusal(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


@asynccontextmanager
async def _client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """An initialized SDK ClientSession over the SDK's Streamable HTTP client transport."""
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


# ---- the SDK client ------------------------------------------------------------------------


def test_registered_as_the_mcp_provider() -> None:
    assert providers()["mcp"] is McpFake


async def test_sdk_client_initializes_and_lists_the_tools_with_their_schemas(fake: McpFake) -> None:
    async with (
        create_mcp_http_client() as http,
        streamable_http_client(fake.url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.protocol_version == "2025-11-25"  # the SDK's latest, which the fake serves
        assert init.server_info.name == "aigw-fake-mcp"
        assert init.capabilities.tools is not None and init.capabilities.prompts is not None
        tools = (await session.list_tools()).tools
    assert [t.name for t in tools] == TOOL_NAMES
    schemas = {t.name: t.input_schema for t in tools}
    assert schemas["echo"]["required"] == ["text"]
    assert schemas["add"]["properties"] == {"a": {"type": "number"}, "b": {"type": "number"}}
    assert schemas["slow_count"]["properties"]["n"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert all(s["type"] == "object" for s in schemas.values())


async def test_sdk_client_calls_every_tool(fake: McpFake) -> None:
    async with _client(fake.url) as session:
        await session.list_tools()  # the client checks add's structuredContent against its outputSchema
        echo = await session.call_tool("echo", {"text": "hello there"})
        add = await session.call_tool("add", {"a": 2, "b": 3.5})
        count = await session.call_tool("slow_count", {"n": 3})
        who = await session.call_tool("whoami", {})
    assert (echo.is_error, echo.content[0].text) == (False, "hello there")
    assert (add.content[0].text, add.structured_content) == ("5.5", {"sum": 5.5})
    assert count.content[0].text == "counted to 3"
    assert who.content[0].text == "mcp-a"


async def test_an_unknown_tool_or_refused_arguments_are_error_results_as_the_sdk_server_gives(fake: McpFake) -> None:
    async with _client(fake.url) as session:
        unknown = await session.call_tool("nope", {})
        missing = await session.call_tool("echo", {})
        too_many = await session.call_tool("slow_count", {"n": 11})
        wrong_type = await session.call_tool("add", {"a": "2", "b": 3})
    assert (unknown.is_error, unknown.content[0].text) == (True, "Unknown tool: nope")
    assert missing.is_error and "'text' is required" in missing.content[0].text
    assert too_many.is_error and "'n' must be at most 10" in too_many.content[0].text
    assert wrong_type.is_error and "'a' must be a number" in wrong_type.content[0].text


async def test_slow_count_sends_progress_notifications_to_the_clients_callback(fake: McpFake) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with _client(fake.url) as session:
        result = await session.call_tool("slow_count", {"n": 4}, progress_callback=on_progress)
    assert result.content[0].text == "counted to 4"
    assert seen == [(i, 4, f"counted {i}") for i in range(1, 5)]
    call = next(r for r in fake.requests if isinstance(r.body, dict) and r.body.get("method") == "tools/call")
    assert isinstance(call.body["params"]["_meta"]["progressToken"], int | str)


async def test_sdk_client_gets_the_prompt_reads_the_resource_pings_and_sets_the_log_level(fake: McpFake) -> None:
    async with _client(fake.url) as session:
        prompts = (await session.list_prompts()).prompts
        prompt = await session.get_prompt("greeting", {"name": "Ada"})
        resources = (await session.list_resources()).resources
        await session.send_ping()
        with pytest.warns(MCPDeprecationWarning):  # deprecated at 2026-07-28; served at 2025-11-25
            await session.set_logging_level("debug")
        info = await session.read_resource("fake://info")
        with pytest.raises(MCPError) as unknown_prompt:
            await session.get_prompt("farewell", {})
        with pytest.raises(MCPError) as missing_argument:
            await session.get_prompt("greeting", {})
        with pytest.raises(MCPError) as unknown_resource:
            await session.read_resource("fake://nothing")
    assert [(p.name, [a.name for a in p.arguments or []]) for p in prompts] == [("greeting", ["name"])]
    assert prompt.messages[0].role == "user" and "Ada" in prompt.messages[0].content.text
    assert [str(r.uri) for r in resources] == ["fake://info"]
    assert json.loads(info.contents[0].text) == {
        "name": "mcp-a",
        "provider": "mcp",
        "protocolVersion": "2025-11-25",
        "logLevel": "debug",
    }
    assert unknown_prompt.value.error.code == -32602
    assert missing_argument.value.error.code == -32602
    assert (unknown_resource.value.error.code, unknown_resource.value.error.data) == (
        -32602,
        {"uri": "fake://nothing"},
    )


async def test_sdk_client_takes_every_answer_as_sse_when_asked(fake: McpFake) -> None:
    async with _client(fake.url, {"x-fake-mcp-sse": "1"}) as session:
        assert [t.name for t in (await session.list_tools()).tools] == TOOL_NAMES
        assert (await session.call_tool("echo", {"text": "x"})).content[0].text == "x"


async def test_the_sdks_high_level_client_falls_back_from_its_version_probe_to_initialize(fake: McpFake) -> None:
    # Client's default mode probes server/discover at 2026-07-28 first; the fake's -32022 naming
    # its handshake versions sends it to initialize, as a 2025-era SDK server does.
    async with Client(fake.url) as client:
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == "mcp-a"


async def test_sdk_client_ends_its_session_with_delete(fake: McpFake) -> None:
    async with _client(fake.url) as session:
        await session.send_ping()
        ids = fake.session_ids
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert deletes and deletes[-1].header("mcp-session-id") in ids
    assert deletes[-1].header("mcp-session-id") not in fake.session_ids


# ---- raw HTTP: what a real server answers --------------------------------------------------


def test_initialize_issues_a_session_and_later_requests_carry_it(fake: McpFake) -> None:
    status, headers, body = _post(fake.url, INITIALIZE)
    assert status == 200 and headers["content-type"].startswith("application/json")
    session = headers["mcp-session-id"]
    assert body["result"]["protocolVersion"] == "2025-06-18"
    assert body["id"] == 1
    status, _, payload = _post(fake.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session=session)
    assert (status, payload) == (202, b"")
    status, headers, body = _post(fake.url, _rpc("ping", id=7), {"mcp-protocol-version": "2025-06-18"}, session)
    assert (status, body) == (200, {"jsonrpc": "2.0", "id": 7, "result": {}})
    assert headers["mcp-session-id"] == session


def test_a_version_it_does_not_serve_gets_its_own_in_initialize(fake: McpFake) -> None:
    params = {**INITIALIZE["params"], "protocolVersion": "2024-11-05"}
    _, _, body = _post(fake.url, _rpc("initialize", params))
    assert body["result"]["protocolVersion"] == "2025-06-18"


def test_a_2025_03_26_session_sees_no_later_fields(fake: McpFake) -> None:
    params = {**INITIALIZE["params"], "protocolVersion": "2025-03-26"}
    status, headers, body = _post(fake.url, _rpc("initialize", params))
    assert body["result"]["protocolVersion"] == "2025-03-26"
    session = headers["mcp-session-id"]
    _, _, tools = _post(fake.url, _rpc("tools/list"), session=session)
    assert all("title" not in t and "outputSchema" not in t for t in tools["result"]["tools"])
    _, _, add = _post(fake.url, _rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}), session=session)
    assert add["result"] == {"content": [{"type": "text", "text": "3"}], "isError": False}


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (
            {"accept": "application/json"},
            INITIALIZE,
            _refusal(406, -32600, NOT_ACCEPTABLE),
        ),
        (
            {"accept": "text/event-stream"},
            INITIALIZE,
            _refusal(406, -32600, NOT_ACCEPTABLE),
        ),
        (
            {"content-type": "text/plain"},
            INITIALIZE,
            _refusal(415, -32600, "Unsupported Media Type: Content-Type must be application/json"),
        ),
        ({}, b"{not json", _refusal(400, -32700, "Parse error: the body is not JSON")),
        ({}, b"", _refusal(400, -32700, "Parse error: the body is not JSON")),
        ({}, [INITIALIZE], _refusal(400, -32602, "Validation error: the body is not a JSON-RPC 2.0 message")),
        (
            {},
            {"jsonrpc": "1.0", "id": 1, "method": "ping"},
            _refusal(400, -32602, "Validation error: the body is not a JSON-RPC 2.0 message"),
        ),
        ({}, _rpc("tools/list"), _refusal(400, -32600, NO_SESSION)),
        ({}, {"jsonrpc": "2.0", "method": "notifications/initialized"}, _refusal(400, -32600, NO_SESSION)),
        ({"mcp-session-id": "no-such-session"}, _rpc("tools/list"), _refusal(404, -32600, "Session not found")),
    ],
    ids=[
        "accept-json-only",
        "accept-sse-only",
        "content-type",
        "unparsable",
        "empty",
        "batch",
        "not-jsonrpc-2",
        "no-session",
        "notification-without-session",
        "unknown-session",
    ],
)
def test_post_refusals(fake: McpFake, headers: dict[str, str], body: Any, expected: tuple[int, Any]) -> None:
    status, _, answer = _post(fake.url, body, headers)
    assert (status, answer) == expected


def test_accept_wildcards_count_as_the_sdk_server_counts_them(fake: McpFake) -> None:
    for accept in ("*/*", "application/*, text/*", "application/json;q=0.9, text/event-stream;q=0.8"):
        assert _post(fake.url, INITIALIZE, {"accept": accept})[0] == 200


def test_an_unsupported_protocol_version_header_is_400_naming_the_supported_ones(fake: McpFake) -> None:
    session = _open_session(fake.url)
    status, _, body = _post(fake.url, _rpc("tools/list"), {"mcp-protocol-version": "1999-01-01"}, session)
    assert status == 400
    assert body["error"] == {
        "code": -32022,
        "message": "Unsupported protocol version",
        "data": {"supported": ["2025-03-26", "2025-06-18", "2025-11-25"], "requested": "1999-01-01"},
    }
    for version in ("2025-03-26", "2025-06-18", "2025-11-25"):
        assert _post(fake.url, _rpc("ping"), {"mcp-protocol-version": version}, session)[0] == 200


def test_an_unknown_method_and_malformed_params_are_jsonrpc_errors(fake: McpFake) -> None:
    session = _open_session(fake.url)
    status, _, body = _post(fake.url, _rpc("completion/complete", {}), session=session)
    assert status == 200
    assert body["error"] == {"code": -32601, "message": "Method not found", "data": "completion/complete"}
    _, _, body = _post(fake.url, _rpc("tools/call", {"arguments": {}}), session=session)
    assert body["error"]["code"] == -32602
    _, _, body = _post(fake.url, _rpc("logging/setLevel", {"level": "loud"}), session=session)
    assert body["error"]["code"] == -32602


def test_sse_answers_when_asked_and_progress_before_the_result(fake: McpFake) -> None:
    session = _open_session(fake.url)
    status, headers, payload = _post(fake.url, _rpc("ping", id=3), {"x-fake-mcp-sse": "1"}, session)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["mcp-session-id"] == session
    events = [(e, json.loads(d)) for e, d in sse_events(payload)]
    assert events == [("message", {"jsonrpc": "2.0", "id": 3, "result": {}})]

    call = _rpc("tools/call", {"name": "slow_count", "arguments": {"n": 2}, "_meta": {"progressToken": "t1"}}, id=4)
    status, headers, payload = _post(fake.url, call, session=session)
    assert headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for _, d in sse_events(payload)]
    assert [e.get("method") for e in events] == ["notifications/progress", "notifications/progress", None]
    assert events[1]["params"] == {"progressToken": "t1", "progress": 2, "total": 2, "message": "counted 2"}
    assert events[2]["result"]["content"] == [{"type": "text", "text": "counted to 2"}]

    # Without a progress token slow_count answers JSON.
    del call["params"]["_meta"]
    _, headers, body = _post(fake.url, call, session=session)
    assert headers["content-type"].startswith("application/json") and body["id"] == 4


def test_get_needs_an_sse_accept_and_a_session(fake: McpFake) -> None:
    status, _, payload = raw("GET", fake.url, headers={"accept": "application/json"})
    expected = _refusal(406, -32600, "Not Acceptable: Client must accept text/event-stream")
    assert (status, json.loads(payload)) == expected
    status, _, payload = raw("GET", fake.url, headers={"accept": "text/event-stream"})
    assert (status, json.loads(payload)) == _refusal(400, -32600, NO_SESSION)


def test_get_opens_the_sessions_stream_once_until_delete_ends_the_session(fake: McpFake) -> None:
    session = _open_session(fake.url)
    sse = {"accept": "text/event-stream", "mcp-session-id": session}
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.request("GET", "/mcp", headers=sse)
        stream = conn.getresponse()  # the headers: the stream is open
        assert (stream.status, stream.getheader("content-type")) == (200, "text/event-stream")
        status, _, payload = raw("GET", fake.url, headers=sse)
        assert (status, json.loads(payload)) == _refusal(409, -32600, CONFLICT)
        status, _, payload = raw("DELETE", fake.url, headers={"mcp-session-id": session})
        assert (status, payload) == (200, b"")
        assert stream.read() == b""  # ended with the session
    finally:
        conn.close()

    for method, body in (("POST", json.dumps(_rpc("ping"))), ("GET", None), ("DELETE", None)):
        status, _, payload = raw(method, fake.url, body, {**JSON_HEADERS, "mcp-session-id": session})
        assert (status, json.loads(payload)) == _refusal(404, -32600, "Session not found"), method


def _open_stream(fake: McpFake, session: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("GET", "/mcp", headers={"accept": "text/event-stream", "mcp-session-id": session})
    return conn, conn.getresponse()


def test_a_client_that_leaves_frees_the_sessions_stream_and_stop_ends_open_ones() -> None:
    with McpFake() as own:
        session = _open_session(own.url)
        conn, stream = _open_stream(own, session)
        assert stream.status == 200
        conn.close()
        for _ in range(50):  # the fake notices within its half-second look
            conn, stream = _open_stream(own, session)
            if stream.status == 200:
                break
            conn.close()
            time.sleep(0.1)
        assert stream.status == 200
    # stop ended it: the stream ends (a stream left open would time out, after the connection's 10 s)
    assert stream.read() == b""
    conn.close()


def test_delete_without_a_session_is_400(fake: McpFake) -> None:
    status, _, payload = raw("DELETE", fake.url)
    assert (status, json.loads(payload)) == _refusal(400, -32600, NO_SESSION)


def test_other_methods_are_405_and_other_paths_404(fake: McpFake) -> None:
    status, headers, payload = raw("PUT", fake.url, b"{}", JSON_HEADERS)
    assert (status, json.loads(payload)) == _refusal(405, -32600, "Method Not Allowed")
    assert headers["allow"] == "GET, POST, DELETE"
    for path in ("/", "/mcp/", "/v1/mcp", "/sse"):
        status, _, payload = raw("POST", fake.base_url + path, json.dumps(INITIALIZE), JSON_HEADERS)
        assert (status, payload) == (404, b"Not Found"), path


def test_tools_list_pages_with_page_size() -> None:
    with McpFake(page_size=3) as paged:
        session = _open_session(paged.url)
        _, _, first = _post(paged.url, _rpc("tools/list"), session=session)
        assert [t["name"] for t in first["result"]["tools"]] == TOOL_NAMES[:3]
        cursor = first["result"]["nextCursor"]
        _, _, second = _post(paged.url, _rpc("tools/list", {"cursor": cursor}), session=session)
        assert [t["name"] for t in second["result"]["tools"]] == TOOL_NAMES[3:]
        assert "nextCursor" not in second["result"]
        for bad in ("nonsense", base64.urlsafe_b64encode(b"tools:99").decode(), "dG9vbHM6MA=="):
            _, _, body = _post(paged.url, _rpc("tools/list", {"cursor": bad}), session=session)
            assert body["error"] == {"code": -32602, "message": "Invalid cursor"}, bad


async def test_sdk_client_follows_the_cursor() -> None:
    async with McpFake(page_size=1) as paged, _client(paged.url) as session:
        names, cursor = [], None
        while True:
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert names == TOOL_NAMES


def test_the_fault_status_header_answers_a_jsonrpc_error(fake: McpFake) -> None:
    status, _, body = _post(fake.url, INITIALIZE, {"x-fake-status": "503"})
    assert status == 503 and body["error"]["code"] == -32603


# ---- the key -------------------------------------------------------------------------------


def _denied(status: int, headers: dict[str, str], body: Any) -> bool:
    return status == 401 and body["error"] == "invalid_token" and "error_description" in body


def test_the_default_key_is_a_bearer_token() -> None:
    with McpFake(api_key="mk-1") as keyed:
        assert _denied(*_post(keyed.url, INITIALIZE))
        assert _denied(*_post(keyed.url, INITIALIZE, {"authorization": "Bearer mk-2"}))
        assert _denied(*_post(keyed.url, INITIALIZE, {"authorization": "mk-1"}))
        status, headers, _ = _post(keyed.url, INITIALIZE)
        assert headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        session = _open_session(keyed.url, {"authorization": "Bearer mk-1"})
        # Every request carries it, not only initialize.
        assert _denied(*_post(keyed.url, _rpc("ping"), session=session))
        assert _post(keyed.url, _rpc("ping"), {"authorization": "bearer mk-1"}, session)[0] == 200


def test_a_named_header_carries_the_raw_key_and_authorization_named_is_bearer() -> None:
    with McpFake(api_key="mk-1", key_header="X-Api-Key") as keyed:
        assert _denied(*_post(keyed.url, INITIALIZE, {"authorization": "Bearer mk-1"}))
        assert _denied(*_post(keyed.url, INITIALIZE, {"x-api-key": "Bearer mk-1"}))
        assert _post(keyed.url, INITIALIZE, {"x-api-key": "mk-1"})[0] == 200
    with McpFake(api_key="mk-1", key_header="Authorization") as keyed:
        assert _denied(*_post(keyed.url, INITIALIZE, {"authorization": "mk-1"}))
        assert _post(keyed.url, INITIALIZE, {"authorization": "Bearer mk-1"})[0] == 200


def test_a_query_parameter_carries_the_key() -> None:
    with McpFake(api_key="mk-1", key_query_param="api_key") as keyed:
        assert _denied(*_post(keyed.url, INITIALIZE, {"authorization": "Bearer mk-1"}))
        assert _denied(*_post(keyed.url + "?api_key=mk-2", INITIALIZE))
        assert _post(keyed.url + "?api_key=mk-1", INITIALIZE)[0] == 200
    with pytest.raises(ValueError, match="not both"):
        McpFake(api_key="k", key_header="x-api-key", key_query_param="api_key")


async def test_sdk_client_with_the_key_in_a_header_or_the_query() -> None:
    async with McpFake(api_key="mk-1", key_header="x-api-key", name="keyed") as keyed:
        async with _client(keyed.url, {"x-api-key": "mk-1"}) as session:
            assert (await session.call_tool("whoami", {})).content[0].text == "keyed"
        assert all(r.header("x-api-key") == "mk-1" for r in keyed.requests)
    async with McpFake(api_key="mk-1", key_query_param="key") as keyed, _client(keyed.url + "?key=mk-1") as session:
        await session.send_ping()


# ---- annotated.py --------------------------------------------------------------------------

MCP_EXAMPLE = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: github
  namespace: default
  annotations:
    aigw-xds.dev/fake-provider: mcp
spec:
  endpoints:
    - ip:
        address: 127.0.0.1
        port: 19400
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: docs
  namespace: default
  annotations:
    aigw-xds.dev/fake-provider: mcp
spec:
  endpoints:
    - ip:
        address: 127.0.0.1
        port: 19401
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: plain
  namespace: default
  annotations:
    aigw-xds.dev/fake-provider: mcp
spec:
  endpoints:
    - ip:
        address: 127.0.0.1
        port: 19402
---
apiVersion: v1
kind: Secret
metadata:
  name: github-key
  namespace: default
stringData:
  apiKey: gh-secret-key
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata:
  name: tools
  namespace: default
spec:
  parentRefs:
    - name: gw
  backendRefs:
    - name: github
      kind: Backend
      group: gateway.envoyproxy.io
      securityPolicy:
        apiKey:
          secretRef:
            name: github-key
          header: x-github-key
    - name: docs
      kind: Backend
      group: gateway.envoyproxy.io
      securityPolicy:
        apiKey:
          inline: docs-inline-key
          queryParam: key
    - name: plain
      kind: Backend
      group: gateway.envoyproxy.io
      path: /api/mcp
"""


def test_annotated_mcp_fakes_check_the_key_of_the_mcproute_backendref_naming_them(tmp_path: Path) -> None:
    (tmp_path / "mcp.yaml").write_text(MCP_EXAMPLE)
    specs = {s.key.name: s for s in fake_providers(FileSource(tmp_path).load()) if s.key is not None}
    assert {name: (s.provider, s.port, s.api_key, s.mcp) for name, s in specs.items()} == {
        "github": ("mcp", 19400, "gh-secret-key", MCPEndpoint(header="x-github-key")),
        "docs": ("mcp", 19401, "docs-inline-key", MCPEndpoint(query_param="key")),
        "plain": ("mcp", 19402, "", MCPEndpoint(path="/api/mcp")),
    }
    github = specs["github"]
    fake = _make(_classes(github), github._replace(port=0), RunningFakes())
    with fake:
        assert _denied(*_post(fake.url, INITIALIZE, {"authorization": "Bearer gh-secret-key"}))
        assert _post(fake.url, INITIALIZE, {"x-github-key": "gh-secret-key"})[0] == 200
        assert fake.name == "fake-mcp"
    plain = specs["plain"]
    with _make(_classes(plain), plain._replace(port=0), RunningFakes()) as fake:  # at the backendRef's path
        assert fake.url.endswith("/api/mcp") and _post(fake.url, INITIALIZE, {})[0] == 200


def test_a_service_backendref_of_the_same_name_gives_the_backend_no_key(tmp_path: Path) -> None:
    text = MCP_EXAMPLE.replace("      kind: Backend\n      group: gateway.envoyproxy.io\n", "", 1)
    (tmp_path / "mcp.yaml").write_text(text)
    specs = fake_providers(FileSource(tmp_path).load())
    github = next(s for s in specs if s.key is not None and s.key.name == "github")
    assert (github.api_key, github.mcp) == ("", MCPEndpoint())

"""An MCPRoute's security policy through the proxy, with the real parts of test_proxy.py (SDK MCP
servers as backends, McpProxy, the SDK's client or raw HTTP): client keys, the claims of the
client's JWT sent to backends as headers, and authorization of tool calls and lists.

The JWTs are made here by hand with a dummy signature, and sent as Envoy passes a request with a
token it verified: the token in Authorization, its payload in the header Envoy sets
(contract.MCP_JWT_PAYLOAD_HEADER), whose claims alone the proxy reads (it never verifies a token)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError
from structlog.testing import capture_logs

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.mcp import client_auth

from .stack import INITIALIZE, ROUTE, Stack, initialize, mcp_client, raw_headers

METADATA_URL = "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
KEYS = [config_pb2.MCPClientKey(client_id="client-1", key="key-1"), config_pb2.MCPClientKey(client_id="c2", key="k-2")]


def jwt(claims: Mapping[str, Any]) -> str:
    """A JWT of the claims, its signature a dummy (see the module's docstring)."""

    def part(value: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.ZHVtbXktc2lnbmF0dXJl"


def payload(claims: Mapping[str, Any]) -> str:
    """The claims as Envoy's jwt_authn forwards a verified token's payload (base64url, unpadded)."""
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


def bearer(claims: Mapping[str, Any]) -> dict[str, str]:
    """A request's headers as Envoy passes them on once it verified the token of these claims."""
    return {"Authorization": f"Bearer {jwt(claims)}", contract.MCP_JWT_PAYLOAD_HEADER: payload(claims)}


def use_route(stack: Stack, **security: Any) -> None:
    """The stack's route (alpha and beta) with a security policy (MCPRoute fields)."""
    beta = security.pop("beta", None) or stack.beta_backend()
    stack.use(config_pb2.MCPRoute(name=ROUTE, backends=[stack.alpha_backend(), beta], **security))


def authorization(*rules: config_pb2.MCPAuthorizationRule, default_allow: bool = False) -> config_pb2.MCPAuthorization:
    return config_pb2.MCPAuthorization(rules=list(rules), default_allow=default_allow)


def tools(*pairs: str) -> list[config_pb2.MCPToolRef]:
    """Tool references from "backend/tool"."""
    return [config_pb2.MCPToolRef(backend=p.split("/")[0], tool=p.split("/")[1]) for p in pairs]


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


def _backend_requests(stack: Stack) -> list[dict[str, Any]]:
    return stack.alpha.requests + stack.beta.requests


async def _call(
    http: aiohttp.ClientSession, stack: Stack, session: str, tool: str, headers: Mapping[str, str]
) -> aiohttp.ClientResponse:
    """A raw tools/call (with headers) in an open session; the response, its body read."""
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "t"}}}
    extra = {**headers, "Accept": "application/json"}
    async with http.post(stack.url, json=call, headers=raw_headers(session=session, extra=extra)) as response:
        await response.read()
        return response


# --- Client keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "query", "headers"),
    [
        (config_pb2.MCPKeySource(header="x-client-key"), "", {"X-Client-Key": "key-1"}),
        (config_pb2.MCPKeySource(header="Authorization"), "", {"Authorization": "Bearer key-1"}),
        (config_pb2.MCPKeySource(header="Authorization"), "", {"Authorization": "key-1"}),
        (config_pb2.MCPKeySource(query_param="api_key"), "?api_key=key-1", {}),
        (config_pb2.MCPKeySource(cookie="aigw-key"), "", {"Cookie": "a=1; aigw-key=key-1"}),
    ],
    ids=["header", "bearer-header", "raw-authorization", "query", "cookie"],
)
async def test_a_key_is_found_where_the_route_looks(
    stack: Stack, http: aiohttp.ClientSession, source: config_pb2.MCPKeySource, query: str, headers: dict[str, str]
) -> None:
    use_route(stack, client_keys=config_pb2.MCPClientKeys(keys=KEYS, sources=[source]))
    async with http.post(stack.url + query, json=INITIALIZE, headers=raw_headers(extra=headers)) as response:
        assert response.status == 200
    async with http.post(stack.url, json=INITIALIZE, headers=raw_headers()) as response:
        assert response.status == 401  # the same request without its key


async def test_a_wrong_or_missing_key_is_a_401_that_reaches_no_backend(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    sources = [config_pb2.MCPKeySource(header="x-client-key")]
    use_route(stack, client_keys=config_pb2.MCPClientKeys(keys=KEYS, sources=sources))
    token = await initialize(http, stack, extra={"x-client-key": "k-2"})
    stack.alpha.requests.clear()
    stack.beta.requests.clear()
    listing = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    for extra in ({"x-client-key": "key-2"}, {"x-client-key": "Bearer"}, {}):
        for method, body in (("POST", listing), ("DELETE", None), ("GET", None)):
            headers = raw_headers(session=token, extra=extra)
            async with http.request(method, stack.url, json=body, headers=headers) as response:
                assert response.status == 401, (method, extra)
                assert response.headers["Content-Type"] == "application/json"
                assert "WWW-Authenticate" not in response.headers  # no oauth: no challenge
                assert await response.json() == {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32001, "message": "Client authentication failed."},
                }
    assert _backend_requests(stack) == []
    async with http.get(stack.url, headers=raw_headers(session=token, extra={"x-client-key": "k-2"})) as response:
        assert response.status == 405  # the key admits the client; GET is still not served


async def test_with_oauth_a_401_carries_the_oauth_challenge(stack: Stack, http: aiohttp.ClientSession) -> None:
    """Envoy AI Gateway's override of every 401 of an oauth route: the key's 401 is one."""
    sources = [config_pb2.MCPKeySource(header="x-client-key")]
    use_route(
        stack,
        client_keys=config_pb2.MCPClientKeys(keys=KEYS, sources=sources),
        oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL),
    )
    async with http.post(stack.url, json=INITIALIZE, headers=raw_headers(extra=bearer({}))) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == (
            'Bearer error="invalid_token", error_description="The access token is missing or invalid", '
            f'resource_metadata="{METADATA_URL}"'
        )


async def test_the_client_id_reaches_every_backend_and_no_client_sends_it(stack: Stack) -> None:
    keys = config_pb2.MCPClientKeys(
        keys=KEYS, sources=[config_pb2.MCPKeySource(header="x-client-key")], client_id_header="x-client-id"
    )
    # beta forwards the client's x-client-id, and its x-user under that name: neither gets through.
    forwards = [
        config_pb2.MCPForwardHeader(name="X-Client-Id"),
        config_pb2.MCPForwardHeader(name="x-user", backend_header="x-client-id"),
    ]
    use_route(stack, client_keys=keys, beta=stack.beta_backend(forward_headers=forwards))
    spoofed = {"x-client-key": "key-1", "X-Client-Id": "admin", "x-user": "admin"}
    async with mcp_client(stack, headers=spoofed) as session:
        await session.call_tool("alpha__add", {"a": 1, "b": 2})
        await session.call_tool("beta__search", {"query": "q"})
        await session.list_tools()
    requests = _backend_requests(stack)
    assert {r["body"].get("method") for r in requests} >= {"initialize", "tools/call", "tools/list"}
    assert all(r["headers"].get("x-client-id") == "client-1" for r in requests)
    assert all("x-client-key" not in r["headers"] for r in requests)


@pytest.mark.parametrize("sanitize", [True, False])
async def test_a_sanitized_key_reaches_no_backend_even_one_forwarding_it(stack: Stack, sanitize: bool) -> None:
    """beta forwards the key's header and the cookies: without sanitize it gets them (the control)."""
    keys = config_pb2.MCPClientKeys(
        keys=KEYS,
        sources=[config_pb2.MCPKeySource(header="x-client-key"), config_pb2.MCPKeySource(cookie="aigw-key")],
        sanitize=sanitize,
    )
    forwards = [config_pb2.MCPForwardHeader(name="x-client-key"), config_pb2.MCPForwardHeader(name="Cookie")]
    use_route(stack, client_keys=keys, beta=stack.beta_backend(forward_headers=forwards))
    async with mcp_client(stack, headers={"x-client-key": "key-1", "Cookie": "theme=dark; aigw-key=k-2"}) as session:
        await session.call_tool("beta__search", {"query": "q"})
    (call,) = stack.beta.calls("tools/call")
    if sanitize:
        assert "x-client-key" not in call["headers"] and call["headers"]["cookie"] == "theme=dark"
    else:
        assert call["headers"]["x-client-key"] == "key-1" and "aigw-key=k-2" in call["headers"]["cookie"]


# --- Claims --------------------------------------------------------------------------------------


CLAIM_HEADERS = [
    config_pb2.MCPClaimHeader(claim=claim, header=header)
    for claim, header in [
        ("sub", "x-claim-sub"),
        ("org.team", "x-claim-team"),
        ("level", "x-claim-level"),
        ("ratio", "x-claim-ratio"),
        ("admin", "x-claim-admin"),
        ("groups", "x-claim-groups"),
        ("missing", "x-claim-missing"),
    ]
]
CLAIMS = {"sub": "user-1", "org": {"team": "search"}, "level": 3, "ratio": 0.5, "admin": False, "groups": ["a"]}


async def test_claims_reach_every_backend_as_headers_and_the_clients_never_do(stack: Stack) -> None:
    # beta forwards the client's x-claim-groups (as is, and renamed), and its x-user as x-claim-missing:
    # none gets through.
    forwards = [
        config_pb2.MCPForwardHeader(name="x-claim-groups"),
        config_pb2.MCPForwardHeader(name="x-claim-groups", backend_header="x-beta-groups"),
        config_pb2.MCPForwardHeader(name="x-user", backend_header="x-claim-missing"),
    ]
    use_route(
        stack,
        oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL, claim_headers=CLAIM_HEADERS),
        beta=stack.beta_backend(forward_headers=forwards),
    )
    spoofed = {f"x-claim-{n}": "spoofed" for n in ("sub", "team", "groups", "missing")}
    async with mcp_client(stack, headers={**bearer(CLAIMS), **spoofed, "x-user": "spoofed"}) as session:
        await session.call_tool("alpha__add", {"a": 1, "b": 2})
        await session.call_tool("beta__search", {"query": "q"})
    requests = _backend_requests(stack)
    assert {r["body"].get("method") for r in requests} >= {"initialize", "notifications/initialized", "tools/call"}
    for request in requests:
        claims = {k: v for k, v in request["headers"].items() if k.startswith("x-claim-") or k == "x-beta-groups"}
        assert claims == {
            "x-claim-sub": "user-1",
            "x-claim-team": "search",
            "x-claim-level": "3",
            "x-claim-ratio": "0.5",
            "x-claim-admin": "false",
        }
    # The token itself reaches no backend (alpha's Authorization is its own key), nor its payload.
    assert all(r["headers"].get("authorization") == "Bearer alpha-secret-key" for r in stack.alpha.requests)
    assert all("authorization" not in r["headers"] for r in stack.beta.requests)
    assert all(contract.MCP_JWT_PAYLOAD_HEADER not in r["headers"] for r in requests)


@pytest.mark.parametrize("auth", ["oauth", "keys"])
async def test_a_session_is_its_clients_only(stack: Stack, http: aiohttp.ClientSession, auth: str) -> None:
    """The MCP security practices: a session id someone else got hold of opens nothing for them."""
    if auth == "oauth":
        use_route(stack, oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL))
        alice, mallory = bearer({"iss": "i", "sub": "alice"}), bearer({"iss": "i", "sub": "mallory"})
    else:
        keys = config_pb2.MCPClientKeys(keys=KEYS, sources=[config_pb2.MCPKeySource(header="x-key")])
        use_route(stack, client_keys=keys)
        alice, mallory = {"x-key": "key-1"}, {"x-key": "k-2"}
    session = await initialize(http, stack, extra=alice)
    assert (await _call(http, stack, session, "alpha__echo", alice)).status == 200
    stolen = await _call(http, stack, session, "alpha__echo", mallory)
    assert stolen.status == 404  # as any session id the route does not know


# --- Authorization -------------------------------------------------------------------------------


async def test_a_missing_scope_is_a_403_challenging_for_the_fewest_scopes(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    rules = [
        config_pb2.MCPAuthorizationRule(scopes=["echo", "write", "admin"], tools=tools("alpha/echo")),
        config_pb2.MCPAuthorizationRule(scopes=["echo"], tools=tools("alpha/echo")),
        config_pb2.MCPAuthorizationRule(scopes=["other"], tools=tools("alpha/add")),
    ]
    use_route(stack, oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL), authorization=authorization(*rules))
    read_only = bearer({"sub": "user-1", "scope": "read"})
    token = await initialize(http, stack, extra=read_only)
    response = await _call(http, stack, token, "alpha__echo", read_only)
    assert response.status == 403 and response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="insufficient_scope", scope="echo", resource_metadata="{METADATA_URL}", '
        'error_description="The token is missing required scopes"'
    )
    assert stack.alpha.calls("tools/call") == []
    # With the scope (in `scp`, as a list): allowed.
    async with mcp_client(stack, headers=bearer({"sub": "user-1", "scp": ["read", "echo"]})) as session:
        assert _text(await session.call_tool("alpha__echo", {"text": "hi"})) == "alpha echo:hi"


async def test_the_403_body_is_a_json_rpc_error_naming_the_tool_only(stack: Stack, http: aiohttp.ClientSession) -> None:
    rules = [config_pb2.MCPAuthorizationRule(scopes=["echo"], tools=tools("alpha/echo"))]
    use_route(stack, oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL), authorization=authorization(*rules))
    claims = {"sub": "secret-subject", "scope": "read"}
    token = await initialize(http, stack, extra=bearer(claims))
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {}}}
    headers = raw_headers(session=token, extra={**bearer(claims), "Accept": "application/json"})
    async with http.post(stack.url, json=call, headers=headers) as response:
        assert response.status == 403
        body = await response.json()
    assert body == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32001, "message": "access denied: tool alpha__echo needs the scopes echo"},
    }
    # A denial with no scope to ask for: no challenge.
    rules = [config_pb2.MCPAuthorizationRule(deny=True, tools=tools("alpha/echo"))]
    use_route(stack, oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL), authorization=authorization(*rules))
    async with http.post(stack.url, json=call, headers=headers) as response:
        assert response.status == 403 and "WWW-Authenticate" not in response.headers
        assert (await response.json())["error"]["message"] == "access denied: tool alpha__echo is not allowed"


async def test_claims_match_a_string_or_one_of_a_list(stack: Stack) -> None:
    rules = [
        config_pb2.MCPAuthorizationRule(
            claims=[config_pb2.MCPClaimMatch(name="tenant", values=["acme", "globex"])], tools=tools("beta/search")
        ),
        config_pb2.MCPAuthorizationRule(
            claims=[config_pb2.MCPClaimMatch(name="org.departments", array=True, values=["engineering"])],
            tools=tools("alpha/add"),
        ),
    ]
    use_route(stack, oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL), authorization=authorization(*rules))
    async with mcp_client(stack, headers=bearer({"tenant": "acme", "org": {"departments": ["sales"]}})) as session:
        assert _text(await session.call_tool("beta__search", {"query": "q"})) == "beta found:q"
        with pytest.raises(MCPError, match="access denied: tool alpha__add is not allowed"):
            await session.call_tool("alpha__add", {"a": 1, "b": 2})
    engineer = bearer({"tenant": "initech", "org": {"departments": ["x", "engineering"]}})
    async with mcp_client(stack, headers=engineer) as s:
        assert _text(await s.call_tool("alpha__add", {"a": 1, "b": 2})) == "alpha:3"
        with pytest.raises(MCPError, match="access denied"):
            await s.call_tool("beta__search", {"query": "q"})
    assert len(stack.alpha.calls("tools/call")) == 1 and len(stack.beta.calls("tools/call")) == 1


async def test_rules_by_target_explicit_deny_and_default(stack: Stack) -> None:
    # Default deny: only the rule's target is allowed (a rule with no source: any client).
    use_route(stack, authorization=authorization(config_pb2.MCPAuthorizationRule(tools=tools("alpha/echo"))))
    async with mcp_client(stack, headers={}) as session:
        assert _text(await session.call_tool("alpha__echo", {"text": "t"})) == "alpha echo:t"
        with pytest.raises(MCPError, match="access denied"):
            await session.call_tool("alpha__add", {"a": 1, "b": 2})
    # Default allow: everything but what a deny rule names; the first matching rule decides.
    rules = [
        config_pb2.MCPAuthorizationRule(deny=True, tools=tools("alpha/add")),
        config_pb2.MCPAuthorizationRule(tools=tools("alpha/add")),
    ]
    use_route(stack, authorization=authorization(*rules, default_allow=True))
    async with mcp_client(stack, headers={}) as session:
        assert _text(await session.call_tool("alpha__echo", {"text": "t"})) == "alpha echo:t"
        with pytest.raises(MCPError, match="access denied"):
            await session.call_tool("alpha__add", {"a": 1, "b": 2})
    assert [c["body"]["params"]["name"] for c in stack.alpha.calls("tools/call")] == ["echo", "echo"]


async def test_cel_on_the_arguments_and_the_headers(stack: Stack) -> None:
    cel = 'request.mcp.params.arguments.text.startsWith("Hello") && request.headers["x-tenant-id"] == "t-123"'
    use_route(stack, authorization=authorization(config_pb2.MCPAuthorizationRule(cel=cel, tools=tools("alpha/echo"))))
    async with mcp_client(stack, headers={"X-Tenant-Id": "t-123"}) as session:
        assert _text(await session.call_tool("alpha__echo", {"text": "Hello you"})) == "alpha echo:Hello you"
        with pytest.raises(MCPError, match="access denied"):
            await session.call_tool("alpha__echo", {"text": "Bye"})
    async with mcp_client(stack, headers={"X-Tenant-Id": "t-9"}) as session:
        with pytest.raises(MCPError, match="access denied"):
            await session.call_tool("alpha__echo", {"text": "Hello you"})


async def test_cel_that_fails_or_does_not_compile_matches_nothing(stack: Stack) -> None:
    """Deny rules whose expressions fail (a missing argument, a value not a bool) or do not compile:
    none matches, so the default (allow) decides; the proxy goes on serving."""
    rules = [
        config_pb2.MCPAuthorizationRule(deny=True, cel='request.mcp.params.arguments.missing == "x"'),
        config_pb2.MCPAuthorizationRule(deny=True, cel="request.mcp.tool"),
        config_pb2.MCPAuthorizationRule(deny=True, cel="request.mcp.tool == ("),
        config_pb2.MCPAuthorizationRule(deny=True, cel='request.mcp.tool == "add"'),  # the control
    ]
    client_auth._program.cache_clear()  # (an expression is compiled once per process)
    with capture_logs() as logs:
        use_route(stack, authorization=authorization(*rules, default_allow=True))
        async with mcp_client(stack, headers={}) as session:
            assert _text(await session.call_tool("alpha__echo", {"text": "t"})) == "alpha echo:t"
            with pytest.raises(MCPError, match="access denied"):
                await session.call_tool("alpha__add", {"a": 1, "b": 2})
    assert [e["expression"] for e in logs if e["event"] == "mcp_authorization_cel_broken"] == ["request.mcp.tool == ("]


async def test_cel_sees_the_claim_headers_of_the_token_not_the_clients(stack: Stack) -> None:
    use_route(
        stack,
        oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL, claim_headers=CLAIM_HEADERS),
        authorization=authorization(config_pb2.MCPAuthorizationRule(cel='request.headers["x-claim-sub"] == "admin"')),
    )
    async with mcp_client(stack, headers={**bearer({"sub": "user-1"}), "x-claim-sub": "admin"}) as session:
        with pytest.raises(MCPError, match="access denied"):
            await session.call_tool("alpha__echo", {"text": "t"})
    async with mcp_client(stack, headers=bearer({"sub": "admin"})) as session:
        assert _text(await session.call_tool("alpha__echo", {"text": "t"})) == "alpha echo:t"


async def test_a_list_shows_only_the_tools_the_client_may_call(stack: Stack) -> None:
    rules = [
        config_pb2.MCPAuthorizationRule(tools=tools("alpha/echo", "beta/search")),
        # Checked with the headers alone: an expression on the params fails, so never shows a tool.
        config_pb2.MCPAuthorizationRule(cel="request.mcp.params.arguments.a == 1", tools=tools("alpha/add")),
        config_pb2.MCPAuthorizationRule(cel='request.headers["x-tenant-id"] == "t-1"', tools=tools("alpha/count")),
    ]
    use_route(stack, authorization=authorization(*rules))
    async with mcp_client(stack, headers={}) as session:
        assert [t.name for t in (await session.list_tools()).tools] == ["alpha__echo", "beta__search"]
        prompts = [p.name for p in (await session.list_prompts()).prompts]
    assert prompts == ["alpha__greet"]  # other lists are not authorized
    async with mcp_client(stack, headers={"x-tenant-id": "t-1"}) as session:
        listed = [t.name for t in (await session.list_tools()).tools]
        assert listed == ["alpha__echo", "alpha__count", "beta__search"]
        assert _text(await session.call_tool("alpha__add", {"a": 1, "b": 2})) == "alpha:3"  # a call has params


async def test_without_oauth_no_token_is_read(stack: Stack, http: aiohttp.ClientSession) -> None:
    """A token's claims count only when Envoy verified it (the route has oauth): without, a rule
    asking for a scope never matches, whatever token the client sends."""
    rules = [config_pb2.MCPAuthorizationRule(scopes=["echo"], tools=tools("alpha/echo"))]
    use_route(stack, authorization=authorization(*rules))
    token = await initialize(http, stack, extra=bearer({"scope": "echo"}))
    response = await _call(http, stack, token, "alpha__echo", bearer({"scope": "echo"}))
    assert response.status == 403
    # The challenge names the scope, with no resource metadata to point at.
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="echo", error_description="The token is missing required scopes"'
    )


async def test_a_request_of_the_proxys_own_is_refused(stack: Stack, http: aiohttp.ClientSession) -> None:
    """A route whose MCP backend is the proxy itself: its requests come back marked, and are not
    taken for Envoy's (whose fleet and route headers the proxy trusts)."""
    extra = {contract.MCP_HOP_HEADER: "1"}
    async with http.post(stack.url, json=INITIALIZE, headers=raw_headers(extra=extra)) as response:
        assert response.status == 508
        assert "the gateway itself" in (await response.json())["error"]["message"]
    assert _backend_requests(stack) == []

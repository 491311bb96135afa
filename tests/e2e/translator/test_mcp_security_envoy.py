"""An MCPRoute's securityPolicy through a real Envoy fed by the control plane. OAuth: Envoy's
jwt_authn checks the client's token against the issuer's keys, answers the challenge MCP clients
read, and serves the route's protected resource metadata (RFC 9728). API keys: the MCP proxy checks
them, and Envoy's access log does not write the one a query carries. The issuer is the fakes' OIDC
issuer (a stand-in for a real authorization server: client-credentials grant, RS256 JWTs, its JWKS
fetched by Envoy); the MCP server is the official SDK's MCPServer on uvicorn (a stand-in for a real
one); the client is the official SDK's, with its own OAuth client (client credentials)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

import aigw_contract as contract
from aigw_fakes import OIDCIssuerFake
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET
from aigw_xds.sources.files import FileSource
from aigw_xds.xds.build import AUTHORIZATION_REFUSED_MESSAGE
from tests.e2e.harness.gateway import LISTENER_PORT, Gateway, run_gateway
from tests.e2e.harness.resources import FLEET
from tests.e2e.translator.test_mcp_envoy import mcp_route
from tests.resource_text import security_policy
from tests.translator.mcp.servers import served

RESOURCE = f"http://127.0.0.1:{LISTENER_PORT}/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"
ORIGIN = "https://inspector.example.com"
# An initialize's params.
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


def _route(mcp_port: int, security: str, more: str = "") -> str:
    """The MCPRoute `tools` to one MCP server (`notes`), with `security` as its securityPolicy."""
    return mcp_route(mcp_port, "notes", security, more)


def _oauth(issuer: str, jwks: bool = True) -> str:
    """`jwks`: the route names the issuer's keys (else the gateway learns them from its metadata)."""
    keys = f"\n      jwks: {{remoteJWKS: {{uri: {issuer}/jwks}}}}" if jwks else ""
    return f"""
    oauth:
      issuer: {issuer}
      audiences: [{RESOURCE}]{keys}
      protectedResourceMetadata:
        resource: {RESOURCE}
        resourceName: Notes
        scopesSupported: [notes.read, notes.write]"""


def _server() -> MCPServer:
    server = MCPServer("notes")

    @server.tool()
    def echo(text: str) -> str:
        """The text back."""
        return text

    return server


@asynccontextmanager
async def _gateway(
    route_scopes_from: int | None = None, jwks: bool = True, issuer_down: bool = False
) -> AsyncIterator[tuple[Gateway, OIDCIssuerFake]]:
    """`issuer_down`: the issuer answers 503 to everything until the test says otherwise."""
    with OIDCIssuerFake() as issuer:
        if issuer_down:
            issuer.always_fail(503)
        async with served(_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            route = _route(port, _oauth(issuer.issuer, jwks))
            async with run_gateway(route, mcp_proxy=True, route_scopes_from=route_scopes_from) as gw:
                yield gw, issuer


async def initialize(
    gw: Gateway, token: str | None = None, headers: dict[str, str] | None = None, query: str = ""
) -> httpx2.Response:
    """An initialize, by plain HTTP (the MCP server and the proxy answer on this test's loop)."""
    sent = {"accept": "application/json, text/event-stream", **(headers or {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{gw.url}/mcp{query}",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO},
            headers=sent,
        )


def _resource(gw: Gateway) -> str:
    return RESOURCE.replace(LISTENER_PORT, gw.url.rsplit(":", 1)[1])


class _Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@pytest.mark.parametrize("jwks", [True, False], ids=["route-names-jwks", "gateway-learns-jwks-uri"])
async def test_the_sdk_client_discovers_the_issuer_gets_a_token_and_calls_a_tool(jwks: bool) -> None:
    """The SDK's OAuth client meets the 401, reads the challenge, fetches the route's metadata from
    the gateway, the issuer's from the issuer, gets a token for the resource (RFC 8707) and calls.
    Without jwks in the route (Envoy AI Gateway's documented example has none), the control plane
    took the jwks_uri from the issuer's metadata before serving."""
    async with _gateway(jwks=jwks) as (gw, issuer):
        auth = ClientCredentialsOAuthProvider(
            server_url=f"{gw.url}/mcp",
            storage=_Memory(),
            client_id=TEST_CLIENT_ID,
            client_secret=TEST_CLIENT_SECRET,
            scope="notes.read",
            issuer=issuer.issuer,
        )
        async with (
            httpx2.AsyncClient(timeout=30, auth=auth) as http,
            streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("notes__echo", {"text": "hello"})
        assert not result.is_error and result.content[0].text == "hello"  # type: ignore[union-attr]
        assert issuer.token_requests == 1
        claims = jwt.decode(issuer.issued[0], options={"verify_signature": False})
        assert claims["aud"] == _resource(gw)


@pytest.mark.parametrize("scoped", [False, True], ids=["one route table", "route scopes"])
async def test_no_token_is_a_401_naming_the_metadata_and_scopes(scoped: bool) -> None:
    """In route scopes too: the token is checked once the scope's route is known (a check made
    before would find no route, and no requirement)."""
    async with _gateway(route_scopes_from=0 if scoped else None) as (gw, _):
        response = await initialize(gw, headers={"origin": ORIGIN})
        metadata_url = f"{gw.url}{METADATA_PATH}"
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge == f'Bearer resource_metadata="{metadata_url}", scope="notes.read notes.write"'
    assert response.json()["error"]["message"] == "an access token is required"
    # A page's script may read the challenge.
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in response.headers["access-control-expose-headers"]


async def _preflight(gw: Gateway, path: str, method: str, headers: str) -> httpx2.Response:
    """A browser's CORS preflight from ORIGIN for a request of that method with those headers."""
    asked = {"origin": ORIGIN, "access-control-request-method": method, "access-control-request-headers": headers}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.options(f"{gw.url}{path}", headers=asked)


async def test_a_browser_client_of_another_origin_gets_through_cors() -> None:
    """The preflight answered by Envoy (before the token is asked for), and what a page's script
    reads of an answer exposed: the session id, the challenge."""
    async with _gateway() as (gw, issuer):
        preflight = await _preflight(gw, "/mcp", "POST", "authorization, content-type, mcp-protocol-version")
        async with httpx2.AsyncClient(timeout=30) as http:
            metadata = await http.get(f"{gw.url}{METADATA_PATH}", headers={"origin": ORIGIN})
        metadata_preflight = await _preflight(gw, METADATA_PATH, "GET", "mcp-protocol-version")
        answered = await initialize(gw, issuer.issue(_resource(gw)), headers={"origin": ORIGIN})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "mcp-protocol-version" in preflight.headers["access-control-allow-headers"]
    assert metadata.status_code == 200 and metadata.headers["access-control-allow-origin"] == "*"
    assert metadata_preflight.status_code == 200 and metadata_preflight.headers["access-control-allow-origin"] == "*"
    assert metadata_preflight.headers["access-control-allow-headers"] == "mcp-protocol-version"
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ORIGIN
    assert "mcp-session-id" in answered.headers["access-control-expose-headers"]


def _foreign_token(issuer: OIDCIssuerFake, audience: str) -> str:
    """A token with the issuer's claims and key id, signed by another key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(issuer.issue(audience), options={"verify_signature": False})
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": issuer.kid})


def _other_issuers_token(issuer: OIDCIssuerFake, audience: str) -> str:
    """A token the issuer's key signed, naming another issuer."""
    claims = jwt.decode(issuer.issue(audience), options={"verify_signature": False})
    return jwt.encode(
        {**claims, "iss": "https://other.example.com"}, issuer._key, algorithm="RS256", headers={"kid": issuer.kid}
    )


@pytest.mark.parametrize("kind", ["wrong audience", "wrong issuer", "expired", "forged signature", "not a JWT"])
async def test_a_token_envoy_refuses_is_a_401_with_invalid_token(kind: str) -> None:
    async with _gateway() as (gw, issuer):
        tokens: dict[str, Any] = {
            "wrong audience": lambda: issuer.issue("https://elsewhere.example/mcp"),
            "wrong issuer": lambda: _other_issuers_token(issuer, _resource(gw)),
            "expired": lambda: issuer.issue(_resource(gw), lifetime=-120),
            "forged signature": lambda: _foreign_token(issuer, _resource(gw)),
            "not a JWT": lambda: "opaque-token",
        }
        refused = await initialize(gw, tokens[kind]())
        good = await initialize(gw, issuer.issue(_resource(gw)))
    assert refused.status_code == 401, kind
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description=')
    assert f'resource_metadata="{gw.url}{METADATA_PATH}"' in challenge
    assert good.status_code == 200 and good.json()["result"]["serverInfo"]


async def test_the_protected_resource_metadata_is_served_without_a_token() -> None:
    async with _gateway() as (gw, issuer):
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.get(f"{gw.url}{METADATA_PATH}")
        document, headers = response.json(), response.headers
    assert headers["content-type"] == "application/json"
    assert document == {
        "resource": _resource(gw),
        "authorization_servers": [issuer.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Notes",
        "scopes_supported": ["notes.read", "notes.write"],
    }


API_KEYS = """
    apiKeyAuth:
      credentialRefs: [{name: mcp-clients}]
      extractFrom: [{headers: [x-api-key]}, {params: [api_key]}]"""
CLIENTS = """---
apiVersion: v1
kind: Secret
metadata: {name: mcp-clients, namespace: default}
stringData: {ci: ci-key-0123456789}
"""


async def _with_initializes(gw: Gateway, count: int) -> list[dict[str, Any]]:
    """The access log once it has `count` initializes answered 200."""
    for _ in range(200):
        entries = await gw.access_log.wait_for(1)
        done = [e for e in entries if e["response_code"] == 200 and e.get("mcp.method.name") == "initialize"]
        if len(done) >= count:
            return entries
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} initializes expected in the access log: {entries}")


async def test_api_keys_are_checked_and_a_query_key_stays_out_of_the_access_log() -> None:
    async with served(_server().streamable_http_app(json_response=True)) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with run_gateway(_route(port, API_KEYS, CLIENTS), mcp_proxy=True) as gw:
            async with (
                httpx2.AsyncClient(timeout=30, headers={"x-api-key": "ci-key-0123456789"}) as http,
                streamable_http_client(f"{gw.url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                result = await session.call_tool("notes__echo", {"text": "keyed"})
            assert not result.is_error and result.content[0].text == "keyed"  # type: ignore[union-attr]
            preflight = await _preflight(gw, "/mcp", "POST", "x-api-key, content-type")
            wrong = await initialize(gw, headers={"x-api-key": "not-the-key"})
            by_query = await initialize(gw, query="?api_key=ci-key-0123456789")
            entries = await _with_initializes(gw, 2)  # the SDK's, and the one with the key in its query
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "Client authentication failed."
    # A browser page may send its key (CORS: the preflight answered by Envoy, the key's header allowed).
    assert preflight.status_code == 200 and "x-api-key" in preflight.headers["access-control-allow-headers"]
    assert by_query.status_code == 200 and by_query.json()["result"]["serverInfo"]
    assert {e["path"] for e in entries} == {"/mcp"}
    assert all("ci-key" not in json.dumps(entry) for entry in entries)


async def test_a_route_of_its_own_security_policy_is_not_asked_the_gateways_key() -> None:
    """From an expert review: under a Gateway SecurityPolicy whose apiKeyAuth reads x-api-key too,
    an MCPRoute with its own securityPolicy was asked the Gateway's key, and its own key was taken
    off before its MCP proxy read it. It takes its own policy alone, as in Envoy AI Gateway."""
    gateway_keys = """---
apiVersion: v1
kind: Secret
metadata: {name: gateway-clients, namespace: default}
stringData: {app: gateway-key-0123456789}
""" + security_policy(
        "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]",
        "apiKeyAuth: {credentialRefs: [{name: gateway-clients}], extractFrom: [{headers: [x-api-key]}]}",
        "gateway-keys",
    )
    async with served(_server().streamable_http_app(json_response=True)) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with run_gateway(_route(port, API_KEYS, CLIENTS), gateway_keys, mcp_proxy=True) as gw:
            mcp_key = await initialize(gw, headers={"x-api-key": "ci-key-0123456789"})
            gateway_key = await initialize(gw, headers={"x-api-key": "gateway-key-0123456789"})
            async with httpx2.AsyncClient(timeout=30) as http:
                models = await http.get(f"{gw.url}/v1/models", headers={"x-api-key": "ci-key-0123456789"})
    assert mcp_key.status_code == 200 and mcp_key.json()["result"]["serverInfo"], (mcp_key.text, mcp_key.headers)
    assert gateway_key.status_code == 401  # (the MCPRoute's own keys, not the Gateway's)
    assert models.status_code == 401  # (the Gateway's routes take the Gateway's keys alone)


async def test_a_route_of_no_policy_of_its_own_takes_the_gateways_jwt_and_refuses_in_json_rpc() -> None:
    """An MCPRoute without a securityPolicy under a Gateway SecurityPolicy's jwt: its clients need the
    Gateway's token, and one without gets a JSON-RPC error (what an MCP client reads), not an
    OpenAI-shaped one."""
    from tests.e2e.translator.test_client_jwt import AUDIENCE, GATEWAY_TARGET, _policy, _until_keys_fetched

    with OIDCIssuerFake() as issuer:
        async with served(_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            documents = (mcp_route(port, "notes"), _policy(issuer, GATEWAY_TARGET))
            async with run_gateway(*documents, mcp_proxy=True) as gw:
                token = issuer.issue(audience=AUDIENCE)
                await _until_keys_fetched(gw.url, token)
                refused = await initialize(gw)
                admitted = await initialize(gw, token)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32001, "message": "the gateway's SecurityPolicy asks for a valid JWT"},
    }
    assert admitted.status_code == 200 and admitted.json()["result"]["serverInfo"]


async def test_a_route_of_no_policy_of_its_own_takes_the_gateways_authorization_and_refuses_in_json_rpc() -> None:
    """The same under a Gateway policy's authorization rules: a token the rules refuse gets a 403
    whose body is a JSON-RPC error, not an OpenAI-shaped one; a token they allow is let by."""
    from tests.e2e.translator.test_client_authorization import _policy
    from tests.e2e.translator.test_client_jwt import AUDIENCE, GATEWAY_TARGET, _until_keys_fetched

    rules = "  defaultAction: Deny\n  rules: [{action: Allow, principal: {jwt: {provider: idp, scopes: [mcp]}}}]"
    with OIDCIssuerFake() as issuer:
        async with served(_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            documents = (mcp_route(port, "notes"), _policy(issuer, GATEWAY_TARGET, rules))
            async with run_gateway(*documents, mcp_proxy=True) as gw:
                allowed = issuer.issue(audience=AUDIENCE, scopes=["mcp"])
                await _until_keys_fetched(gw.url, allowed)
                refused = await initialize(gw, issuer.issue(audience=AUDIENCE, scopes=["chat"]))
                admitted = await initialize(gw, allowed)
    assert refused.status_code == 403
    assert refused.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32001, "message": AUTHORIZATION_REFUSED_MESSAGE},
    }
    assert admitted.status_code == 200 and admitted.json()["result"]["serverInfo"]


async def call_tool(
    gw: Gateway, tool: str, headers: list[tuple[str, str]], arguments: dict[str, str]
) -> httpx2.Response:
    """initialize, initialized, then tools/call `tool` with `arguments`, each with `headers`."""
    sent = [("accept", "application/json, text/event-stream"), *headers]
    async with httpx2.AsyncClient(timeout=30, headers=sent) as http:
        opened = await http.post(
            f"{gw.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO}
        )
        assert opened.status_code == 200, opened.text
        session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        await http.post(
            f"{gw.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        return await http.post(f"{gw.url}/mcp", json=call, headers=session)


async def _call_echo(gw: Gateway, authorization: str, extra: list[tuple[str, str]] | None = None) -> httpx2.Response:
    """call_tool notes__echo with this Authorization header (and the `extra` headers)."""
    return await call_tool(gw, "notes__echo", [("authorization", authorization), *(extra or [])], {"text": "x"})


async def test_a_payload_header_the_client_sends_is_never_the_one_the_proxy_reads() -> None:
    """Envoy sets the verified payload's header over a client's (sent once, twice, in another case):
    a Deny-unless-admin route stays closed to a client claiming to be admin."""
    only_admin = """
    authorization:
      rules: [{source: {jwt: {claims: [{name: sub, values: [admin]}]}}}]"""
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "admin"}).encode()).rstrip(b"=").decode()
    with OIDCIssuerFake(subject="mallory") as issuer:
        async with served(_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with run_gateway(_route(port, _oauth(issuer.issuer) + only_admin), mcp_proxy=True) as gw:
                token = issuer.issue(_resource(gw))
                answers = [
                    await _call_echo(gw, f"Bearer {token}", extra)
                    for extra in (
                        [(contract.MCP_JWT_PAYLOAD_HEADER, forged)],
                        [(contract.MCP_JWT_PAYLOAD_HEADER, forged), (contract.MCP_JWT_PAYLOAD_HEADER, forged)],
                        [(contract.MCP_JWT_PAYLOAD_HEADER.upper(), forged)],
                    )
                ]
    assert [a.status_code for a in answers] == [403, 403, 403]


async def test_the_bearer_scheme_is_read_in_either_case() -> None:
    async with _gateway() as (gw, issuer):
        token = issuer.issue(_resource(gw))
        answers = [
            await initialize(gw, headers={"authorization": f"{scheme} {token}"}) for scheme in ("bearer", "Bearer")
        ]
    assert [a.status_code for a in answers] == [200, 200]


@pytest.mark.parametrize("suffix", ["", "  .", "\t.", " ."])
async def test_rules_read_the_claims_envoy_verified_however_the_token_is_written(suffix: str) -> None:
    """A second reading of the token could disagree with Envoy's (trailing characters Envoy ignores):
    the proxy reads the payload Envoy verified, so a Deny rule on the subject holds."""
    deny = """
    authorization:
      defaultAction: Allow
      rules: [{source: {jwt: {claims: [{name: sub, values: [mallory]}]}}, action: Deny}]"""
    with OIDCIssuerFake(subject="mallory") as issuer:
        async with served(_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with run_gateway(_route(port, _oauth(issuer.issuer) + deny), mcp_proxy=True) as gw:
                answer = await _call_echo(gw, f"Bearer {issuer.issue(_resource(gw))}{suffix}")
    assert answer.status_code == 403 and "access denied" in answer.json()["error"]["message"]


async def test_keys_not_fetched_yet_are_a_503_to_retry_not_a_bad_token() -> None:
    with OIDCIssuerFake() as issuer:
        unreachable = _oauth(issuer.issuer).replace(f"uri: {issuer.issuer}/jwks", "uri: http://127.0.0.1:9/jwks")
        async with served(_server().streamable_http_app(json_response=True)) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with run_gateway(_route(port, unreachable), mcp_proxy=True) as gw:
                answer = await initialize(gw, issuer.issue(_resource(gw)))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "www-authenticate" not in answer.headers


async def test_a_route_whose_issuer_is_down_is_served_once_it_answers() -> None:
    """The issuer's metadata cannot be had at start (503): the route is not served (a client gets
    no MCP answer, nothing is open), and the control plane asks again until the issuer answers,
    then serves the route with its keys."""
    async with _gateway(jwks=False, issuer_down=True) as (gw, issuer):
        refused = await initialize(gw, issuer.issue(_resource(gw)))
        assert refused.status_code == 404
        issuer.always_fail(None)
        token = issuer.issue(_resource(gw))
        for _ in range(100):  # the first retry is 5 s after the first failure
            answered = await initialize(gw, token)
            if answered.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert answered.status_code == 200, answered.text
        assert (await initialize(gw)).status_code == 401  # and the route is not open: its token is checked


async def test_a_route_edited_to_take_its_keys_from_its_issuer_is_never_left_out() -> None:
    """A served route whose jwks is edited away: the edit is applied once the issuer told its
    jwks_uri, so no configuration applied in between lacks the route (a client would get a 404)."""
    async with _gateway() as (gw, issuer):
        token = issuer.issue(_resource(gw))
        assert (await initialize(gw, token)).status_code == 200
        served: list[bool] = []
        gw.plane.on_applied = lambda: served.append(bool(gw.plane.compiled()[FLEET].translator.mcp_routes))
        source = gw.plane.source
        assert isinstance(source, FileSource)
        config = source.path / "gateway.yaml"
        keys = f"\n      jwks: {{remoteJWKS: {{uri: {issuer.issuer}/jwks}}}}"
        assert keys in config.read_text()
        config.write_text(config.read_text().replace(keys, ""))
        await gw.plane.read_again()
        assert served and all(served), served
        assert gw.plane.compiled()[FLEET].translator.mcp_routes[0].name == "default/tools"
        assert (await initialize(gw, token)).status_code == 200

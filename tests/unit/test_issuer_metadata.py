"""The control plane's fetch of an OAuth issuer's metadata for the jwks_uri of an MCPRoute that names
no jwks: where it looks (RFC 8414 and OpenID Connect discovery, as the MCP specification orders
them), what it takes, what stops it, and the discovery that asks again until the issuer answers.
The issuers are small aiohttp servers in the test (stand-ins answering what a test gives them) and
the fakes' OIDC issuer."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from aigw_fakes.oidc_issuer import OIDCIssuerFake
from aigw_xds.compile.context import IssuerMetadata
from aigw_xds.issuer_metadata import IssuerDiscovery, fetch, fetch_all, issuers_to_discover, metadata_urls, new_session
from tests.resource_text import gateway, resources
from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route


def test_where_the_metadata_is_looked_for():
    assert metadata_urls("https://id.example.com") == [
        "https://id.example.com/.well-known/oauth-authorization-server",
        "https://id.example.com/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://id.example.com/tenant1/") == [
        "https://id.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://id.example.com/.well-known/openid-configuration/tenant1",
        "https://id.example.com/tenant1/.well-known/openid-configuration",
        "https://id.example.com/tenant1/.well-known/oauth-authorization-server",
    ]


def _oauth_without_jwks(issuer: str, path: str = "/mcp") -> str:
    return f"""
  path: {path}
  securityPolicy:
    oauth:
      issuer: {issuer}
      protectedResourceMetadata: {{resource: "http://localhost:1975{path}"}}"""


def test_only_routes_without_jwks_need_their_issuer_fetched():
    keyed = _oauth_without_jwks("https://a.example", "/keyed").replace(
        "      protectedResourceMetadata",
        '      jwks: {remoteJWKS: {uri: "https://a.example/k"}}\n      protectedResourceMetadata',
    )
    with_keys = mcp_route("keyed", spec_extra=keyed)
    without = mcp_route("open", spec_extra=_oauth_without_jwks("https://b.example/realms/x"))
    assert issuers_to_discover(resources(gateway() + with_keys + without + MCP_BACKENDS)) == {
        "https://b.example/realms/x"
    }


class Issuer:
    """An issuer's web server answering `documents` (path -> (status, body), a body with `{url}` in
    it naming the server itself); 404 elsewhere. `pieces`: a 200's body is sent in that many
    writes, a moment apart."""

    def __init__(self, documents: dict[str, tuple[int, str]], pieces: int = 1) -> None:
        self.documents = documents
        self.pieces = pieces
        self.asked: list[str] = []
        self.url = ""

    async def __aenter__(self) -> Issuer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(request.path)
        status, text = self.documents.get(request.path, (404, "not found"))
        body = text.replace("{url}", self.url).encode()
        if status in (301, 302):
            raise web.HTTPFound(body.decode())
        if self.pieces == 1 or status != 200:
            return web.Response(status=status, body=body, content_type="application/json")
        answer = web.StreamResponse(status=status, headers={"content-type": "application/json"})
        await answer.prepare(request)
        size = -(-len(body) // self.pieces)
        for at in range(0, len(body), size):
            await answer.write(body[at : at + size])
            await asyncio.sleep(0.05)
        await answer.write_eof()
        return answer


def _document(jwks_uri: str, issuer: str = "{url}") -> str:
    return json.dumps({"issuer": issuer, "jwks_uri": jwks_uri})


async def _fetched(issuer_url: str) -> IssuerMetadata:
    async with new_session() as session:
        return await fetch(session, issuer_url)


async def test_the_fakes_oidc_issuer_tells_its_jwks_uri():
    async with OIDCIssuerFake() as issuer:
        learnt = await fetch_all([issuer.issuer])
    assert learnt == {issuer.issuer: IssuerMetadata(jwks_uri=f"{issuer.issuer}/jwks")}


async def test_an_answer_other_than_200_or_a_document_without_jwks_uri_moves_on_to_the_next_place():
    """RFC 8414 makes jwks_uri optional: an authorization server document without it is passed by
    for the OpenID configuration, here only at the appended path (as some providers put it), after
    a server error at another place."""
    documents = {
        "/.well-known/oauth-authorization-server/realms/x": (200, json.dumps({"issuer": "{url}/realms/x"})),
        "/.well-known/openid-configuration/realms/x": (503, "{}"),
        "/realms/x/.well-known/openid-configuration": (200, _document("https://keys.example/certs", "{url}/realms/x")),
    }
    async with Issuer(documents) as issuer:
        learnt = await _fetched(issuer.url + "/realms/x")
        assert learnt == IssuerMetadata(jwks_uri="https://keys.example/certs")
        assert issuer.asked == list(documents)


async def test_a_document_sent_in_pieces_is_read_whole():
    padded = json.dumps({"issuer": "{url}", "jwks_uri": "https://keys.example/certs", "pad": "x" * 200_000})
    async with Issuer({"/.well-known/oauth-authorization-server": (200, padded)}, pieces=4) as issuer:
        assert (await _fetched(issuer.url)).jwks_uri == "https://keys.example/certs"


@pytest.mark.parametrize(
    ("document", "miss"),
    [
        (_document("https://evil.example/keys", "https://evil.example"), "names issuer 'https://evil.example', not"),
        (json.dumps({"jwks_uri": "https://keys.example/certs"}), "names issuer None, not"),
        (_document("file:///etc/keys"), "names a jwks_uri Envoy cannot fetch: 'file:///etc/keys' is not an http"),
        (_document("https://keys.example:99999/certs"), "names a jwks_uri Envoy cannot fetch"),
        (_document('https://keys.example/"x'), "names a jwks_uri Envoy cannot fetch"),
        ("[1, 2]", "is not a JSON object"),
        ("<html>", "is not JSON"),
    ],
)
async def test_a_document_that_cannot_be_used_is_passed_by_saying_why(document: str, miss: str):
    """Metadata naming another issuer is not used (RFC 8414 section 3.3); a jwks_uri Envoy could
    not take would hold the whole Gateway's build."""
    async with Issuer({"/.well-known/openid-configuration": (200, document)}) as issuer:
        learnt = await _fetched(issuer.url)
    assert learnt.jwks_uri == ""
    assert learnt.problem.startswith(f"{issuer.url}/.well-known/oauth-authorization-server answered 404; ")
    assert f"{issuer.url}/.well-known/openid-configuration {miss}" in learnt.problem


async def test_a_redirect_is_not_followed():
    documents = {"/.well-known/oauth-authorization-server": (302, "http://127.0.0.2:9/elsewhere")}
    async with Issuer(documents) as issuer:
        learnt = await _fetched(issuer.url)
    assert f"{issuer.url}/.well-known/oauth-authorization-server answered 302" in learnt.problem


async def test_what_stops_the_fetch_is_said():
    refused = await _fetched("http://127.0.0.1:9")  # nothing listens on the discard port
    where = "http://127.0.0.1:9/.well-known/oauth-authorization-server"
    assert refused.problem.startswith(f"{where}: cannot connect to 127.0.0.1:9 (") and "ssl:" not in refused.problem
    query = await _fetched("https://id.example.com/t?tenant=a")
    assert "has a query or fragment, which an issuer has not" in query.problem


async def test_discovery_asks_again_until_the_issuer_answers_then_keeps_what_it_learnt():
    """A failure is asked again; a learnt jwks_uri is read again later, and a failure then (the
    issuer down for a while) keeps it, so the route stays served; a new one replaces it."""
    path = "/.well-known/oauth-authorization-server"
    documents: dict[str, tuple[int, str]] = {path: (500, "{}")}
    async with Issuer(documents) as issuer:
        route = mcp_route(spec_extra=_oauth_without_jwks(issuer.url))
        changes: list[IssuerMetadata] = []
        discovery: IssuerDiscovery

        async def learnt() -> None:
            changes.append(discovery.known[issuer.url])

        async def until(jwks_uri: str) -> None:
            for _ in range(200):
                if discovery.known[issuer.url].jwks_uri == jwks_uri:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"{jwks_uri} not learnt: {discovery.known[issuer.url]}")

        discovery = IssuerDiscovery(learnt, first_retry_s=0.05, refresh_s=0.2)
        try:
            discovery.want(resources(gateway() + route + MCP_BACKENDS))
            await discovery.answered(timeout=5)
            assert "answered 500" in discovery.known[issuer.url].problem
            documents[path] = (200, _document("https://k.example/certs"))
            await until("https://k.example/certs")
            documents[path] = (500, "{}")  # down: what was learnt stays
            asked = len(issuer.asked)
            while len(issuer.asked) < asked + 4:
                await asyncio.sleep(0.05)
            assert discovery.known[issuer.url].jwks_uri == "https://k.example/certs"
            documents[path] = (200, _document("https://k.example/rotated"))
            await until("https://k.example/rotated")
            assert [c.jwks_uri for c in changes] == ["", "https://k.example/certs", "https://k.example/rotated"]
            # No route needs it any more, then one again: what was learnt is not lost to a failure.
            discovery.want(resources(gateway() + MCP_BACKENDS))
            documents[path] = (500, "{}")
            discovery.want(resources(gateway() + route + MCP_BACKENDS))
            await discovery.answered(timeout=5)
            assert discovery.known[issuer.url].jwks_uri == "https://k.example/rotated"
        finally:
            await discovery.stop()


@pytest.mark.parametrize("issuer", ["https://keycloak.example.com/realms/master"])
async def test_an_unresolvable_issuer_is_a_problem_not_an_exception(issuer: str):
    [learnt] = (await fetch_all([issuer])).values()
    assert not learnt.jwks_uri and "keycloak.example.com" in learnt.problem

"""The control plane's fetch of an OAuth issuer's metadata for the jwks_uri of an MCPRoute that names
no jwks: where it looks (RFC 8414 and OpenID Connect discovery, as the MCP specification orders
them), what it takes, what stops it, and the discovery that asks again until the issuer answers.
The issuers are small aiohttp servers in the test (stand-ins answering what a test gives them) and
the fakes' OIDC issuer."""

from __future__ import annotations

import asyncio

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
    """An issuer's web server answering `documents` (path -> (status, body)); 404 elsewhere."""

    def __init__(self, documents: dict[str, tuple[int, str]]) -> None:
        self.documents = documents
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

    async def _answer(self, request: web.Request) -> web.Response:
        self.asked.append(request.path)
        status, body = self.documents.get(request.path, (404, "not found"))
        return web.Response(status=status, text=body, content_type="application/json")


async def _fetched(issuer_url: str) -> IssuerMetadata:
    async with new_session() as session:
        return await fetch(session, issuer_url)


async def test_the_fakes_oidc_issuer_tells_its_jwks_uri():
    async with OIDCIssuerFake() as issuer:
        learnt = await fetch_all([issuer.issuer])
    assert learnt == {issuer.issuer: IssuerMetadata(jwks_uri=f"{issuer.issuer}/jwks")}


async def test_a_4xx_or_a_document_without_jwks_uri_moves_on_to_the_next_place():
    """RFC 8414 makes jwks_uri optional: an authorization server document without it is passed by
    for the OpenID configuration, here only at the appended path (as some providers put it)."""
    documents = {
        "/.well-known/oauth-authorization-server/realms/x": (200, '{"issuer": "i"}'),
        "/.well-known/openid-configuration/realms/x": (403, "{}"),
        "/realms/x/.well-known/openid-configuration": (200, '{"jwks_uri": "https://keys.example/certs"}'),
    }
    async with Issuer(documents) as issuer:
        learnt = await _fetched(issuer.url + "/realms/x")
        assert learnt == IssuerMetadata(jwks_uri="https://keys.example/certs")
        assert issuer.asked == list(documents)


async def test_what_stops_the_fetch_is_said():
    async with Issuer({"/.well-known/oauth-authorization-server": (503, "{}")}) as issuer:
        learnt = await _fetched(issuer.url)
        assert learnt == IssuerMetadata(problem=f"{issuer.url}/.well-known/oauth-authorization-server answered 503")
        assert issuer.asked == ["/.well-known/oauth-authorization-server"]  # a server error: asked again later
    async with Issuer({"/.well-known/openid-configuration": (200, '{"jwks_uri": "file:///etc/keys"}')}) as issuer:
        learnt = await _fetched(issuer.url)
    assert learnt.jwks_uri == "" and learnt.problem == "; ".join(
        [
            f"{issuer.url}/.well-known/oauth-authorization-server answered 404",
            f"{issuer.url}/.well-known/openid-configuration names no http(s) jwks_uri",
        ]
    )
    refused = await _fetched("http://127.0.0.1:9")  # nothing listens on the discard port
    assert refused.problem.startswith("http://127.0.0.1:9/.well-known/oauth-authorization-server: Cannot connect")


async def test_discovery_asks_again_until_the_issuer_answers_and_compiles_again_each_time():
    documents: dict[str, tuple[int, str]] = {"/.well-known/oauth-authorization-server": (500, "{}")}
    async with Issuer(documents) as issuer:
        route = mcp_route(spec_extra=_oauth_without_jwks(issuer.url))
        changes: list[IssuerMetadata] = []
        discovery: IssuerDiscovery

        async def learnt() -> None:
            changes.append(discovery.known[issuer.url])

        discovery = IssuerDiscovery(learnt, first_retry_s=0.05)
        try:
            discovery.want(resources(gateway() + route + MCP_BACKENDS))
            await discovery.answered(timeout=5)
            assert discovery.known[issuer.url].problem.endswith("answered 500")
            documents["/.well-known/oauth-authorization-server"] = (200, '{"jwks_uri": "https://k.example/certs"}')
            for _ in range(100):
                if discovery.known[issuer.url].jwks_uri:
                    break
                await asyncio.sleep(0.05)
            assert [c.jwks_uri for c in changes] == ["", "https://k.example/certs"]  # a repeated failure is no change
            asked = len(issuer.asked)
            await asyncio.sleep(0.2)
            assert len(issuer.asked) == asked  # learnt: not asked again
            # No route needs it any more: forgotten only if it was not learnt.
            discovery.want(resources(gateway() + MCP_BACKENDS))
            assert discovery.known[issuer.url].jwks_uri == "https://k.example/certs"
        finally:
            await discovery.stop()


@pytest.mark.parametrize("issuer", ["https://keycloak.example.com/realms/master"])
async def test_an_unresolvable_issuer_is_a_problem_not_an_exception(issuer: str):
    [learnt] = (await fetch_all([issuer])).values()
    assert not learnt.jwks_uri and "keycloak.example.com" in learnt.problem

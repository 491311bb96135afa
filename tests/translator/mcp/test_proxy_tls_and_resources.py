"""The MCP proxy with a backend behind TLS (a BackendTLSPolicy's CA and server name: an SDK MCP
server served by uvicorn over TLS with a test CA stands in for an HTTPS MCP server) and the
resources of several backends (the bundled fake MCP server, the stand-in for a real one, twice)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_fakes import McpFake
from aigw_translator.mcp import McpProxy
from tests.e2e.harness.certs import CertificateAuthority

from .servers import beta_server, served

FLEET, ROUTE = "ns/gw", "ns/tools"


def _leaves(group: BaseExceptionGroup) -> list[Exception]:
    return [
        leaf
        for e in group.exceptions
        for leaf in (_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
        if isinstance(leaf, Exception)
    ]


@contextlib.asynccontextmanager
async def _proxied(*backends: config_pb2.MCPBackend) -> AsyncIterator[ClientSession]:
    config = config_pb2.TranslatorConfig(
        name=FLEET, seal_key=b"k", mcp_routes=[config_pb2.MCPRoute(name=ROUTE, backends=list(backends))]
    )
    proxy = McpProxy({FLEET: config}.get)
    port = await proxy.start("127.0.0.1:0")
    routing = {contract.MCP_FLEET_HEADER: FLEET, contract.MCP_ROUTE_HEADER: ROUTE}
    try:
        async with (
            httpx2.AsyncClient(headers=routing) as http,
            streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
    finally:
        await proxy.stop()


async def test_a_tls_backend_is_verified_with_its_policys_ca_and_server_name(tmp_path: Path) -> None:
    ca, other = CertificateAuthority(), CertificateAuthority("another CA")
    pem, other_pem = ca.pem, other.pem
    files = ca.issue("mcp", dns=("mcp.internal.test",)).write(tmp_path, "mcp")
    async with served(beta_server().streamable_http_app(json_response=True), files) as url:
        trusted = config_pb2.MCPBackend(
            name="b", url=url, tls=config_pb2.MCPBackendTLS(sni="mcp.internal.test", ca_pem=pem)
        )
        async with _proxied(trusted) as session:
            found = await session.call_tool("b__search", {"query": "q"})
            assert found.content[0].text == "beta found:q"  # type: ignore[union-attr]
        # Another CA, or a name the certificate does not have: the backend is not reached.
        for tls in (
            config_pb2.MCPBackendTLS(sni="mcp.internal.test", ca_pem=other_pem),
            config_pb2.MCPBackendTLS(sni="wrong.name.test", ca_pem=pem),
        ):
            refused: list[Exception] = []
            try:
                async with _proxied(config_pb2.MCPBackend(name="b", url=url, tls=tls)):
                    pass
            except* MCPError as group:  # raised inside the SDK client's task groups
                refused.extend(_leaves(group))
            assert [str(e) for e in refused] == ["no backend of MCP route ns/tools could be initialized"]


async def test_resources_of_several_backends_are_listed_and_read_by_their_prefixed_uri() -> None:
    async with McpFake(name="first") as first, McpFake(name="second") as second:
        backends = [config_pb2.MCPBackend(name=n, url=f.url) for n, f in (("one", first), ("two", second))]
        async with _proxied(*backends) as session:
            uris = [str(r.uri) for r in (await session.list_resources()).resources]
            assert uris == ["one+fake://info", "two+fake://info"]
            read = await session.read_resource("two+fake://info")
    text = read.contents[0].text  # type: ignore[union-attr]
    assert "second" in text and "first" not in text
    assert [str(c.uri) for c in read.contents] == ["two+fake://info"]
    assert [
        r.body["params"]["uri"] for r in second.requests if r.body and r.body.get("method") == "resources/read"
    ] == ["fake://info"]

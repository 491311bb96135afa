"""The proxy's connections to MCP backends (backends.Backends): a kept-alive connection the backend
closes as the proxy sends on it. The backend here is a stand-in written on asyncio streams, so that
it can close a connection exactly then (a server closing an idle connection at its keep-alive
timeout while the proxy reuses it: a new user's session lost a backend so)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.mcp.backends import Backends, ClientHeaders


@asynccontextmanager
async def _closing_second_requests() -> AsyncIterator[tuple[str, list[str]]]:
    """A backend answering the first request of each connection (keep-alive) and closing the
    connection on its second, unanswered; yields its URL and the methods it answered."""
    answered: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for turn in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length"))
            body = json.loads(await reader.readexactly(length))
            if turn == 1:
                writer.close()
                return
            answered.append(body["method"])
            reply = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": {}}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(reply)}\r\n\r\n".encode()
                + reply
            )
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp", answered
    finally:
        server.close()


async def test_a_list_is_sent_again_on_a_connection_the_backend_closed_and_a_call_is_not() -> None:
    async with _closing_second_requests() as (url, answered):
        backends = Backends()
        backend = config_pb2.MCPBackend(name="b", url=url)
        client = ClientHeaders({})
        try:
            for method in ("initialize", "tools/list"):
                response = await backends.send(backend, {"jsonrpc": "2.0", "id": 1, "method": method}, client, None)
                assert response.status == 200
                await response.read()
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "t"}}
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await backends.send(backend, call, client, None)
        finally:
            await backends.close()
    # The list went on the first connection, found closed, and again on a second one; the call's
    # connection (the second, reused) closed on it: not sent again (a tool may act twice).
    assert answered == ["initialize", "tools/list"]

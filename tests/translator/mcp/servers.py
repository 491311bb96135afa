"""Real MCP servers for the proxy's tests: made with the official SDK's MCPServer, served by uvicorn
on loopback ephemeral ports inside the test process. They stand in for an MCPRoute's backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

ALPHA_KEY = "alpha-secret-key"
BETA_KEY = "beta-secret-key"


def alpha_server() -> MCPServer:
    """A calculator with a prompt, a tool the route hides and a tool that reports progress."""
    server = MCPServer("alpha")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Adds two numbers."""
        return f"alpha:{a + b}"

    @server.tool()
    def echo(text: str) -> str:
        """Echoes its text."""
        return f"alpha echo:{text}"

    @server.tool()
    def internal_reset() -> str:
        """A tool the route's selector hides."""
        return "alpha reset everything"

    @server.tool()
    async def count(steps: int, ctx: Context) -> str:
        """Counts to steps, reporting each step as progress."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"alpha counted {steps}"

    @server.tool()
    async def wait(ctx: Context) -> str:
        """Never ends on its own (a long tool call)."""
        await ctx.report_progress(0, None, "waiting")
        await asyncio.Event().wait()
        return "never"

    @server.prompt()
    def greet(name: str) -> str:
        """A greeting."""
        return f"Hello {name}, from alpha"

    return server


def beta_server() -> MCPServer:
    """A search service; its route shows only `search`."""
    server = MCPServer("beta")

    @server.tool()
    def search(query: str) -> str:
        """Searches."""
        return f"beta found:{query}"

    @server.tool()
    def add(a: int, b: int) -> str:
        """A tool of the same name as alpha's, hidden by the route's selector."""
        return f"beta:{a + b}"

    return server


class Recorder:
    """ASGI middleware in front of a backend: records each request's headers, method and JSON-RPC
    method, and answers 401 when the API key it expects (header name, value) is not there, as an
    MCP server behind an API-key check does."""

    def __init__(self, app: Asgi, key: tuple[str, str] | None = None) -> None:
        self.app = app
        self.key = key
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            message = json.loads(body) if body else {}
        except ValueError:
            message = {}
        self.requests.append(
            {"headers": headers, "method": scope["method"], "body": message, "query": scope["query_string"].decode()}
        )
        if self.key is not None and headers.get(self.key[0].lower()) != self.key[1]:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def calls(self, rpc_method: str) -> list[dict[str, Any]]:
        """The requests that carried rpc_method."""
        return [r for r in self.requests if r["body"].get("method") == rpc_method]


@contextlib.asynccontextmanager
async def served(app: Asgi, tls: tuple[Path, Path] | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 at an ephemeral port (over TLS with `tls`: the certificate
    and key files); yields its MCP endpoint URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    certfile, keyfile = (str(tls[0]), str(tls[1])) if tls else (None, None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """The URL of a loopback port bound but not listening while the context lasts: connections to
    it are refused (stands in for a backend that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"

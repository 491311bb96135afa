"""The proxy's client side: one HTTP exchange with one backend (MCP server), over TCP, TLS or a
unix socket, with only the headers meant for that backend, and its answer read as JSON or as an
event stream."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..sse import SSEParser
from . import jsonrpc
from .sessions import BackendSession

# How long a backend may take to answer an exchange the proxy waits on before answering the client
# (a list, ending a session): past it, that backend counts as failed.
EXCHANGE_TIMEOUT = 30.0
# How long a backend may take to open its session (initialize, then initialized): every client's
# initialize waits for the slowest backend, and one that hangs is left out after this.
INITIALIZE_TIMEOUT = 10.0
# How long connecting to a backend may take. Nothing else is bounded: a tool call lasts as long as
# the tool takes (Envoy's route timeout bounds the client's request).
CONNECT_TIMEOUT = 10.0
# How long an idle connection to a backend is kept for reuse: under the 5 s after which uvicorn (the
# official Python SDK's servers) and Node close theirs, so that the proxy seldom sends on one the
# server is closing (send() sends again what it may on a connection found closed).
KEEPALIVE_S = 4.0
# The largest answer the proxy reads whole (initialize, a list page, a rewritten result).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# How much of an error answer is read (and dropped) so that the connection can be reused.
_ERROR_BODY_BYTES = 64 * 1024

SESSION_HEADER = "Mcp-Session-Id"
PROTOCOL_HEADER = "MCP-Protocol-Version"
JSON = "application/json"
EVENT_STREAM = "text/event-stream"


class BackendError(Exception):
    """A backend failed an exchange; the message names the backend and never a credential."""

    def __init__(self, backend: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"backend {backend}: {reason}")
        self.backend = backend
        self.reason = reason
        self.status = status


def reason_of(exc: BaseException) -> str:
    """A loggable description of a client-side failure (no URL: a query parameter may hold a key)."""
    if isinstance(exc, BackendError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"exchange failed ({type(exc).__name__})"
    return type(exc).__name__


def backend_url(backend: config_pb2.MCPBackend) -> URL:
    """The URL a backend is asked at, with its API key when it goes as a query parameter."""
    url = URL(backend.url)
    if backend.HasField("api_key") and backend.api_key.query_param:
        url = url.update_query({backend.api_key.query_param: backend.api_key.key})
    return url


@dataclass(frozen=True, slots=True)
class ClientHeaders:
    """What of a client's request may reach the backends of its route. `forwardable`: its headers as
    they stand once the route's security policy ran (a backend gets those its forward_headers name);
    `added`: the headers the proxy sends every backend of the route (the client's id, its claims).
    `owned` (lower-case) names every header the proxy sends so, sent this time or not: no header of
    the client's, forwarded or renamed, ever takes one of those names."""

    forwardable: Mapping[str, str]
    added: Mapping[str, str] = field(default_factory=dict)
    owned: frozenset[str] = frozenset()


def backend_headers(
    backend: config_pb2.MCPBackend, client: ClientHeaders, session: BackendSession | None
) -> dict[str, str]:
    """The headers of a request to a backend: the client's headers the backend's forward_headers
    name (renamed), then those the proxy adds for every backend, then the transport's own and the
    backend's API key, which nothing overrides. Nothing else of the client's request reaches a
    backend."""
    headers: dict[str, str] = {}
    for forward in backend.forward_headers:
        name = forward.backend_header or forward.name
        value = client.forwardable.get(forward.name)
        # (Never a gateway header: a backend that is the proxy itself would take it for Envoy's.)
        if value is not None and name.lower() not in client.owned and not _gateways(name):
            headers[name] = value
    headers.update((name, value) for name, value in client.added.items() if not _gateways(name))
    headers[contract.MCP_HOP_HEADER] = "1"
    headers["Accept"] = f"{JSON}, {EVENT_STREAM}"
    headers["Content-Type"] = JSON
    if session is not None:
        if session.session_id:
            headers[SESSION_HEADER] = session.session_id
        if session.protocol_version:
            headers[PROTOCOL_HEADER] = session.protocol_version
    if backend.HasField("api_key") and not backend.api_key.query_param:
        header = backend.api_key.header or "Authorization"
        value = backend.api_key.key
        headers[header] = f"Bearer {value}" if header.lower() == "authorization" else value
    return _without_duplicates(headers)


def _gateways(name: str) -> bool:
    return name.lower().startswith(contract.OVERRIDE_HEADER_PREFIX)


def _without_duplicates(headers: dict[str, str]) -> dict[str, str]:
    """Headers differing only in case collapse to the last one set (the transport's and the key's,
    set last, win over a forwarded header of the same name)."""
    by_name: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        by_name[name.lower()] = (name, value)
    return dict(by_name.values())


class Backends:
    """The HTTP clients the proxy reaches backends with: one for TCP (and TLS) and one per unix
    socket, keep-alive, no total timeout; TLS contexts built once per trusted CA bundle."""

    def __init__(self) -> None:
        self._clients: dict[str, aiohttp.ClientSession] = {}
        self._tls: dict[str, ssl.SSLContext] = {}

    def _client(self, backend: config_pb2.MCPBackend) -> aiohttp.ClientSession:
        key = backend.unix_socket
        client = self._clients.get(key)
        if client is None or client.closed:
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(path=key, keepalive_timeout=KEEPALIVE_S)
                if key
                else aiohttp.TCPConnector(limit_per_host=0, keepalive_timeout=KEEPALIVE_S)
            )
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None)
            # No cookie jar: a cookie one backend sets (a session, a load balancer's) would go back to
            # it for every client, and to every other backend of the same host.
            client = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar()
            )
            self._clients[key] = client
        return client

    def _ssl(self, backend: config_pb2.MCPBackend) -> ssl.SSLContext | bool:
        if not backend.HasField("tls"):
            return True  # https URLs are verified against the system store; http ones ignore it
        ca = backend.tls.ca_pem
        context = self._tls.get(ca)
        if context is None:
            context = ssl.create_default_context(cadata=ca or None)
            self._tls[ca] = context
        return context

    async def send(
        self,
        backend: config_pb2.MCPBackend,
        message: jsonrpc.Message | None,
        client: ClientHeaders,
        session: BackendSession | None,
        method: str = "POST",
    ) -> aiohttp.ClientResponse:
        """The backend's response to one message (POST) or to ending its session (DELETE), its body
        unread: the caller releases it. A message that does nothing twice over is sent once more
        when the backend closed the connection without answering (a kept-alive one it was closing
        as the proxy reused it: the session's start lost a backend so); a tool call is not."""
        headers = backend_headers(backend, client, session)
        if message is None:
            del headers["Content-Type"]
        sni = backend.tls.sni if backend.HasField("tls") and backend.tls.sni else None

        async def sent() -> aiohttp.ClientResponse:
            return await self._client(backend).request(
                method,
                backend_url(backend),
                data=jsonrpc.encode(message) if message is not None else None,
                headers=headers,
                ssl=self._ssl(backend),
                server_hostname=sni,
                allow_redirects=False,
            )

        try:
            return await sent()
        except aiohttp.ServerDisconnectedError:
            if not _harmless_twice(message):
                raise
            return await sent()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _harmless_twice(message: jsonrpc.Message | None) -> bool:
    """Whether a backend may get a message twice: ending a session (None: a DELETE; the second is a
    404), starting one (an orphan session at worst), a ping or a list; never a call."""
    if message is None:
        return True
    method = message.get("method")
    return isinstance(method, str) and (
        method in ("initialize", "notifications/initialized", "ping") or method.endswith("/list")
    )


def content_type(response: aiohttp.ClientResponse) -> str:
    return response.headers.get("Content-Type", "").partition(";")[0].strip().lower()


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is larger than limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def drain_error(response: aiohttp.ClientResponse) -> None:
    """Read a little of an error answer (never logged: it may echo what was sent) and let it go."""
    await response.content.read(_ERROR_BODY_BYTES)
    response.release()


async def messages(backend: str, response: aiohttp.ClientResponse) -> AsyncIterator[Any]:
    """The JSON values a 2xx response carries: one JSON body, or each event of an event stream."""
    kind = content_type(response)
    if kind == EVENT_STREAM:
        parser = SSEParser()
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                if event.data.strip():
                    yield _decoded(backend, event.data.encode())
        for event in parser.finish():
            if event.data.strip():
                yield _decoded(backend, event.data.encode())
        return
    if kind != JSON:
        raise BackendError(backend, f"answered with content type {kind or 'none'}")
    body = await read_limited(response, MAX_ANSWER_BYTES)
    if body is None:
        raise BackendError(backend, "answered more than the proxy reads")
    yield _decoded(backend, body)


def _decoded(backend: str, data: bytes) -> Any:
    try:
        return jsonrpc.decode(data)
    except ValueError:
        raise BackendError(backend, "answered something that is not JSON") from None


async def settled(backend: str, response: aiohttp.ClientResponse, tolerated: tuple[int, ...] = ()) -> None:
    """An answer that carries nothing the proxy needs read (a little of it) and let go; BackendError
    when it is an HTTP error other than those `tolerated`."""
    await drain_error(response)
    if response.status >= 300 and response.status not in tolerated:
        raise BackendError(backend, f"answered HTTP {response.status}", response.status)


async def answer(backend: str, response: aiohttp.ClientResponse, request_id: object) -> Any:
    """The result of the backend's answer to request_id (raises BackendError for a JSON-RPC error,
    an HTTP error, or a stream that ends without it). Notifications on the way are dropped."""
    if response.status >= 300:
        await settled(backend, response)
    async for message in messages(backend, response):
        if jsonrpc.kind(message) != "response" or message.get("id") != request_id:
            continue
        if "error" in message:
            error = message["error"]
            detail = error.get("message") if isinstance(error, dict) else None
            raise BackendError(backend, f"answered a JSON-RPC error ({detail})")
        return message["result"]
    raise BackendError(backend, "ended its answer without a result")

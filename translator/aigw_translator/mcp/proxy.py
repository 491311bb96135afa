"""The MCP proxy's HTTP server: the Streamable HTTP transport for clients, each method routed to the
backend that owns what it names or fanned out to all of them and merged.

Which route a request is for comes from the headers Envoy sets (fleet and route); everything a
later request needs of its session travels in the sealed session id (sessions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..logs import get_logger
from ..sse import SSEParser, encode_event
from . import client_auth, jsonrpc, merge, names, sessions
from .backends import (
    EVENT_STREAM,
    EXCHANGE_TIMEOUT,
    INITIALIZE_TIMEOUT,
    JSON,
    MAX_ANSWER_BYTES,
    PROTOCOL_HEADER,
    SESSION_HEADER,
    BackendError,
    Backends,
    ClientHeaders,
    answer,
    content_type,
    drain_error,
    read_limited,
    reason_of,
    settled,
)
from .sessions import BackendSession

log = get_logger(__name__)

# The largest request body a client may send.
MAX_BODY_BYTES = 4 * 1024 * 1024
# The most pages of one list the proxy follows per backend (a backend whose cursors never end).
MAX_PAGES = 100
# How many fleets' routes the proxy keeps indexed (the oldest goes first).
_FLEETS_INDEXED = 64
# How long stop() waits for connections to close once their exchanges were cut.
_SHUTDOWN_GRACE = 1.0

Configs = Callable[[str], config_pb2.TranslatorConfig | None]
# A route as the index keeps it: the route, its backends by name and its security policy (made once
# per configuration).
_IndexedRoute = tuple[config_pb2.MCPRoute, dict[str, config_pb2.MCPBackend], client_auth.RoutePolicy]


@dataclass(frozen=True, slots=True)
class _Route:
    """The route a request is for, and what answering it needs."""

    fleet: str
    route: config_pb2.MCPRoute
    secret: bytes
    backends: Mapping[str, config_pb2.MCPBackend]
    policy: client_auth.RoutePolicy
    # Who sent the request, as the route's security policy admitted it.
    client: client_auth.Client

    @property
    def client_headers(self) -> ClientHeaders:
        """What of the client's request reaches the backends."""
        return self.client.headers


@dataclass(frozen=True, slots=True)
class _Session:
    """A client session opened from its id, for a route."""

    token: str
    route: _Route
    backends: list[BackendSession]

    def of(self, backend: str) -> BackendSession | None:
        return next((s for s in self.backends if s.backend == backend), None)


def _json_response(
    message: jsonrpc.Message, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, body=jsonrpc.encode(message), content_type=JSON, headers=headers)


# Where a request keeps what its answer's headers tell the access log (_logged).
_LOGGED = web.RequestKey("aigw_mcp_logged", dict)


async def _logged(request: web.Request, response: web.StreamResponse) -> None:
    """Before an answer's headers go: the method, tool and backend it was for (contract.MCP_*_HEADER),
    which Envoy's access log reads."""
    for name, value in request.get(_LOGGED, {}).items():
        if isinstance(value, str) and value.isascii() and value.isprintable() and len(value) <= 256:
            response.headers[name] = value


def _one_address(host: str) -> str:
    """The one address the proxy binds for `host`: itself when it is one, else what the name
    resolves to, IPv4 first (as the control plane tells Envoy): `localhost`, both 127.0.0.1 and ::1,
    would be two sockets, each with a port of its own for port 0."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    for family in (socket.AF_INET, socket.AF_UNSPEC):
        with contextlib.suppress(OSError, IndexError):
            return str(socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)[0][4][0])
    return host


def _config_digest(config: config_pb2.TranslatorConfig) -> bytes:
    """The secret of a configuration with no mcp_session_key (one written by hand, or by a control
    plane older than the key): a digest of all of it, its credentials included, which only who
    holds them all can make."""
    return hashlib.sha256(b"aigw-mcp-session\0" + config.SerializeToString(deterministic=True)).digest()


def _session_ended(outcome: object, backend_session: BackendSession) -> bool:
    """Whether an exchange's outcome says the backend no longer knows its session (a 404 to a
    request that carried one: it restarted, expired it, or the client ended it)."""
    return isinstance(outcome, BackendError) and outcome.status == 404 and bool(backend_session.session_id)


def _session_ended_refusal(backend: str) -> web.Response:
    """The transport's 404 for a session that ended: the client initializes again."""
    return _refusal(404, jsonrpc.INVALID_REQUEST, f"the session of backend {backend} ended: initialize again")


def _refusal(status: int, code: int, message: str) -> web.Response:
    """An HTTP error for input the proxy does not accept, its body a JSON-RPC error with no id."""
    return _json_response(jsonrpc.error(None, code, message), status)


def _access_denied(request_id: object, refusal: client_auth.Refusal) -> web.Response:
    """The answer to a request the route's security policy refuses (401, 403): a JSON-RPC error,
    with the challenge headers of the refusal."""
    error = jsonrpc.error(request_id, jsonrpc.ACCESS_DENIED, refusal.message)
    return _json_response(error, refusal.status, refusal.headers)


class McpProxy:
    """The MCP proxy of the fleets a translator process serves."""

    def __init__(self, configs: Configs) -> None:
        self._configs = configs
        self._backends = Backends()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        # Per fleet: the config last seen, the secret its sessions are sealed with (its own, or the
        # whole config's digest: not to be made per request) and its routes by name, with their
        # backends by name.
        self._route_index: dict[str, tuple[config_pb2.TranslatorConfig, bytes, dict[str, _IndexedRoute]]] = {}

    async def start(self, listen: str) -> int:
        """Listen on "host:port" (port 0: any); the bound port."""
        host, _, port = listen.rpartition(":")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_response_prepare.append(_logged)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, _one_address(host.strip("[]") or "127.0.0.1"), int(port))
        await self._site.start()
        bound = int(self._runner.addresses[0][1])
        log.info("mcp_proxy_listening", address=host, port=bound)
        return bound

    async def stop(self) -> None:
        """Stop accepting, end open exchanges (long tool calls among them) and close the clients."""
        if self._site is not None:
            await self._site.stop()
        for task in list(self._handlers):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        await self._backends.close()
        self._site = self._runner = None

    # --- Transport ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._dispatch(request)
        finally:
            self._handlers.discard(task)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if contract.MCP_HOP_HEADER in request.headers:
            # Its own request: a route whose backend is this proxy (its fleet and route headers
            # would be the other route's word, not Envoy's).
            return _refusal(508, jsonrpc.INVALID_REQUEST, "an MCP backend of this route is the gateway itself")
        route = self._route_of(request)
        if isinstance(route, web.Response):
            return route
        if request.method == "POST":
            return await self._post(request, route)
        if request.method == "DELETE":
            return await self._delete(request, route)
        # No server-initiated stream (GET): the transport lets a server refuse it so.
        return web.Response(status=405, headers={"Allow": "POST, DELETE"})

    def _route_of(self, request: web.Request) -> _Route | web.Response:
        fleet = request.headers.get(contract.MCP_FLEET_HEADER, "")
        name = request.headers.get(contract.MCP_ROUTE_HEADER, "")
        config = self._configs(fleet) if fleet else None
        if config is None or (config.name and config.name != fleet):  # (a single --config serves its own)
            return _refusal(404, jsonrpc.INVALID_REQUEST, f"unknown fleet {fleet!r}")
        indexed = self._route_index.get(fleet)
        if indexed is None or indexed[0] is not config:
            secret = config.mcp_session_key or _config_digest(config)
            routes = {
                r.name: (r, {b.name: b for b in r.backends}, client_auth.RoutePolicy(r)) for r in config.mcp_routes
            }
            indexed = (config, secret, routes)
            if fleet not in self._route_index and len(self._route_index) >= _FLEETS_INDEXED:
                self._route_index.pop(next(iter(self._route_index)))  # the oldest: a fleet gone, most likely
            self._route_index[fleet] = indexed
        found = indexed[2].get(name)
        if found is None:
            return _refusal(404, jsonrpc.INVALID_REQUEST, f"unknown MCP route {name!r} in fleet {fleet!r}")
        route, backends, policy = found
        # Before anything else of the request is read: a client the route does not admit learns no more.
        client = policy.admit(request.headers, request.query)
        if isinstance(client, client_auth.Refusal):
            return _access_denied(None, client)
        return _Route(fleet, route, indexed[1], backends, policy, client)

    def _session_of(self, request: web.Request, route: _Route) -> _Session | web.Response:
        token = request.headers.get(SESSION_HEADER)
        if not token:
            return _refusal(400, jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header")
        backends = sessions.unseal(
            route.secret, route.fleet, route.route.name, token, route.client.principal, route.policy.selection
        )
        if backends is None:
            return _refusal(404, jsonrpc.INVALID_REQUEST, "unknown session: initialize a new one")
        return _Session(token, route, backends)

    async def _post(self, request: web.Request, route: _Route) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _refusal(413, jsonrpc.INVALID_REQUEST, "request body too large")
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _refusal(413, jsonrpc.INVALID_REQUEST, "request body too large")
        try:
            message = jsonrpc.decode(bytes(body))
        except ValueError:
            return _refusal(400, jsonrpc.PARSE_ERROR, "the body is not JSON")
        kind = jsonrpc.kind(message)
        if kind == "invalid":
            return _refusal(400, jsonrpc.INVALID_REQUEST, "the body is not one JSON-RPC message")
        assert isinstance(message, dict)
        if kind != "response":
            request[_LOGGED] = {contract.MCP_METHOD_HEADER: message["method"]}
        if kind == "request" and message["method"] == "initialize":
            return await self._initialize(request, route, message)
        version = request.headers.get(PROTOCOL_HEADER)
        if version is not None and version not in merge.PROTOCOL_VERSIONS:
            # The transport: a version the server does not support is a 400, saying which it does
            # (a client of a newer protocol, whose first request is server/discover, then initializes).
            supported = list(merge.PROTOCOL_VERSIONS)
            message = f"unsupported MCP-Protocol-Version {version!r}: this gateway speaks {', '.join(supported)}"
            data = {"supported": supported, "requested": version}
            return _json_response(jsonrpc.error(None, jsonrpc.UNSUPPORTED_PROTOCOL_VERSION, message, data), 400)
        session = self._session_of(request, route)
        if isinstance(session, web.Response):
            return session
        if kind == "request":
            return await self._request(request, session, message)
        if kind == "notification":
            return await self._notification(session, message)
        return await self._client_answer(session, message)

    # --- Initialize ----------------------------------------------------------------------------

    async def _initialize(self, request: web.Request, route: _Route, message: jsonrpc.Message) -> web.Response:
        params = jsonrpc.params_of(message)
        version = merge.negotiated_version(params.get("protocolVersion"))
        params = {**params, "protocolVersion": version}
        chosen = await _selected(route, request)
        if not chosen:
            refusal = client_auth.Refusal(403, "access denied: the backendSelector selects none of the backends")
            return _access_denied(message["id"], refusal)
        outcomes = await asyncio.gather(
            *(self._initialize_backend(route, backend, params) for backend in chosen),
            return_exceptions=True,
        )
        joined: list[BackendSession] = []
        for backend, outcome in zip(chosen, outcomes, strict=True):
            if isinstance(outcome, BackendSession):
                joined.append(outcome)
            elif isinstance(outcome, Exception):
                log.warning(
                    "mcp_backend_left_out",
                    route=route.route.name,
                    backend=backend.name,
                    reason=reason_of(outcome),
                )
            else:
                raise outcome
        if not joined:
            return _json_response(
                jsonrpc.error(
                    message["id"],
                    jsonrpc.INTERNAL_ERROR,
                    f"no backend of MCP route {route.route.name} could be initialized",
                )
            )
        token = sessions.seal(
            route.secret, route.fleet, route.route.name, joined, route.client.principal, route.policy.selection
        )
        result = merge.initialize_result(version, [s.capabilities for s in joined])
        return _json_response(jsonrpc.result(message["id"], result), headers={SESSION_HEADER: token})

    async def _initialize_backend(
        self, route: _Route, backend: config_pb2.MCPBackend, params: dict[str, Any]
    ) -> BackendSession:
        """Initialize one backend (initialize, then notifications/initialized) within the bound."""
        async with asyncio.timeout(INITIALIZE_TIMEOUT):
            request_id = "aigw-initialize"
            response = await self._backends.send(
                backend, jsonrpc.request(request_id, "initialize", params), route.client_headers, None
            )
            async with response:
                session_id = response.headers.get(SESSION_HEADER, "")
                result = await answer(backend.name, response, request_id)
            if not isinstance(result, dict):
                raise BackendError(backend.name, "answered initialize with no result object")
            protocol = result.get("protocolVersion")
            session = BackendSession(
                backend.name,
                session_id,
                protocol if isinstance(protocol, str) else "",
                merge.capabilities_of(result),
            )
            response = await self._backends.send(
                backend, jsonrpc.notification("notifications/initialized"), route.client_headers, session
            )
            async with response:
                await drain_error(response)
                if response.status >= 300:
                    raise BackendError(backend.name, f"answered notifications/initialized with HTTP {response.status}")
            return session

    # --- Requests ------------------------------------------------------------------------------

    async def _request(self, request: web.Request, session: _Session, message: jsonrpc.Message) -> web.StreamResponse:
        method: str = message["method"]
        if method == "ping":
            return _json_response(jsonrpc.result(message["id"], {}))
        if (listing := merge.LIST_METHODS.get(method)) is not None:
            return await self._list(session, message, listing)
        if method == "logging/setLevel":
            if (ended := await self._fan_out(session, message, "logging")) is not None:
                return _session_ended_refusal(ended)
            return _json_response(jsonrpc.result(message["id"], {}))
        target = self._target_of(session, message)
        if isinstance(target, web.Response):
            return target
        backend, own_message, rewrite = target
        request[_LOGGED][contract.MCP_BACKEND_HEADER] = backend.name
        if method == "tools/call":
            tool = own_message["params"]["name"]
            request[_LOGGED][contract.MCP_TOOL_HEADER] = tool
            params = jsonrpc.params_of(message)  # as the client sent them
            call = client_auth.ToolCall(
                backend.name, tool, params["name"], params, request.method, request.host, request.path
            )
            if (refusal := session.route.policy.refusal(session.route.client, call)) is not None:
                return _access_denied(message["id"], refusal)
        return await self._forward(request, session, backend, own_message, rewrite)

    def _target_of(
        self, session: _Session, message: jsonrpc.Message
    ) -> tuple[config_pb2.MCPBackend, jsonrpc.Message, _Rewrite | None] | web.Response:
        """The backend a single-backend request is for, the request as that backend names things,
        and how its result is renamed back; or the JSON-RPC error refusing it."""
        method: str = message["method"]
        params = jsonrpc.params_of(message)
        request_id = message["id"]
        rewrite: _Rewrite | None = None
        if method in ("tools/call", "prompts/get"):
            name = params.get("name")
            owner = names.split(name) if isinstance(name, str) else None
            kind = "tool" if method == "tools/call" else "prompt"
            if owner is None:
                return _json_response(
                    jsonrpc.error(request_id, jsonrpc.INVALID_PARAMS, f"invalid {kind} name: {params.get('name')}")
                )
            params = {**params, "name": owner[1]}
        elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            owner = names.split_uri(uri) if isinstance(uri, str) else None
            if owner is None:
                return _json_response(
                    jsonrpc.error(request_id, jsonrpc.INVALID_PARAMS, f"invalid resource URI: {params.get('uri')}")
                )
            params = {**params, "uri": owner[1]}
            if method == "resources/read":
                rewrite = _read_result_renamer(owner[0])
        elif method == "completion/complete":
            completed = _completion_target(params)
            if completed is None:
                return _json_response(jsonrpc.error(request_id, jsonrpc.INVALID_PARAMS, "invalid completion reference"))
            owner, params = completed
        else:
            return _json_response(jsonrpc.error(request_id, jsonrpc.METHOD_NOT_FOUND, f"method not found: {method}"))
        backend = session.route.backends.get(owner[0])
        if backend is None:
            return _json_response(jsonrpc.error(request_id, jsonrpc.INVALID_PARAMS, f"unknown backend {owner[0]}"))
        if session.of(name := owner[0]) is None:
            if session.route.policy.selection:
                why = f"backend {name} is not in this session (not selected by the backendSelector, or not initialized)"
            else:
                why = f"backend {name} is not in this session (not initialized, or added since): initialize again"
            return _json_response(jsonrpc.error(request_id, jsonrpc.INVALID_PARAMS, why))
        if method == "tools/call" and not names.selector_of(backend).allows(owner[1]):
            named = jsonrpc.params_of(message).get("name")  # as the client sent it
            return _json_response(jsonrpc.error(request_id, jsonrpc.INVALID_PARAMS, f"invalid tool name: {named}"))
        return backend, {**message, "params": params}, rewrite

    async def _list(self, session: _Session, message: jsonrpc.Message, listing: merge.ListMethod) -> web.Response:
        if "cursor" in jsonrpc.params_of(message):
            # Merged lists come whole, so no cursor the proxy gave can come back.
            return _json_response(jsonrpc.error(message["id"], jsonrpc.INVALID_PARAMS, "invalid cursor"))
        targets = self._backends_with(session, listing.capability)
        pages = await asyncio.gather(
            *(
                self._all_pages(session, backend, backend_session, message, listing)
                for backend, backend_session in targets
            ),
            return_exceptions=True,
        )
        merged: list[tuple[str, merge.Shown, list[dict[str, Any]]]] = []
        policy = session.route.policy
        # The tools a client may not call are not shown to it.
        may_call = policy.shown(session.route.client) if listing.key == "tools" and policy.authorizes else None
        for (backend, backend_session), outcome in zip(targets, pages, strict=True):
            if _session_ended(outcome, backend_session):
                return _session_ended_refusal(backend.name)
            if isinstance(outcome, list):
                merged.append((backend.name, _shown(backend, may_call), outcome))
            elif isinstance(outcome, Exception):
                # As Envoy AI Gateway does: the others' items still make the list.
                log.warning(
                    "mcp_backend_list_failed", method=message["method"], backend=backend.name, reason=reason_of(outcome)
                )
            else:
                raise outcome
        return _json_response(jsonrpc.result(message["id"], merge.merged_list(listing, merged)))

    async def _all_pages(
        self,
        session: _Session,
        backend: config_pb2.MCPBackend,
        backend_session: BackendSession,
        message: jsonrpc.Message,
        listing: merge.ListMethod,
    ) -> list[dict[str, Any]]:
        """Every item a backend lists, following its cursors."""
        items: list[dict[str, Any]] = []
        params = dict(jsonrpc.params_of(message))
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            for page in range(MAX_PAGES):
                request_id = f"aigw-list-{page}"
                response = await self._backends.send(
                    backend,
                    jsonrpc.request(request_id, message["method"], params),
                    session.route.client_headers,
                    backend_session,
                )
                async with response:
                    result = await answer(backend.name, response, request_id)
                page_items = result.get(listing.key) if isinstance(result, dict) else None
                if not isinstance(page_items, list):
                    raise BackendError(backend.name, f"answered {message['method']} without {listing.key}")
                items.extend(page_items)
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str) or not cursor:
                    return items
                params["cursor"] = cursor
        log.warning("mcp_backend_list_truncated", method=message["method"], backend=backend.name, pages=MAX_PAGES)
        return items

    def _backends_with(
        self, session: _Session, capability: str | None
    ) -> list[tuple[config_pb2.MCPBackend, BackendSession]]:
        """The session's backends still in the route (in the route's order) that have capability."""
        joined = {s.backend: s for s in session.backends}
        return [
            (backend, joined[backend.name])
            for backend in session.route.route.backends
            if backend.name in joined and (capability is None or capability in joined[backend.name].capabilities)
        ]

    async def _fan_out(self, session: _Session, message: jsonrpc.Message, capability: str | None) -> str | None:
        """Send a message to every backend (with capability) of the session; failures are logged.
        The name of a backend that no longer knows its session, if one said so."""

        async def one(backend: config_pb2.MCPBackend, backend_session: BackendSession) -> None:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                response = await self._backends.send(backend, message, session.route.client_headers, backend_session)
                async with response:
                    if "id" in message:
                        await answer(backend.name, response, message["id"])
                    else:
                        await settled(backend.name, response)

        targets = self._backends_with(session, capability)
        outcomes = await asyncio.gather(*(one(b, s) for b, s in targets), return_exceptions=True)
        ended = None
        for (backend, backend_session), outcome in zip(targets, outcomes, strict=True):
            if _session_ended(outcome, backend_session):
                ended = ended or backend.name
            elif isinstance(outcome, Exception):
                log.warning(
                    "mcp_backend_fan_out_failed",
                    method=message["method"],
                    backend=backend.name,
                    reason=reason_of(outcome),
                )
            elif isinstance(outcome, BaseException):
                raise outcome
        return ended

    # --- Notifications and the client's answers --------------------------------------------------

    async def _notification(self, session: _Session, message: jsonrpc.Message) -> web.Response:
        method = message["method"]
        if method in ("notifications/cancelled", "notifications/roots/list_changed"):
            # The client's request ids reach backends unchanged, so the backend running the request
            # a cancellation names knows it, and the others ignore it.
            await self._fan_out(session, message, None)
        # notifications/initialized: every backend had its own when the session began.
        return web.Response(status=202)

    async def _client_answer(self, session: _Session, message: jsonrpc.Message) -> web.Response:
        """A client's answer to a request a backend sent it (sampling, elicitation, roots)."""
        owner = names.split_request_id(message["id"])
        backend = session.route.backends.get(owner[0]) if owner is not None else None
        backend_session = session.of(owner[0]) if owner is not None else None
        if owner is None or backend is None or backend_session is None:
            return _refusal(400, jsonrpc.INVALID_REQUEST, "an answer to no request of this session")
        try:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                response = await self._backends.send(
                    backend, {**message, "id": owner[1]}, session.route.client_headers, backend_session
                )
                async with response:
                    await drain_error(response)
        except (BackendError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("mcp_backend_answer_not_delivered", backend=backend.name, reason=reason_of(exc))
        return web.Response(status=202)

    # --- One backend's answer, relayed -----------------------------------------------------------

    async def _forward(
        self,
        request: web.Request,
        session: _Session,
        backend: config_pb2.MCPBackend,
        message: jsonrpc.Message,
        rewrite: _Rewrite | None,
    ) -> web.StreamResponse:
        """Send a request to its backend and relay the answer as it comes: a JSON body as is (or
        renamed), an event stream event by event (the ids of the backend's own requests renamed)."""
        backend_session = session.of(backend.name)
        assert backend_session is not None
        request_id = message["id"]
        try:
            response = await self._backends.send(backend, message, session.route.client_headers, backend_session)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._upstream_error(request_id, backend.name, reason_of(exc))
        async with response:
            if response.status == 404 and backend_session.session_id:
                await drain_error(response)
                return _session_ended_refusal(backend.name)
            if response.status >= 300:
                await drain_error(response)
                return self._upstream_error(
                    request_id, backend.name, f"answered HTTP {response.status}", response.status
                )
            kind = content_type(response)
            if kind == EVENT_STREAM:
                return await self._relay_events(request, backend.name, response, request_id, rewrite)
            if kind != JSON:
                await drain_error(response)
                return self._upstream_error(request_id, backend.name, f"answered with content type {kind or 'none'}")
            if rewrite is None:
                return await self._relay_body(request, response)
            body = await read_limited(response, MAX_ANSWER_BYTES)
            if body is None:
                return self._upstream_error(request_id, backend.name, "answered more than the proxy reads")
            try:
                answered = jsonrpc.decode(body)
            except ValueError:
                return self._upstream_error(request_id, backend.name, "answered something that is not JSON")
            return web.Response(body=_rewritten(answered, rewrite), content_type=JSON)

    def _upstream_error(self, request_id: object, backend: str, reason: str, status: int | None = None) -> web.Response:
        log.warning("mcp_backend_failed", backend=backend, reason=reason)
        data = {"backend": backend} if status is None else {"backend": backend, "status": status}
        return _json_response(jsonrpc.error(request_id, jsonrpc.INTERNAL_ERROR, f"backend {backend} {reason}", data))

    async def _relay_body(self, request: web.Request, response: aiohttp.ClientResponse) -> web.StreamResponse:
        relayed = web.StreamResponse(status=response.status, headers={"Content-Type": JSON})
        if response.content_length is not None and not response.headers.get("Content-Encoding"):
            relayed.content_length = response.content_length
        await relayed.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client left: nothing to tell it
            async for chunk in response.content.iter_any():
                await relayed.write(chunk)
            await relayed.write_eof()
        return relayed

    async def _relay_events(
        self,
        request: web.Request,
        backend: str,
        response: aiohttp.ClientResponse,
        request_id: object,
        rewrite: _Rewrite | None,
    ) -> web.StreamResponse:
        relayed = web.StreamResponse(
            status=response.status, headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"}
        )
        await relayed.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client left: nothing to tell it
            await self._relay_stream(relayed, backend, response, request_id, rewrite)
        return relayed

    async def _relay_stream(
        self,
        relayed: web.StreamResponse,
        backend: str,
        response: aiohttp.ClientResponse,
        request_id: object,
        rewrite: _Rewrite | None,
    ) -> None:
        parser = SSEParser()
        answered = False
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    answered = await self._relay_event(relayed, backend, event.data, request_id, rewrite) or answered
            for event in parser.finish():
                answered = await self._relay_event(relayed, backend, event.data, request_id, rewrite) or answered
        except ConnectionResetError:  # writing to the client, who left (aiohttp's is a ClientError too)
            raise
        except (aiohttp.ClientError, ValueError) as exc:
            log.warning("mcp_backend_stream_failed", backend=backend, reason=reason_of(exc))
        if not answered:
            failure = jsonrpc.error(
                request_id,
                jsonrpc.INTERNAL_ERROR,
                f"backend {backend} ended its stream without answering",
                {"backend": backend},
            )
            await relayed.write(encode_event(jsonrpc.encode(failure), "message"))
        await relayed.write_eof()

    async def _relay_event(
        self, relayed: web.StreamResponse, backend: str, data: str, request_id: object, rewrite: _Rewrite | None
    ) -> bool:
        """Relay one event of a backend's stream; True when it was the answer to request_id."""
        if not data.strip():
            return False
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("mcp_backend_event_dropped", backend=backend, reason="not JSON")
            return False
        kind = jsonrpc.kind(message)
        if kind == "request":
            message = {**message, "id": names.prefixed_request_id(backend, message["id"])}
        elif kind == "response" and message.get("id") == request_id and rewrite is not None:
            message = rewrite(message)
        await relayed.write(encode_event(jsonrpc.encode(message), "message"))
        return kind == "response" and message.get("id") == request_id

    # --- Ending a session ------------------------------------------------------------------------

    async def _delete(self, request: web.Request, route: _Route) -> web.Response:
        session = self._session_of(request, route)
        if isinstance(session, web.Response):
            return session

        async def end(backend: config_pb2.MCPBackend, backend_session: BackendSession) -> None:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                response = await self._backends.send(backend, None, route.client_headers, backend_session, "DELETE")
                async with response:
                    # 404: already gone; 405: the backend does not let clients end sessions.
                    await settled(backend.name, response, tolerated=(404, 405))

        targets = [(b, s) for b, s in self._backends_with(session, None) if s.session_id]
        outcomes = await asyncio.gather(*(end(b, s) for b, s in targets), return_exceptions=True)
        for (backend, _), outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("mcp_backend_session_not_ended", backend=backend.name, reason=reason_of(outcome))
        return web.Response(status=200)


_Rewrite = Callable[[jsonrpc.Message], jsonrpc.Message]


async def _selected(route: _Route, request: web.Request) -> list[config_pb2.MCPBackend]:
    """The route's backends a session the request initializes joins (its backendSelector's), each
    tried apart with the loop free in between: celpy runs a rule in some 0.3 ms, and at the API's
    bounds (256 backends, 32 rules) one initialize would otherwise hold every request of the proxy
    for seconds."""
    allows = route.policy.selector(route.client, request.method, request.host, request.path)
    if allows is None:
        return list(route.route.backends)
    chosen = []
    for backend in route.route.backends:
        if allows(backend.name):
            chosen.append(backend)
        await asyncio.sleep(0)
    return chosen


def _shown(backend: config_pb2.MCPBackend, may_call: Callable[[str, str], bool] | None) -> merge.Shown:
    """Which of a backend's tools a list shows: those its selector allows (and, on a route with
    authorization rules, `may_call` says the client may call)."""
    allows = names.selector_of(backend).allows
    if may_call is None:
        return allows
    return lambda tool: allows(tool) and may_call(backend.name, tool)


def _rewritten(answered: object, rewrite: _Rewrite) -> bytes:
    if jsonrpc.kind(answered) == "response":
        assert isinstance(answered, dict)
        return jsonrpc.encode(rewrite(answered))
    return json.dumps(answered).encode()


def _read_result_renamer(backend: str) -> _Rewrite:
    """Renames the URIs of a resources/read result back to what clients see."""

    def rename(message: jsonrpc.Message) -> jsonrpc.Message:
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("contents"), list):
            return message
        contents = [
            {**c, "uri": names.prefixed_uri(backend, c["uri"])}
            if isinstance(c, dict) and isinstance(c.get("uri"), str)
            else c
            for c in result["contents"]
        ]
        return {**message, "result": {**result, "contents": contents}}

    return rename


def _completion_target(params: dict[str, Any]) -> tuple[tuple[str, str], dict[str, Any]] | None:
    """(backend, own name or URI) of a completion's reference, and the params naming it so."""
    ref = params.get("ref")
    if not isinstance(ref, dict):
        return None
    if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
        owner = names.split(ref["name"])
        key = "name"
    elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
        owner = names.split_uri(ref["uri"])
        key = "uri"
    else:
        return None
    if owner is None:
        return None
    return owner, {**params, "ref": {**ref, key: owner[1]}}

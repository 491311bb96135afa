"""Who a request of an MCP route comes from, and what it may call: the route's security policy as the
proxy applies it (pure logic; proxy.py turns its refusals into answers).

- Client keys (Envoy Gateway's APIKeyAuth, as Envoy's api_key_auth reads them): the first of the
  route's sources present in the request holds the key, compared with every key of the route.
- Claims: with `oauth`, Envoy's jwt_authn verified the client's JWT before the request reached the
  proxy, and sent its payload in a header of its own (contract.MCP_JWT_PAYLOAD_HEADER, set over any
  the client sent): the proxy reads claims from it alone, never from the token (which Envoy and the
  proxy could read apart), and refuses a request without it. Without `oauth` no claim is read.
- The session's principal (the token's issuer and subject, the key's client): a session is its
  principal's only.
- The headers the route's backends get of the client (its id, its claims), which no header the
  client sends ever stands in for.
- Authorization (Envoy AI Gateway's MCPRouteAuthorization): rules tried in order on a tool call,
  the first that matches deciding.
- Backend selection (the route's backendSelector): the same rules, of CEL alone, tried on each of
  the route's backends when a client initializes a session; the session joins those allowed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import CIMultiDict, MultiMapping

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_contract import bearer, mcp_cel
from aigw_contract.cel_engine import celpy as cel_engine

from ..client_keys import ClientKeys, cookie_pairs
from ..logs import get_logger
from .backends import ClientHeaders

log = get_logger(__name__)

# Envoy api_key_auth's answer to a missing or unknown key.
AUTHENTICATION_FAILED = "Client authentication failed."
# Envoy AI Gateway's challenge on every 401 of a route with oauth (its ResponseOverride).
# The claims holding a token's scopes (`scp`: Azure AD's, Okta's), which are not claims to rules.
_SCOPE_CLAIMS = ("scope", "scp")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Refusal:
    """How the proxy refuses a request: an HTTP status, headers, and the message of the JSON-RPC
    error of its body (never a key, a token or a claim in it)."""

    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Client:
    """A request's client as its route knows it: the claims of its token (its scopes apart), what
    of its request reaches the backends, and who it is (its sessions are bound to that)."""

    headers: ClientHeaders
    claims: Mapping[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] = frozenset()
    principal: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as authorization sees it. `tool` is the backend's own name, `name` the one the
    client used. A tool a list shows is checked as a call with no HTTP method, host, path or params;
    a backend a session's start may join, as a call of no tool (request.mcp's method empty too)."""

    backend: str
    tool: str
    name: str
    params: Any = None
    method: str = ""
    host: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a call is allowed; when denied, the scopes of the allow rule that lacked only them
    (the fewest), which the client is challenged for, or why no rule could be tried."""

    allowed: bool
    scopes: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True, slots=True)
class _Rule:
    scopes: tuple[str, ...]
    claims: tuple[tuple[str, bool, frozenset[str]], ...]  # (dotted name, array, values)
    tools: frozenset[tuple[str, str]]
    program: Any  # a compiled CEL program; None: no expression; _BROKEN: one that never matches
    deny: bool
    reads_params: bool  # its expression may read request.mcp.params


_BROKEN = object()


class RoutePolicy:
    """A route's security policy, compiled once per configuration."""

    def __init__(self, route: config_pb2.MCPRoute) -> None:
        self.route = route.name
        self._oauth = route.oauth if route.HasField("oauth") else None
        claim_headers = self._oauth.claim_headers if self._oauth is not None else ()
        self._claim_headers = tuple((c.claim, c.header) for c in claim_headers if c.header)
        keys = route.client_keys if route.HasField("client_keys") else None
        self._keys = ClientKeys(keys) if keys is not None else None
        self._sources = tuple(keys.sources) if keys is not None else ()
        self._client_id_header = keys.client_id_header if keys is not None else ""
        owned = {header.lower() for _, header in self._claim_headers}
        if self._client_id_header:
            owned.add(self._client_id_header.lower())
        self._owned = frozenset(owned)
        sanitized = self._sources if keys is not None and keys.sanitize else ()
        withheld = {s.header.lower() for s in sanitized if s.WhichOneof("source") == "header"}
        # Envoy's to the proxy: what of the token it verified, for no backend.
        withheld.add(contract.MCP_JWT_PAYLOAD_HEADER)
        self._withheld = frozenset(withheld)
        self._withheld_cookies = frozenset(s.cookie for s in sanitized if s.WhichOneof("source") == "cookie")
        authorization = route.authorization if route.HasField("authorization") else None
        self.authorizes = authorization is not None
        self._default_allow = authorization.default_allow if authorization is not None else True
        self._rules = tuple(_rule(r) for r in authorization.rules) if authorization is not None else ()
        selector = route.backend_selector if route.HasField("backend_selector") else None
        self._selector = (tuple(_rule(r) for r in selector.rules), selector.default_allow) if selector else None
        # What a session is bound to besides its route and client: the selector that chose its
        # backends (a session chosen by another one ends, and its client initializes again).
        self.selection = selector.SerializeToString(deterministic=True) if selector is not None else b""

    # --- Authentication ------------------------------------------------------------------------

    def admit(self, headers: MultiMapping[str], query: MultiMapping[str]) -> Client | Refusal:
        """The client of a request (headers and query as it came), or the 401 refusing it."""
        if self._oauth is None and self._keys is None:
            return Client(ClientHeaders(headers))
        added: dict[str, str] = {}
        principal: list[Any] = []
        if self._keys is not None:
            client_id = self._keys.client_id(headers, query)
            if client_id is None:
                return self._unauthenticated()
            if self._client_id_header:
                added[self._client_id_header] = client_id
            principal.append(["key", client_id])
        payload: dict[str, Any] = {}
        if self._oauth is not None:
            verified = _verified_payload(headers)
            if verified is None:  # not through Envoy's check (it sets the header on every request it lets by)
                return self._unauthenticated()
            payload = verified
            # Its subject; a token without one (a client's own, of some issuers), its client.
            subject = next((payload[k] for k in ("sub", "client_id", "azp") if payload.get(k) is not None), None)
            principal.append(["jwt", payload.get("iss"), subject])
        for claim, header in self._claim_headers:
            value = _header_value(_lookup(payload, claim))
            if value is not None:
                added[header] = value
        claims = {k: v for k, v in payload.items() if k not in _SCOPE_CLAIMS}
        forwardable = self._forwardable(headers, added)
        headers_sent = ClientHeaders(forwardable, added, self._owned)
        who = json.dumps(principal, separators=(",", ":"), sort_keys=True) if principal else ""
        return Client(headers_sent, claims, _scopes(payload), who)

    def _forwardable(self, headers: MultiMapping[str], added: Mapping[str, str]) -> CIMultiDict[str]:
        """The request's headers as Envoy would have passed them on: the sanitized key left out, the
        headers the proxy sets holding its values (or nothing), never the client's."""
        forwardable: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            lower = name.lower()
            if lower in self._owned or lower in self._withheld:
                continue
            if lower == "cookie" and self._withheld_cookies:
                value = _without_cookies(value, self._withheld_cookies)
                if not value:
                    continue
            forwardable.add(name, value)
        forwardable.update(added)
        return forwardable

    def _unauthenticated(self) -> Refusal:
        headers: dict[str, str] = {}
        if self._oauth is not None:
            # Envoy AI Gateway overrides every 401 of an oauth route with its challenge.
            headers["WWW-Authenticate"] = bearer.challenge(
                ("error", "invalid_token"),
                ("error_description", bearer.INVALID_TOKEN),
                ("resource_metadata", self._oauth.resource_metadata_url),
            )
        return Refusal(401, AUTHENTICATION_FAILED, headers)

    # --- Authorization -------------------------------------------------------------------------

    def decide(self, client: Client, call: ToolCall, activations: _Activations | None = None) -> Decision:
        """Whether the client may make the call: the first rule whose tools, claims, expression and
        scopes all match it decides, else the default."""
        if not self.authorizes:
            return Decision(True)
        return self._first_match(self._rules, self._default_allow, client, call, activations)

    def selector(self, client: Client, method: str, host: str, path: str) -> Callable[[str], bool] | None:
        """Whether a session the client initializes (an HTTP request of method, host and path) joins
        a backend (by name): the route's backendSelector tried on it as a call of no tool; None
        without a selector (every backend)."""
        if self._selector is None:
            return None
        rules, default_allow = self._selector
        activations = _Activations(client)

        def allows(backend: str) -> bool:
            call = ToolCall(backend, "", "", None, method, host, path)
            return self._first_match(rules, default_allow, client, call, activations).allowed

        return allows

    def _first_match(
        self,
        rules: tuple[_Rule, ...],
        default_allow: bool,
        client: Client,
        call: ToolCall,
        activations: _Activations | None,
    ) -> Decision:
        challenge: tuple[str, ...] = ()
        for index, rule in enumerate(rules):
            if rule.tools and (call.backend, call.tool) not in rule.tools:
                continue
            if not all(_claim_matches(client.claims, *claim) for claim in rule.claims):
                continue
            if rule.program is not None:
                activations = activations or _Activations(client)
                activation = activations.of(call, rule.reads_params)
                if activation is None:
                    # Not tried on them (converting megabytes for CEL stalls every request of the
                    # process), and not passed over either (a Deny rule would let it through).
                    why = f"its arguments are over {MAX_CEL_PARAMS_BYTES // 1024} KiB, more than rules read"
                    return Decision(False, why=why)
                if not self._cel_true(index, rule.program, activation):
                    continue
            if all(scope in client.scopes for scope in rule.scopes):
                return Decision(not rule.deny)
            if not rule.deny and (not challenge or len(rule.scopes) < len(challenge)):
                challenge = rule.scopes
        return Decision(True) if default_allow else Decision(False, challenge)

    def refusal(self, client: Client, call: ToolCall) -> Refusal | None:
        """The 403 refusing a call the client may not make, or None."""
        decision = self.decide(client, call)
        if decision.allowed:
            return None
        if decision.why:
            return Refusal(403, f"access denied: tool {call.name}: {decision.why}")
        if not decision.scopes:
            return Refusal(403, f"access denied: tool {call.name} is not allowed")
        resource_metadata = self._oauth.resource_metadata_url if self._oauth is not None else ""
        scopes = " ".join(decision.scopes)
        challenge = bearer.challenge(
            ("error", "insufficient_scope"),
            ("scope", scopes),
            ("resource_metadata", resource_metadata),
            ("error_description", bearer.MISSING_SCOPES),
        )
        message = f"access denied: tool {call.name} needs the scopes {scopes}"
        return Refusal(403, message, {"WWW-Authenticate": challenge})

    def shown(self, client: Client) -> Callable[[str, str], bool]:
        """Whether a list shows a client a tool (backend, its own name): one it may call, checked
        with the request's headers alone (as Envoy AI Gateway checks them)."""
        activations = _Activations(client)
        return lambda backend, tool: self.decide(client, ToolCall(backend, tool, tool), activations).allowed

    def _cel_true(self, index: int, program: Any, activation: dict[str, Any]) -> bool:
        """Whether a rule's expression is true of the call: an error or a value not a bool is not."""
        if program is _BROKEN:
            return False
        try:
            result = program.evaluate(activation)
        except Exception as exc:  # celpy raises several types, and so may a value it cannot convert
            # Never its message: it may quote a claim or a header.
            log.debug("mcp_authorization_cel_failed", route=self.route, rule=index, error=type(exc).__name__)
            return False
        return isinstance(result, bool | _celpy().bool_type) and bool(result)


def _rule(rule: config_pb2.MCPAuthorizationRule) -> _Rule:
    expression = rule.cel.strip()
    program, reads_params = _program(expression) if expression else (None, False)
    return _Rule(
        scopes=tuple(rule.scopes),
        claims=tuple((c.name, c.array, frozenset(c.values)) for c in rule.claims),
        tools=frozenset((t.backend, t.tool) for t in rule.tools),
        program=program,
        deny=rule.deny,
        reads_params=reads_params,
    )


# The most of a tool call's arguments (as UTF-8 JSON) a rule's CEL is given: celpy converts some
# 1 KiB in 2 ms, on the event loop every request of the process shares (a rule's cost past the
# conversion is linear in them: aigw_contract.mcp_cel).
MAX_CEL_PARAMS_BYTES = 16 * 1024


# --- Keys ------------------------------------------------------------------------------------------


def _without_cookies(value: str, names: frozenset[str]) -> str:
    return "; ".join(f"{key}={raw}" for key, raw in cookie_pairs(value) if key not in names)


# --- Claims ----------------------------------------------------------------------------------------


def _verified_payload(headers: MultiMapping[str]) -> dict[str, Any] | None:
    """The payload of the token Envoy verified (its header: base64url of the JSON object), or None
    when there is none, or more than one, or it is not one."""
    values = headers.getall(contract.MCP_JWT_PAYLOAD_HEADER, [])
    if len(values) != 1:
        return None
    encoded = values[0].strip()
    try:
        payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def _scopes(payload: Mapping[str, Any]) -> frozenset[str]:
    """A token's scopes: its `scope` (space-separated) and `scp` (the same, or a list) claims."""
    scopes: set[str] = set()
    for claim in _SCOPE_CLAIMS:
        value = payload.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(s for s in value if isinstance(s, str) and s)
    return frozenset(scopes)


def _lookup(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by its dotted name ("org.team"), or _MISSING."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _header_value(value: Any) -> str | None:
    """A claim as a header sends it: a string, number or boolean (as JSON writes it); another kind
    of value, or a string a header cannot hold, none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = json.dumps(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text if text.isprintable() else None


def _claim_matches(claims: Mapping[str, Any], name: str, array: bool, values: frozenset[str]) -> bool:
    value = _lookup(claims, name)
    if array and isinstance(value, list):
        return any(isinstance(v, str) and v in values for v in value)
    # (A list claim holding one string may come as that string: Envoy AI Gateway takes it.)
    return isinstance(value, str) and value in values


# --- CEL -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cel:
    """celpy, imported for the first rule with an expression (it takes about 0.2 s)."""

    environment: Any
    json_to_cel: Callable[[Any], Any]
    map_type: type
    bool_type: type


@functools.cache
def _celpy() -> _Cel:
    celpy = cel_engine()
    from celpy import celtypes

    # The interpreter, not the compiled runner (which runs an expression as Python source, its
    # variables as attributes of its own objects).
    return _Cel(celpy.Environment(), celpy.json_to_cel, celtypes.MapType, celtypes.BoolType)


@functools.lru_cache(maxsize=512)
def _program(expression: str) -> tuple[Any, bool]:
    """The program of an expression, and whether it may read the call's arguments
    (mcp_cel.reads_params); _BROKEN (logged once) for one that does not compile: the control plane
    checks expressions, so one that does not compile here matches nothing rather than stop the proxy."""
    cel = _celpy()
    try:
        ast = cel.environment.compile(expression)
        return cel.environment.program(ast), mcp_cel.reads_params(ast)
    except Exception as exc:  # celpy raises several types
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        log.warning("mcp_authorization_cel_broken", expression=expression[:200], reason=reason)
        return _BROKEN, False


class _Activations:
    """The CEL `request` of a client's calls, what they share converted once (and a call's
    arguments once): method, host, path, headers (lower-case names, first value), headers_all (every
    value), auth.jwt.claims, auth.jwt.scopes, mcp.method, mcp.backend, mcp.tool, mcp.params."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._shared: Any = None
        self._params: tuple[ToolCall, Any] | None = None  # the last call's arguments, converted (None: too large)

    def of(self, call: ToolCall, with_params: bool) -> dict[str, Any] | None:
        """The activation of a call, with its arguments when asked; None when they are too large."""
        cel = _celpy()
        if self._shared is None:
            headers: dict[str, list[str]] = {}
            for name, value in self._client.headers.forwardable.items():
                headers.setdefault(name.lower(), []).append(value)
            self._shared = cel.json_to_cel(
                {
                    "headers": {name: values[0] for name, values in headers.items()},
                    "headers_all": headers,
                    "auth": {"jwt": {"claims": dict(self._client.claims), "scopes": sorted(self._client.scopes)}},
                }
            )
        params = None
        if with_params and call.params is not None:
            if self._params is None or self._params[0] is not call:
                too_large = len(orjson.dumps(call.params)) > MAX_CEL_PARAMS_BYTES
                self._params = (call, None if too_large else cel.json_to_cel(call.params))
            params = self._params[1]
            if params is None:
                return None
        request = cel.map_type(self._shared)
        request.update(
            cel.json_to_cel(
                {
                    "method": call.method,
                    "host": call.host,
                    "path": call.path,
                    "mcp": {
                        "method": "tools/call" if call.tool else "",
                        "backend": call.backend,
                        "tool": call.tool,
                        "params": None,
                    },
                }
            )
        )
        if params is not None:
            request[cel.json_to_cel("mcp")][cel.json_to_cel("params")] = params
        return {"request": request}

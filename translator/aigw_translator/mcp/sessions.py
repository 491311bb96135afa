"""Client session ids: the backends' own sessions, sealed.

A session id the proxy gives a client holds, for each backend that joined the session, the
backend's Mcp-Session-Id, the protocol version it agreed and what it can do, encrypted and
authenticated (AES-256-GCM) with a key derived from the fleet's session secret
(TranslatorConfig.mcp_session_key) and bound to the fleet, the route and the client who opened it
(its principal: a token's issuer and subject, an API key's client; none on an open route) and to
the route's backendSelector, if any: every translator process given that secret opens it, nothing
else can read or forge one, one route's session is refused on another route, one client's by
another, and a session whose backends another selector chose ends. No session state is held in
memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class BackendSession:
    """One backend's part of a client session."""

    backend: str
    # The backend's Mcp-Session-Id; empty for a stateless backend.
    session_id: str
    # The protocol version the backend answered initialize with.
    protocol_version: str
    # The capabilities it declared (tools, prompts, resources, logging, completions).
    capabilities: frozenset[str]


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"aigw-mcp-session", hashlib.sha256).digest()


def _bound_to(fleet: str, route: str, principal: str, selection: bytes) -> bytes:
    bound = b"aigw-mcp-session\0" + fleet.encode() + b"\0" + route.encode()
    # (Without a principal, as the releases before principals bound it: their sessions stay open.)
    if principal:  # JSON: it holds no NUL
        bound += b"\0" + principal.encode("utf-8", "replace")
    if selection:
        bound += b"\0selector\0" + hashlib.sha256(selection).digest()
    return bound


def seal(
    secret: bytes, fleet: str, route: str, sessions: list[BackendSession], principal: str = "", selection: bytes = b""
) -> str:
    """The session id of a client session (visible ASCII, as the transport requires); `selection`:
    the route's backend selector that chose its backends, if any."""
    payload = json.dumps(
        [_FORMAT, [[s.backend, s.session_id, s.protocol_version, sorted(s.capabilities)] for s in sessions]],
        separators=(",", ":"),
    ).encode()
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(_key(secret)).encrypt(nonce, payload, _bound_to(fleet, route, principal, selection))
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def unseal(
    secret: bytes, fleet: str, route: str, token: str, principal: str = "", selection: bytes = b""
) -> list[BackendSession] | None:
    """The backend sessions of a session id, or None for one that is malformed, was sealed with
    another key, or for another fleet, route, principal or backend selector."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        return None
    if len(raw) <= _NONCE:
        return None
    try:
        bound = _bound_to(fleet, route, principal, selection)
        payload = AESGCM(_key(secret)).decrypt(raw[:_NONCE], raw[_NONCE:], bound)
        version, entries = json.loads(payload)
        if version != _FORMAT:
            return None
        return [
            BackendSession(str(name), str(session_id), str(protocol), frozenset(map(str, caps)))
            for name, session_id, protocol, caps in entries
        ]
    except (InvalidTag, ValueError, TypeError):
        return None

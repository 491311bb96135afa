"""Client keys (Envoy Gateway's APIKeyAuth, as Envoy's api_key_auth reads them), pure: which client
a request's key is. Read by the MCP proxy (an MCPRoute's securityPolicy) and by the Authorization
service Envoy asks for a SecurityPolicy's apiKeyAuth (key_check.py), which checks its basicAuth
users too (as Envoy's basic_auth reads them: Authorization "Basic <base64 of name:password>", the
password's SHA-1 as htpasswd's {SHA} holds it)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from multidict import MultiMapping

from aigw.translator.v1 import config_pb2


class ClientKeys:
    """One policy's keys, by their digest: compared so, a key's length is no more told than its
    content; every key is compared (in constant time), whichever matches."""

    def __init__(self, keys: config_pb2.MCPClientKeys) -> None:
        self._keys = tuple((digest(k.key), k.client_id) for k in keys.keys)
        self.sources = tuple(keys.sources)
        self.client_id_header = keys.client_id_header
        self.sanitize = keys.sanitize
        self._users = {user.name: user.password_sha1 for user in keys.basic_users}

    @property
    def basic(self) -> bool:
        """Whether these are basicAuth's users (not keys)."""
        return bool(self._users)

    def client_id(self, headers: MultiMapping[str], query: MultiMapping[str]) -> str | None:
        """The id of the client whose key the request carries (a basicAuth user's name), or None."""
        if self._users:
            return self._user(headers)
        presented = presented_key(self.sources, headers, query)
        if not presented:
            return None
        wanted = digest(presented)
        found: str | None = None
        for key, client_id in self._keys:
            if hmac.compare_digest(wanted, key) and found is None:  # (a duplicate key: the first client)
                found = client_id
        return found

    def _user(self, headers: MultiMapping[str]) -> str | None:
        """The user whose name and password the request's Authorization carries, or None. Every
        request's password is hashed and compared (with an unknown user's too)."""
        values = headers.getall("Authorization", [])
        if len(values) != 1:
            return None
        scheme, _, encoded = values[0].partition(" ")
        if scheme.lower() != "basic":
            return None
        encoded = encoded.strip()
        try:  # (padded or not, as Envoy's basic_auth takes it)
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            raw_name, colon, password = decoded.partition(b":")
            name = raw_name.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        stored = self._users.get(name, _NO_USER)
        given = hashlib.sha1(password, usedforsecurity=False).digest()  # (the password's bytes, as sent)
        return name if hmac.compare_digest(given, stored) and colon and name in self._users else None

    def source_names(self, kind: str) -> tuple[str, ...]:
        """The names of the sources of `kind` ("header", "query_param", "cookie") keys are read from."""
        return tuple(getattr(s, kind) for s in self.sources if s.WhichOneof("source") == kind)


# What an unknown user's password is compared with (no SHA-1 digest is 20 zero bytes one can find).
_NO_USER = bytes(20)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_key(
    sources: tuple[config_pb2.MCPKeySource, ...], headers: MultiMapping[str], query: MultiMapping[str]
) -> str | None:
    """The key a request carries in the first source present ("" when it holds none, None for two
    values of one source), as Envoy's api_key_auth reads it."""
    for source in sources:
        kind = source.WhichOneof("source")
        if kind == "header":
            values = headers.getall(source.header, [])
        elif kind == "query_param":
            values = query.getall(source.query_param, [])
        elif kind == "cookie":
            found = cookie(headers, source.cookie)
            values = [] if found is None else [found]
        else:
            continue
        if not values:
            continue
        if len(values) > 1:
            return None
        value = values[0]
        # Envoy strips a "Bearer " prefix (exactly so) from a header's key.
        return value.removeprefix("Bearer ") if kind == "header" else value
    return ""


def cookie_pairs(value: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a Cookie header."""
    pairs = (pair.partition("=") for pair in value.split(";"))
    return [(name.strip(), raw.strip()) for name, _, raw in pairs if name.strip()]


def cookie(headers: MultiMapping[str], name: str) -> str | None:
    for value in headers.getall("Cookie", []):
        for key, raw in cookie_pairs(value):
            if key == name:
                return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    return None

"""Client keys (Envoy Gateway's APIKeyAuth, as Envoy's api_key_auth reads them), pure: which client
a request's key is. Read by the MCP proxy (an MCPRoute's securityPolicy) and by the Authorization
service Envoy asks for a SecurityPolicy's apiKeyAuth (key_check.py)."""

from __future__ import annotations

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

    def client_id(self, headers: MultiMapping[str], query: MultiMapping[str]) -> str | None:
        """The id of the client whose key the request carries, or None."""
        presented = presented_key(self.sources, headers, query)
        if not presented:
            return None
        wanted = digest(presented)
        found: str | None = None
        for key, client_id in self._keys:
            if hmac.compare_digest(wanted, key) and found is None:  # (a duplicate key: the first client)
                found = client_id
        return found

    def source_names(self, kind: str) -> tuple[str, ...]:
        """The names of the sources of `kind` ("header", "query_param", "cookie") keys are read from."""
        return tuple(getattr(s, kind) for s in self.sources if s.WhichOneof("source") == kind)


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

"""Credentials a provider echoes in an error body, taken out before the client sees it.

Providers sometimes quote what they rejected: a key ("Incorrect API key provided: sk-..."), a whole
header, or, for AWS's SignatureDoesNotMatch, the canonical request with its x-amz-security-token
line. Two things are scrubbed from every error body, whatever the backend's auth:

* the values this backend's configuration holds: its API key and the values its headerMutation
  sets under a credential's name (an API-management subscription key; not an anthropic-version
  date a provider may quote back), as they are or escaped in a JSON string
  (`\\u0073k-...`, which a client's JSON parser would turn back into the value);
* the shapes of the credentials the translator fetches or computes per request, which no
  configuration holds and which another translator process, or a token renewed since, may have
  put on the attempt: a bearer token (Entra ID and Google tokens, a key sent as one), a Google
  access token (`ya29.`), a JWT, an AWS access key id, a SigV4 signature and session token.

A body in an encoding the translator cannot read is not scrubbed: the router phase answers it with
an error of its own (router_phase).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from .logs import REDACTED

# Values shorter than this are not searched for (a placeholder key such as "x" would redact text).
_SHORTEST = 8

# Each pattern's first group is kept (the name before the value); the rest becomes REDACTED.
_SHAPES = (
    re.compile(r"((?i:bearer)[ \t]+)[A-Za-z0-9._~+/-]{20,}=*"),  # (not "Bearer authentication failed")
    re.compile(r"((?i:signature)\s*=\s*)[0-9a-fA-F]{64}"),
    re.compile(r"((?i:credential)\s*=\s*)[A-Z0-9]{8,}(?=/)"),  # SigV4's access key id
    # A header line of a canonical request, a query parameter, or a JSON key and its string.
    re.compile(r"((?i:x-amz-security-token)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;\\]+"),
    re.compile(r"()\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"()\bya29\.[A-Za-z0-9._-]{8,}"),
    re.compile(r"()\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
)


# Words in a header's name that say its value is a credential.
_CREDENTIAL_WORDS = ("key", "token", "secret", "auth", "password", "signature", "credential", "cookie", "session")


def configured_secrets(backend: Any) -> tuple[str, ...]:
    """The credential values a backend's translator configuration holds (config_pb2.Backend): its
    key, and what its headerMutation sets under a credential's name."""
    if backend is None:
        return ()
    kind = backend.auth.WhichOneof("kind")
    key = getattr(backend.auth, kind).key if kind in ("api_key", "anthropic_api_key", "azure_api_key") else ""
    mutated = (hv.value for hv in backend.header_mutation.set if any(w in hv.name.lower() for w in _CREDENTIAL_WORDS))
    return tuple(v for v in (key, *mutated) if len(v) >= _SHORTEST)


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    for shape in _SHAPES:
        text = shape.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def scrub_error_body(body: bytes, secrets: Iterable[str]) -> bytes:
    """`body` (a provider's error, decoded) without the `secrets` (configured_secrets) or anything
    shaped like a credential."""
    secrets = tuple(secrets)
    text = body.decode("utf-8", "surrogateescape")  # bytes that are not UTF-8 come back as they were
    scrubbed = scrub_text(text, secrets)
    out = body if scrubbed == text else scrubbed.encode("utf-8", "surrogateescape")
    if b"\\" not in out:  # no escape: no other spelling of a secret
        return out
    try:
        parsed = orjson.loads(out)
    except orjson.JSONDecodeError:
        return out
    redacted = _redacted(parsed, secrets)
    if redacted == parsed:
        return out
    try:
        return orjson.dumps(redacted)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: nothing of it goes on
        return REDACTED.encode()


def _redacted(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` (parsed JSON) scrubbed in every string."""
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, list):
        return [_redacted(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_redacted(k, secrets): _redacted(v, secrets) for k, v in value.items()}
    return value

"""Backend credentials: which headers carry the backend's key, and where an override comes from.

The client's own credential headers and every x-aigw-* override header are always removed; the
backend's credential (configured or overridden) replaces them. Which other header names the gateway
owns (and strips on every attempt, whichever backend it goes to) is gathered per configuration in
config.RuntimeConfig from the names here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aigw.translator.v1 import config_pb2
from aigw_contract import CLIENT_AUTH_HEADERS, OVERRIDE_HEADER_DEFAULTS, OVERRIDE_HEADER_PREFIX

from . import aws, azure_entra, gcp
from .errors import GatewayError

ANTHROPIC_VERSION_HEADER = "anthropic-version"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

# The kinds of Auth this translator puts on a request (the others are refused as a 500).
SUPPORTED_AUTH_KINDS = (
    "api_key", "anthropic_api_key", "azure_api_key", "aws_credentials", "azure_credentials", "gcp_credentials",
)  # fmt: skip
# Kinds whose configured credential is a bearer token the translator obtains (Entra ID, Google):
# the module whose bearer_token(backend, credentials) gives it.
TOKEN_AUTH_KINDS: dict[str, Any] = {"azure_credentials": azure_entra, "gcp_credentials": gcp}
# Kinds whose credential is a signature over the final request (backend_request adds it).
SIGNED_AUTH_KINDS = ("aws_credentials",)


class MissingCredentialError(GatewayError):
    def __init__(self, message: str = "missing credential override") -> None:
        super().__init__(401, message)


@dataclass
class AuthMutation:
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)


def _strip_bearer(value: str) -> str:
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value


def _override_value(
    auth: config_pb2.Auth, kind: str, headers: Mapping[str, str], metadata: Mapping[str, Any]
) -> str | None:
    override = auth.credential_override
    source = override.WhichOneof("source")
    if source == "from_request_headers":
        name = (override.from_request_headers.header or OVERRIDE_HEADER_DEFAULTS.get(kind, "")).lower()
        value = headers.get(name)
        return _strip_bearer(value) if value else None
    if source == "from_dynamic_metadata":
        ns = metadata.get(override.from_dynamic_metadata.namespace)
        value = ns.get(override.from_dynamic_metadata.key) if isinstance(ns, Mapping) else None
        return _strip_bearer(value) if isinstance(value, str) and value else None
    return None


def fetch_credential(
    auth: config_pb2.Auth, backend: str, request: Callable[[], tuple[Mapping[str, str], Mapping[str, Any]]]
) -> None:
    """Obtains the credential the translator fetches for a backend's auth (an Entra ID or Google
    token, AWS credentials), as resolve_auth and aws.sign will ask for it: a cache lookup once it is
    at hand; nothing when the request's own credential overrides it. `request()` gives the headers
    and dynamic metadata resolve_auth will be given (called only for an override with a fallback).
    On the event loop, raises token_cache.CredentialsPending while it is being fetched (the server
    awaits it); CredentialsUnavailable when it cannot be had (the phase answers that)."""
    kind = auth.WhichOneof("kind")
    if kind in TOKEN_AUTH_KINDS:
        if auth.HasField("credential_override"):
            if not auth.credential_override.fallback_to_configured:
                return  # only ever the client's
            if _override_value(auth, kind, *request()):
                return  # the client's, this time
        TOKEN_AUTH_KINDS[kind].bearer_token(backend, getattr(auth, kind))
    elif kind in SIGNED_AUTH_KINDS:
        aws.credentials(backend, auth.aws_credentials)


def resolve_auth(
    auth: config_pb2.Auth | None,
    headers: Mapping[str, str],
    metadata: Mapping[str, Any] | None = None,
    backend: str = "",
) -> AuthMutation:
    """The header mutation that puts the backend credential on an upstream request.

    `headers` are the request headers (lower-case names); `metadata` is the dynamic metadata Envoy
    forwarded, namespace -> fields; `backend` names the backend in logs.
    """
    mutation = AuthMutation()
    kind = auth.WhichOneof("kind") if auth is not None else None
    if kind is not None and kind not in SUPPORTED_AUTH_KINDS:
        raise GatewayError(500, f"backend auth {kind} is not supported by this translator")
    if kind in TOKEN_AUTH_KINDS:
        # An access token: an override's, else one for the policy's credential (cached).
        assert auth is not None and kind is not None
        token = None
        if auth.HasField("credential_override"):
            token = _override_value(auth, kind, headers, metadata or {})
            if not token and not auth.credential_override.fallback_to_configured:
                raise MissingCredentialError()
        if not token:
            token = TOKEN_AUTH_KINDS[kind].bearer_token(backend, getattr(auth, kind))
            if kind == "gcp_credentials" and (project := gcp.quota_project(auth.gcp_credentials)):
                mutation.set_headers[gcp.QUOTA_PROJECT_HEADER] = project
        mutation.set_headers["authorization"] = f"Bearer {token}"
    elif kind is not None and kind not in SIGNED_AUTH_KINDS:
        assert auth is not None
        key = getattr(auth, kind).key
        if auth.HasField("credential_override"):
            override = _override_value(auth, kind, headers, metadata or {})
            if override:
                key = override
            elif not auth.credential_override.fallback_to_configured or not key:
                raise MissingCredentialError()
        if kind == "api_key":
            mutation.set_headers["authorization"] = f"Bearer {key}"
        elif kind == "anthropic_api_key":
            mutation.set_headers["x-api-key"] = key
            if ANTHROPIC_VERSION_HEADER not in headers:
                mutation.set_headers[ANTHROPIC_VERSION_HEADER] = DEFAULT_ANTHROPIC_VERSION
        else:
            mutation.set_headers["api-key"] = key
    for name in CLIENT_AUTH_HEADERS:
        if name not in mutation.set_headers:
            mutation.remove_headers.append(name)
    mutation.remove_headers.extend(
        name for name in headers if name.startswith(OVERRIDE_HEADER_PREFIX) and name not in mutation.remove_headers
    )
    if auth is not None and auth.credential_override.from_request_headers.header:
        custom = auth.credential_override.from_request_headers.header.lower()
        if custom not in mutation.remove_headers and custom not in mutation.set_headers:
            mutation.remove_headers.append(custom)
    return mutation

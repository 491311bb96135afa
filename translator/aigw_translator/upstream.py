"""The upstream-level phase (cluster upstream HTTP filter): one instance per attempt.

Envoy's upstream filters share the router's downstream header map across retry attempts, so
whatever an earlier attempt set (:path, credentials, content-length) is still present. Everything
is therefore derived from x-ai-eg-original-path, x-ai-eg-model and the body (which Envoy replays
from the router's buffer, i.e. the untranslated request), and every credential header is removed
before the backend's one is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from aigw.translator.v1 import config_pb2

from . import contract
from .auth import resolve_auth
from .config import RuntimeConfig
from .endpoints import ClientSchema, client_schema_of, resolve_path
from .errors import GatewayError, gateway_error_body
from .extproc import dynamic_metadata, header_mutation, immediate, metadata_field
from .logs import RedactedHeaders, get_logger
from .translators import RequestContext, TranslatedRequest, get_pair

log = get_logger(__name__)

# Key (in contract.METADATA_NAMESPACE) of the sealed credential overrides carried between attempts.
SEALED_OVERRIDES_KEY = "sealed_credential_overrides"


def backend_name_from_attributes(attrs: dict[str, Any]) -> str:
    """Endpoint metadata first, cluster metadata as fallback."""
    for attribute in (contract.UPSTREAM_HOST_METADATA_ATTRIBUTE, contract.CLUSTER_METADATA_ATTRIBUTE):
        name = metadata_field(attrs.get(attribute), contract.INTERNAL_METADATA_NAMESPACE, contract.BACKEND_NAME_KEY)
        if name:
            return name
    return ""


def apply_body_mutation(body: bytes, mutation: config_pb2.BodyMutation) -> bytes:
    if not mutation.set and not mutation.remove:
        return body
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(obj, dict):
        return body
    for name in mutation.remove:
        obj.pop(name, None)
    for item in mutation.set:
        try:
            obj[item.path] = orjson.loads(item.value)
        except orjson.JSONDecodeError:
            obj[item.path] = item.value
    return orjson.dumps(obj)


def carry_overrides(
    runtime: RuntimeConfig, headers: dict[str, str], metadata: dict[str, Any]
) -> tuple[dict[str, str], str | None]:
    """Credential override headers survive retries: the first attempt strips them from Envoy's
    (shared) header map, so it seals them into dynamic metadata and later attempts restore them.

    Returns the headers to resolve auth with, and the sealed token to (re)write."""
    if runtime.sealer is None:
        return headers, None
    present = {k: v for k, v in headers.items() if runtime.is_override_header(k)}
    if present:
        return headers, runtime.sealer.seal(orjson.dumps(present))
    token = (metadata.get(contract.METADATA_NAMESPACE) or {}).get(SEALED_OVERRIDES_KEY)
    if not isinstance(token, str) or not token:
        return headers, None
    plain = runtime.sealer.unseal(token)
    if plain is None:
        return headers, None
    restored = orjson.loads(plain)
    if not isinstance(restored, dict):
        return headers, None
    return {**{k: v for k, v in restored.items() if isinstance(v, str)}, **headers}, token


@dataclass
class UpstreamRequest:
    """Everything the upstream phase decided for one attempt."""

    backend_name: str
    body: bytes | None
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    sealed_overrides: str | None = None


def translate_attempt(
    runtime: RuntimeConfig,
    headers: dict[str, str],
    attrs: dict[str, Any],
    metadata: dict[str, Any],
    body: bytes,
    has_body: bool,
) -> UpstreamRequest:
    """Pure: the request mutation for one attempt. Raises GatewayError for local replies."""
    original = headers.get(contract.ORIGINAL_PATH_HEADER) or headers.get(":path", "/")
    resolved = resolve_path(original, runtime.root_prefix)
    if resolved is None:
        raise GatewayError(404, f"unsupported path: {original.split('?', 1)[0]}")
    backend_name = backend_name_from_attributes(attrs)
    backend = runtime.backends.get(backend_name)
    if backend is None:
        raise GatewayError(500, f"no translator configuration for backend {backend_name!r}")
    model = backend.model_name_override or headers.get(contract.MODEL_HEADER, "")
    pair = get_pair(resolved.endpoint, backend.schema.name)
    if pair is None:
        raise GatewayError(
            422, f"endpoint {resolved.local_path} is not supported by backend schema {backend.schema.name}"
        )
    ctx = RequestContext(
        endpoint=resolved.endpoint,
        backend=backend,
        local_path=resolved.local_path,
        query=resolved.query,
        model=model,
        headers=headers,
    )
    auth_headers, sealed = carry_overrides(runtime, headers, metadata)
    auth = resolve_auth(backend.auth if backend.HasField("auth") else None, auth_headers, metadata)
    try:
        translated: TranslatedRequest = pair.request(ctx, body)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
        # A request of an unexpected shape (e.g. a string where an object belongs).
        raise GatewayError(422, f"request cannot be translated: invalid {type(exc).__name__}") from None
    final_body = translated.body if translated.body is not None else body
    final_body = apply_body_mutation(final_body, backend.body_mutation)

    set_headers: dict[str, str] = {":path": translated.path, "accept-encoding": "identity"}
    if backend.upstream_host:
        # Real providers route on Host (and the TLS SNI comes from the cluster): a retry on another
        # backend must not keep the previous attempt's host.
        set_headers[":authority"] = backend.upstream_host
    set_headers.update(translated.set_headers)
    for hv in backend.header_mutation.set:
        set_headers[hv.name.lower()] = hv.value
    set_headers.update(auth.set_headers)
    remove = [*translated.remove_headers, *(h.lower() for h in backend.header_mutation.remove), *auth.remove_headers]
    if has_body:
        set_headers["content-length"] = str(len(final_body))
    else:
        remove.append("content-length")
    changed = final_body != body
    return UpstreamRequest(
        backend_name=backend_name,
        body=final_body if changed else None,
        set_headers=set_headers,
        remove_headers=[r for r in remove if r not in set_headers],
        sealed_overrides=sealed,
    )


class UpstreamPhase:
    def __init__(self, runtime: RuntimeConfig) -> None:
        self.runtime = runtime
        self.headers: dict[str, str] = {}
        self.attrs: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}

    @property
    def client_schema(self) -> ClientSchema:
        original = self.headers.get(contract.ORIGINAL_PATH_HEADER) or self.headers.get(":path", "/")
        resolved = resolve_path(original, self.runtime.root_prefix)
        if resolved is None:
            return ClientSchema.OPENAI
        return client_schema_of(resolved.endpoint, resolved.local_path)

    def request_headers(
        self, headers: dict[str, str], attrs: dict[str, Any], metadata: dict[str, Any], end_of_stream: bool
    ) -> ep.ProcessingResponse:
        self.headers, self.attrs, self.metadata = headers, attrs, metadata
        if not end_of_stream:
            return ep.ProcessingResponse(request_headers=ep.HeadersResponse())
        return self._respond(b"", has_body=False)

    def request_body(self, body: bytes) -> ep.ProcessingResponse:
        return self._respond(body, has_body=True)

    def _respond(self, body: bytes, has_body: bool) -> ep.ProcessingResponse:
        try:
            attempt = translate_attempt(self.runtime, self.headers, self.attrs, self.metadata, body, has_body)
        except GatewayError as err:
            log.info("upstream_local_reply", status=err.status, reason=err.message)
            return immediate(err.status, gateway_error_body(self.client_schema, err.status, err.message))
        log.debug(
            "upstream_attempt",
            backend=attempt.backend_name,
            request_headers=RedactedHeaders(self.headers),
            set_headers=RedactedHeaders(attempt.set_headers),
            removed=attempt.remove_headers,
        )
        common = ep.CommonResponse(header_mutation=header_mutation(attempt.set_headers, attempt.remove_headers))
        if attempt.body is not None:
            common.body_mutation.body = attempt.body
        fields = {contract.BACKEND_NAME_METADATA_KEY: attempt.backend_name}
        if attempt.sealed_overrides:
            fields[SEALED_OVERRIDES_KEY] = attempt.sealed_overrides
        if has_body:
            fields[contract.CONTENT_LENGTH_KEY] = str(len(attempt.body if attempt.body is not None else body))
        md = dynamic_metadata(contract.METADATA_NAMESPACE, fields)
        if has_body:
            return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common), dynamic_metadata=md)
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common), dynamic_metadata=md)

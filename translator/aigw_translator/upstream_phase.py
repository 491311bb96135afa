"""The upstream-level phase (cluster upstream HTTP filter): one instance per attempt.

Per-attempt header restoration. Envoy's upstream filters share the router's downstream header map
across retry attempts: whatever attempt 1 set or removed (:authority, the backend credential, its
headerMutation such as an Azure Ocp-Apim-Subscription-Key, anthropic-version, a stripped override
header...) is still so when attempt 2 starts, perhaps for another provider. Each attempt therefore:

1. reads the originals record: for every header name an earlier attempt of this request changed,
   its value before the first change (null: it was absent). The record is sealed (seal.py; it holds
   client credentials) and rides in dynamic metadata (contract.METADATA_NAMESPACE, key
   SEALED_ORIGINAL_HEADERS_KEY), which Envoy forwards to the next attempt's ext_proc stream: any translator
   process can take any attempt (no in-memory state, DESIGN.md decision 6). A record that is present
   but cannot be unsealed fails the attempt (500) rather than guessing;
2. translates from the restored view (the current map with the recorded originals put back), i.e.
   exactly the headers the router phase left, as Envoy AI Gateway's header mutator does;
3. strips every gateway-owned name (RuntimeConfig.owned_headers, every x-aigw-*) that it does not
   set itself or its backend's policy does not pass, sets its own headers, and puts back the
   original of anything an earlier attempt changed that this one leaves alone;
4. adds to the record the originals of the names it is the first to change, and writes it back.

:path, accept-encoding and content-length are set (or removed) by every attempt and need no record;
the client's path is x-ai-eg-original-path. Everything else is derived from x-ai-eg-model and the
body (which Envoy replays from the router's buffer, i.e. the untranslated request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

import aigw_contract as contract

from .backend_request import backend_request
from .config import RuntimeConfig
from .endpoints import ClientSchema, client_schema_of, client_schema_of_path, resolve_path
from .errors import EndpointNotServed, GatewayError, gateway_error_body, reply_level
from .extproc import dynamic_metadata, header_mutation, immediate, metadata_field
from .logs import RedactedHeaders, get_logger

log = get_logger(__name__)

# Set or removed by every attempt: never recorded, never restored.
_ALWAYS_SET = frozenset({":path", "accept-encoding", "content-length"})


def backend_name_from_attributes(attrs: dict[str, Any]) -> str:
    """Endpoint metadata first, cluster metadata as fallback."""
    for attribute in (contract.UPSTREAM_HOST_METADATA_ATTRIBUTE, contract.CLUSTER_METADATA_ATTRIBUTE):
        name = metadata_field(attrs.get(attribute), contract.INTERNAL_METADATA_NAMESPACE, contract.BACKEND_NAME_KEY)
        if name:
            return name
    return ""


def load_originals(runtime: RuntimeConfig, metadata: dict[str, Any]) -> dict[str, str | None]:
    """The originals record earlier attempts wrote (empty on the first attempt)."""
    token = (metadata.get(contract.METADATA_NAMESPACE) or {}).get(contract.SEALED_ORIGINAL_HEADERS_KEY)
    if token is None or token == "":
        return {}
    plain = runtime.sealer.unseal(token) if runtime.sealer is not None and isinstance(token, str) else None
    record = orjson.loads(plain) if plain is not None else None
    if not isinstance(record, dict):
        # Sealed by another configuration (it changed between attempts) or forged: the earlier
        # attempt's headers cannot be told from the client's.
        raise GatewayError(500, "the state of this request's earlier attempt cannot be read")
    return {k: v for k, v in record.items() if isinstance(k, str) and (v is None or isinstance(v, str))}


def restored_view(headers: dict[str, str], originals: dict[str, str | None]) -> dict[str, str]:
    """The request headers as the router phase left them: the current map with every header an
    earlier attempt changed put back to its original value (or dropped when it was absent)."""
    if not originals:
        return headers
    view = {k: v for k, v in headers.items() if k not in originals}
    view.update({k: v for k, v in originals.items() if v is not None})
    return view


@dataclass
class UpstreamRequest:
    """Everything the upstream phase decided for one attempt."""

    backend_name: str
    body: bytes | None
    set_headers: dict[str, str]
    remove_headers: list[str]
    # The sealed originals record to write for the next attempt (None: nothing to carry).
    sealed_originals: str | None = None
    # The gateway's own answer (BackendRequest.answer): the attempt sends nothing.
    answer: bytes | None = None


def translate_attempt(
    runtime: RuntimeConfig,
    headers: dict[str, str],
    attrs: dict[str, Any],
    metadata: dict[str, Any],
    body: bytes,
    has_body: bool,
) -> UpstreamRequest:
    """Pure: the request mutation for one attempt. Raises GatewayError for local replies.

    `headers` is Envoy's current (shared) header map; see the module docstring for how the
    changes of earlier attempts are undone."""
    originals = load_originals(runtime, metadata)
    view = restored_view(headers, originals)
    try:
        sent = backend_request(
            runtime,
            backend_name_from_attributes(attrs),
            view,
            view.get(contract.MODEL_HEADER, ""),
            metadata,
            body,
            has_body,
        )
    except EndpointNotServed as refused:
        if not (metadata.get(contract.METADATA_NAMESPACE) or {}).get(contract.BACKEND_NAME_METADATA_KEY):
            raise
        # A retry (an earlier attempt named its backend): the backends that serve the endpoint
        # failed, and Envoy failed over to one that cannot. A 422 would tell the client its request
        # can never succeed, and the SDKs do not retry it; the outage is what it meets.
        raise GatewayError(
            503, f"{refused.message}, to which the request failed over when the backends before it failed"
        ) from None
    if sent.answer is not None:
        return UpstreamRequest(sent.backend_name, None, {}, [], answer=sent.answer)
    set_headers, remove = sent.set_headers, list(sent.remove_headers)
    removed = frozenset(remove)
    # Undo what earlier attempts changed and this one leaves alone.
    for name, value in originals.items():
        if name in set_headers or name in removed:
            continue
        if value is None:
            remove.append(name)
        else:
            set_headers[name] = value
    return UpstreamRequest(
        backend_name=sent.backend_name,
        body=sent.body,
        set_headers=set_headers,
        remove_headers=remove,
        sealed_originals=_record(runtime, originals, headers, set_headers, removed),
    )


def _record(
    runtime: RuntimeConfig,
    originals: dict[str, str | None],
    headers: dict[str, str],
    set_headers: dict[str, str],
    removed: frozenset[str],
) -> str | None:
    """The sealed originals record after this attempt: the earlier record plus, for each name this
    attempt is the first to change, its current (i.e. original) value. Names removed while absent
    need no entry."""
    record = dict(originals)
    for name in set_headers:
        if name not in _ALWAYS_SET and name not in record and headers.get(name) != set_headers[name]:
            record[name] = headers.get(name)
    for name in removed:
        if name not in _ALWAYS_SET and name not in record and name in headers:
            record[name] = headers[name]
    if not record or runtime.sealer is None:
        return None
    return runtime.sealer.seal(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))


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
            return client_schema_of_path(original)
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
            log.log(reply_level(err.status), "upstream_local_reply", status=err.status, reason=err.message)
            return immediate(err.status, gateway_error_body(self.client_schema, err.status, err.message))
        if attempt.answer is not None:
            return immediate(200, attempt.answer, details="aigw_answered")
        log.debug(
            "upstream_attempt",
            backend=attempt.backend_name,
            request_headers=RedactedHeaders(self.headers, self.runtime.secret_headers),
            set_headers=RedactedHeaders(attempt.set_headers, self.runtime.secret_headers),
            removed=attempt.remove_headers,
        )
        common = ep.CommonResponse(header_mutation=header_mutation(attempt.set_headers, attempt.remove_headers))
        if attempt.body is not None:
            common.body_mutation.body = attempt.body
        fields = {contract.BACKEND_NAME_METADATA_KEY: attempt.backend_name}
        if attempt.sealed_originals:
            fields[contract.SEALED_ORIGINAL_HEADERS_KEY] = attempt.sealed_originals
        if has_body:
            fields[contract.CONTENT_LENGTH_KEY] = str(len(attempt.body if attempt.body is not None else body))
        md = dynamic_metadata(contract.METADATA_NAMESPACE, fields)
        if has_body:
            return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common), dynamic_metadata=md)
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common), dynamic_metadata=md)

"""The request one backend gets (pure): path, body, headers and credentials, from the client's
request as the router phase left it. Both phases that send requests use it: the router phase on a
route that translates on one stream, the per-attempt phase on a rule whose backends differ."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from . import aws
from .auth import resolve_auth
from .config import RuntimeConfig
from .endpoints import resolve_path, unsupported_path
from .errors import EndpointNotServed, GatewayError
from .translators import RequestContext, TranslatedRequest, get_pair


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
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        raise GatewayError(400, "request body is nested too deeply to be rewritten") from None


@dataclass
class BackendRequest:
    """What one backend is sent: header changes, and the new body (None: unchanged); or, with an
    `answer`, nothing: the gateway answers the client with it (status 200)."""

    backend_name: str
    body: bytes | None
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    answer: bytes | None = None


def backend_request(
    runtime: RuntimeConfig,
    backend_name: str,
    view: dict[str, str],
    model: str,
    metadata: dict[str, Any],
    body: bytes,
    has_body: bool,
) -> BackendRequest:
    """Pure: the request mutation that sends the client's request (`view`: its headers as the router
    phase left them; `model`: the routed model) to `backend_name`. Raises GatewayError for local
    replies."""
    original = view.get(contract.ORIGINAL_PATH_HEADER) or view.get(":path", "/")
    resolved = resolve_path(original, runtime.root_prefix)
    if resolved is None:
        raise GatewayError(404, unsupported_path(original, runtime.root_prefix))
    backend = runtime.backends.get(backend_name)
    if backend is None:
        # Its Gateway's configuration has not reached this translator (yet: or it follows another
        # fleet than Envoy's, a --fleet typo): the gateway cannot serve this now.
        raise GatewayError(
            503, f"the translator has no configuration for backend {backend_name!r}: its Gateway's has not reached it"
        )
    model = backend.model_name_override or model
    pair = get_pair(resolved.endpoint, backend.schema.name)
    if pair is None:
        raise EndpointNotServed(resolved.local_path, backend.schema.name)
    ctx = RequestContext(
        endpoint=resolved.endpoint,
        backend=backend,
        local_path=resolved.local_path,
        query=resolved.query,
        model=model,
        headers=view,
        user_id_key=runtime.user_id_key,
    )
    auth = resolve_auth(backend.auth if backend.HasField("auth") else None, view, metadata, backend.name)
    try:
        translated: TranslatedRequest = pair.request(ctx, body)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
        # A request of an unexpected shape (e.g. a string where an object belongs).
        raise GatewayError(422, f"request cannot be translated: invalid {type(exc).__name__}") from None
    if translated.answer is not None:
        return BackendRequest(backend_name=backend_name, body=None, answer=translated.answer)
    final_body = translated.body if translated.body is not None else body
    final_body = apply_body_mutation(final_body, backend.body_mutation)

    set_headers: dict[str, str] = {":path": translated.path, "accept-encoding": "identity"}
    if backend.upstream_host:
        # Real providers route on Host (and the TLS SNI comes from the cluster).
        set_headers[":authority"] = backend.upstream_host
    set_headers.update(translated.set_headers)
    for hv in backend.header_mutation.set:
        set_headers[hv.name.lower()] = hv.value
    set_headers.update(auth.set_headers)
    if backend.auth.HasField("aws_credentials"):
        # Signed last, over exactly what is sent: the final path and body, the configured host.
        host = backend.upstream_host
        set_headers[":authority"] = host
        set_headers.update(aws.sign(backend.name, backend.auth.aws_credentials, host, translated.path, final_body))
    # An override header (any backend's) never passes, whatever a backend's policy lists.
    passed = frozenset(backend.auth.pass_client_headers) - runtime.override_headers
    remove = [
        *translated.remove_headers,
        *(h.lower() for h in backend.header_mutation.remove),
        *auth.remove_headers,
        *(h for h in runtime.owned_headers if h not in passed),
        *(h for h in view if h.startswith(contract.OVERRIDE_HEADER_PREFIX)),
        *(h for h in view if h.startswith(contract.PROVIDER_SCOPED_PREFIXES) and h not in passed),
    ]
    if has_body:
        set_headers["content-length"] = str(len(final_body))
    else:
        remove.append("content-length")
    return BackendRequest(
        backend_name=backend_name,
        body=final_body if final_body != body else None,
        set_headers=set_headers,
        remove_headers=[r for r in dict.fromkeys(remove) if r not in set_headers],
    )

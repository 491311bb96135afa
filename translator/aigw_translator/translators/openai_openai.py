"""OpenAI client -> OpenAI-schema backend (and Azure OpenAI): passthrough with model override,
path prefix, and usage extraction from bodies and streams."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlencode

from ..config import schema_prefix
from ..endpoints import FORM_ENDPOINTS, JSON_ENDPOINTS, USAGE_OPTION_ENDPOINTS, Endpoint
from ..errors import GatewayError
from ..multipart import form_field, replace_form_field
from ..sse import Event, RelayedEvents, SSEParser, encode_event
from ..usage import from_openai
from .base import (
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    TranslatedRequest,
    dump_json,
    load_json,
    parse_request_json,
    passed_answer,
    path_segment,
)
from .capabilities import AZURE_RESPONSES_SINCE, azure_api_version, azure_version_since, is_modern


def api_suffix(local_path: str) -> str:
    """ "/v1/chat/completions" -> "/chat/completions", "/v1" -> ""; paths outside /v1 are kept whole."""
    if local_path.startswith("/v1/") or local_path == "/v1":
        return local_path[3:]
    return local_path


def _rewrite_json(ctx: RequestContext, body: bytes) -> bytes | None:
    """The model override, and stream_options.include_usage on every stream whose backend takes it
    (usage is metered on every stream; the response side drops the usage chunk again when the
    client did not ask for it); for a backend that does not (_for_older_azure), the current
    parameters it refuses rewritten. JSON passthrough bodies with a model get the override too."""
    if ctx.endpoint not in JSON_ENDPOINTS and ctx.endpoint is not Endpoint.PASSTHROUGH:
        return None
    override = bool(ctx.backend.model_name_override)
    chat = ctx.endpoint in USAGE_OPTION_ENDPOINTS
    usage = chat and is_modern(ctx.backend, ctx.query)
    older = chat and not usage
    if not override and not usage and not older:
        return None
    if ctx.endpoint is Endpoint.PASSTHROUGH:
        obj = load_json(body)
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), str):
            return None
    else:
        obj = parse_request_json(body)
    changed = False
    if override and obj.get("model") != ctx.model:
        obj["model"] = ctx.model
        changed = True
    if usage and obj.get("stream") is True:
        options = obj.get("stream_options")
        if not isinstance(options, dict) or options.get("include_usage") is not True:
            obj["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            changed = True
    if older:
        changed = _for_older_azure(obj) or changed
    if not changed:
        return None
    try:
        return dump_json(obj)
    except GatewayError:
        if override:
            raise
        return None  # too deep to re-encode: forwarded as sent, without the usage option


def _for_older_azure(obj: dict[str, Any]) -> bool:
    """A chat request as Azure api-versions before 2024-09-01 take it: they refuse
    max_completion_tokens, stream_options and parallel_tool_calls ("Unrecognized request argument
    supplied"), so the first becomes max_tokens (unless that is given too) and the others go (such a
    stream carries no usage: the gateway meters its estimate; the model may call tools in parallel).
    Whether anything changed."""
    changed = False
    if "max_completion_tokens" in obj:
        limit = obj.pop("max_completion_tokens")
        if obj.get("max_tokens") is None and limit is not None:
            obj["max_tokens"] = limit
        changed = True
    for name in ("stream_options", "parallel_tool_calls"):
        if name in obj:
            del obj[name]
            changed = True
    return changed


def _rewrite_body(ctx: RequestContext, body: bytes) -> bytes | None:
    if ctx.endpoint in FORM_ENDPOINTS:
        if not ctx.backend.model_name_override:
            return None
        content_type = ctx.headers.get("content-type", "")
        if form_field(body, content_type, "model") == ctx.model:
            return None
        return replace_form_field(body, content_type, "model", ctx.model)
    return _rewrite_json(ctx, body)


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    prefix = schema_prefix(ctx.backend.schema)
    suffix = api_suffix(ctx.local_path)
    if ctx.endpoint is Endpoint.PASSTHROUGH:
        _deny_passthrough(ctx, suffix, azure=False)
    # An OpenAI path goes under the backend's prefix; a vLLM one (/tokenize) as it is.
    path = ((f"/{prefix}" if prefix else "") + suffix) if ctx.local_path.startswith("/v1/") else ctx.local_path
    return TranslatedRequest(path=(path or "/") + ctx.query, body=_rewrite_body(ctx, body))


def _with_api_version(query: str, version: str) -> str:
    """The client's query with exactly one api-version: `version`."""
    params = [p for p in query.lstrip("?").split("&") if p and not p.startswith("api-version=")]
    params.append(urlencode({"api-version": version}))
    return "?" + "&".join(params)


# Passthrough paths that must not reach a provider with the gateway's key. Azure: a deployment
# chosen by the path, not by the routed model. OpenAI: the organization admin API.
_AZURE_DENIED_SEGMENTS = frozenset({"deployments", ".", ".."})
_OPENAI_DENIED_FIRST = frozenset({"organization"})


def _segments(suffix: str) -> list[str]:
    """The path's segments as a provider may read them: percent-decoding repeated until stable,
    lower-cased, `\\` as `/`, path parameters (`;x`) and surrounding whitespace dropped, and the
    trailing dots of a name (`deployments.`: servers on .NET, Azure's among them, ignore them)."""
    decoded = suffix
    for _ in range(8):
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    segments = (seg.split(";", 1)[0].strip() for seg in decoded.lower().replace("\\", "/").split("/"))
    return [seg.rstrip(". ") if seg.strip(".") else seg for seg in segments]


def _deny_passthrough(ctx: RequestContext, suffix: str, azure: bool) -> None:
    segments = _segments(suffix)
    if azure:
        denied = any(seg in _AZURE_DENIED_SEGMENTS for seg in segments)
    else:
        first = next((seg for seg in segments if seg), "")
        denied = first in _OPENAI_DENIED_FIRST or any(seg in (".", "..") for seg in segments)
    if denied:
        raise GatewayError(404, f"unsupported path: {ctx.local_path}")


def translate_request_azure(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """Classic Azure OpenAI: the deployment (the model) is in the path, api-version in the query
    (capabilities.azure_api_version: the backend's, else the client's, else the default)."""
    suffix = api_suffix(ctx.local_path)
    version = azure_api_version(ctx.backend, ctx.query)
    query = _with_api_version(ctx.query, version)
    if ctx.endpoint is Endpoint.RESPONSES:
        if not azure_version_since(version, AZURE_RESPONSES_SINCE):
            raise GatewayError(
                422,
                f"the Responses API on Azure OpenAI needs api-version {AZURE_RESPONSES_SINCE}-preview or later; "
                f"this backend is sent {version} (its schema.version, else the client's api-version, else the "
                "gateway's default)",
            )
        path = "/openai/responses"
    elif ctx.endpoint is Endpoint.PASSTHROUGH:
        # The deployment always comes from the routed model: a client path naming one (in any case
        # or encoding) would reach any deployment of the resource with the gateway's key.
        _deny_passthrough(ctx, suffix, azure=True)
        path = "/openai" + suffix
    else:
        # The deployment is one path segment: a model such as "a/../../b" or "a b" must not
        # reach another deployment (with the gateway's key) or break the request line.
        path = f"/openai/deployments/{path_segment(ctx.model)}{suffix}"
    return TranslatedRequest(path=path + query, body=_rewrite_body(ctx, body))


class OpenAIResponse(ResponseTranslator):
    """Bodies pass through unchanged; usage and model are read on the way. In streams, the
    usage-only chunk the gateway forced is dropped again when the client did not ask for it."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._strip_usage_chunk = (
            ctx.endpoint in (Endpoint.CHAT_COMPLETIONS, Endpoint.COMPLETIONS) and not ctx.include_usage
        )
        # Re-encoded when the usage chunk is dropped (the client gets whole events only), else relayed.
        self._parser: SSEParser | RelayedEvents = SSEParser() if self._strip_usage_chunk else RelayedEvents()

    def body(self, body: bytes) -> bytes | None:
        obj = passed_answer(self.ctx, body)
        if isinstance(obj, dict):
            self._observe(obj)
        return None

    def _observe(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        response = obj.get("response")
        if usage is None and isinstance(response, dict):
            # Responses API stream: response.completed / response.incomplete carry the usage.
            usage = response.get("usage")
            if isinstance(response.get("model"), str):
                self.response_model = response["model"]
        if isinstance(usage, dict):
            self.usage = from_openai(usage)
        if isinstance(obj.get("model"), str) and obj["model"]:
            self.response_model = obj["model"]

    def _event(self, event: Event) -> bool:
        """Observes one event; False when it must be dropped."""
        if event.data == "[DONE]":
            return True
        obj = load_json(event.data.encode())
        if not isinstance(obj, dict):
            return True
        self._observe(obj)
        return not (self._strip_usage_chunk and obj.get("choices") == [] and isinstance(obj.get("usage"), dict))

    def feed(self, chunk: bytes) -> bytes:
        events = self._parser.feed(chunk)
        if not self._strip_usage_chunk:
            for event in events:
                self._event(event)
            return chunk
        return b"".join(encode_event(ev.data, ev.event) for ev in events if self._event(ev))

    def finish(self) -> bytes:
        events = self._parser.finish()
        kept = [ev for ev in events if self._event(ev)]
        if not self._strip_usage_chunk:
            return b""
        return b"".join(encode_event(ev.data, ev.event) for ev in kept)

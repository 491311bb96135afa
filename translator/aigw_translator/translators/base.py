"""What every (client schema x backend schema) translator provides.

Request translation runs in the upstream phase (per attempt, for the backend Envoy picked);
response translation runs in the router phase. They never share memory: each side is built from
what it can see (the request itself, the config, and the backend name Envoy hands back).
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote

import orjson

from aigw.translator.v1 import config_pb2

from ..endpoints import JSON_ANSWER_ENDPOINTS, ClientSchema, Endpoint
from ..errors import GatewayError, to_client_error
from ..logs import get_logger
from ..sse import Event, RelayedEvents, SSEParser, encode_event
from ..usage import TokenUsage

log = get_logger(__name__)


class TranslationError(GatewayError):
    """The request cannot be expressed in the backend's schema (422)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, message)


class InvalidRequest(GatewayError):
    """The request is not valid in the client's own API, whatever the backend (400, as OpenAI and
    Anthropic answer it: the SDKs raise BadRequestError)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass
class RequestContext:
    endpoint: Endpoint
    backend: config_pb2.Backend
    # Path below the root prefix without query ("/v1/chat/completions"), and the query ("" or "?...").
    local_path: str
    query: str
    # The effective model: the backend's override, else the request's model.
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    # The fleet's key for opaque end-user ids (RuntimeConfig.user_id_key).
    user_id_key: bytes = b""


@dataclass
class TranslatedRequest:
    path: str
    # New body, or None to forward the body unchanged.
    body: bytes | None = None
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    # The gateway's own answer (a JSON body, status 200): the request goes to no backend.
    answer: bytes | None = None


@dataclass
class ResponseContext:
    endpoint: Endpoint
    client_schema: ClientSchema
    request_model: str
    effective_model: str
    stream: bool
    # The client asked for the usage-only chunk (OpenAI stream_options.include_usage).
    include_usage: bool = False
    # The backend's response headers (lower-case names), e.g. Bedrock's x-amzn-errortype.
    response_headers: Mapping[str, str] = field(default_factory=dict)
    # The client asked for embeddings as base64 (OpenAI encoding_format "base64"): see embedding_value.
    base64_embeddings: bool = False
    # The rough size of the request's prompt (usage.estimate_prompt_tokens; 0: not estimated), for
    # an answer whose backend reports no usage where the client's API must say some.
    prompt_estimate: int = 0


class ResponseTranslator:
    """Translates one response (success body, stream, or error) into the client's schema."""

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.usage = TokenUsage()
        self.response_model = ""

    # Non-streaming success body. Returns the new body, or None when unchanged.
    def body(self, body: bytes) -> bytes | None:
        return None

    # Streaming success body, chunk by chunk.
    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""

    def error(self, status: int, body: bytes) -> bytes:
        return to_client_error(self.ctx.client_schema, status, body)


def dropping_malformed(translator: ResponseTranslator, event: str | None, translate: Callable[[], bytes]) -> bytes:
    """What `translate` makes of one provider stream event; an event of an unexpected shape is
    dropped (logged), never fatal for the whole stream."""
    try:
        return translate()
    except (AttributeError, TypeError, KeyError, ValueError, IndexError, GatewayError):
        log.warning("stream_event_dropped", translator=type(translator).__name__, sse_event=event)
        return b""


class SSEResponseTranslator(ResponseTranslator):
    """Base for stream translators: parses SSE incrementally and maps event by event."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._safe(ev) for ev in self._parser.feed(chunk))

    def finish(self) -> bytes:
        out = b"".join(self._safe(ev) for ev in self._parser.finish())
        return out + self.on_end()

    def _safe(self, event: Event) -> bytes:
        return dropping_malformed(self, event.event, partial(self.on_event, event))

    def on_event(self, event: Event) -> bytes:
        raise NotImplementedError

    def on_end(self) -> bytes:
        return b""


class ObservedStream(ResponseTranslator):
    """A stream forwarded as the backend sent it while its SSE events are read (`_observe`: the
    usage, the model), at any chunking."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._parser = RelayedEvents()

    def feed(self, chunk: bytes) -> bytes:
        for event in self._parser.feed(chunk):
            self._observe(event)
        return chunk

    def finish(self) -> bytes:
        for event in self._parser.finish():
            self._observe(event)
        return b""

    def _observe(self, event: Event) -> None:
        raise NotImplementedError


def embedding_value(values: list[float], base64_encoded: bool) -> list[float] | str:
    """One embedding as an OpenAI client asked for it: the floats, or (encoding_format "base64",
    which the official SDKs send by default) their little-endian float32 bytes in base64."""
    if not base64_encoded:
        return values
    try:
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    except struct.error as exc:
        raise ValueError(f"an embedding holds a value that is not a number: {exc}") from None


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def passed_answer(ctx: ResponseContext, body: bytes) -> Any:
    """A success body passed to the client as it is, as JSON (None if it is not). An endpoint of
    JSON_ANSWER_ENDPOINTS answers a JSON object, or a stream sent under another content type than
    SSE's: anything else is a ValueError (the router phase's 502), since an HTML page of a proxy
    answering 200 would reach an SDK as a success, or as an empty stream."""
    obj = load_json(body)
    if ctx.endpoint in JSON_ANSWER_ENDPOINTS and not isinstance(obj, dict) and not _SSE_START.match(body):
        raise ValueError("the backend's success answer is neither a JSON object nor a stream")
    return obj


# How an SSE stream starts: a field or a comment line.
_SSE_START = re.compile(rb"[ \t\r\n]*(?:data|event|id|retry)?:")


def path_segment(value: str, safe: str = "") -> str:
    """`value` (a model, a deployment) as one segment of a provider's URL path, percent-encoded ('/'
    and '?' too: it cannot reach another path); GatewayError(400) for dots alone, which a server
    takes as a relative segment ('.', '..') however it is encoded."""
    if value and not value.strip("."):
        raise GatewayError(400, f"model {value[:20]!r} cannot name a model in the backend's URL: it is dots alone")
    return quote(value, safe=safe)


def dump_json(obj: Any) -> bytes:
    """orjson writes at most 254 levels of nesting (it reads 1024): a deeper request is the
    client's error (400), never a traceback."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        raise GatewayError(400, f"JSON body cannot be re-encoded: {exc}") from None


def parse_request_json(body: bytes) -> dict[str, Any]:
    obj = load_json(body)
    if not isinstance(obj, dict):
        raise GatewayError(400, "request body is not a JSON object")
    return obj


def chat_chunk(chunk_id: str, created: int, model: str, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One OpenAI chat.completion.chunk as an SSE data line (`extra`: e.g. the usage chunk's usage)."""
    obj: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }
    return encode_event(orjson.dumps(obj))


class StreamedToolCalls:
    """The OpenAI tool-call index of each tool block of a provider's stream (blocks by their index
    in the provider's message; calls numbered from 0 in the order they open), and the chunk deltas
    of their arguments. A tool without parameters streams no arguments (or an empty fragment), and
    an OpenAI client would rebuild arguments "": such a call gets "{}" when its block ends, the JSON
    object OpenAI always gives."""

    def __init__(self) -> None:
        self._index_by_block: dict[Any, int] = {}
        self._without_arguments: set[Any] = set()
        self._opened = 0

    def open(self, block: Any, arguments: Any = None) -> int:
        """A tool block opens: its call's index (`arguments`: what its start already carries, as
        some servers put the whole input there; Anthropic's own starts with {})."""
        index = self._index_by_block[block] = self._opened
        self._opened += 1
        if not arguments:
            self._without_arguments.add(block)
        return index

    def arguments(self, block: Any, fragment: Any) -> dict[str, Any] | None:
        """The delta carrying a fragment of a call's arguments (None: not a tool block, or empty)."""
        index = self._index_by_block.get(block)
        if index is None or not isinstance(fragment, str) or not fragment:
            return None
        self._without_arguments.discard(block)
        return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}

    def close(self, block: Any) -> dict[str, Any] | None:
        """At a block's end: the delta giving a call that received no arguments "{}", else None."""
        if block not in self._without_arguments:
            return None
        self._without_arguments.discard(block)
        return {"tool_calls": [{"index": self._index_by_block[block], "function": {"arguments": "{}"}}]}


def anthropic_event(kind: str, obj: dict[str, Any]) -> bytes:
    """One Anthropic stream event: the SSE event name is its `type`."""
    return encode_event(orjson.dumps({"type": kind, **obj}), kind)


def anthropic_message_start(message_id: str, model: str) -> bytes:
    """The message_start event of a stream translated to Anthropic's: an empty assistant message
    whose blocks, stop reason and usage follow in later events."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return anthropic_event("message_start", {"message": message})


def model_override_body(ctx: RequestContext, body: bytes) -> bytes | None:
    """A forwarded request's body with the backend's model override in it; None (sent as it came)
    without an override or when it already names that model."""
    if not ctx.backend.model_name_override:
        return None
    obj = parse_request_json(body)
    if obj.get("model") == ctx.model:
        return None
    obj["model"] = ctx.model
    return dump_json(obj)


def success_json(body: bytes) -> dict[str, Any]:
    """A backend's non-streamed success body, which every provider answers as a JSON object."""
    obj = load_json(body)
    if not isinstance(obj, dict):
        raise ValueError("the backend's success body is not a JSON object")
    return obj


def append_turn(turns: list[dict[str, Any]], role: str, items: list[dict[str, Any]], key: str = "content") -> None:
    """Anthropic, Converse and Gemini require alternating turns: consecutive turns of one role are
    merged (their blocks or parts under `key`); a turn with nothing in it is left out."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


# ----------------------------------------------------------------------------- OpenAI chat fields


def positive_int(req: dict[str, Any], key: str) -> int | None:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        got = f"{type(value).__name__} {str(value)[:20]!r}"
        raise GatewayError(400, f"'{key}' must be an integer of at least 1, got {got}")
    return value


# Media types clients write (built from a file's .jpg extension) for one every provider names
# otherwise: Gemini refuses "image/jpg" (400 Unsupported MIME type), Converse has no such format.
_MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


def base64_data_url(url: str, what: str) -> tuple[str, str]:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL (what: "image", "file", as the
    error names it); the media type in lower case and by its registered name (image/jpg is
    image/jpeg), "" when the URL gives none."""
    header, sep, data = url.partition(",")
    if not header.startswith("data:") or not sep or ";base64" not in header:
        raise TranslationError(f"{what} data URLs must be base64 encoded (data:<media type>;base64,...)")
    media_type = header[5:].split(";", 1)[0].strip().lower()
    return _MEDIA_TYPE_ALIASES.get(media_type, media_type), data.strip()


# Anthropic Messages fields that are objects: another type is Anthropic's 400, whatever the backend.
_MESSAGES_OBJECTS = ("metadata", "tool_choice", "thinking", "output_config")


def reject_malformed_messages_fields(req: dict[str, Any]) -> None:
    """An Anthropic Messages request whose object fields are not objects: the 400 Anthropic answers
    (in its words), rather than a 422 naming a Python exception or a field silently ignored."""
    for key in _MESSAGES_OBJECTS:
        if key in req and req[key] is not None and not isinstance(req[key], dict):
            raise InvalidRequest(f"{key}: Input should be a valid dictionary or object to extract fields from")


def betas_of(values: Any) -> list[str]:
    """The betas of an anthropic-beta header's comma-separated list or a body's list."""
    items = values.split(",") if isinstance(values, str) else values if isinstance(values, list) else []
    return [b.strip() for b in items if isinstance(b, str) and b.strip()]


def required_max_tokens(req: dict[str, Any]) -> int:
    """An Anthropic Messages request's max_tokens, which Anthropic requires (its own 400 when it is
    missing): refused the same way whatever the backend, so that a client that works on one
    backend of a route does not break when it lands on, or fails over to, a Claude one."""
    max_tokens = positive_int(req, "max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required")
    return max_tokens


def number(req: dict[str, Any], key: str) -> float | None:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GatewayError(400, f"'{key}' must be a number")
    return float(value)


def max_output_tokens(req: dict[str, Any]) -> int | None:
    """The chat request's output limit: max_completion_tokens, else max_tokens."""
    max_completion = positive_int(req, "max_completion_tokens")
    return max_completion if max_completion is not None else positive_int(req, "max_tokens")


def reject_unsupported_chat_fields(req: dict[str, Any], backends: str) -> None:
    """OpenAI chat fields whose effect `backends` (e.g. "Anthropic backends") cannot give: a clear
    422 rather than an answer that silently ignores them. (response_format is the caller's:
    claude_reasoning.output_schema.)"""
    n = req.get("n")
    if n is not None and n != 1:
        raise TranslationError(f"n > 1 is not supported by {backends}")
    if req.get("logprobs") or req.get("top_logprobs"):
        raise TranslationError(f"logprobs and top_logprobs are not supported by {backends}")
    if req.get("logit_bias"):
        raise TranslationError(f"logit_bias is not supported by {backends}")
    for key in ("frequency_penalty", "presence_penalty"):
        if number(req, key):
            raise TranslationError(f"{key} is not supported by {backends} (only 0 is accepted)")
    modalities = req.get("modalities")
    if req.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise TranslationError(f"audio output is not supported by {backends}")
    reject_legacy_functions(req, backends)


def reject_legacy_functions(req: dict[str, Any], backends: str) -> None:
    """OpenAI's deprecated `functions` / `function_call` (tools' first form), which OpenAI still
    takes: a 422 naming the form to send, rather than an answer without the functions, or a
    history whose call is dropped and whose result `backends` refuse as orphaned."""
    function_call = req.get("function_call")
    # ("none" or "auto" alone, which older clients send by default, ask for nothing.)
    for key, given in (("functions", req.get("functions")), ("function_call", isinstance(function_call, dict))):
        if given:
            raise TranslationError(
                f"{key} (OpenAI's deprecated form of tools) is not supported by {backends}: send tools and tool_choice"
            )
    messages = req.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        if isinstance(message, dict) and message.get("function_call") is not None:
            raise TranslationError(
                f"messages[{index}].function_call (OpenAI's deprecated form of tool_calls) is not supported by "
                f"{backends}: send tool_calls, and the results as role 'tool' messages with their tool_call_id"
            )


def refuse_url_sources(messages: dict[str, Any], platform: str) -> None:
    """Claude on a cloud platform takes content inline only: an image or document with a `url`
    source, in a message or in a tool result, is refused here (the platform's own answer is a 400
    naming nothing)."""
    for message in messages.get("messages") or ():
        if isinstance(message, dict) and _url_source(message.get("content")):
            raise TranslationError(
                f"image and document URLs are not supported by Claude on {platform}: send the content inline "
                "as base64 (OpenAI clients: a data URL)"
            )


def _url_source(blocks: Any) -> bool:
    """Whether content blocks (tool results' nested ones included) hold a `url` source."""
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "url":
            return True
        if block.get("type") == "tool_result" and _url_source(block.get("content")):
            return True
    return False


def tool_call_function(call: Any) -> dict[str, Any]:
    """The `function` object of an assistant message's tool call."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise InvalidRequest("invalid tool call")
    fn: dict[str, Any] = call["function"]
    return fn


def tool_call_arguments(fn: dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments (a JSON string, or already an object; absent ones are {}), which
    every backend takes as an object."""
    args = fn.get("arguments") or "{}"
    try:
        parsed = orjson.loads(args) if isinstance(args, str) else args
    except orjson.JSONDecodeError:
        raise TranslationError("tool call arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise TranslationError("tool call arguments must be a JSON object")
    return parsed

"""OpenAI chat completions and Anthropic Messages clients -> Claude on AWS Bedrock through
InvokeModel / InvokeModelWithResponseStream (schema AWSAnthropic).

Request: an Anthropic Messages body (openai_anthropic's translation for an OpenAI client, the
client's own body for an Anthropic one) without `model` (it is in the path) or `stream` (the
operation says it), with `anthropic_version` in the body: the backend's schema.version, else
bedrock-2023-05-31. Path `/model/{model id, percent-encoded as one path segment}/invoke`, or
`/invoke-with-response-stream` when streamed. No anthropic-version header is sent (the version is in
the body); a client's anthropic-beta header becomes the body's `anthropic_beta` list, as Anthropic's
own Bedrock SDK sends it (unless the body has one).

Response: Anthropic Messages JSON, handled as from Anthropic itself (openai_anthropic's translation,
or anthropic_anthropic's passthrough with its usage and model). Stream: event-stream frames whose
`chunk` events carry {"bytes": base64 of one Anthropic stream event JSON}; each becomes the SSE
event `event: <type>\\ndata: <json>\\n\\n` and goes through the same translators (an Anthropic
client gets exactly those events). Usage is the Anthropic usage (message_start + message_delta);
the `amazon-bedrock-invocationMetrics` Bedrock adds to message_stop only stand in when it is
missing.

Completeness (client_stream.ClientStream): an OpenAI client's stream ends with [DONE] only when
message_stop arrived; an Anthropic client's has message_stop only when Bedrock sent it. An exception
or error frame, or a frame that cannot be parsed, ends the stream with an error event in the
client's schema. A stream that just stops gets nothing from here: the router phase adds its own
error event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import GatewayError
from ..logs import get_logger
from ..sse import encode_event
from ..usage import TokenUsage, from_bedrock
from .anthropic_anthropic import AnthropicPassthroughResponse
from .aws_eventstream import FrameDecoder, StreamFailure, translate_items
from .base import (
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    TranslatedRequest,
    betas_of,
    dump_json,
    load_json,
    parse_request_json,
    path_segment,
    refuse_url_sources,
)
from .bedrock_errors import anthropic_stream_error, openai_stream_error
from .bedrock_errors import to_anthropic as bedrock_anthropic_error
from .bedrock_errors import to_openai as bedrock_error
from .claude_reasoning import drop_unsigned_thinking
from .openai_anthropic import AnthropicToOpenAIResponse, AnthropicToOpenAIStream, chat_to_messages
from .openai_bedrock import event_frames

log = get_logger(__name__)

DEFAULT_BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
# Client headers Bedrock does not take: the version and the betas travel in the body.
_ANTHROPIC_HEADERS = ["anthropic-version", "anthropic-beta"]
# Body keys Bedrock takes elsewhere: the model in the path, streaming by the operation.
_NOT_IN_BODY = frozenset({"model", "stream", "anthropic_version"})


# ----------------------------------------------------------------------------- request


def anthropic_version(ctx: RequestContext) -> str:
    return ctx.backend.schema.version or DEFAULT_BEDROCK_ANTHROPIC_VERSION


def invoke_path(model: str, stream: bool) -> str:
    if not model:
        raise GatewayError(400, "a model is required for AWS Bedrock backends")
    # One path segment: ':' and '/' of ARNs and inference profile ids are escaped too.
    return f"/model/{path_segment(model)}/" + ("invoke-with-response-stream" if stream else "invoke")


# The anthropic_beta values Claude on Bedrock documents (AWS's "Anthropic Claude Messages API"
# parameters page, as known in 2026-12). Bedrock rejects the whole request ("invalid beta flag") for
# any other value, and clients such as Claude Code send first-party-only betas on every request, so
# the others are dropped (as Envoy AI Gateway does).
BEDROCK_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
    }
)


def bedrock_betas(values: Any) -> list[str]:
    """The betas Bedrock accepts, of a header's or a body's list (betas_of)."""
    return [b for b in betas_of(values) if b in BEDROCK_BETAS]


def to_invoke_body(ctx: RequestContext, messages: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as InvokeModel's body for Claude."""
    out: dict[str, Any] = {"anthropic_version": anthropic_version(ctx)}
    out.update((k, v) for k, v in messages.items() if k not in _NOT_IN_BODY)
    betas = bedrock_betas(out.pop("anthropic_beta", None) or ctx.headers.get("anthropic-beta", ""))
    if betas:
        out["anthropic_beta"] = betas
    return out


def _invoke(ctx: RequestContext, messages: dict[str, Any], stream: bool) -> TranslatedRequest:
    path = invoke_path(ctx.model, stream)
    body = dump_json(to_invoke_body(ctx, messages))
    # InvokeModel's content type is the body's MIME type, whatever the client sent.
    return TranslatedRequest(
        path=path,
        body=body,
        set_headers={"content-type": "application/json"},
        remove_headers=list(_ANTHROPIC_HEADERS),
    )


def translate_chat_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """OpenAI chat completions: openai_anthropic's Messages body, for InvokeModel."""
    req = parse_request_json(body)
    messages = chat_to_messages(req, ctx.model, user_id_key=ctx.user_id_key)
    refuse_url_sources(messages, "AWS Bedrock")
    return _invoke(ctx, messages, req.get("stream") is True)


def translate_messages_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """Anthropic Messages: the client's body (without another model's reasoning), for InvokeModel."""
    req = parse_request_json(body)
    drop_unsigned_thinking(req)
    refuse_url_sources(req, "AWS Bedrock")
    return _invoke(ctx, req, req.get("stream") is True)


# ----------------------------------------------------------------------------- response


def from_invocation_metrics(metrics: Any) -> TokenUsage:
    """Bedrock's `amazon-bedrock-invocationMetrics` (inputTokenCount, outputTokenCount, and where
    reported the cache counts), read like Bedrock usage."""
    if not isinstance(metrics, dict) or not {"inputTokenCount", "outputTokenCount"} & metrics.keys():
        return TokenUsage()
    return from_bedrock(
        {
            "inputTokens": metrics.get("inputTokenCount"),
            "outputTokens": metrics.get("outputTokenCount"),
            "cacheReadInputTokens": metrics.get("cacheReadInputTokenCount"),
            "cacheWriteInputTokens": metrics.get("cacheWriteInputTokenCount"),
        }
    )


@dataclass(frozen=True)
class AnthropicEvent:
    """One Anthropic stream event out of a `chunk` frame: its type, its JSON as SSE data."""

    kind: str
    data: bytes
    obj: dict[str, Any]

    def sse(self) -> bytes:
        return encode_event(self.data, self.kind)


def _chunk_event(headers: dict[str, Any], payload: bytes) -> AnthropicEvent | None:
    """The Anthropic event of a `chunk` frame; None for any other event, or one that cannot be read
    (dropped, as stream translators drop events of an unexpected shape)."""
    if headers.get(":message-type") != "event" or headers.get(":event-type") != "chunk":
        return None
    frame = load_json(payload)
    encoded = frame.get("bytes") if isinstance(frame, dict) else None
    try:
        data = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        data = b""
    obj = load_json(data) if data else None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not obj["type"]:
        log.warning("stream_event_dropped", translator="bedrock_anthropic", sse_event="chunk")
        return None
    if b"\n" in data or b"\r" in data:
        data = dump_json(obj)  # one data line, whatever whitespace the JSON had
    return AnthropicEvent(obj["type"], data, obj)


class ChunkStream:
    """InvokeModelWithResponseStream bytes, at any chunking -> Anthropic events, and the failure
    that ends the stream (an exception or error frame, a frame that cannot be parsed)."""

    def __init__(self) -> None:
        self._frames = FrameDecoder()

    def feed(self, chunk: bytes) -> Iterator[AnthropicEvent | StreamFailure]:
        self._frames.add(chunk)
        for item in event_frames(self._frames):
            if isinstance(item, StreamFailure):
                yield item
                return
            event = _chunk_event(item.headers, item.payload)
            if event is not None:
                yield event


def _metered(translator: ResponseTranslator, event: AnthropicEvent) -> None:
    """At message_stop, Bedrock's invocation metrics stand in for Anthropic usage that is missing."""
    if event.kind == "message_stop" and not translator.usage.known:
        usage = from_invocation_metrics(event.obj.get(INVOCATION_METRICS))
        if usage.known:
            translator.usage = usage


class BedrockAnthropicToOpenAIResponse(AnthropicToOpenAIResponse):
    """InvokeModel's Anthropic message -> chat.completion (openai_anthropic's translation)."""

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_error(status, body, self.ctx.response_headers)


class BedrockAnthropicToOpenAIStream(AnthropicToOpenAIStream):
    """InvokeModelWithResponseStream -> OpenAI chat.completion.chunk events: each chunk's Anthropic
    event goes through openai_anthropic's stream translator as the SSE event it stands for."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._chunks = ChunkStream()

    def feed(self, chunk: bytes) -> bytes:
        if self._done or not chunk:
            return b""
        # done: message_stop or an error event went out
        return translate_items(self._chunks.feed(chunk), self._forward, self._fail, lambda: self._done)

    def _forward(self, event: AnthropicEvent) -> bytes:
        _metered(self, event)
        return super().feed(event.sse())

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_error(status, body, self.ctx.response_headers)

    def _fail(self, failure: StreamFailure) -> bytes:
        self._done = True
        self.usage.known = False
        return openai_stream_error(failure)


class BedrockAnthropicPassthroughResponse(AnthropicPassthroughResponse):
    """InvokeModel's Anthropic message, to an Anthropic client as it is (usage and model noted)."""

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_anthropic_error(status, body, self.ctx.response_headers)


class BedrockAnthropicPassthroughStream(AnthropicPassthroughResponse):
    """InvokeModelWithResponseStream -> the Anthropic SSE events themselves; usage and model are
    noted by anthropic_anthropic's passthrough."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._chunks = ChunkStream()
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        if self._done or not chunk:
            return b""
        return translate_items(self._chunks.feed(chunk), self._forward, self._fail, lambda: self._done)

    def _forward(self, event: AnthropicEvent) -> bytes:
        _metered(self, event)
        out = super().feed(event.sse())
        if event.kind in ("message_stop", "error"):
            self._done = True
        return out

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_anthropic_error(status, body, self.ctx.response_headers)

    def _fail(self, failure: StreamFailure) -> bytes:
        self._done = True
        self.usage.known = False
        return anthropic_stream_error(failure)

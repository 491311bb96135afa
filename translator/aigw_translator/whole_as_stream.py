"""A complete answer sent as the stream the client asked for.

Some backends answer a streaming request with one JSON body (an OpenAI-compatible server that
ignores `stream`, a proxy that buffers). Passed on as it is, the client's SDK reads no event from
it and returns an empty answer without an error. The router phase translates such a body as the
complete answer it is, then this module turns the client's answer into the events of the client's
stream: one chunk per choice carrying all of its message, one with its finish reason, the usage
chunk when the client asked for it, and `[DONE]` (OpenAI); the Messages event sequence with one
delta per content block (Anthropic). Usage is metered from the complete answer, as for any other.

Only the endpoints whose streams these are, and only an answer of the shape
their complete answers have: anything else (another endpoint's, SSE sent as application/json, a
body that is not JSON) is passed on as it came, as before. Such an answer whose choices or content
blocks are not objects raises ValueError (the router phase's 502: it cannot be read either way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .endpoints import Endpoint
from .sse import encode_event

DONE = encode_event("[DONE]")
# Each endpoint whose complete answer can be sent as its stream, and what such an answer says it is.
_ANSWERS = {
    Endpoint.CHAT_COMPLETIONS: ("object", "chat.completion"),
    Endpoint.COMPLETIONS: ("object", "text_completion"),
    Endpoint.MESSAGES: ("type", "message"),
}
# The object of an OpenAI stream's chunks.
_CHUNKS = {Endpoint.CHAT_COMPLETIONS: "chat.completion.chunk", Endpoint.COMPLETIONS: "text_completion"}


def whole_as_stream(endpoint: Endpoint, answer: bytes, include_usage: bool) -> bytes | None:
    """`answer` (the client's complete answer, JSON) as the client's stream of `endpoint`; None
    when it is not such an answer."""
    if endpoint not in _ANSWERS:
        return None
    try:
        obj = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    field, kind = _ANSWERS[endpoint]
    if not isinstance(obj, dict) or obj.get(field) != kind:
        return None
    if endpoint == Endpoint.MESSAGES:
        return _messages_stream(obj)
    delta_of = _chat_delta if endpoint == Endpoint.CHAT_COMPLETIONS else _text_delta
    return _openai_stream(obj, _CHUNKS[endpoint], delta_of, include_usage)


def _openai_stream(
    obj: dict[str, Any], kind: str, delta_of: Callable[[dict[str, Any]], dict[str, Any]], include_usage: bool
) -> bytes:
    head: dict[str, Any] = {
        k: obj[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier") if k in obj
    }
    head["object"] = kind
    events = []
    choices = obj.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            raise ValueError("a choice is not an object")
        index = choice.get("index", 0)
        opening: dict[str, Any] = {"index": index, **delta_of(choice), "finish_reason": None}
        if choice.get("logprobs") is not None:
            opening["logprobs"] = choice["logprobs"]
        closing = {"index": index, **delta_of({}), "finish_reason": choice.get("finish_reason") or "stop"}
        events += [{**head, "choices": [opening]}, {**head, "choices": [closing]}]
    if include_usage and isinstance(obj.get("usage"), dict):
        events.append({**head, "choices": [], "usage": obj["usage"]})
    return b"".join(encode_event(orjson.dumps(e)) for e in events) + DONE


# The fields of a chat message a stream's delta carries as they are (tool calls get their index).
_DELTA_FIELDS = ("role", "content", "refusal", "reasoning_content", "annotations", "audio")


def _chat_delta(choice: dict[str, Any]) -> dict[str, Any]:
    """A chat choice's message as one delta; {} for the closing chunk."""
    message = choice.get("message")
    if not isinstance(message, dict):
        return {"delta": {}}
    delta = {k: v for k, v in message.items() if k in _DELTA_FIELDS}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls) if isinstance(call, dict)]
    return {"delta": delta}


def _text_delta(choice: dict[str, Any]) -> dict[str, Any]:
    """A completion choice's text; "" for the closing chunk."""
    text = choice.get("text", "")
    return {"text": text if isinstance(text, str) else ""}


def _messages_stream(message: dict[str, Any]) -> bytes:
    content = message.get("content")
    blocks = content if isinstance(content, list) else []
    usage: dict[str, Any] = message["usage"] if isinstance(message.get("usage"), dict) else {}
    start_usage = {**usage, "output_tokens": 0}
    started = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": started})]
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ValueError("a content block is not an object")
        opening, deltas = _block_events(block)
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        )
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    closing = {"stop_reason": message.get("stop_reason") or "end_turn", "stop_sequence": message.get("stop_sequence")}
    end_usage = {"output_tokens": usage.get("output_tokens", 0)}
    events.append(("message_delta", {"type": "message_delta", "delta": closing, "usage": end_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(encode_event(orjson.dumps(data), name) for name, data in events)


def _block_events(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A content block's content_block_start payload and its deltas."""
    kind = block.get("type")
    if kind == "text":
        deltas = [{"type": "text_delta", "text": block.get("text", "")}]
        citations = block.get("citations")
        if isinstance(citations, list) and citations:
            deltas += [{"type": "citations_delta", "citation": c} for c in citations]
            return {"type": "text", "text": "", "citations": []}, deltas
        return {"type": "text", "text": ""}, deltas
    if kind in ("tool_use", "server_tool_use"):
        arguments = orjson.dumps(block.get("input", {})).decode()
        opening = {**block, "input": {}}
        return opening, [{"type": "input_json_delta", "partial_json": arguments}]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {"type": "thinking", "thinking": "", "signature": ""}, deltas
    return block, []  # a block without deltas (redacted_thinking, a tool result) comes whole

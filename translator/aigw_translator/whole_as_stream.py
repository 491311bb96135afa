"""A complete answer sent as the stream the client asked for.

Some backends answer a streaming request with one JSON body (an OpenAI-compatible server that
ignores `stream`, a proxy that buffers). Passed on as it is, the client's SDK reads no event from
it and returns an empty answer without an error. The router phase translates such a body as the
complete answer it is, then this module turns the client's answer into the events of the client's
stream: one chunk per choice carrying all of its message, one with its finish reason, the usage
chunk when the client asked for it, and `[DONE]` (OpenAI); the Messages event sequence with one
delta per content block (Anthropic). Usage is metered from the complete answer, as for any other.

Only the endpoints whose streams these are can be answered so; `whole_as_stream` raises ValueError
for another endpoint or an answer of another shape, which the router phase turns into a 502 in the
client's schema (an error, never an empty success).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .endpoints import Endpoint
from .sse import encode_event

DONE = encode_event("[DONE]")


def whole_as_stream(endpoint: Endpoint, answer: bytes, include_usage: bool) -> bytes:
    """`answer` (the client's complete answer, JSON) as the client's stream of `endpoint`."""
    obj = orjson.loads(answer)
    if not isinstance(obj, dict):
        raise ValueError("the answer is not a JSON object")
    if endpoint == Endpoint.CHAT_COMPLETIONS and obj.get("object") == "chat.completion":
        return _openai_stream(obj, "chat.completion.chunk", _chat_delta, include_usage)
    if endpoint == Endpoint.COMPLETIONS and obj.get("object") == "text_completion":
        return _openai_stream(obj, "text_completion", _text_delta, include_usage)
    if endpoint == Endpoint.MESSAGES and obj.get("type") == "message":
        return _messages_stream(obj)
    raise ValueError(f"a complete {endpoint} answer cannot be sent as its stream")


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


def _chat_delta(choice: dict[str, Any]) -> dict[str, Any]:
    """A chat choice's message as one delta; {} for the closing chunk."""
    message = choice.get("message")
    if not isinstance(message, dict):
        return {"delta": {}}
    delta = {k: v for k, v in message.items() if k in ("role", "content", "refusal", "reasoning_content")}
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
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
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

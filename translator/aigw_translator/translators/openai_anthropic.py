"""OpenAI chat completions client -> Anthropic Messages backend.

Content parts: text, image_url (a base64 data URL or an http(s) URL Anthropic fetches) and `file`
(a base64 data URL: a PDF becomes a base64 document, plain text a text document, the filename its
title; other types, and a file_id of OpenAI's Files API, are a 422). reasoning_effort and a
json_schema response_format: claude_reasoning."""

from __future__ import annotations

import base64
import time
from typing import Any

from ..auth import ANTHROPIC_VERSION_HEADER, DEFAULT_ANTHROPIC_VERSION
from ..config import schema_prefix
from ..errors import to_openai_error
from ..logs import get_logger
from ..sse import Event, encode_event
from ..usage import from_anthropic, merge_anthropic_stream, to_openai_chat
from .base import (
    InvalidRequest,
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    SSEResponseTranslator,
    StreamedToolCalls,
    TranslatedRequest,
    TranslationError,
    append_turn,
    base64_data_url,
    chat_chunk,
    dump_json,
    load_json,
    max_output_tokens,
    number,
    parse_request_json,
    reject_unsupported_chat_fields,
    success_json,
    tool_call_arguments,
    tool_call_function,
)
from .capabilities import opaque_user_id
from .claude_reasoning import DEFAULT_MAX_TOKENS, claude_reasoning, messages_output_format, output_schema

log = get_logger(__name__)

BACKENDS = "Anthropic backends"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    return STOP_REASONS.get(stop_reason, "stop")


# ----------------------------------------------------------------------------- request


def _text_of(content: Any, what: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise TranslationError(f"{what} content supports text parts only")
        return "".join(parts)
    raise InvalidRequest(f"invalid {what} content")


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url without url")
    if url.startswith("data:"):
        media_type, data = base64_data_url(url, "image")
        media_type = media_type or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("unsupported image URL scheme")


def file_document(part: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI `file` content part as an Anthropic document block: its base64 data (of whatever
    media type: each backend says which it takes), its filename as the title, its cache_control."""
    given = part.get("file")
    file: dict[str, Any] = given if isinstance(given, dict) else {}
    data_url = file.get("file_data")
    if not isinstance(data_url, str):
        raise TranslationError(
            "file parts need file_data (a base64 data URL): a file_id names a file of OpenAI's Files API, "
            "which no other provider can read"
        )
    media_type, data = base64_data_url(data_url, "file")
    block: dict[str, Any] = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    filename = file.get("filename")
    if isinstance(filename, str) and filename:
        block["title"] = filename
    return _with_cache_control(block, part)


def _anthropic_document(block: dict[str, Any]) -> dict[str, Any]:
    """A document block as Anthropic takes it: a PDF as base64, any text (plain, CSV, Markdown,
    HTML...) as a plain text document."""
    source = block["source"]
    if source["media_type"].startswith("text/"):
        try:
            text = base64.b64decode(source["data"], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise TranslationError(f"a {source['media_type'][:40]} file must be base64-encoded UTF-8") from None
        return {**block, "source": {"type": "text", "media_type": "text/plain", "data": text}}
    if source["media_type"] != "application/pdf":
        raise TranslationError(
            f"file type {source['media_type'][:40]!r} cannot be sent to an Anthropic backend (PDF and text)"
        )
    return block


def _with_cache_control(block: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """Prompt caching: an OpenAI-level `cache_control` on a part or tool is kept for Anthropic."""
    if isinstance(source.get("cache_control"), dict):
        block["cache_control"] = source["cache_control"]
    return block


def _system_blocks(content: Any, role: str) -> list[dict[str, Any]]:
    if isinstance(content, list):
        blocks = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise TranslationError(f"{role} content supports text parts only")
            blocks.append(_with_cache_control({"type": "text", "text": str(part.get("text", ""))}, part))
        return [b for b in blocks if b["text"].strip()]
    text = _text_of(content, role)
    return [{"type": "text", "text": text}] if text.strip() else []


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic rejects empty and whitespace-only text blocks: they carry nothing, so they are left
    out (a message left empty is left out whole)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise InvalidRequest("invalid user message content")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = str(part.get("text", ""))
            if text.strip():
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
        elif kind == "image_url":
            blocks.append(_with_cache_control(_image_block(part), part))
        elif kind == "file":
            blocks.append(_anthropic_document(file_document(part)))
        else:
            raise TranslationError(f"content part type {kind!r} cannot be sent to an Anthropic backend")
    return blocks


def _tool_use_block(call: Any) -> dict[str, Any]:
    fn = tool_call_function(call)
    parsed = tool_call_arguments(fn)
    return {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "", "input": parsed}


def _convert_messages(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("messages must be a non-empty array")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for msg in raw:
        if not isinstance(msg, dict):
            raise InvalidRequest("invalid message")
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            system.extend(_system_blocks(content, role))
        elif role == "user":
            append_turn(messages, "user", _user_blocks(content))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if isinstance(content, list):
                text = "".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
            else:
                text = content or ""
            if isinstance(text, str) and text.strip():
                blocks.append({"type": "text", "text": text})
            blocks.extend(_tool_use_block(call) for call in msg.get("tool_calls") or [])
            append_turn(messages, "assistant", blocks)
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id") or "",
                "content": _text_of(content, "tool"),
            }
            append_turn(messages, "user", [result])
        else:
            raise TranslationError(f"message role {role!r} cannot be sent to an Anthropic backend")
    if not messages:
        raise TranslationError("no user or assistant messages with content")
    last = messages[-1]
    if last["role"] == "assistant" and last["content"][-1].get("type") == "text":
        # A prefilled final assistant turn cannot end with whitespace.
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
    return system, messages


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise TranslationError("only function tools can be sent to an Anthropic backend")
        fn = tool.get("function") or {}
        converted: dict[str, Any] = {
            "name": fn.get("name") or "",
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            converted["description"] = fn["description"]
        out.append(_with_cache_control(converted, tool))
    return out


def _convert_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        result = {"type": "tool", "name": choice["function"].get("name") or ""}
    else:
        raise TranslationError("unsupported tool_choice")
    if parallel is False:
        if result is None:
            result = {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def _sampling(req: dict[str, Any], out: dict[str, Any]) -> None:
    """Current Claude models reject temperature and top_p together; many OpenAI clients send
    top_p 1 (the default). The knob left at its default is dropped; when both are set, temperature
    is kept. OpenAI's temperature range 0..2 is clamped to Anthropic's 0..1."""
    temperature = number(req, "temperature")
    top_p = number(req, "top_p")
    if temperature is not None and top_p is not None:
        if temperature == 1 and top_p < 1:
            temperature = None
        else:
            top_p = None
    if temperature is not None:
        out["temperature"] = min(max(temperature, 0.0), 1.0)
    if top_p is not None:
        out["top_p"] = top_p


def _stop_sequences(stop: Any) -> list[str]:
    raw = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    out = []
    for seq in raw:
        if not isinstance(seq, str) or not seq:
            continue  # an empty stop sequence never matches: nothing is lost
        if not seq.strip():
            raise TranslationError(f"stop sequence {seq!r} is whitespace only, which Anthropic backends reject")
        out.append(seq)
    return out


def _history_tools(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """For a request that declares no tools: the tools its history calls, declared only so that it
    may be sent (Anthropic refuses tool_use and tool_result blocks in a request without tools, which
    a summary or title turn replaying a tool loop is) and not to be called (tool_choice none); none
    and no choice for a history without tool calls."""
    names = dict.fromkeys(
        block["name"]
        for msg in messages
        if msg["role"] == "assistant"
        for block in msg["content"]
        if block.get("type") == "tool_use" and block.get("name")
    )
    if not names:
        return [], None
    return [{"name": name, "input_schema": {"type": "object", "properties": {}}} for name in names], {"type": "none"}


def _ends_tool_loop(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn holds a tool call: Anthropic then wants that turn to begin with the
    thinking block it was generated with, which cannot be replayed (an OpenAI client does not carry
    its signature back)."""
    for msg in reversed(messages):
        if msg["role"] == "assistant":
            return any(block.get("type") == "tool_use" for block in msg["content"])
    return False


def _reasoning(req: dict[str, Any], out: dict[str, Any], max_tokens: int | None, tool_choice: Any) -> None:
    """reasoning_effort -> Claude's thinking (claude_reasoning), and response_format json_schema ->
    its structured output. `tool_choice` is the Anthropic tool_choice the request is sent with."""
    output_config: dict[str, Any] = {}
    schema = output_schema(req.get("response_format"), BACKENDS)
    if schema is not None:
        output_config["format"] = messages_output_format(schema[0])
    forced = tool_choice is not None and tool_choice.get("type") in ("any", "tool")
    reasoning = claude_reasoning(
        req.get("reasoning_effort"),
        out["model"],
        max_tokens,
        forced_tool=forced,
        ends_tool_loop=_ends_tool_loop(out["messages"]),
        temperature=out.get("temperature"),
        top_p=out.get("top_p"),
        backends=BACKENDS,
    )
    if reasoning is not None:
        out.pop("temperature", None)
        out["thinking"] = reasoning.thinking
        if reasoning.max_tokens is not None:
            out["max_tokens"] = reasoning.max_tokens
        if reasoning.effort is not None:
            output_config["effort"] = reasoning.effort
    if output_config:
        out["output_config"] = output_config


def chat_to_messages(req: dict[str, Any], model: str, *, user_id_key: bytes = b"") -> dict[str, Any]:
    """An OpenAI chat completions request as an Anthropic Messages request (`user_id_key`: the
    fleet's key of the opaque end-user id)."""
    # (seed, store, service_tier, metadata and the like are dropped.)
    reject_unsupported_chat_fields(req, BACKENDS)
    system, messages = _convert_messages(req.get("messages"))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        out["system"] = system[0]["text"] if plain else system
    max_tokens = max_output_tokens(req)
    out["max_tokens"] = max_tokens or DEFAULT_MAX_TOKENS
    _sampling(req, out)
    tools = _convert_tools(req.get("tools"))
    tool_choice = _convert_tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))
    if not tools:
        tools, tool_choice = _history_tools(messages)
    _reasoning(req, out, max_tokens, tool_choice)
    stop = _stop_sequences(req.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    if req.get("stream"):
        out["stream"] = True
    user = req.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": opaque_user_id(user, user_id_key)}
    if tools:
        out["tools"] = tools
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    return out


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = chat_to_messages(req, ctx.model, user_id_key=ctx.user_id_key)
    prefix = schema_prefix(ctx.backend.schema)
    path = (f"/{prefix}" if prefix else "") + "/messages"
    headers = {}
    if ANTHROPIC_VERSION_HEADER not in ctx.headers:
        headers[ANTHROPIC_VERSION_HEADER] = DEFAULT_ANTHROPIC_VERSION
    return TranslatedRequest(path=path, body=dump_json(out), set_headers=headers)


# ----------------------------------------------------------------------------- response


def message_to_chat(msg: dict[str, Any], fallback_model: str) -> dict[str, Any]:
    text_parts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif block.get("type") == "text":
            text_parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": dump_json(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text_parts) if text_parts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking:
        # The de-facto extension (DeepSeek, vLLM, LiteLLM) for reasoning text.
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": msg.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model") or fallback_model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(msg.get("stop_reason")) or "stop",
                "logprobs": None,
            }
        ],
        "usage": to_openai_chat(from_anthropic(msg.get("usage"))),
    }


class AnthropicToOpenAIResponse(ResponseTranslator):
    def body(self, body: bytes) -> bytes | None:
        msg = success_json(body)
        self.usage = from_anthropic(msg.get("usage"))
        self.response_model = msg.get("model") or self.ctx.effective_model
        return dump_json(message_to_chat(msg, self.ctx.effective_model))

    def error(self, status: int, body: bytes) -> bytes:
        return to_openai_error(status, body)


class AnthropicToOpenAIStream(SSEResponseTranslator):
    """Anthropic stream events -> OpenAI chat.completion.chunk events, one for one."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._id = ""
        self._created = int(time.time())
        self._tool_calls = StreamedToolCalls()
        self._finish: str | None = None
        self._done = False

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return chat_chunk(self._id, self._created, self.response_model or self.ctx.effective_model, choices, **extra)

    def on_event(self, event: Event) -> bytes:
        obj = load_json(event.data.encode())
        if not isinstance(obj, dict) or self._done:
            return b""
        kind = obj.get("type") or event.event
        if kind == "message_start":
            msg = obj.get("message") or {}
            self._id = msg.get("id") or ""
            self.response_model = msg.get("model") or self.ctx.effective_model
            self.usage = merge_anthropic_stream(self.usage, msg.get("usage"))
            self.usage.known = False  # only final once message_delta reports output tokens
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                given = block.get("input")
                call = {
                    "index": self._tool_calls.open(obj.get("index", -1), given),
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": dump_json(given).decode() if given else "",
                    },
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "thinking_delta" and delta.get("thinking"):
                return self._chunk({"reasoning_content": delta["thinking"]})
            if dtype == "input_json_delta":
                arguments = self._tool_calls.arguments(obj.get("index", -1), delta.get("partial_json"))
                return b"" if arguments is None else self._chunk(arguments)
            return b""
        if kind == "content_block_stop":
            arguments = self._tool_calls.close(obj.get("index", -1))
            return b"" if arguments is None else self._chunk(arguments)
        if kind == "message_delta":
            self.usage = merge_anthropic_stream(self.usage, obj.get("usage"))
            stop = (obj.get("delta") or {}).get("stop_reason")
            if stop is not None:
                self._finish = finish_reason(stop)
                return self._chunk({}, self._finish)
            return b""
        if kind == "message_stop":
            self._done = True
            out = b""
            if self.ctx.include_usage and self.usage.known:
                out += self._chunk(None, usage=to_openai_chat(self.usage))
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            self._done = True
            self.usage.known = False
            err = obj.get("error") or {}
            return encode_event(to_openai_error(500, dump_json({"type": "error", "error": err})))
        return b""  # ping and unknown event types

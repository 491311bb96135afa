"""Anthropic Messages client (e.g. Claude Code) -> OpenAI-compatible chat completions backend
(schemas OpenAI and AzureOpenAI), and back: a chat completion -> an Anthropic message, chunks -> the
Anthropic SSE event sequence.

Request: system (text blocks, one per line) -> a system message; text, image (base64 or URL),
document (text source; base64 PDF as a file part), tool_use -> tool_calls, tool_result -> tool
messages (their images and documents follow in a user message); thinking blocks of earlier turns
are dropped.
`max_tokens` -> max_completion_tokens (max_tokens on classic Azure api-versions), capped to the
most a known OpenAI model takes (capabilities.OPENAI_OUTPUT_TOKEN_LIMITS), `temperature` and
`top_p` (dropped for a reasoning OpenAI model unless 1, the only value those take), `top_k`
(OpenAI-compatible servers such as vLLM and Ollama take it; OpenAI's own API and Azure OpenAI have
none and refuse it: it is dropped for them, recognised by the schema or host),
`stop_sequences` -> stop (all of them: OpenAI takes 4 and says so, others more),
`metadata.user_id` -> an opaque `user`, custom tools -> functions, tool_choice auto/any/none/tool ->
auto/required/none/a named function (sent only with tools: OpenAI rejects tool_choice without them),
`disable_parallel_tool_use` -> parallel_tool_calls false (not on classic Azure api-versions).
`output_config.format` (json_schema) -> a strict json_schema response_format named "output";
`output_config.effort` -> reasoning_effort (max and xhigh become high, the level every reasoning
model takes); else `thinking` enabled ->
reasoning_effort from its budget_tokens (see _budget_effort), disabled or adaptive -> none (the
model's default). reasoning_effort is sent only to a model named as OpenAI's reasoning models are
(REASONING_MODELS): the others (gpt-4o, most OpenAI-compatible servers' models) refuse it with a
400, and Claude Code asks for thinking.
`output_config.task_budget` is advisory and dropped. Refused (422): other `output_config` fields
and formats, server tools, other content blocks.

Response: thinking (from reasoning_content, or `reasoning`: vLLM's name since it dropped the other,
OpenRouter's, Ollama's, Groq's), text, a refusal (as text, stop_reason "refusal") and
tool_use blocks; an id `msg_…` when the backend sent none; stop_reason "stop_sequence" with the
string where the backend names the one matched (vLLM's `stop_reason`). Stream: the message starts at the first
chunk with choices or usage (Azure's first chunk, prompt_filter_results with no id, model or
choices, is skipped); reasoning_content, content and refusal deltas become thinking_delta and
text_delta, tool calls input_json_delta (see OpenAIToAnthropicStream).
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

import orjson

from ..config import schema_prefix
from ..errors import BILLING, QUOTA_EXHAUSTED, to_anthropic_error
from ..sse import Event, encode_event
from ..usage import CHARS_PER_TOKEN, TokenUsage, estimate_prompt_tokens, from_openai, provisional, to_anthropic
from .base import (
    InvalidRequest,
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    SSEResponseTranslator,
    TranslatedRequest,
    TranslationError,
    anthropic_event,
    anthropic_message_start,
    dump_json,
    load_json,
    parse_request_json,
    path_segment,
    positive_int,
    reject_malformed_messages_fields,
    required_max_tokens,
    success_json,
)
from .capabilities import (
    azure_api_version,
    azure_version_is_modern,
    is_modern,
    opaque_user_id,
    openai_output_token_limit,
)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# output_config.effort -> reasoning_effort: above high, OpenAI's xhigh is taken by the newest
# models only; high by every reasoning model.
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}

# The models that take reasoning_effort, by name: OpenAI's reasoning models but o1-mini and
# o1-preview, and no chat model (gpt-5-chat-latest). An Azure deployment named otherwise gets none
# and reasons at its default.
REASONING_MODELS = re.compile(r"^(?!o1-(?:mini|preview))(?!.*chat)(?:o[134]|gpt-5|gpt-oss)")
# OpenAI's models that always reason (the o-series, gpt-5 and its -mini, -nano, -codex...), which take
# only the default temperature and top_p (1) and refuse others with a 400; the gpt-5.x models after
# them take others while they do not reason (reasoning_effort none, their default).
ALWAYS_REASONING_MODELS = re.compile(r"^(?!.*chat)(?:o[134]|gpt-5(?![.\d]))")
LATER_REASONING_MODELS = re.compile(r"^(?!.*chat)gpt-5\.")

# The fixed name of a structured-output schema: OpenAI requires one, Anthropic's has none.
SCHEMA_NAME = "output"


def stop_reason(finish: Any) -> str:
    return STOP_REASONS.get(finish, "end_turn")


def matched_stop(choice: dict[str, Any]) -> str | None:
    """The stop sequence a choice ended on, where the backend names it: vLLM's `stop_reason` is the
    matched string (a token id, or null, when none matched)."""
    matched = choice.get("stop_reason")
    return matched if choice.get("finish_reason") == "stop" and isinstance(matched, str) and matched else None


def _stop_with_tools(stop: str, has_tool_calls: bool) -> str:
    """Some OpenAI-compatible backends (Gemini, vLLM) finish tool calls with "stop": an Anthropic
    client only runs the tools when the stop reason is tool_use."""
    return "tool_use" if has_tool_calls and stop == "end_turn" else stop


# ----------------------------------------------------------------------------- request


def _text(content: Any, what: str) -> str:
    """Text of a string or of text blocks; separate blocks are separate lines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                raise TranslationError(f"{what} supports text blocks only")
        return "\n".join(parts)
    if content is None:
        return ""
    raise InvalidRequest(f"invalid {what}")


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        raise TranslationError("unsupported image source")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    title = block.get("title") or ""
    if source.get("type") == "text":
        text = str(source.get("data", ""))
        return {"type": "text", "text": f"{title}\n{text}" if title else text}
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        data = f"data:application/pdf;base64,{source.get('data', '')}"
        return {"type": "file", "file": {"filename": title or "document.pdf", "file_data": data}}
    raise TranslationError("unsupported document source")


def _tool_result(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message, and the images and documents of the result (a screenshot; a PDF Claude
    Code's Read tool returns): OpenAI tool messages carry text only, so they follow in a user
    message."""
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        texts = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                texts.append(str(item.get("text", "")))
            elif kind == "image":
                images.append(_image_part(item))
            elif kind == "document":
                images.append(_document_part(item))
            else:
                raise TranslationError(f"tool_result content block {kind!r} cannot be sent to an OpenAI backend")
        text = "\n".join(texts)
    else:
        text = _text(content, "tool_result content") if content is not None else ""
    if images and not text:
        text = "(the tool returned files; they follow in the next message)"
    if block.get("is_error") and text:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}, images


def _convert_message(msg: dict[str, Any]) -> list[dict[str, Any]]:
    role = msg.get("role")
    content = msg.get("content")
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"invalid message role {role!r}")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest("invalid message content")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image" and role == "user":
            parts.append(_image_part(block))
        elif kind == "tool_use" and role == "assistant":
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
        elif kind == "tool_result" and role == "user":
            tool_message, images = _tool_result(block)
            out.append(tool_message)
            tool_images.extend(images)
        elif kind == "document" and role == "user":
            parts.append(_document_part(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise TranslationError(f"content block type {kind!r} cannot be sent to an OpenAI backend")
    if role == "assistant":
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(p["text"] for p in parts) if parts else None,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        if parts or tool_calls:
            out.append(message)
    else:
        parts = tool_images + parts
        if parts and all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        elif parts:
            out.append({"role": "user", "content": parts})
    return out


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            raise TranslationError("server tools cannot be sent to an OpenAI backend")
        fn: dict[str, Any] = {
            "name": tool.get("name", ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _budget_effort(budget: int) -> str:
    """The reasoning_effort of an extended-thinking budget: under 4096 tokens low, under 16384
    medium, 16384 and more high (Anthropic's smallest budget is 1024)."""
    if budget < 4096:
        return "low"
    return "medium" if budget < 16384 else "high"


def _reasoning_effort(thinking: Any, effort: Any) -> str | None:
    """The reasoning_effort of `thinking` and `output_config.effort`: the effort level when given,
    else the enabled thinking's budget; None (the model's default) otherwise."""
    if thinking is not None and not isinstance(thinking, dict):
        raise InvalidRequest("'thinking' must be an object")
    thinking = thinking or {}
    kind = thinking.get("type")
    if kind not in (None, "enabled", "disabled", "adaptive"):
        raise InvalidRequest(f"unsupported thinking type {str(kind)[:20]!r}")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORTS:
            raise InvalidRequest(f"unsupported output_config.effort {str(effort)[:20]!r}")
        return EFFORTS[effort]
    if kind != "enabled":
        return None
    budget = positive_int(thinking, "budget_tokens")
    if budget is None:
        raise InvalidRequest("thinking of type 'enabled' needs budget_tokens")
    return _budget_effort(budget)


def _output_settings(req: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat fields of `output_config` and `thinking`: response_format, and reasoning_effort
    for a reasoning `model`."""
    config = req.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRequest("'output_config' must be an object")
    config = config or {}
    for key in config:
        if key not in ("format", "effort", "task_budget"):
            raise TranslationError(f"output_config.{str(key)[:40]} cannot be sent to an OpenAI backend")
    out: dict[str, Any] = {}
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            kind = fmt.get("type") if isinstance(fmt, dict) else fmt
            raise TranslationError(f"output_config.format {str(kind)[:40]!r} cannot be sent to an OpenAI backend")
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("output_config.format of type 'json_schema' needs a schema object")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": fmt["schema"], "strict": True},
        }
    effort = _reasoning_effort(req.get("thinking"), config.get("effort"))  # checked for every model
    if effort is not None and REASONING_MODELS.match(model.lower()):
        out["reasoning_effort"] = effort
    return out


def messages_to_chat(
    req: dict[str, Any], model: str, *, modern: bool = True, user_id_key: bytes = b""
) -> dict[str, Any]:
    """An Anthropic Messages request as a chat completions request. `modern` backends take
    `max_completion_tokens` (o-series and gpt-5 reject `max_tokens`) and `stream_options`; classic
    Azure api-versions before 2024-09-01 get `max_tokens` and no usage option. `user_id_key`: the
    fleet's key of the opaque end-user id."""
    reject_malformed_messages_fields(req)
    messages: list[dict[str, Any]] = []
    system = req.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system, "system")})
    raw = req.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("messages must be a non-empty array")
    for msg in raw:
        if not isinstance(msg, dict):
            raise InvalidRequest("invalid message")
        messages.extend(_convert_message(msg))
    out: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = required_max_tokens(req)
    limit = openai_output_token_limit(model)
    out["max_completion_tokens" if modern else "max_tokens"] = max_tokens if limit is None else min(max_tokens, limit)
    for key in ("temperature", "top_p"):
        if req.get(key) is not None:
            out[key] = req[key]
    if req.get("top_k") is not None:
        out["top_k"] = req["top_k"]
    stop = req.get("stop_sequences")
    if stop:
        out["stop"] = stop
    out.update(_output_settings(req, model))
    name, effort = model.lower(), out.get("reasoning_effort", "none")
    if ALWAYS_REASONING_MODELS.match(name) or (LATER_REASONING_MODELS.match(name) and effort != "none"):
        for key in ("temperature", "top_p"):
            if out.get(key, 1) != 1:
                del out[key]
    user = (req.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = opaque_user_id(user, user_id_key)
    tools = _convert_tools(req.get("tools"))
    if tools:
        out["tools"] = tools
    choice = req.get("tool_choice")
    if isinstance(choice, dict) and tools:
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        if choice.get("disable_parallel_tool_use") and modern:  # older Azure versions have no such field
            out["parallel_tool_calls"] = False
    if req.get("stream"):
        out["stream"] = True
        if modern:
            out["stream_options"] = {"include_usage": True}
    return out


# The domains of OpenAI's own API (api.openai.com, its regional hosts) and of Azure OpenAI (reached
# with the OpenAI schema through its v1 API), which have no top_k and refuse it with a 400.
NO_TOP_K_DOMAINS = ("api.openai.com", "openai.azure.com", "cognitiveservices.azure.com")


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = messages_to_chat(req, ctx.model, modern=is_modern(ctx.backend), user_id_key=ctx.user_id_key)
    host = ctx.backend.upstream_host.lower()
    if any(host == domain or host.endswith("." + domain) for domain in NO_TOP_K_DOMAINS):
        out.pop("top_k", None)
    prefix = schema_prefix(ctx.backend.schema)
    path = (f"/{prefix}" if prefix else "") + "/chat/completions"
    # Anthropic-only headers mean nothing to an OpenAI backend.
    return TranslatedRequest(path=path, body=dump_json(out), remove_headers=["anthropic-version", "anthropic-beta"])


def estimate_count_tokens(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """count_tokens for an OpenAI-shaped backend, which has no such endpoint: the gateway answers
    with an estimate of the prompt the backend would be sent (its messages and tools, at
    usage.CHARS_PER_TOKEN), after the checks a Messages request of the same content gets."""
    req = {**parse_request_json(body), "max_tokens": 1}  # count_tokens has none; Messages must
    out = messages_to_chat(req, ctx.model)
    counted = estimate_prompt_tokens({"messages": out["messages"], "tools": out.get("tools")})
    return TranslatedRequest(path="", answer=dump_json({"input_tokens": max(counted, 1)}))


def translate_request_azure(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """To a classic Azure OpenAI deployment: the client's query (e.g. Claude Code's ?beta=true)
    is not forwarded, only api-version (the backend's, else the client's, else the default), which
    also decides the parameters the request is written with."""
    version = azure_api_version(ctx.backend, ctx.query)
    req = parse_request_json(body)
    out = messages_to_chat(req, ctx.model, modern=azure_version_is_modern(version), user_id_key=ctx.user_id_key)
    out.pop("top_k", None)  # Azure OpenAI has none either
    deployment = path_segment(ctx.model)  # one path segment, whatever the model holds
    path = f"/openai/deployments/{deployment}/chat/completions?" + urlencode({"api-version": version})
    return TranslatedRequest(path=path, body=dump_json(out), remove_headers=["anthropic-version", "anthropic-beta"])


# ----------------------------------------------------------------------------- response


def _new_message_id() -> str:
    """An Anthropic message id for a response whose backend sent none (Azure's stream starts with a
    chunk whose id is empty)."""
    return "msg_" + uuid.uuid4().hex


def reasoning_text(message: dict[str, Any]) -> str:
    """A chat message's (or delta's) reasoning: `reasoning_content` (DeepSeek's name, vLLM's before),
    else `reasoning` (vLLM's now, OpenRouter's, Ollama's, Groq's) when it is text."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def chat_to_message(resp: dict[str, Any], fallback_model: str) -> tuple[dict[str, Any], TokenUsage]:
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reasoning_text(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    refusal = message.get("refusal")
    if refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {}
        content.append({"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""), "input": args})
    usage = from_openai(resp.get("usage"))
    stop = _stop_with_tools(stop_reason(choice.get("finish_reason")), bool(message.get("tool_calls")))
    sequence = matched_stop(choice) if stop == "end_turn" else None
    out = {
        "id": resp.get("id") or _new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model") or fallback_model,
        "content": content,
        "stop_reason": "refusal" if refusal else "stop_sequence" if sequence else stop,
        "stop_sequence": sequence,
        "usage": to_anthropic(usage),
    }
    return out, usage


class OpenAIToAnthropicResponse(ResponseTranslator):
    def body(self, body: bytes) -> bytes | None:
        resp = success_json(body)
        msg, self.usage = chat_to_message(resp, self.ctx.effective_model)
        self.response_model = msg["model"]
        if not self.usage.reported:  # as in a stream (OpenAIToAnthropicStream._end_message)
            choices = resp.get("choices") or [{}]
            message = (choices[0].get("message") if isinstance(choices[0], dict) else None) or {}
            msg["usage"] = to_anthropic(told_usage(self.usage, self.ctx.prompt_estimate, _generated_chars(message)))
        return dump_json(msg)

    def error(self, status: int, body: bytes) -> bytes:
        return to_anthropic_error(status, body)


# An OpenAI error that ends a stream (its HTTP status went out as 200) -> the status whose
# Anthropic error type says the same (a rate limit is retried by Claude's clients, not an api_error).
_STREAM_ERROR_STATUS = {
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    QUOTA_EXHAUSTED: BILLING,  # retrying does not help
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "server_is_overloaded": 529,
}


def _stream_error_status(error: dict[str, Any]) -> int:
    """The status an error's code or type says (vLLM's code is the status itself: 400, "429")."""
    for key in (error.get("code"), error.get("type")):
        if isinstance(key, str) and key in _STREAM_ERROR_STATUS:
            return _STREAM_ERROR_STATUS[key]
        if isinstance(key, int | str) and not isinstance(key, bool) and str(key).isdigit() and 400 <= int(key) <= 599:
            return int(key)
    return 500


def _generated_chars(delta: dict[str, Any]) -> int:
    """The characters a chunk's delta (or a whole answer's message) generated: its text, reasoning,
    refusal and tool arguments."""
    texts = [delta.get("content"), delta.get("refusal"), reasoning_text(delta)]
    texts += [
        (call.get("function") or {}).get("arguments")
        for call in delta.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    return sum(len(text) for text in texts if isinstance(text, str))


def told_usage(usage: TokenUsage, prompt_estimate: int, generated_chars: int) -> TokenUsage:
    """The usage an Anthropic client is told: the backend's where it reported any, else the gateway's
    provisional estimate (usage.provisional) of the prompt and of the generated text at
    CHARS_PER_TOKEN (not final: `known` stays False)."""
    if usage.reported:
        return usage
    return provisional(usage, prompt_estimate, -(-generated_chars // CHARS_PER_TOKEN))


class OpenAIToAnthropicStream(SSEResponseTranslator):
    """OpenAI chat.completion.chunk events -> the Anthropic Messages event sequence.

    Anthropic blocks are sequential (start, deltas, stop), OpenAI tool calls are not: backends
    interleave parallel calls' argument fragments, and some (Gemini) send calls without `index`.
    The first tool call streams live; a call that starts while another is open is collected and
    sent whole (start, one delta, stop) when the live one is closed at the end of the choice.
    A refusal streams as text and ends the message with stop_reason "refusal"."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._started = False
        self._block = -1  # index of the open content block, -1 when none is open
        self._block_kind = ""
        self._next_block = 0
        self._live_tool: object = None  # key of the tool call streaming in the open block
        self._tool_keys: dict[object, dict[str, Any]] = {}  # every tool call seen, by key
        self._pending: dict[object, dict[str, Any]] = {}  # collected calls, sent whole at the end
        self._last_tool: object = None
        self._stop: str | None = None
        self._sequence: str | None = None  # the stop sequence matched, where the backend names it
        self._refused = False
        self._finished = False
        self._generated_chars = 0  # text, reasoning and tool arguments sent: the usage's estimate

    def _start(self, obj: dict[str, Any]) -> bytes:
        self._started = True
        self.response_model = obj.get("model") or self.ctx.effective_model
        return anthropic_message_start(obj.get("id") or _new_message_id(), self.response_model)

    def _close_block(self) -> bytes:
        if self._block < 0:
            return b""
        out = anthropic_event("content_block_stop", {"index": self._block})
        self._block = -1
        self._live_tool = None
        return out

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block = self._next_block
        self._block_kind = kind
        self._next_block += 1
        return out + anthropic_event("content_block_start", {"index": self._block, "content_block": block})

    def _text_delta(self, text: str) -> bytes:
        """A text_delta, in the open text block or in a new one."""
        out = b""
        if self._block < 0 or self._block_kind != "text":
            out = self._open_block("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return out + anthropic_event("content_block_delta", {"index": self._block, "delta": delta})

    def _tool_key(self, call: dict[str, Any]) -> object:
        """Which tool call a delta belongs to: its index, unless it names another call's id
        (several calls sent with the same index), or its id when it has no index (Gemini)."""
        call_id = call.get("id") or ""
        index = call.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            known = self._tool_keys.get(index)
            if known is None or not call_id or known["id"] in ("", call_id):
                return index
        if call_id:
            for key, tool in self._tool_keys.items():
                if tool["id"] == call_id:
                    return key
            return ("id", call_id)
        return self._last_tool if self._last_tool is not None else 0

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        fn = call.get("function") or {}
        key = self._tool_key(call)
        self._last_tool = key
        args = fn.get("arguments") if isinstance(fn.get("arguments"), str) else ""
        tool = self._tool_keys.get(key)
        out = b""
        if tool is None:
            tool = {"id": call.get("id") or "", "name": fn.get("name") or "", "args": ""}
            self._tool_keys[key] = tool
            if self._live_tool is None and not self._pending:
                block = {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}
                out += self._open_block("tool_use", block)
                self._live_tool = key
            else:
                self._pending[key] = tool
        else:
            tool["id"] = tool["id"] or call.get("id") or ""
            tool["name"] = tool["name"] or fn.get("name") or ""
        if not args:
            return out
        if key == self._live_tool:
            delta = {"type": "input_json_delta", "partial_json": args}
            return out + anthropic_event("content_block_delta", {"index": self._block, "delta": delta})
        tool["args"] += args
        return out

    def _flush_pending(self) -> bytes:
        out = self._close_block()
        for tool in self._pending.values():
            block = {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}
            out += self._open_block("tool_use", block)
            if tool["args"]:
                delta = {"type": "input_json_delta", "partial_json": tool["args"]}
                out += anthropic_event("content_block_delta", {"index": self._block, "delta": delta})
            out += self._close_block()
        self._pending = {}
        return out

    def on_event(self, event: Event) -> bytes:
        if event.data == "[DONE]":
            return self._end_message()
        obj = load_json(event.data.encode())
        if not isinstance(obj, dict) or self._finished:
            return b""
        if isinstance(obj.get("error"), dict):
            self._finished = True
            self.usage.known = False
            return encode_event(to_anthropic_error(_stream_error_status(obj["error"]), event.data.encode()), "error")
        choices = obj.get("choices") or []
        has_usage = isinstance(obj.get("usage"), dict)
        if not self._started and not choices and not has_usage:
            return b""  # e.g. Azure's prompt_filter_results chunk: no id, no model, nothing to say
        out = b"" if self._started else self._start(obj)
        if has_usage:
            self.usage = from_openai(obj["usage"])
        for choice in choices:
            delta = choice.get("delta") or {}
            self._generated_chars += _generated_chars(delta)
            reasoning = reasoning_text(delta)
            if reasoning:
                if self._block < 0 or self._block_kind != "thinking":
                    out += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out += anthropic_event(
                    "content_block_delta",
                    {"index": self._block, "delta": {"type": "thinking_delta", "thinking": reasoning}},
                )
            refusal = delta.get("refusal")
            self._refused = self._refused or bool(refusal)
            for text in (delta.get("content"), refusal):
                if text:
                    out += self._text_delta(text)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop = _stop_with_tools(stop_reason(choice["finish_reason"]), bool(self._tool_keys))
                self._sequence = matched_stop(choice) if self._stop == "end_turn" else None
                out += self._flush_pending()
        return out

    def _end_message(self) -> bytes:
        if self._finished or not self._started:
            return b""
        self._finished = True
        out = self._flush_pending()
        # A backend that reports no usage (Azure before 2024-09-01, servers without include_usage):
        # an estimate, flagged nowhere but kept from reading as an empty context (Claude Code
        # compacts its conversation by these figures). The gateway meters its own (router phase).
        usage = to_anthropic(told_usage(self.usage, self.ctx.prompt_estimate, self._generated_chars))
        stop = "refusal" if self._refused else self._stop or _stop_with_tools("end_turn", bool(self._tool_keys))
        sequence = None if self._refused else self._sequence
        delta = {"stop_reason": "stop_sequence" if sequence else stop, "stop_sequence": sequence}
        out += anthropic_event("message_delta", {"delta": delta, "usage": usage})
        return out + anthropic_event("message_stop", {})

    def on_end(self) -> bytes:
        # A stream that ends without [DONE] but after a finish reason is still a complete message.
        if self._stop is not None:
            return self._end_message()
        return b""

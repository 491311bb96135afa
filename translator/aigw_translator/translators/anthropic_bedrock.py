"""Anthropic Messages client (e.g. Claude Code) -> AWS Bedrock Converse / ConverseStream backend
(schema AWSBedrock), and back: Converse JSON -> an Anthropic message, ConverseStream event-stream
frames -> the Anthropic SSE event sequence.

Request: `/model/{model id, one percent-encoded path segment}/converse` (`/converse-stream` when
`stream` is true), with openai_bedrock's Converse pieces (turn merging, cache points, tool history
rules, stop sequences). Blocks: text, image (base64 only: Converse takes no URLs, 422), document
(base64 PDF/plain/CSV/HTML/Markdown, or a text source), tool_use, tool_result (text, images and
documents; `is_error` -> status "error"), thinking (-> reasoningContent with its signature) and
redacted_thinking (-> redactedContent). `cache_control` on a block, a system block or a tool
becomes a cachePoint after it. `max_tokens`, `temperature`, `top_p`, `stop_sequences` ->
inferenceConfig; on Claude models `top_k`, `thinking` and the anthropic-beta values Bedrock takes
(bedrock_anthropic.BEDROCK_BETAS) go in additionalModelRequestFields; `output_config` becomes
Converse's outputConfig (a json_schema `format` -> textFormat on any model, `effort` on Claude only,
`task_budget` dropped), and with stop sequences the
request asks for Claude's `/stop_sequence` (additionalModelResponseFieldPaths: Converse reports the
matched sequence only when asked); on other models `top_k` is refused (422) and `thinking` left out
(Claude Code asks for it of every model, as of an OpenAI backend), as on Claude models that do not
think. What a Claude client sends that the model does not take is fitted to it
(openai_bedrock.fitted_to_model: cache points, a tool result's status and files). tool_choice none
withholds the tools (unless the history holds tool blocks), as for OpenAI clients;
`disable_parallel_tool_use`, `metadata` and `service_tier` have no Converse counterpart and
are dropped; server tools, `mcp_servers` and `container` are refused (422).

Response: a message with id `msg_…` (Converse has none) and the effective model (Converse names
none). Stop reasons: end_turn, tool_use, max_tokens and stop_sequence are kept (`stop_sequence` is the
matched sequence from additionalModelResponseFields, null when Bedrock did not name one: a model other
than Claude), model_context_window_exceeded is kept, guardrail_intervened and content_filtered are
`refusal`, anything else end_turn.

Stream: messageStart -> message_start (usage 0: Bedrock reports usage only at the end); each content
block -> content_block_start, its deltas (text_delta, input_json_delta, thinking_delta,
signature_delta; a redactedContent delta opens a redacted_thinking block with its data), and
content_block_stop; messageStop (with the matched stop sequence in its additionalModelResponseFields)
and the metadata event that always follows it (with the usage) -> message_delta (stop reason, stop
sequence, usage) and message_stop, once both arrived: only then is Bedrock's stream complete. An
exception frame or a frame that cannot be parsed ends the stream with an `error` event in
Anthropic's shape; a stream that just stops, before messageStop or between it and metadata, gets
nothing from here: no message_stop, so the router phase adds its own error event and charges its
estimate of the usage (a truncated stream never looks complete).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from ..errors import GatewayError
from ..logs import get_logger
from ..usage import TokenUsage, from_bedrock, to_anthropic
from .aws_eventstream import StreamFailure
from .base import (
    InvalidRequest,
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    TranslatedRequest,
    TranslationError,
    anthropic_event,
    anthropic_message_start,
    append_turn,
    dump_json,
    number,
    parse_request_json,
    positive_int,
    reject_malformed_messages_fields,
    required_max_tokens,
    success_json,
)
from .bedrock_anthropic import bedrock_betas
from .bedrock_errors import anthropic_stream_error
from .bedrock_errors import to_anthropic as bedrock_anthropic_error
from .claude_reasoning import converse_text_format, drop_unsigned_thinking, thinks
from .openai_bedrock import (
    EMPTY_TOOL_RESULT,
    IMAGE_FORMATS,
    ConverseStreamTranslator,
    base64_source,
    cache_point_after,
    converse_document,
    converse_tool_config,
    document_numbers,
    fitted_to_model,
    is_anthropic_model,
    model_path,
    placed_system,
    stop_sequences,
    trim_prefill,
)

log = get_logger(__name__)

BACKEND = "AWS Bedrock (Converse)"

STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "model_context_window_exceeded": "model_context_window_exceeded",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
}

# The Anthropic headers Converse has no use for (the betas it takes travel in the body).
_ANTHROPIC_HEADERS = ["anthropic-version", "anthropic-beta"]


def stop_reason(value: Any) -> str:
    return STOP_REASONS.get(value, "end_turn") if isinstance(value, str) else "end_turn"


def matched_stop_sequence(reason: str, fields: Any) -> str | None:
    """The stop sequence that ended the answer: Claude's `stop_sequence` among the
    additionalModelResponseFields that the request asked for; None unless the stop reason is
    stop_sequence."""
    value = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return value if reason == "stop_sequence" and isinstance(value, str) else None


# ----------------------------------------------------------------------------- request


def _text_blocks(content: Any, what: str) -> list[dict[str, Any]]:
    """A string or text blocks (system prompt, plain turns) as Converse text blocks; blank text is
    left out (Bedrock rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise InvalidRequest(f"invalid {what}")
    out: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError(f"{what} supports text blocks only")
        text = block.get("text")
        if isinstance(text, str) and text.strip():
            out.append({"text": text})
            cache_point_after(out, block)
    return out


def _image(block: dict[str, Any]) -> dict[str, Any]:
    fmt, data = base64_source(block, IMAGE_FORMATS, "image")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _tool_result(block: dict[str, Any], documents: Iterator[int]) -> dict[str, Any]:
    content = block.get("content")
    items: list[dict[str, Any]] = []
    if isinstance(content, str):
        items = [{"text": content}] if content.strip() else []
    elif isinstance(content, list):
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                if str(item.get("text", "")).strip():
                    items.append({"text": str(item["text"])})
            elif kind == "image":
                items.append(_image(item))
            elif kind == "document":  # a PDF the tool read (Claude Code's Read tool)
                items.append(converse_document(item, next(documents)))
            else:
                raise TranslationError(f"tool_result content block {kind!r} cannot be sent to {BACKEND}")
    elif content is not None:
        raise InvalidRequest("invalid tool_result content")
    result: dict[str, Any] = {
        "toolUseId": str(block.get("tool_use_id") or ""),
        "content": items or [{"text": EMPTY_TOOL_RESULT}],
    }
    if block.get("is_error") is True:
        result["status"] = "error"
    return {"toolResult": result}


def _tool_use(block: dict[str, Any]) -> dict[str, Any]:
    tool_input = block.get("input")
    if tool_input is None:
        tool_input = {}
    if not isinstance(tool_input, dict):
        raise InvalidRequest("tool_use input must be a JSON object")
    return {
        "toolUse": {"toolUseId": str(block.get("id") or ""), "name": str(block.get("name") or ""), "input": tool_input}
    }


def _thinking_block(block: dict[str, Any]) -> dict[str, Any] | None:
    if block.get("type") == "redacted_thinking":
        data = block.get("data")
        return {"reasoningContent": {"redactedContent": data}} if isinstance(data, str) and data else None
    text = block.get("thinking")
    if not isinstance(text, str):
        return None
    reasoning: dict[str, Any] = {"text": text}
    if isinstance(block.get("signature"), str) and block["signature"]:
        reasoning["signature"] = block["signature"]
    return {"reasoningContent": {"reasoningText": reasoning}}


def _turn_blocks(role: str, content: Any, documents: Iterator[int]) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return _text_blocks(content, f"{role} content")
    if not isinstance(content, list):
        raise InvalidRequest("invalid message content")
    out: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise InvalidRequest("invalid content block")
        kind = block.get("type")
        if kind == "text":
            out.extend(_text_blocks([block], f"{role} content"))
            continue
        if kind == "image" and role == "user":
            out.append(_image(block))
        elif kind == "document" and role == "user":
            out.append(converse_document(block, next(documents)))
        elif kind == "tool_result" and role == "user":
            out.append(_tool_result(block, documents))
        elif kind == "tool_use" and role == "assistant":
            out.append(_tool_use(block))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            reasoning = _thinking_block(block)
            if reasoning is not None:
                out.append(reasoning)
            continue
        else:
            raise TranslationError(f"content block type {kind!r} in a {role} turn cannot be sent to {BACKEND}")
        cache_point_after(out, block)
    return out


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("messages must be a non-empty array")
    documents = document_numbers()
    messages: list[dict[str, Any]] = []
    for msg in raw:
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise InvalidRequest("every message needs the role user or assistant")
        append_turn(messages, msg["role"], _turn_blocks(msg["role"], msg.get("content"), documents))
    if not messages:
        raise InvalidRequest("no user or assistant messages with content")
    trim_prefill(messages)
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools must be an array")
    out: list[dict[str, Any]] = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise TranslationError(f"server tool {str(kind)[:60]!r} cannot be sent to {BACKEND} (custom tools only)")
        if not tool.get("name"):
            raise TranslationError("a tool needs a name")
        schema = tool.get("input_schema")
        spec: dict[str, Any] = {
            "name": tool["name"],
            "inputSchema": {"json": schema if isinstance(schema, dict) else {"type": "object", "properties": {}}},
        }
        if tool.get("description"):
            spec["description"] = tool["description"]  # Bedrock rejects an empty description
        out.append({"toolSpec": spec})
        cache_point_after(out, tool)
    return out


def _tool_choice(choice: Any) -> tuple[dict[str, Any] | None, bool]:
    """(Converse toolChoice, whether the tools are withheld: tool_choice none)."""
    if choice is None:
        return None, False
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        return {"auto": {}}, False
    if kind == "any":
        return {"any": {}}, False
    if kind == "none":
        return None, True
    if kind == "tool" and isinstance(choice, dict) and choice.get("name"):
        return {"tool": {"name": choice["name"]}}, False
    raise TranslationError("unsupported tool_choice")


def _model_fields(req: dict[str, Any], model: str, betas: list[str]) -> dict[str, Any]:
    """additionalModelRequestFields: top_k, thinking and betas for Claude; refused elsewhere."""
    fields: dict[str, Any] = {}
    claude = is_anthropic_model(model)
    top_k = req.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise GatewayError(400, "'top_k' must be a non-negative integer")
        if not claude:
            raise TranslationError(f"top_k is only supported for Claude models on {BACKEND}")
        fields["top_k"] = top_k
    thinking = req.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        if claude and thinks(model):  # (other models are sent the request without it: Claude Code asks every one)
            fields["thinking"] = thinking
    elif thinking is not None and not isinstance(thinking, dict):
        raise GatewayError(400, "'thinking' must be an object")
    if betas and claude:
        fields["anthropic_beta"] = betas
    return fields


def messages_to_converse(req: dict[str, Any], model: str, betas: list[str] | None = None) -> dict[str, Any]:
    """An Anthropic Messages request as a Bedrock Converse request body (the model goes in the path;
    `model` only decides model-family rules). `max_tokens` may be absent (count_tokens)."""
    reject_malformed_messages_fields(req)
    for key in ("mcp_servers", "container"):
        if req.get(key):
            raise TranslationError(f"{key} is not supported by {BACKEND}")
    messages = _messages(req.get("messages"))
    out: dict[str, Any] = {"messages": messages}
    system = placed_system(_text_blocks(req.get("system"), "system"), messages, model)
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    max_tokens = positive_int(req, "max_tokens")
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    for key, name in (("temperature", "temperature"), ("top_p", "topP")):
        value = number(req, key)
        if value is not None:
            config[name] = value
    claude = is_anthropic_model(model)
    stops = stop_sequences(req.get("stop_sequences"), claude)
    if stops:
        config["stopSequences"] = stops
    if config:
        out["inferenceConfig"] = config
    if stops and claude:
        out["additionalModelResponseFieldPaths"] = ["/stop_sequence"]  # which sequence matched
    choice, withhold = _tool_choice(req.get("tool_choice"))
    tool_config = converse_tool_config(_tools(req.get("tools")), choice, withhold, messages)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    fields = _model_fields(req, model, betas or [])
    if fields:
        out["additionalModelRequestFields"] = fields
    output = _output_config(req.get("output_config"), claude)
    if output:
        out["outputConfig"] = output
    return fitted_to_model(out, model)


def _output_config(config: Any, claude: bool) -> dict[str, Any]:
    """Converse's outputConfig for `output_config`: a json_schema `format` -> textFormat (any
    model: Bedrock refuses one without structured output), `effort` -> effort (Claude only);
    `task_budget` is advisory and dropped."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise GatewayError(400, "'output_config' must be an object")
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "format" and value is not None:
            if not isinstance(value, dict) or value.get("type") != "json_schema":
                raise GatewayError(400, "output_config.format must be of type 'json_schema'")
            if not isinstance(value.get("schema"), dict):
                raise GatewayError(400, "output_config.format of type 'json_schema' needs a schema object")
            out["textFormat"] = converse_text_format(value["schema"], "output")
        elif key == "effort" and value is not None:
            if not claude:
                raise TranslationError(f"output_config.effort is only supported for Claude models on {BACKEND}")
            out["effort"] = value
        elif key not in ("task_budget", "format", "effort"):
            raise TranslationError(f"output_config.{str(key)[:40]} is not supported by {BACKEND}")
    return out


def request_betas(ctx: RequestContext) -> list[str]:
    """The client's anthropic-beta values that Claude on Bedrock takes."""
    return bedrock_betas(ctx.headers.get("anthropic-beta", ""))


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    drop_unsigned_thinking(req)  # another model's reasoning, which Claude refuses
    required_max_tokens(req)  # count_tokens takes none
    out = messages_to_converse(req, ctx.model, request_betas(ctx))
    return TranslatedRequest(
        path=model_path(ctx.model, req.get("stream") is True),
        body=dump_json(out),
        set_headers={"content-type": "application/json"},
        remove_headers=list(_ANTHROPIC_HEADERS),
    )


# ----------------------------------------------------------------------------- response


def _new_id() -> str:
    return "msg_bdrk_" + uuid.uuid4().hex


def _content_block(block: Any) -> dict[str, Any] | None:
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    use = block.get("toolUse")
    if isinstance(use, dict):
        tool_input = use.get("input") if isinstance(use.get("input"), dict) else {}
        return {"type": "tool_use", "id": use.get("toolUseId", ""), "name": use.get("name", ""), "input": tool_input}
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, dict):
        if isinstance(reasoning.get("redactedContent"), str):
            return {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
        text = reasoning.get("reasoningText") or {}
        if isinstance(text.get("text"), str):
            return {"type": "thinking", "thinking": text["text"], "signature": str(text.get("signature") or "")}
    return None


def converse_to_message(resp: dict[str, Any], model: str) -> tuple[dict[str, Any], TokenUsage]:
    """A Converse answer as an Anthropic message, and its usage."""
    msg = (resp.get("output") or {}).get("message") or {}
    content = [b for b in (_content_block(block) for block in msg.get("content") or []) if b is not None]
    usage = from_bedrock(resp.get("usage"))
    reason = stop_reason(resp.get("stopReason"))
    message = {
        "id": _new_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": matched_stop_sequence(reason, resp.get("additionalModelResponseFields")),
        "usage": to_anthropic(usage),
    }
    return message, usage


class ConverseToAnthropicResponse(ResponseTranslator):
    def body(self, body: bytes) -> bytes | None:
        resp = success_json(body)
        self.response_model = self.ctx.effective_model
        message, self.usage = converse_to_message(resp, self.response_model)
        return dump_json(message)

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_anthropic_error(status, body, self.ctx.response_headers)


class ConverseToAnthropicStream(ConverseStreamTranslator):
    """ConverseStream frames -> Anthropic SSE events (see the module docstring)."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._id = _new_id()
        self._started = False
        self._open = -1  # the open Anthropic block's index, -1 when none is
        self._open_source: object = None  # the Bedrock contentBlockIndex of the open block
        self._open_kind = ""
        self._next = 0
        self._stop: str | None = None  # messageStop's reason, once seen
        self._stop_sequence: str | None = None  # the stop sequence messageStop names

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_anthropic_error(status, body, self.ctx.response_headers)

    def _failure_event(self, failure: StreamFailure) -> bytes:
        return anthropic_stream_error(failure)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return anthropic_message_start(self._id, self.response_model)

    def _close(self) -> bytes:
        if self._open < 0:
            return b""
        out = anthropic_event("content_block_stop", {"index": self._open})
        self._open, self._open_source, self._open_kind = -1, None, ""
        return out

    def _open_block(self, source: object, block: dict[str, Any]) -> bytes:
        out = self._start() + self._close()
        self._open, self._open_source, self._open_kind = self._next, source, block["type"]
        self._next += 1
        return out + anthropic_event("content_block_start", {"index": self._open, "content_block": block})

    def _ensure(self, source: object, kind: str, block: dict[str, Any]) -> bytes:
        """The block of Bedrock's `source` index open as `kind` (opened when it is not)."""
        if self._open >= 0 and self._open_source == source and self._open_kind == kind:
            return b""
        return self._open_block(source, block)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return anthropic_event("content_block_delta", {"index": self._open, "delta": delta})

    def _event(self, kind: str, obj: dict[str, Any]) -> bytes:
        if self._stop is not None and kind not in ("metadata", "messageStop"):
            return b""  # nothing belongs to the message after its stop
        source = obj.get("contentBlockIndex")
        if kind == "messageStart":
            return self._start()
        if kind == "contentBlockStart":
            use = (obj.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return b""
            block = {"type": "tool_use", "id": use.get("toolUseId", ""), "name": use.get("name", ""), "input": {}}
            return self._open_block(source, block)
        if kind == "contentBlockDelta":
            return self._content_delta(source, obj.get("delta") or {})
        if kind == "contentBlockStop":
            return self._close() if self._open_source == source else b""
        if kind == "messageStop":
            if self._stop is not None:
                return b""
            self._stop = stop_reason(obj.get("stopReason"))
            self._stop_sequence = matched_stop_sequence(self._stop, obj.get("additionalModelResponseFields"))
            out = self._start() + self._close()
            return out + (self._end() if self._metadata else b"")
        if kind == "metadata":
            return self._metadata_event(obj, self._stop is not None)
        return b""  # event types this translator does not know

    def _content_delta(self, source: object, delta: dict[str, Any]) -> bytes:
        if isinstance(delta.get("text"), str):
            if not delta["text"]:
                return b""
            out = self._ensure(source, "text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": delta["text"]})
        if isinstance(delta.get("toolUse"), dict):
            fragment = delta["toolUse"].get("input")
            if self._open_source != source or self._open_kind != "tool_use" or not isinstance(fragment, str):
                return b""  # a fragment of a tool call whose start never came
            return self._delta({"type": "input_json_delta", "partial_json": fragment}) if fragment else b""
        reasoning = delta.get("reasoningContent")
        if not isinstance(reasoning, dict):
            return b""
        if isinstance(reasoning.get("redactedContent"), str):
            return self._open_block(source, {"type": "redacted_thinking", "data": reasoning["redactedContent"]})
        out = self._ensure(source, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if isinstance(reasoning.get("text"), str) and reasoning["text"]:
            return out + self._delta({"type": "thinking_delta", "thinking": reasoning["text"]})
        if isinstance(reasoning.get("signature"), str) and reasoning["signature"]:
            return out + self._delta({"type": "signature_delta", "signature": reasoning["signature"]})
        return out

    def _end(self) -> bytes:
        """Both messageStop and metadata arrived: Bedrock's stream is complete."""
        self._done = True
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": self._stop_sequence}
        out = self._start() + self._close()
        out += anthropic_event("message_delta", {"delta": delta, "usage": to_anthropic(self.usage)})
        return out + anthropic_event("message_stop", {})

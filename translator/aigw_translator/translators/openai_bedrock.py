"""OpenAI chat completions client -> AWS Bedrock Converse / ConverseStream backend.

Request: `/model/{model id, percent-encoded as one path segment}/converse` (`/converse-stream` when
streamed); the model is in the path, never in the body. Response: Converse JSON -> chat.completion.
Stream: `application/vnd.amazon.eventstream` binary frames (botocore's parser) -> OpenAI
chat.completion.chunk SSE; usage comes from the `metadata` event, which follows `messageStop`.

Choices where Bedrock has no equivalent:
- tool_choice "none": Converse has no "none". The tools are withheld (no toolConfig), unless the
  history holds toolUse/toolResult blocks: Bedrock then requires a toolConfig, so the declared tools
  are sent without a toolChoice (the model may still call one).
- A history with toolUse/toolResult blocks but no tools: Bedrock rejects it ("The toolConfig field
  must be defined when using toolUse and toolResult content blocks"), so a minimal toolConfig is
  synthesised from the tool names the history uses (an empty object schema each).
- Images: Converse takes inline bytes only; an http(s) image URL is refused (422), never fetched.
- `file` parts (a base64 data URL; a file_id names a file of OpenAI's Files API: 422) become
  DocumentBlocks of their format (pdf, txt, csv, html, md), named after the filename in the
  characters Converse allows and numbered (two documents of a request may not share a name).
- reasoning_effort: Claude's thinking (additionalModelRequestFields.thinking, adaptive with
  outputConfig.effort or a budget by model: claude_reasoning) on Anthropic models; on other models
  it is dropped. response_format json_schema -> outputConfig.textFormat on every model.
- parallel_tool_calls, seed, user, store, metadata, service_tier and stream_options are dropped.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

from botocore.eventstream import EventStreamMessage

from ..errors import GatewayError
from ..logs import get_logger
from ..usage import from_bedrock, to_openai_chat
from .aws_eventstream import CorruptFrame, FrameDecoder, StreamFailure, frame_failure, translate_items
from .base import (
    InvalidRequest,
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    StreamedToolCalls,
    TranslatedRequest,
    TranslationError,
    append_turn,
    base64_data_url,
    chat_chunk,
    dropping_malformed,
    dump_json,
    load_json,
    max_output_tokens,
    number,
    parse_request_json,
    path_segment,
    reject_unsupported_chat_fields,
    success_json,
    tool_call_arguments,
    tool_call_function,
)
from .bedrock_errors import openai_stream_error
from .bedrock_errors import to_openai as bedrock_error
from .claude_reasoning import claude_reasoning, converse_text_format, output_schema, requested_effort
from .openai_anthropic import file_document

log = get_logger(__name__)

BACKEND = "AWS Bedrock backends"

# Image media types Converse takes (ImageBlock.format).
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}

# Document media types Converse takes (DocumentBlock.format).
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/csv": "csv",
    "text/html": "html",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
# What a DocumentBlock name may hold (alphanumerics, single spaces, hyphens, parentheses, brackets).
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9 \-()\[\]]+")

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    # The model's output (or its tool call) could not be parsed: no OpenAI counterpart.
    "malformed_model_output": "stop",
    "malformed_tool_use": "stop",
}

# What a tool result with no content is sent as: Bedrock rejects blank text blocks.
EMPTY_TOOL_RESULT = "(empty)"

# The cache checkpoint that stands for an OpenAI-level `cache_control` on a part or tool.
CACHE_POINT = {"cachePoint": {"type": "default"}}


def finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    return STOP_REASONS.get(stop_reason, "stop")


def is_anthropic_model(model: str) -> bool:
    """A Claude model: a base model id (`anthropic.claude-…`), a cross-region inference profile
    (`us.anthropic.claude-…`) or an ARN naming one. An application inference profile ARN does not
    say which model it serves, so it does not count."""
    lowered = model.lower()
    return "anthropic." in lowered or "claude" in lowered


# Model families Converse takes no system prompt for (AWS's table of Converse features: Titan Text,
# Mistral 7B and Mixtral 8x7B Instruct, Cohere Command and Command Light), a ValidationException.
_NO_SYSTEM_PROMPT = (
    "amazon.titan-text", "mistral.mistral-7b-instruct", "mistral.mixtral-8x7b-instruct", "cohere.command-text",
    "cohere.command-light-text",
)  # fmt: skip


def placed_system(system: list[dict[str, Any]], messages: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The system blocks to send as Converse's `system`: none for a model that takes no system
    prompt, whose text goes at the head of the first user turn instead (in `messages`), where its
    own prompt template would have it."""
    lowered = model.lower()
    if not system or not any(family in lowered for family in _NO_SYSTEM_PROMPT):
        return system
    text = "\n\n".join(block["text"] for block in system if "text" in block)
    if text and messages and messages[0]["role"] == "user":
        messages[0]["content"].insert(0, {"text": text})
    elif text:
        messages.insert(0, {"role": "user", "content": [{"text": text}]})
    return []


def is_nova_model(model: str) -> bool:
    """An Amazon Nova model (base id, inference profile, or an ARN naming one)."""
    return "amazon.nova" in model.lower()


# Model families that take neither prompt caching nor a tool result's status or images (AWS's
# Converse feature tables), by the provider part of a model id (`meta.llama…`, `us.mistral.…`, an
# ARN naming one). An id that names no family (an application inference profile's ARN, a custom or
# imported model) is sent as the client wrote it: it may well be Claude.
_OTHER_FAMILIES = re.compile(
    r"(?:^|[.:/])(?:meta|mistral|cohere|ai21|deepseek|qwen|openai|writer|twelvelabs|luma|stability|amazon\.titan)[.-]"
)
# Claude models from before prompt caching on Bedrock (it came with Claude 3.7 Sonnet and 3.5 Haiku).
_CLAUDE_WITHOUT_CACHING = re.compile(
    r"claude-(?:v2|instant|3-(?:haiku|sonnet|opus)|3-5-sonnet-20240620|3-5-sonnet-20241022)"
)
# What a tool result carries besides text that only Claude and Nova take (AWS's ToolResultBlock:
# `status` and image content "only supported by" those models; documents moved with them).
_RICH_RESULT_ITEMS = ("image", "document")


def fitted_to_model(request: dict[str, Any], model: str) -> dict[str, Any]:
    """A Converse request without what its model refuses, which clients send for Claude (Claude Code
    on every turn): prompt caching's cache points (refused by Claude before 3.7 Sonnet and 3.5 Haiku,
    by Nova in its tool list, by the other families anywhere), and a tool result's `status` and
    images or documents (Claude and Nova only: for the other families an error's text says "Error:",
    and its files follow the turn's tool results, after a line naming the call they came from)."""
    lowered = model.lower()
    other = _OTHER_FAMILIES.search(lowered) is not None
    nova = is_nova_model(model)
    uncached = other or _CLAUDE_WITHOUT_CACHING.search(lowered) is not None
    tools = (request.get("toolConfig") or {}).get("tools")
    if tools and (uncached or nova):
        request["toolConfig"]["tools"] = [t for t in tools if "cachePoint" not in t]
    if uncached and "system" in request:
        request["system"] = [b for b in request["system"] if "cachePoint" not in b]
    if not (uncached or other):
        return request
    for message in request["messages"]:
        content, moved = [], []
        for block in message["content"]:
            if "cachePoint" in block:
                continue
            result = block.get("toolResult")
            if other and isinstance(result, dict):
                files = [item for item in result["content"] if any(k in item for k in _RICH_RESULT_ITEMS)]
                kept = [item for item in result["content"] if item not in files]
                if files:  # Converse wants a text block beside documents, and a reader which call's they are
                    moved += [{"text": f"(the files the tool call {result['toolUseId']} returned)"}, *files]
                if result.pop("status", None) == "error":
                    kept = [{"text": "Error: " + (_result_text(kept) or "the tool failed")}]
                result["content"] = kept or [{"text": "(the tool's files follow)"}]
            content.append(block)
        message["content"] = content + moved
    trim_prefill(request["messages"])  # a cache point dropped may leave a prefill's text last
    return request


def _result_text(items: list[dict[str, Any]]) -> str:
    return "\n".join(item["text"] for item in items if "text" in item)


def model_path(model: str, stream: bool) -> str:
    if not model:
        raise GatewayError(400, "a model is required for AWS Bedrock backends")
    # One path segment: ':' and '/' of ARNs and profile ids are escaped too.
    return f"/model/{path_segment(model)}/" + ("converse-stream" if stream else "converse")


# ----------------------------------------------------------------------------- request


def _texts(content: Any, what: str) -> list[dict[str, Any]]:
    """Text content (a string or text parts) as text blocks. Bedrock rejects blank text blocks:
    they carry nothing, so they are left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise InvalidRequest(f"invalid {what} content")
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            text = part
        elif isinstance(part, dict) and part.get("type") == "text":
            text = str(part.get("text", ""))
        else:
            raise TranslationError(f"{what} content supports text parts only")
        if text.strip():
            blocks.append({"text": text})
            if isinstance(part, dict):
                cache_point_after(blocks, part)
    return blocks


def cache_point_after(blocks: list[dict[str, Any]], source: dict[str, Any]) -> None:
    """Prompt caching: an OpenAI-level `cache_control` on a part or tool becomes a Bedrock
    cachePoint right after it."""
    if isinstance(source.get("cache_control"), dict):
        blocks.append(dict(CACHE_POINT))


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url without url")
    if url.startswith("data:"):
        media_type, data = base64_data_url(url, "image")
        media_type = media_type or "image/png"
        fmt = IMAGE_FORMATS.get(media_type)
        if fmt is None:
            raise TranslationError(
                f"image type {media_type[:40]!r} is not supported by {BACKEND} (png, jpeg, gif, webp)"
            )
        return {"image": {"format": fmt, "source": {"bytes": data}}}
    if url.startswith(("http://", "https://")):
        raise TranslationError(
            f"image URLs are not supported by {BACKEND} (Converse takes inline images only): "
            "send the image as a base64 data URL"
        )
    raise TranslationError("unsupported image URL scheme")


def base64_source(block: dict[str, Any], formats: dict[str, str], what: str) -> tuple[str, str]:
    """(Converse format, base64 data) of a block's base64 source."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError(f"{what} without a source")
    if source.get("type") == "url":
        raise TranslationError(f"{what} URLs are not supported by {BACKEND} (inline base64 data only)")
    if source.get("type") != "base64":
        raise TranslationError(f"{what} source type {str(source.get('type'))[:40]!r} is not supported by {BACKEND}")
    media_type = str(source.get("media_type") or "").lower()
    fmt = formats.get(media_type)
    if fmt is None:
        raise TranslationError(f"{what} type {media_type[:40]!r} is not supported by {BACKEND}")
    data = source.get("data")
    if not isinstance(data, str) or not data:
        raise TranslationError(f"{what} without data")
    return fmt, data


def converse_document(block: dict[str, Any], number_: int) -> dict[str, Any]:
    """A document block; Converse needs a name (unique within the request): the title, cleaned to
    the characters Converse takes, with the document's number."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        fmt, data = "txt", base64.b64encode(str(source.get("data", "")).encode()).decode()
    else:
        fmt, data = base64_source(block, DOCUMENT_FORMATS, "document")
    title = block.get("title")
    if not isinstance(title, str):
        title = ""
    clean = " ".join(_NAME_UNSAFE.sub(" ", title).split())[:80].rstrip() or "document"
    return {"document": {"format": fmt, "name": f"{clean} {number_}", "source": {"bytes": data}}}


def document_numbers() -> Iterator[int]:
    """Numbers for a request's documents, from 1 (their Converse names must differ)."""
    return itertools.count(1)


def _user_blocks(content: Any, documents: Iterator[int]) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _texts(content, "user")
    if not isinstance(content, list):
        raise InvalidRequest("invalid user message content")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.extend(_texts([part], "user"))
        elif kind == "image_url":
            blocks.append(_image_block(part))
            cache_point_after(blocks, part)
        elif kind == "file":
            blocks.append(converse_document(file_document(part), next(documents)))
            cache_point_after(blocks, part)
        else:
            raise TranslationError(f"content part type {kind!r} cannot be sent to {BACKEND}")
    return blocks


def _assistant_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in ("text", "refusal")
        )
    return content if isinstance(content, str) else ""


def _tool_use_block(call: Any) -> dict[str, Any]:
    fn = tool_call_function(call)
    parsed = tool_call_arguments(fn)
    return {"toolUse": {"toolUseId": call.get("id") or "", "name": fn.get("name") or "", "input": parsed}}


def _tool_result_block(msg: dict[str, Any]) -> dict[str, Any]:
    """The tool's output as text, as the client sent it (a JSON string stays text: the model reads
    the same characters, and some Bedrock models take no `json` result blocks)."""
    content = [{"text": b["text"]} for b in _texts(msg.get("content"), "tool") if "text" in b]
    return {
        "toolResult": {
            "toolUseId": msg.get("tool_call_id") or "",
            "content": content or [{"text": EMPTY_TOOL_RESULT}],
        }
    }


def trim_prefill(messages: list[dict[str, Any]]) -> None:
    """Converse refuses a prefilled final assistant turn that ends with whitespace: it is trimmed."""
    last = messages[-1]
    if last["role"] == "assistant" and "text" in last["content"][-1]:
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()


def _convert_messages(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("messages must be a non-empty array")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    documents = document_numbers()
    for msg in raw:
        if not isinstance(msg, dict):
            raise InvalidRequest("invalid message")
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            system.extend(_texts(content, str(role)))
        elif role == "user":
            append_turn(messages, "user", _user_blocks(content, documents))
        elif role == "assistant":
            text = _assistant_text(content)
            # Text before toolUse: the order Bedrock's models expect.
            blocks: list[dict[str, Any]] = [{"text": text}] if text.strip() else []
            blocks.extend(_tool_use_block(call) for call in msg.get("tool_calls") or [])
            append_turn(messages, "assistant", blocks)
        elif role == "tool":
            append_turn(messages, "user", [_tool_result_block(msg)])
        else:
            raise TranslationError(f"message role {role!r} cannot be sent to {BACKEND}")
    if not messages:
        raise TranslationError("no user or assistant messages with content")
    trim_prefill(messages)
    return system, messages


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools must be an array")
    out: list[dict[str, Any]] = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise TranslationError(f"only function tools can be sent to {BACKEND}")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not fn.get("name"):
            raise TranslationError("a function tool needs a name")
        spec: dict[str, Any] = {
            "name": fn["name"],
            "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}},
        }
        if fn.get("description"):
            spec["description"] = fn["description"]  # Bedrock rejects an empty description
        out.append({"toolSpec": spec})
        cache_point_after(out, tool)
    return out


def _convert_tool_choice(choice: Any) -> dict[str, Any] | None:
    """None for "none" and for no choice; see the module docstring for "none"."""
    if choice is None or choice == "none":
        return None
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"tool": {"name": choice["function"]["name"]}}
    raise TranslationError("unsupported tool_choice")


def tool_names_in_history(messages: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Whether the history holds toolUse/toolResult blocks, and the tool names it calls (in order)."""
    has_blocks = False
    names: list[str] = []
    for msg in messages:
        for block in msg["content"]:
            if "toolResult" in block:
                has_blocks = True
            elif "toolUse" in block:
                has_blocks = True
                name = block["toolUse"]["name"]
                if name and name not in names:
                    names.append(name)
    return has_blocks, names


def converse_tool_config(
    tools: list[dict[str, Any]], choice: dict[str, Any] | None, withhold: bool, messages: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The toolConfig of a Converse request: the declared tools and choice, unless the client's
    choice was "none" (`withhold`) and the history holds no tool blocks; a minimal config naming the
    tools the history uses when it holds tool blocks but no tools were declared (Bedrock rejects
    tool history without a toolConfig)."""
    has_blocks, names = tool_names_in_history(messages)
    if tools and (not withhold or has_blocks):
        config: dict[str, Any] = {"tools": tools}
        if choice is not None:
            config["toolChoice"] = choice
        return config
    if has_blocks and names:
        synthesized = [
            {"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object", "properties": {}}}}} for n in names
        ]
        return {"tools": synthesized}
    return None


def _tool_config(req: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = _convert_tools(req.get("tools"))
    choice = _convert_tool_choice(req.get("tool_choice"))
    return converse_tool_config(tools, choice, req.get("tool_choice") == "none", messages)


def _reject_unsupported(req: dict[str, Any]) -> None:
    """Fields whose effect Converse cannot give: a clear 422 rather than an answer that silently
    ignores them."""
    reject_unsupported_chat_fields(req, BACKEND)
    if req.get("prediction") is not None:
        raise TranslationError(f"predicted outputs (prediction) are not supported by {BACKEND}")
    if req.get("web_search_options") is not None:
        raise TranslationError(f"web_search_options is not supported by {BACKEND}")


def _sampling(req: dict[str, Any], config: dict[str, Any], anthropic: bool) -> None:
    """OpenAI's temperature range 0..2 is clamped to Converse's 0..1. Current Claude models reject
    temperature and topP together: for them the knob left at its default is dropped, and when both
    are set, temperature is kept (as openai_anthropic does)."""
    temperature = number(req, "temperature")
    top_p = number(req, "top_p")
    if anthropic and temperature is not None and top_p is not None:
        if temperature == 1 and top_p < 1:
            temperature = None
        else:
            top_p = None
    if temperature is not None:
        config["temperature"] = min(max(temperature, 0.0), 1.0)
    if top_p is not None:
        config["topP"] = min(max(top_p, 0.0), 1.0)


def stop_sequences(stop: Any, anthropic: bool) -> list[str]:
    raw = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    out = []
    for seq in raw:
        if not isinstance(seq, str) or not seq:
            continue  # an empty stop sequence never matches: nothing is lost
        if anthropic and not seq.strip():
            raise TranslationError(f"stop sequence {seq!r} is whitespace only, which Claude models reject")
        out.append(seq)
    return out


def _ends_tool_loop(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn holds a tool call: with thinking on, that turn would have to begin
    with the reasoning block it was generated with, whose signature an OpenAI client does not carry."""
    for msg in reversed(messages):
        if msg["role"] == "assistant":
            return any("toolUse" in block for block in msg["content"])
    return False


def _reasoning(req: dict[str, Any], out: dict[str, Any], max_tokens: int | None, anthropic: bool, model: str) -> None:
    """reasoning_effort -> Claude's thinking (claude_reasoning: additionalModelRequestFields, and
    Converse's own outputConfig.effort; maxTokens counts the thinking), and response_format
    json_schema -> outputConfig.textFormat, on every model (Bedrock refuses it for one without)."""
    output_config: dict[str, Any] = {}
    schema = output_schema(req.get("response_format"), BACKEND)
    if schema is not None:
        output_config["textFormat"] = converse_text_format(*schema)
    effort = requested_effort(req.get("reasoning_effort"))
    if effort is not None and not anthropic:
        log.debug("reasoning_effort_unmapped", reason="not a Claude model", effort=effort)
        effort = None
    config = out.setdefault("inferenceConfig", {})
    choice = (out.get("toolConfig") or {}).get("toolChoice") or {}
    reasoning = claude_reasoning(
        effort,
        model,
        max_tokens,
        forced_tool="any" in choice or "tool" in choice,
        ends_tool_loop=_ends_tool_loop(out["messages"]),
        temperature=config.get("temperature"),
        top_p=config.get("topP"),
        backends="Claude models",
    )
    if reasoning is not None:
        config.pop("temperature", None)
        out.setdefault("additionalModelRequestFields", {})["thinking"] = reasoning.thinking
        if reasoning.max_tokens is not None:
            config["maxTokens"] = reasoning.max_tokens
        if reasoning.effort is not None:
            output_config["effort"] = reasoning.effort
    if output_config:
        out["outputConfig"] = output_config


def chat_to_converse(req: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completions request as a Bedrock Converse request body (`model`, the
    effective model, only decides model-family rules: it goes in the path, not the body)."""
    _reject_unsupported(req)
    anthropic = is_anthropic_model(model)
    system, messages = _convert_messages(req.get("messages"))
    system = placed_system(system, messages, model)
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    max_tokens = max_output_tokens(req)
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    _sampling(req, config, anthropic)
    stop = stop_sequences(req.get("stop"), anthropic)
    if stop:
        config["stopSequences"] = stop
    if config:
        out["inferenceConfig"] = config
    tool_config = _tool_config(req, messages)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    _reasoning(req, out, max_tokens, anthropic, model)
    if not out.get("inferenceConfig"):
        out.pop("inferenceConfig", None)
    return fitted_to_model(out, model)


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = chat_to_converse(req, ctx.model)
    # Converse takes JSON, whatever content type the client sent.
    return TranslatedRequest(
        path=model_path(ctx.model, bool(req.get("stream"))),
        body=dump_json(out),
        set_headers={"content-type": "application/json"},
    )


# ----------------------------------------------------------------------------- response


def _new_id() -> str:
    # Converse answers carry no id; the client gets one of OpenAI's shape.
    return "chatcmpl-" + uuid.uuid4().hex


def converse_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    msg = (resp.get("output") or {}).get("message") or {}
    text_parts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text_parts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            tool_calls.append(
                {
                    "id": use.get("toolUseId", ""),
                    "type": "function",
                    "function": {"name": use.get("name", ""), "arguments": dump_json(use.get("input") or {}).decode()},
                }
            )
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text_parts) if text_parts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        # The de-facto extension (DeepSeek, vLLM, LiteLLM) for reasoning text, as openai_anthropic.
        message["reasoning_content"] = "".join(reasoning)
    return {
        "id": _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(resp.get("stopReason")) or "stop",
                "logprobs": None,
            }
        ],
        "usage": to_openai_chat(from_bedrock(resp.get("usage"))),
    }


def event_frames(frames: FrameDecoder) -> Iterator[EventStreamMessage | StreamFailure]:
    """The whole event frames buffered in `frames` (ConverseStream, InvokeModelWithResponseStream),
    then the failure that ends the stream, if one did: an exception or error frame, or a frame that
    cannot be parsed (CRC mismatch, bad header: the stream cannot be resynchronised). Frames of
    other message types are skipped."""
    while True:
        try:
            message = frames.next()
        except CorruptFrame as exc:
            log.warning("bedrock_stream_unparsable", error=str(exc))
            yield StreamFailure(502, "server_error", "the backend's event stream could not be parsed", None)
            return
        if message is None:
            return
        failure = frame_failure(message)
        if failure is not None:
            yield failure
            return
        if message.headers.get(":message-type") == "event":
            yield message


class ConverseEventStream:
    """ConverseStream bytes, at any chunking -> its events as (event type, JSON payload), and the
    failure that ends the stream (event_frames). Events whose payload is not a JSON object are
    skipped."""

    def __init__(self) -> None:
        self._frames = FrameDecoder()

    def feed(self, chunk: bytes) -> Iterator[tuple[str, dict[str, Any]] | StreamFailure]:
        self._frames.add(chunk)
        for item in event_frames(self._frames):
            if isinstance(item, StreamFailure):
                yield item
                return
            payload = load_json(item.payload)
            if isinstance(payload, dict):
                yield str(item.headers.get(":event-type")), payload


class ConverseStreamTranslator(ResponseTranslator):
    """What the ConverseStream translators (to OpenAI chunks here, to Anthropic events in
    anthropic_bedrock) share: frames decoded into events, each translated by `_event` until the
    client's stream ended (`_done`); an event of an unexpected shape is dropped (logged), never
    fatal; a failure frame ends the stream with `_failure_event`, and the usage is unknown unless
    metadata came before it."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._events = ConverseEventStream()
        self.response_model = ctx.effective_model
        self._metadata = False  # metadata seen
        self._done = False  # the client's last event or an error event sent: nothing more goes out

    def feed(self, chunk: bytes) -> bytes:
        if self._done or not chunk:
            return b""
        return translate_items(self._events.feed(chunk), self._guarded, self._fail, lambda: self._done)

    def _fail(self, failure: StreamFailure) -> bytes:
        self._done = True
        if not self._metadata:
            self.usage.known = False
        return self._failure_event(failure)

    def _guarded(self, item: tuple[str, dict[str, Any]]) -> bytes:
        kind, payload = item
        return dropping_malformed(self, kind, partial(self._event, kind, payload))

    def _metadata_event(self, obj: dict[str, Any], stopped: bool) -> bytes:
        """Converse's usage, its last event: the first one counts, and the client's stream ends
        (`_end`) once messageStop came too (`stopped`)."""
        if self._metadata:
            return b""
        self._metadata = True
        usage = from_bedrock(obj.get("usage"))
        if usage.known:
            self.usage = usage
        return self._end() if stopped else b""

    def _event(self, kind: str, obj: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        raise NotImplementedError

    def _failure_event(self, failure: StreamFailure) -> bytes:
        raise NotImplementedError


class BedrockToOpenAIResponse(ResponseTranslator):
    def body(self, body: bytes) -> bytes | None:
        resp = success_json(body)
        self.usage = from_bedrock(resp.get("usage"))
        # Converse names no model: the one the request was sent to stands for it.
        self.response_model = self.ctx.effective_model
        return dump_json(converse_to_chat(resp, self.response_model))

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_error(status, body, self.ctx.response_headers)


class BedrockToOpenAIStream(ConverseStreamTranslator):
    """ConverseStream event-stream frames -> OpenAI chat.completion.chunk events.

    Completeness (client_stream.ClientStream): the client's stream is complete once `data: [DONE]`
    or an error event (`data: {"error"…`) went out. [DONE] is sent once both messageStop and
    metadata arrived (after the usage chunk, when include_usage): Bedrock always sends metadata
    (with the usage) after messageStop, so only then is its stream complete. An exception frame or
    a frame that cannot be parsed (CRC mismatch, bad header) ends the stream with an error event. A
    stream that just stops, before messageStop or between it and metadata (its finish reason may
    have gone out), gets nothing from here: no [DONE], so the router phase adds its own error event
    and charges its provisional estimate of the usage (a truncated stream never looks complete)."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._id = _new_id()
        self._created = int(time.time())
        self._tool_calls = StreamedToolCalls()
        self._stopped = False  # messageStop seen

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return chat_chunk(self._id, self._created, self.response_model, choices, **extra)

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_error(status, body, self.ctx.response_headers)

    def _failure_event(self, failure: StreamFailure) -> bytes:
        return openai_stream_error(failure)

    def _end(self) -> bytes:
        """Both messageStop and metadata arrived: the usage chunk (when asked for) and [DONE]."""
        self._done = True
        out = b""
        if self.ctx.include_usage and self.usage.known:
            out += self._chunk(None, usage=to_openai_chat(self.usage))
        return out + b"data: [DONE]\n\n"

    def _event(self, kind: str, obj: dict[str, Any]) -> bytes:
        if kind == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "contentBlockStart":
            use = (obj.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return b""
            call = {
                "index": self._tool_calls.open(obj.get("contentBlockIndex", -1)),
                "id": use.get("toolUseId", ""),
                "type": "function",
                "function": {"name": use.get("name", ""), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "contentBlockDelta":
            delta = obj.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]}) if delta["text"] else b""
            if isinstance(delta.get("toolUse"), dict):
                arguments = self._tool_calls.arguments(obj.get("contentBlockIndex", -1), delta["toolUse"].get("input"))
                return b"" if arguments is None else self._chunk(arguments)
            if isinstance(delta.get("reasoningContent"), dict):
                text = delta["reasoningContent"].get("text")
                # signature and redactedContent deltas cannot be carried by an OpenAI client
                return self._chunk({"reasoning_content": text}) if isinstance(text, str) and text else b""
            return b""
        if kind == "messageStop":
            if self._stopped:
                return b""
            self._stopped = True
            out = self._chunk({}, finish_reason(obj.get("stopReason")) or "stop")
            return out + (self._end() if self._metadata else b"")
        if kind == "metadata":
            return self._metadata_event(obj, self._stopped)
        if kind == "contentBlockStop":
            arguments = self._tool_calls.close(obj.get("contentBlockIndex", -1))
            return b"" if arguments is None else self._chunk(arguments)
        return b""  # unknown event types

"""A stand-in for the Anthropic Messages API (not Anthropic): an aiohttp server on loopback.

Endpoints: ``POST /v1/messages`` (plain and streaming), ``POST /v1/messages/count_tokens``,
``GET /v1/models``. Every error has Anthropic's shape
``{"type":"error","error":{"type","message"},"request_id"}`` and a ``request-id`` header.

What it checks, like the real API:

* ``x-api-key`` must equal the configured key (401 ``authentication_error``). An
  ``Authorization`` header is never taken as the key. ``anthropic-version`` must be present (400).
* Body: unknown top-level fields (``X: Extra inputs are not permitted``), ``model`` and
  ``max_tokens`` required (``max_tokens: Field required``; ``max_tokens`` is not allowed on
  count_tokens), ``messages`` a non-empty list, roles only ``user``/``assistant`` (a ``system`` role
  is rejected with the pointer to the top-level ``system`` parameter), non-empty content except a
  final assistant turn, known content block types with their required fields, ``tool_use`` only in
  assistant turns and ``tool_result`` only in user turns, every ``tool_result`` answering a
  ``tool_use`` of the immediately preceding assistant turn, every ``tool_use`` answered in the next
  turn when there is one (the ``tool_result`` blocks first in that turn), a replayed ``thinking``
  block's ``signature`` not empty (Claude refuses one it did not make), unique ``tool_use`` ids, no
  ``tool_use`` or ``tool_result`` block in a request without ``tools``, ``temperature``/``top_p`` in 0..1 and not both
  (current Claude models take one), no empty or whitespace-only text blocks, no whitespace-only
  ``stop_sequences``, ``metadata`` only ``user_id`` (at most 256 characters), ``tools``
  (custom tools need ``name`` and ``input_schema`` with ``type: object``; unique names),
  ``tool_choice`` shape (auto/any/tool/none; ``tool`` needs a known ``name``), ``thinking`` budget,
  ``thinking`` by model (``claude_thinking_refusal``: Opus 4.7 and later take only ``adaptive``;
  models before Opus 4.6 and Sonnet 4.6 take no ``adaptive``), ``output_config`` (``format`` a
  json_schema with its ``schema``; ``effort`` low/medium/high/xhigh/max, xhigh not on Opus 4.6,
  Sonnet 4.6 and Mythos Preview);
  with thinking enabled, no forced ``tool_choice`` (any/tool) and a last assistant turn holding
  ``tool_use`` must begin with a ``thinking`` (or ``redacted_thinking``) block.
  Consecutive turns with the same role are merged, as the real API does; an assistant-first
  conversation is accepted unless ``require_user_first=True``.

Answers are deterministic: text derived from the model and the last user text (JSON of the schema
when ``output_config.format`` asks for one), or with tools and
``tool_choice`` not ``none`` (and, for ``auto``, the last user turn not being tool results) a
``tool_use`` block with input built from the tool's schema (``stop_reason: tool_use``); with
``auto`` a short text block comes first, as Claude usually does. ``max_tokens`` truncates
(``stop_reason: max_tokens``) and ``stop_sequences`` cut (``stop_reason: stop_sequence``).
Usage carries ``input_tokens`` (excluding cache), and the configured
``cache_creation_input_tokens`` / ``cache_read_input_tokens``.

Streaming follows the documented order: ``message_start``, then per block ``content_block_start``
(a ``ping`` after the first), ``content_block_delta`` (``text_delta``, ``input_json_delta`` in several
fragments, ``thinking_delta`` + ``signature_delta``), ``content_block_stop``; then ``message_delta``
with ``stop_reason`` and cumulative ``usage.output_tokens``; then ``message_stop``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from .common import (
    JSON_BODY,
    JSON_ERROR,
    RAW_BODY,
    FakeProvider,
    SSEWriter,
    count_tokens,
    example_from_schema,
    fake_reply,
    is_int,
    is_num,
    parallel_tool_calls,
    random_id,
    split_fixed,
    split_words,
    stable_id,
    streams,
    truncate_words,
)

MESSAGES_FIELDS = frozenset(
    {
        "cache_control", "container", "context_management", "diagnostics", "inference_geo", "max_tokens",
        "mcp_servers", "messages", "metadata", "model", "output_config", "service_tier", "speed",
        "stop_sequences", "stream", "system", "temperature", "thinking", "tool_choice", "tools", "top_k",
        "top_p", "user_profile_id", "workspace_id",
    }
)  # fmt: skip
COUNT_FIELDS = frozenset(
    {
        "cache_control", "context_management", "mcp_servers", "messages", "model", "output_config", "speed",
        "system", "thinking", "tool_choice", "tools", "user_profile_id", "workspace_id",
    }
)  # fmt: skip
BLOCK_TYPES = (
    "text", "image", "document", "search_result", "thinking", "redacted_thinking", "tool_use", "tool_result",
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result",
)  # fmt: skip
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    400: "Bad request (injected by the fake).",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit (injected by the fake).",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
DEFAULT_MODELS = ("claude-sonnet-5", "claude-opus-5", "claude-sonnet-4-6", "claude-haiku-4-5")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


# What a 429 says to wait, in seconds (retry-after).
RETRY_AFTER_S = 7


class AnthropicError(Exception):
    def __init__(self, status: int, message: str, type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ERROR_TYPES.get(status, "api_error")


def _bad(message: str) -> AnthropicError:
    return AnthropicError(400, message)


def blocks_of(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def text_of_blocks(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        if b.get("type") == "text" and isinstance(b.get("text"), str):
            out.append(b["text"])
        elif b.get("type") == "tool_result":
            c = b.get("content")
            out.append(c if isinstance(c, str) else text_of_blocks(blocks_of(c)))
        elif b.get("type") == "tool_use":
            out.append(json.dumps(b.get("input", {})))
    return " ".join(out)


# Claude's thinking by model family (Anthropic's adaptive-thinking, effort and migration pages, AWS's
# adaptive-thinking page): Opus 4.7 and later, Sonnet 5, Mythos and Fable think adaptively only (a
# budget is a 400, and so is "disabled" on Mythos and Fable); the families before Opus 4.6 and Sonnet
# 4.6 take "enabled" with a budget only, and of them only Opus 4.5 takes an effort. A name of no
# known family (a test's) takes either.
ADAPTIVE_ONLY = ("opus-4-7", "opus-4-8", "opus-5", "sonnet-5", "mythos", "fable")
NEVER_DISABLED = ("mythos", "fable")
BUDGET_ONLY = (
    "claude-3", "opus-4-5", "sonnet-4-5", "haiku-4-5", "opus-4.5", "sonnet-4.5", "haiku-4.5", "opus-4-1",
    "opus-4.1", "opus-4-2025", "sonnet-4-2025", "opus-4@", "sonnet-4@",
)  # fmt: skip
EFFORT_BEFORE_ADAPTIVE = ("opus-4-5",)
# Extended thinking came with Claude 3.7 Sonnet: the models before it refuse it.
NO_THINKING = ("claude-3-5-", "claude-3-opus", "claude-3-sonnet", "claude-3-haiku", "claude-2", "claude-instant")
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
WITHOUT_XHIGH = ("opus-4-6", "sonnet-4-6", "mythos-preview")


def _family(model: str, families: tuple[str, ...]) -> bool:
    """`model` names one of `families` (a substring: `opus-5` also finds `opus-5-5`, whose thinking
    is the same)."""
    return any(family in model for family in families)


def claude_thinking_refusal(model: str, kind: str) -> str | None:
    """The provider's 400 for thinking of `kind` ("enabled", "adaptive", "disabled") on `model`."""
    if _family(model, NO_THINKING) and kind != "disabled":
        return "thinking: this model does not support extended thinking"
    if _family(model, ADAPTIVE_ONLY):
        if kind == "enabled" or (kind == "disabled" and _family(model, NEVER_DISABLED)):
            return (
                f"thinking.type.{kind} is not supported for this model. Use thinking.type.adaptive and "
                "output_config.effort to control thinking behavior."
            )
    elif kind == "adaptive" and _family(model, BUDGET_ONLY):
        return "thinking.type.adaptive is not supported for this model. Use thinking.type.enabled with budget_tokens."
    return None


def claude_effort_refusal(model: str, effort: Any) -> str | None:
    """The provider's 400 for an `output_config.effort` on `model` (None: accepted, or none given)."""
    if effort is None:
        return None
    if effort not in EFFORT_LEVELS:
        return "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
    if _family(model, BUDGET_ONLY) and not _family(model, EFFORT_BEFORE_ADAPTIVE):
        return "output_config.effort: this model does not support the effort parameter"
    if effort == "xhigh" and _family(model, WITHOUT_XHIGH):
        return "output_config.effort: 'xhigh' is not supported for this model. Use 'high' or 'max'."
    return None


class AnthropicFake(FakeProvider):
    """Fake Anthropic API; give ``fake.base_url`` to ``anthropic.Anthropic(base_url=...)``.

    The official SDK sends the key as ``Authorization: Bearer``; this fake (like the real API
    for API keys) wants ``x-api-key``, so pass ``default_headers={"x-api-key": key}``.
    """

    provider = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = "sk-ant-test",
        name: str | None = None,
        models: list[str] | tuple[str, ...] | None = None,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        reply: str | Callable[[str, dict[str, Any]], str] | None = None,
        tool_preamble: bool = True,
        require_user_first: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.api_key = api_key
        self.models = list(models) if models is not None else list(DEFAULT_MODELS)
        self.check_models = models is not None
        self.cache_creation_input_tokens = cache_creation_input_tokens
        self.cache_read_input_tokens = cache_read_input_tokens
        self.reply = reply
        self.tool_preamble = tool_preamble
        self.require_user_first = require_user_first

    @property
    def url(self) -> str:
        return self.base_url

    # ---- errors / auth -----------------------------------------------------------------------
    def error_response(
        self, status: int, message: str | None = None, *, type: str | None = None, **_: Any
    ) -> web.Response:
        rid = random_id("req_", 24)
        body = {
            "type": "error",
            "error": {
                "type": type or ERROR_TYPES.get(status, "api_error"),
                "message": message or ERROR_MESSAGES.get(status, f"Injected error {status}."),
            },
            "request_id": rid,
        }
        headers = {"request-id": rid}
        if status == 429:  # as Anthropic's rate limit answers: when to try again, and the limit hit
            headers |= {"retry-after": str(RETRY_AFTER_S), "anthropic-ratelimit-requests-remaining": "0"}
        return web.json_response(body, status=status, headers=headers)

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.error_response(404, "Not Found")

    def response_headers(self, request: web.Request) -> dict[str, str]:
        return {"request-id": random_id("req_", 24)}

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None:
            key = request.headers.get("x-api-key")
            if key is None:
                return self.error_response(401, "x-api-key header is required")
            if key != self.api_key:
                return self.error_response(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error_response(400, "anthropic-version: header is required")
        return None

    def stream_error_event(self) -> tuple[str | None, Any]:
        return "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    # ---- routing -----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._wrap(self.messages))
        app.router.add_post("/v1/messages/count_tokens", self._wrap(self.count_tokens))
        app.router.add_get("/v1/models", self._wrap(self.list_models, json_body=False))

    def _wrap(self, fn: Callable[..., Any], json_body: bool = True) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            denied = self.check_auth(request)
            if denied is not None:
                return denied
            try:
                if not json_body:
                    return await fn(request)
                if request.get(JSON_ERROR) or not request.get(RAW_BODY):
                    raise _bad("There was an issue with your request body: the body is not valid JSON.")
                body = request[JSON_BODY]
                if not isinstance(body, dict):
                    raise _bad("Input should be a valid dictionary")
                return await fn(request, body)
            except AnthropicError as e:
                return self.error_response(e.status, e.message, type=e.type)

        return handler

    # ---- validation --------------------------------------------------------------------------
    def validate(self, body: dict[str, Any], *, count: bool = False) -> list[tuple[str, list[dict[str, Any]]]]:
        """Validate a Messages request; returns the merged turns [(role, blocks)]."""
        for k in body:
            if k not in (COUNT_FIELDS if count else MESSAGES_FIELDS):
                raise _bad(f"{k}: Extra inputs are not permitted")
        if "model" not in body:
            raise _bad("model: Field required")
        if not isinstance(body["model"], str):
            raise _bad("model: Input should be a valid string")
        if not count:
            if "max_tokens" not in body:
                raise _bad("max_tokens: Field required")
            mt = body["max_tokens"]
            if not is_int(mt):
                raise _bad("max_tokens: Input should be a valid integer")
            if mt < 1:
                raise _bad("max_tokens: Input should be greater than or equal to 1")
        if "messages" not in body:
            raise _bad("messages: Field required")
        msgs = body["messages"]
        if not isinstance(msgs, list):
            raise _bad("messages: Input should be a valid list")
        if not msgs:
            raise _bad("messages: at least one message is required")
        self._validate_system(body.get("system"))
        if body.get("temperature") is not None and body.get("top_p") is not None:
            # Current Claude models (Sonnet 4.5 and later) take one sampling knob, not both.
            raise _bad("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
        for key, lo, hi in (("temperature", 0, 1), ("top_p", 0, 1)):
            v = body.get(key)
            if v is None:
                continue
            if not is_num(v):
                raise _bad(f"{key}: Input should be a valid number")
            if v < lo:
                raise _bad(f"{key}: Input should be greater than or equal to {lo}")
            if v > hi:
                raise _bad(f"{key}: Input should be less than or equal to {hi}")
        if body.get("top_k") is not None and (not is_int(body["top_k"]) or body["top_k"] < 0):
            raise _bad("top_k: Input should be greater than or equal to 0")
        ss = body.get("stop_sequences")
        if ss is not None and (not isinstance(ss, list) or not all(isinstance(s, str) for s in ss)):
            raise _bad("stop_sequences: Input should be a valid list of strings")
        if ss and not all(s.strip() for s in ss):
            raise _bad("stop_sequences: each stop sequence must contain non-whitespace")
        self._validate_metadata(body.get("metadata"))
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            raise _bad("stream: Input should be a valid boolean")
        self._validate_thinking(body, count)
        self._validate_output_config(body.get("output_config"), str(body.get("model", "")))
        tool_names = self._validate_tools(body)
        self._validate_tool_choice(body.get("tool_choice"), tool_names, bool(body.get("tools")))
        turns = self._validate_messages(msgs)
        if not body.get("tools") and any(b.get("type") in ("tool_use", "tool_result") for _, bs in turns for b in bs):
            raise _bad("Requests which include `tool_use` or `tool_result` blocks must define tools.")
        self._validate_thinking_with_tools(body, msgs)
        return turns

    def _validate_thinking_with_tools(self, body: dict[str, Any], msgs: list[Any]) -> None:
        """With thinking enabled, a forced tool_choice is refused, and the last assistant turn,
        when it holds tool_use blocks, must begin with the thinking block it was generated with."""
        th = body.get("thinking")
        if not isinstance(th, dict) or th.get("type") != "enabled":
            return
        tc = body.get("tool_choice")
        if isinstance(tc, dict) and tc.get("type") in ("any", "tool"):
            raise _bad("Thinking may not be enabled when tool_choice forces tool use.")
        start = None  # index of the first message of the last assistant turn
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and (i == 0 or msgs[i - 1]["role"] != "assistant"):
                start = i
        if start is None:
            return
        end = start
        while end < len(msgs) and msgs[end]["role"] == "assistant":
            end += 1
        blocks = [
            b for m in msgs[start:end] for b in (m["content"] if isinstance(m["content"], list) else [{"type": "text"}])
        ]
        if not any(b.get("type") == "tool_use" for b in blocks):
            return
        first = blocks[0]
        if first.get("type") not in ("thinking", "redacted_thinking"):
            raise _bad(
                f"messages.{start}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{first.get('type')}`. When `thinking` is enabled, a final `assistant` message must start with "
                "a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
                "recommend you include thinking blocks from previous turns. To avoid this requirement, disable "
                "`thinking`. Please consult our documentation at "
                "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
            )

    def _validate_metadata(self, metadata: Any) -> None:
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            raise _bad("metadata: Input should be a valid dictionary")
        for key in metadata:
            if key != "user_id":
                raise _bad(f"metadata.{key}: Extra inputs are not permitted")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise _bad("metadata.user_id: Input should be a valid string")
        if isinstance(user_id, str) and len(user_id) > 256:
            raise _bad("metadata.user_id: String should have at most 256 characters")

    def _validate_system(self, system: Any) -> None:
        if system is None or isinstance(system, str):
            return
        if not isinstance(system, list):
            raise _bad("system: Input should be a valid string or a list of text blocks")
        for i, b in enumerate(system):
            if not isinstance(b, dict) or b.get("type") != "text":
                raise _bad(f"system.{i}.type: Input should be 'text'")
            if not isinstance(b.get("text"), str):
                raise _bad(f"system.{i}.text: Field required")
            if not b["text"].strip():
                raise _bad("system: text content blocks must contain non-whitespace text")

    def _validate_output_config(self, config: Any, model: str) -> None:
        """output_config: `format` a json_schema with a schema object, `effort` one of the levels."""
        if config is None:
            return
        if not isinstance(config, dict):
            raise _bad("output_config: Input should be a valid dictionary")
        fmt = config.get("format")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
                raise _bad(
                    "output_config.format: Input tag found using 'type' does not match any of the expected tags: "
                    "'json_schema'"
                )
            if not isinstance(fmt.get("schema"), dict):
                raise _bad("output_config.format.json_schema.schema: Field required")
        refusal = claude_effort_refusal(model, config.get("effort"))
        if refusal:
            raise _bad(refusal)

    def _validate_thinking(self, body: dict[str, Any], count: bool) -> None:
        th = body.get("thinking")
        if th is None:
            return
        if not isinstance(th, dict) or th.get("type") not in ("enabled", "disabled", "adaptive"):
            raise _bad(
                "thinking: Input tag found using 'type' does not match any of the expected tags: "
                "'enabled', 'disabled', 'adaptive'"
            )
        refusal = claude_thinking_refusal(str(body.get("model", "")), th["type"])
        if refusal:
            raise _bad(refusal)
        if th["type"] == "enabled":
            bt = th.get("budget_tokens")
            if bt is None:
                raise _bad("thinking.enabled.budget_tokens: Field required")
            if not is_int(bt) or bt < 1024:
                raise _bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if not count and bt >= body["max_tokens"]:
                raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`.")
            if body.get("temperature") not in (None, 1, 1.0):
                raise _bad("`temperature` may only be set to 1 when thinking is enabled or in adaptive mode.")

    def _validate_tools(self, body: dict[str, Any]) -> list[str]:
        tools = body.get("tools")
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise _bad("tools: Input should be a valid list")
        names: list[str] = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict):
                raise _bad(f"tools.{i}: Input should be a valid dictionary")
            typ = t.get("type")
            if typ not in (None, "custom"):  # server tools (web_search_..., bash_..., etc.)
                if not isinstance(t.get("name"), str):
                    raise _bad(f"tools.{i}.{typ}.name: Field required")
                names.append(t["name"])
                continue
            p = f"tools.{i}.custom"
            if "name" not in t:
                raise _bad(f"{p}.name: Field required")
            if not isinstance(t["name"], str) or not _TOOL_NAME.match(t["name"]):
                raise _bad(f"{p}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            if "input_schema" not in t:
                raise _bad(f"{p}.input_schema: Field required")
            schema = t["input_schema"]
            if not isinstance(schema, dict):
                raise _bad(f"{p}.input_schema: Input should be a valid dictionary")
            if schema.get("type") != "object":
                raise _bad(f"{p}.input_schema.type: Input should be 'object'")
            names.append(t["name"])
        if len(set(names)) != len(names):
            raise _bad("tools: Tool names must be unique.")
        return names

    def _validate_tool_choice(self, tc: Any, names: list[str], have_tools: bool) -> None:
        if tc is None:
            return
        if not isinstance(tc, dict):
            raise _bad("tool_choice: Input should be a valid dictionary")
        if tc.get("type") not in ("auto", "any", "tool", "none"):
            raise _bad(
                f"tool_choice: Input tag '{tc.get('type')}' found using 'type' does not match any of the "
                "expected tags: 'auto', 'any', 'tool', 'none'"
            )
        if tc["type"] in ("any", "tool") and not have_tools:
            raise _bad("tool_choice: tool_choice may only be specified while providing tools.")
        if tc["type"] == "tool":
            if not isinstance(tc.get("name"), str):
                raise _bad("tool_choice.tool.name: Field required")
            if tc["name"] not in names:
                raise _bad(f"tool_choice: Tool '{tc['name']}' not found in tools")
        dp = tc.get("disable_parallel_tool_use")
        if dp is not None and not isinstance(dp, bool):
            raise _bad(f"tool_choice.{tc['type']}.disable_parallel_tool_use: Input should be a valid boolean")

    @staticmethod
    def _validate_document(b: dict[str, Any], p: str) -> None:
        """As Anthropic checks a document: a base64 PDF, plain text, content blocks, a URL or a file."""
        src = b.get("source")
        kind = src.get("type") if isinstance(src, dict) else None
        if kind not in ("base64", "text", "content", "url", "file"):
            raise _bad(f"{p}.document.source: Field required")
        if kind == "base64" and src.get("media_type") != "application/pdf":
            raise _bad(f"{p}.document.source.base64.media_type: Input should be 'application/pdf'")
        if kind == "text" and src.get("media_type") != "text/plain":
            raise _bad(f"{p}.document.source.text.media_type: Input should be 'text/plain'")
        if kind in ("base64", "text") and not isinstance(src.get("data"), str):
            raise _bad(f"{p}.document.source.{kind}.data: Field required")
        if kind == "base64":
            try:
                base64.b64decode(src["data"], validate=True)
            except ValueError:
                raise _bad(f"{p}.document.source.base64.data: The PDF specified was not valid base64.") from None
        if "title" in b and b["title"] is not None and not isinstance(b["title"], str):
            raise _bad(f"{p}.document.title: Input should be a valid string")

    def _validate_block(self, b: Any, role: str, p: str) -> None:
        if not isinstance(b, dict):
            raise _bad(f"{p}: Input should be a valid dictionary")
        t = b.get("type")
        if t not in BLOCK_TYPES:
            tags = ", ".join(f"'{x}'" for x in BLOCK_TYPES)
            raise _bad(f"{p}: Input tag '{t}' found using 'type' does not match any of the expected tags: {tags}")
        if t == "text" and not isinstance(b.get("text"), str):
            raise _bad(f"{p}.text.text: Field required")
        if t == "text" and not b["text"]:
            raise _bad("messages: text content blocks must be non-empty")
        if t == "text" and not b["text"].strip():
            raise _bad("messages: text content blocks must contain non-whitespace text")
        if t == "image":
            src = b.get("source")
            if not isinstance(src, dict) or src.get("type") not in ("base64", "url", "file"):
                raise _bad(f"{p}.image.source: Field required")
            if src["type"] == "base64" and src.get("media_type") not in (
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
            ):
                raise _bad(
                    f"{p}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                    "'image/gif' or 'image/webp'"
                )
        if t == "document":
            self._validate_document(b, p)
        if t == "tool_use":
            if role != "assistant":
                raise _bad(f"{p}: tool_use blocks can only be in `assistant` messages")
            for key in ("id", "name", "input"):
                if key not in b:
                    raise _bad(f"{p}.tool_use.{key}: Field required")
            if not isinstance(b["input"], dict):
                raise _bad(f"{p}.tool_use.input: Input should be a valid dictionary")
            if not isinstance(b["id"], str) or not re.match(r"^[a-zA-Z0-9_-]+$", b["id"]):
                raise _bad(f"{p}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if t == "tool_result":
            if role != "user":
                raise _bad(f"{p}: tool_result blocks can only be in `user` messages")
            if not isinstance(b.get("tool_use_id"), str):
                raise _bad(f"{p}.tool_result.tool_use_id: Field required")
            c = b.get("content")
            if c is not None and not isinstance(c, str | list):
                raise _bad(f"{p}.tool_result.content: Input should be a valid string or list")
        if t == "thinking" and not (isinstance(b.get("thinking"), str) and isinstance(b.get("signature"), str)):
            raise _bad(f"{p}.thinking.signature: Field required")
        if t == "thinking" and not b["signature"]:  # no Claude made it: another model's reasoning
            raise _bad(f"{p}: Invalid `signature` in `thinking` block")

    def _validate_messages(self, msgs: list[Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        # turns: merged consecutive same-role messages; each block keeps its original path
        turns: list[tuple[str, list[tuple[str, dict[str, Any]]], int]] = []
        for i, m in enumerate(msgs):
            p = f"messages.{i}"
            if not isinstance(m, dict):
                raise _bad(f"{p}: Input should be a valid dictionary")
            role = m.get("role")
            if role is None:
                raise _bad(f"{p}.role: Field required")
            if role == "system":
                raise _bad(
                    'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                    'parameter, not "system" as an input message role.'
                )
            if role not in ("user", "assistant"):
                raise _bad(f"{p}.role: Input should be 'user' or 'assistant'")
            if "content" not in m:
                raise _bad(f"{p}.content: Field required")
            content = m["content"]
            if not isinstance(content, str | list):
                raise _bad(f"{p}.content: Input should be a valid string or a valid list")
            is_final = i == len(msgs) - 1
            if isinstance(content, str) and content and not content.strip() and not (is_final and role == "assistant"):
                raise _bad("messages: text content blocks must contain non-whitespace text")
            if (content == "" or content == []) and not (is_final and role == "assistant"):
                raise _bad(
                    "messages: all messages must have non-empty content except for the optional final assistant message"
                )
            if is_final and role == "assistant":
                last_text = content if isinstance(content, str) else ""
                if isinstance(content, list) and content and isinstance(content[-1], dict):
                    last = content[-1]
                    last_text = (last.get("text") or "") if last.get("type") == "text" else ""
                if isinstance(last_text, str) and last_text and last_text != last_text.rstrip():
                    raise _bad("messages: final assistant content cannot end with trailing whitespace")
            blocks: list[tuple[str, dict[str, Any]]] = []
            if isinstance(content, str):
                blocks.append((f"{p}.content", {"type": "text", "text": content}))
            else:
                for j, b in enumerate(content):
                    self._validate_block(b, role, f"{p}.content.{j}")
                    blocks.append((f"{p}.content.{j}", b))
            if turns and turns[-1][0] == role:
                turns[-1][1].extend(blocks)
            else:
                turns.append((role, blocks, i))
        if self.require_user_first and turns[0][0] != "user":
            raise _bad('messages: first message must use the "user" role')
        seen_ids: set[str] = set()
        for k, (role, blocks, _) in enumerate(turns):
            if role == "assistant":
                ids = []
                for p, b in blocks:
                    if b.get("type") == "tool_use":
                        if b["id"] in seen_ids:
                            raise _bad(f"{p}: `tool_use` ids must be unique")
                        seen_ids.add(b["id"])
                        ids.append(b["id"])
                if ids and k + 1 < len(turns):
                    answered = {b.get("tool_use_id") for _, b in turns[k + 1][1] if b.get("type") == "tool_result"}
                    missing = [x for x in ids if x not in answered]
                    if missing:
                        raise _bad(
                            f"messages.{turns[k + 1][2]}: `tool_use` ids were found without `tool_result` blocks "
                            f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                            "corresponding `tool_result` block in the next message."
                        )
            else:
                prev_ids = set()
                if k > 0:
                    prev_ids = {b.get("id") for _, b in turns[k - 1][1] if b.get("type") == "tool_use"}
                leading = next((j for j, (_, b) in enumerate(blocks) if b.get("type") != "tool_result"), len(blocks))
                if leading < len(prev_ids):
                    raise _bad(
                        f"messages.{turns[k][2]}: Did not find {len(prev_ids)} `tool_result` block(s) at the beginning "
                        "of this message. Messages following `tool_use` blocks must begin with a matching number of "
                        "`tool_result` blocks."
                    )
                for p, b in blocks:
                    if b.get("type") == "tool_result" and b.get("tool_use_id") not in prev_ids:
                        raise _bad(
                            f"{p}: unexpected `tool_use_id` found in `tool_result` blocks: {b.get('tool_use_id')}. "
                            "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
                            "message."
                        )
        return [(role, [b for _, b in blocks]) for role, blocks, _ in turns]

    # ---- answers -----------------------------------------------------------------------------
    def _check_model(self, body: dict[str, Any]) -> None:
        if self.check_models and body["model"] not in self.models:
            raise AnthropicError(404, f"model: {body['model']}")

    def _input_tokens(self, body: dict[str, Any], turns: list[tuple[str, list[dict[str, Any]]]]) -> int:
        n = 0
        system = body.get("system")
        if isinstance(system, str):
            n += count_tokens(system)
        elif isinstance(system, list):
            n += sum(count_tokens(b.get("text", "")) for b in system)
        for _, blocks in turns:
            n += 3 + count_tokens(text_of_blocks(blocks))
        if body.get("tools"):
            n += count_tokens(json.dumps(body["tools"]))
        return max(n, 1)

    def make_reply(self, model: str, body: dict[str, Any], prompt: str) -> str:
        """The answer's text: JSON of the schema when `output_config.format` asks for one (structured
        outputs), else the fake's reply."""
        fmt = (body.get("output_config") or {}).get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return json.dumps(example_from_schema(fmt.get("schema") or {"type": "object"}))
        return fake_reply(self.reply, model, body, prompt)

    def _plan(
        self, body: dict[str, Any], turns: list[tuple[str, list[dict[str, Any]]]], parallel: bool = False
    ) -> dict[str, Any]:
        model = body["model"]
        max_tokens = body["max_tokens"]
        last_user: list[dict[str, Any]] = next((b for r, b in reversed(turns) if r == "user"), [])
        user_text = " ".join(b["text"] for b in last_user if b.get("type") == "text" and isinstance(b.get("text"), str))
        content: list[dict[str, Any]] = []
        budget = max_tokens
        th = body.get("thinking") or {}
        if th.get("type") in ("enabled", "adaptive"):
            thought = f"Fake reasoning about: {user_text[:80]}".strip()
            content.append(
                {"type": "thinking", "thinking": thought, "signature": stable_id("sig_", thought, length=40)}
            )
            budget -= count_tokens(thought)
        custom = [t for t in body.get("tools") or [] if t.get("type") in (None, "custom")]
        tc = body.get("tool_choice") or {"type": "auto"}
        answered_tools = any(b.get("type") == "tool_result" for b in last_user) and turns[-1][0] == "user"
        use_tool = bool(custom) and tc["type"] != "none"
        if use_tool and tc["type"] == "auto" and answered_tools:
            use_tool = False
        if use_tool and turns[-1][0] != "user":
            use_tool = False
        stop_reason, stop_sequence = "end_turn", None
        if use_tool:
            chosen = custom[:1]
            if tc["type"] == "tool":
                chosen = [next((t for t in custom if t["name"] == tc["name"]), custom[0])]
            elif parallel and not tc.get("disable_parallel_tool_use"):
                chosen = custom
            if tc["type"] == "auto" and self.tool_preamble:
                content.append({"type": "text", "text": f"I'll use the {chosen[0]['name']} tool."})
            for tool in chosen:
                tool_input = example_from_schema(tool["input_schema"])
                content.append(
                    {
                        "type": "tool_use",
                        "id": stable_id("toolu_01", tool["name"], json.dumps(body["messages"], sort_keys=True)),
                        "name": tool["name"],
                        "input": tool_input if isinstance(tool_input, dict) else {},
                    }
                )
            stop_reason = "tool_use"
        else:
            text = self.make_reply(model, body, user_text)
            for seq in body.get("stop_sequences") or []:
                if seq and seq in text:
                    text = text[: text.index(seq)]
                    stop_reason, stop_sequence = "stop_sequence", seq
                    break
            text, cut = truncate_words(text, max(budget, 0))
            if cut:
                stop_reason, stop_sequence = "max_tokens", None
            content.append({"type": "text", "text": text})
        out_tokens = 0
        for b in content:
            if b["type"] == "text":
                out_tokens += count_tokens(b["text"])
            elif b["type"] == "thinking":
                out_tokens += count_tokens(b["thinking"])
            else:
                out_tokens += 3 + count_tokens(json.dumps(b["input"]))
        return {
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "output_tokens": max(out_tokens, 1),
        }

    def _usage(self, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    async def messages(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        turns = self.validate(body)
        self._check_model(body)
        plan = self._plan(body, turns, parallel_tool_calls(request))
        input_tokens = self._input_tokens(body, turns)
        msg = {
            "id": random_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": plan["content"],
            "stop_reason": plan["stop_reason"],
            "stop_sequence": plan["stop_sequence"],
            "usage": self._usage(input_tokens, plan["output_tokens"]),
        }
        if not streams(request, body):
            return web.json_response(msg)
        return await self._stream(request, msg)

    async def _stream(self, request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
        sse = SSEWriter(request, error_event=self.stream_error_event)
        for ev in message_events(msg):
            await sse.send(ev, event=ev["type"])
        return await sse.finish()

    async def count_tokens(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        turns = self.validate(body, count=True)
        self._check_model(body)
        total = self._input_tokens(body, turns) + self.cache_creation_input_tokens + self.cache_read_input_tokens
        return web.json_response({"input_tokens": total})

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.models
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )


def message_events(msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The documented stream events of a Messages answer, in order (shared with the Bedrock fake's
    InvokeModelWithResponseStream, which wraps each one in an event-stream chunk)."""
    usage = msg["usage"]
    start = {
        **msg,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield {"type": "message_start", "message": start}
    for i, block in enumerate(msg["content"]):
        t = block["type"]
        if t == "text":
            yield {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}
        elif t == "thinking":
            yield (
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
        else:
            yield {"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}}
        if i == 0:
            yield {"type": "ping"}
        if t == "text":
            for piece in split_words(block["text"]) or [""]:
                yield {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}
        elif t == "thinking":
            for piece in split_words(block["thinking"]):
                yield (
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "thinking_delta", "thinking": piece},
                    }
                )
            yield (
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                }
            )
        else:
            args = json.dumps(block["input"])
            for frag in ["", *split_fixed(args, 4)]:
                yield (
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": frag},
                    }
                )
        yield {"type": "content_block_stop", "index": i}
    yield (
        {
            "type": "message_delta",
            "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]},
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"],
            },
        }
    )
    yield {"type": "message_stop"}

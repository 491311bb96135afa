"""What an OpenAI client's reasoning_effort and response_format become for Claude, wherever it is
served: the Messages API (Anthropic, Bedrock InvokeModel, Vertex) and Bedrock Converse.

reasoning_effort: Claude models from before adaptive thinking (3.7 Sonnet, the 4, 4.1 and 4.5
families) take extended thinking with a token budget (THINKING_BUDGETS); older ones (3.5, 3) do not
think, and the effort is left out for them. Every later one takes adaptive
thinking with an effort level (`output_config.effort`), and Opus 4.7 and the models after it take
nothing else: a budget is their 400. A model id that names no known older family (an inference
profile ARN, a model newer than this code) is taken to be a current one. `none` and `minimal`
ask for no thinking (a model that thinks by default, as the newest do, still may). OpenAI's
`xhigh` is Claude's own level where the model has it, and `max` on Opus 4.6, Sonnet 4.6 and Mythos
Preview, whose levels stop at max without it.

response_format: `json_schema` becomes Claude's structured output (`output_config.format`, or
Converse's `outputConfig.textFormat`); `json_object` has no counterpart without a schema (422).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import GatewayError
from ..logs import get_logger
from .base import InvalidRequest, TranslationError

log = get_logger(__name__)

# reasoning_effort -> extended-thinking budget_tokens (at least 1024), each level twice the one
# below. With adaptive thinking, the same figures are the room given for thinking when the client
# sets no token limit.
THINKING_BUDGETS = {"low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
MIN_THINKING_BUDGET = 1024
DEFAULT_MAX_TOKENS = 4096

# The families before adaptive thinking, in every spelling of an id: `claude-3-7-sonnet-…`,
# `claude-sonnet-4-20250514`, `claude-opus-4-1@20250805` (Vertex), `anthropic.claude-haiku-4-5-…-v1:0`
# (Bedrock), `claude-sonnet-4-5`, `claude-sonnet-4.5` (proxies' dotted names). `claude-sonnet-4-6`
# and `claude-opus-4.7` are not.
_BUDGET_ONLY = re.compile(r"claude-3|claude-(?:opus|sonnet|haiku)-4(?:[-.][015])?(?:$|[@:]|-\d{8}|-v\d)")
# Claude models that do not think at all (extended thinking came with Claude 3.7 Sonnet): a
# reasoning_effort sent to them is left out, as for a model of another vendor on Bedrock.
_NO_THINKING = re.compile(r"claude-(?:instant|2|3-(?:5-|opus|sonnet|haiku))")
# Adaptive models whose effort levels have no xhigh.
_NO_XHIGH = re.compile(r"claude-(?:opus|sonnet)-4-6|claude-mythos-preview")


# A thinking block another model's reasoning became (anthropic_openai gives an Anthropic client the
# reasoning of an OpenAI backend with an empty signature), as JSON writes it compactly or spaced.
_UNSIGNED = re.compile(rb'"signature"\s*:\s*""')


def may_hold_unsigned_thinking(body: bytes) -> bool:
    """Whether an Anthropic Messages body may hold a thinking block with an empty signature (a quick
    look at its bytes, so that a body that holds none is forwarded without being parsed)."""
    return _UNSIGNED.search(body) is not None


def drop_unsigned_thinking(req: dict[str, Any]) -> bool:
    """An Anthropic Messages request without the thinking blocks whose signature is empty: another
    model's reasoning, which a client replays after a failover or a change of model, and which no
    Claude takes (it refuses a signature it did not make; the conversation could not go on). When
    that leaves the last assistant turn holding a tool call without the thinking block it began with,
    extended thinking is left off for this request, which Claude would refuse otherwise. True when
    the request changed."""
    messages = req.get("messages")
    if not isinstance(messages, list):
        return False
    kept_messages, changed = [], False
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) and msg.get("role") == "assistant" else None
        if isinstance(content, list):
            kept = [b for b in content if not _unsigned_thinking(b)]
            if len(kept) != len(content):
                changed = True
                if not kept:  # the turn was that reasoning alone
                    continue
                msg = {**msg, "content": kept}
        kept_messages.append(msg)
    if not changed:
        return False
    req["messages"] = kept_messages
    thinking = req.get("thinking")
    if (
        isinstance(thinking, dict)
        and thinking.get("type") in ("enabled", "adaptive")
        and _tool_turn_unthought(kept_messages)
    ):
        log.info("thinking_left_off", reason="the last tool call's thinking came from another model")
        del req["thinking"]
    return True


def _unsigned_thinking(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature")


def _tool_turn_unthought(messages: list[Any]) -> bool:
    """Whether the last assistant turn holds a tool call and does not begin with a thinking block."""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "assistant":
            content = msg.get("content")
            blocks = content if isinstance(content, list) else []
            calls = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks)
            first = blocks[0].get("type") if blocks and isinstance(blocks[0], dict) else None
            return calls and first not in ("thinking", "redacted_thinking")
    return False


def thinks(model: str) -> bool:
    """Whether a Claude model takes extended thinking (it came with Claude 3.7 Sonnet)."""
    return _NO_THINKING.search(model.lower()) is None


@dataclass(frozen=True)
class Reasoning:
    """Claude's side of a reasoning_effort: `thinking` as the Messages API takes it, the
    `effort` level (None: none to send) and `max_tokens` (None: the client's stands)."""

    thinking: dict[str, Any]
    effort: str | None
    max_tokens: int | None


def requested_effort(effort: Any) -> str | None:
    """The reasoning_effort level that asks for thinking (None: none asked for: unset, none,
    minimal); a value OpenAI does not define is a 400 on every model."""
    if effort is None or effort in ("none", "minimal"):
        return None
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        raise GatewayError(400, f"unsupported reasoning_effort {str(effort)[:20]!r}")
    return effort


def adaptive(model: str) -> bool:
    """Whether `model` thinks adaptively (and takes an effort level), rather than on a budget."""
    return _BUDGET_ONLY.search(model.lower()) is None


def claude_reasoning(
    effort: Any,
    model: str,
    max_tokens: int | None,
    *,
    forced_tool: bool,
    ends_tool_loop: bool,
    temperature: float | None,
    top_p: float | None,
    backends: str,
) -> Reasoning | None:
    """The thinking a reasoning_effort asks of Claude `model` (None: none). `max_tokens` is the
    client's limit (None: unset), `forced_tool` whether a tool_choice forces a tool,
    `ends_tool_loop` whether the last assistant turn holds tool calls (with thinking on, that turn
    would have to begin with the thinking block it was generated with, whose signature an OpenAI
    client does not carry back: no thinking then); `backends` names them in errors."""
    level = requested_effort(effort)
    if level is None:
        return None
    budget = THINKING_BUDGETS[level]
    if ends_tool_loop:
        log.debug("reasoning_effort_unmapped", reason="the last assistant turn holds tool calls", effort=effort)
        return None
    if not thinks(model):
        log.debug("reasoning_effort_unmapped", reason="the model does not think", effort=effort, model=model)
        return None
    if forced_tool:
        raise TranslationError(
            f"reasoning_effort cannot be combined with a forced tool_choice ('required' or a named function) on "
            f"{backends}: with thinking enabled only tool_choice 'auto' or 'none' is accepted"
        )
    if temperature not in (None, 1.0):
        raise TranslationError(f"temperature cannot be combined with reasoning_effort on {backends}")
    if top_p is not None and top_p < 0.95:
        raise TranslationError(f"top_p below 0.95 cannot be combined with reasoning_effort on {backends}")
    limit = DEFAULT_MAX_TOKENS + budget if max_tokens is None else None
    if adaptive(model):
        level = "max" if effort == "xhigh" and _NO_XHIGH.search(model.lower()) else effort
        return Reasoning({"type": "adaptive"}, level, limit)
    if max_tokens is not None:
        budget = min(budget, max_tokens - 1)
        if budget < MIN_THINKING_BUDGET:
            raise TranslationError(
                f"reasoning_effort needs max_completion_tokens above {MIN_THINKING_BUDGET} on {backends}"
            )
    return Reasoning({"type": "enabled", "budget_tokens": budget}, None, limit)


def output_schema(response_format: Any, backends: str) -> tuple[dict[str, Any], str] | None:
    """The (schema, name) of a json_schema response_format (None: text, or none given)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequest("'response_format' must be an object")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind != "json_schema":
        raise TranslationError(
            f"response_format {str(kind)[:30]!r} is not supported by {backends}: give a json_schema instead"
        )
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format of type 'json_schema' needs json_schema.schema, an object")
    name = spec.get("name") if isinstance(spec, dict) else None
    return schema, name if isinstance(name, str) and name else "output"


def messages_output_format(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema as the Messages API's `output_config.format`."""
    return {"type": "json_schema", "schema": schema}


def converse_text_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A JSON schema as Converse's `outputConfig.textFormat` (which takes the schema as a string)."""
    definition = {"schema": orjson.dumps(schema).decode(), "name": name}
    return {"type": "json_schema", "structure": {"jsonSchema": definition}}

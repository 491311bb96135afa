"""Anthropic count_tokens client (`/anthropic/v1/messages/count_tokens`) -> AWS Bedrock CountTokens
(`POST /model/{model id}/count-tokens`), for both Bedrock schemas:

- AWSBedrock: `{"input": {"converse": {messages, system, toolConfig, additionalModelRequestFields}}}`,
  the conversation as anthropic_bedrock sends it to Converse (CountTokens' Converse input takes no
  inferenceConfig);
- AWSAnthropic: `{"input": {"invokeModel": {"body": "<base64 of the InvokeModel body>"}}}`, the body
  bedrock_anthropic sends to InvokeModel (with `anthropic_version` and the betas Bedrock takes).
  count_tokens has no `max_tokens` but InvokeModel bodies for Claude require it: the default output
  limit is added (above the thinking budget when thinking is on); it does not change the count.

The model: CountTokens takes bare foundation-model ids (AWS rejects cross-region inference profile
ids with "The provided model doesn't support counting tokens"), so a profile prefix such as `us.` or
`global.` is removed; the count is the same model's. An ARN is sent as it is.

Answer: `{"inputTokens": N}` -> `{"input_tokens": N}`. Errors: Anthropic-shaped, typed by
x-amzn-errortype (bedrock_errors). Counting consumes no tokens: no usage is metered.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from ..errors import GatewayError
from .anthropic_bedrock import messages_to_converse, request_betas
from .base import (
    RequestContext,
    ResponseTranslator,
    TranslatedRequest,
    dump_json,
    load_json,
    parse_request_json,
    path_segment,
)
from .bedrock_anthropic import to_invoke_body
from .bedrock_errors import to_anthropic as bedrock_anthropic_error
from .claude_reasoning import DEFAULT_MAX_TOKENS

# Cross-region inference profile prefixes (`us.anthropic.claude-…`).
_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|us-gov|ca|jp|au|global)\.")
# What CountTokens' Converse input takes.
_CONVERSE_INPUT = ("messages", "system", "toolConfig", "additionalModelRequestFields")
# count_tokens fields that belong to the count (the rest, e.g. model, are not in an InvokeModel body).
_NOT_COUNTED = frozenset({"model"})


def count_model(model: str) -> str:
    """The model id CountTokens takes: a cross-region inference profile id without its prefix."""
    if not model:
        raise GatewayError(400, "a model is required for AWS Bedrock backends")
    return _PROFILE_PREFIX.sub("", model, count=1) if not model.startswith("arn:") else model


def count_path(model: str) -> str:
    return f"/model/{path_segment(count_model(model))}/count-tokens"


def _translated(ctx: RequestContext, body: dict[str, Any]) -> TranslatedRequest:
    return TranslatedRequest(
        path=count_path(ctx.model),
        body=dump_json(body),
        set_headers={"content-type": "application/json"},
        remove_headers=["anthropic-version", "anthropic-beta"],
    )


def translate_converse_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """AWSBedrock: the conversation as Converse input."""
    req = parse_request_json(body)
    converse = messages_to_converse(req, ctx.model, request_betas(ctx))
    counted = {k: converse[k] for k in _CONVERSE_INPUT if k in converse}
    return _translated(ctx, {"input": {"converse": counted}})


def _max_tokens(req: dict[str, Any]) -> int:
    thinking = req.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(budget, int) and not isinstance(budget, bool) and budget >= DEFAULT_MAX_TOKENS:
        return budget + 1
    return DEFAULT_MAX_TOKENS


def translate_invoke_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """AWSAnthropic: the InvokeModel body, base64-encoded."""
    req = parse_request_json(body)
    counted = {k: v for k, v in req.items() if k not in _NOT_COUNTED}
    counted.setdefault("max_tokens", _max_tokens(req))
    invoke = dump_json(to_invoke_body(ctx, counted))
    return _translated(ctx, {"input": {"invokeModel": {"body": base64.b64encode(invoke).decode()}}})


class CountTokensResponse(ResponseTranslator):
    """`{"inputTokens": N}` -> Anthropic's `{"input_tokens": N}`."""

    def body(self, body: bytes) -> bytes | None:
        resp = load_json(body)
        tokens = resp.get("inputTokens") if isinstance(resp, dict) else None
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError("the backend's CountTokens answer has no inputTokens")
        self.response_model = self.ctx.effective_model
        return dump_json({"input_tokens": tokens})

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_anthropic_error(status, body, self.ctx.response_headers)

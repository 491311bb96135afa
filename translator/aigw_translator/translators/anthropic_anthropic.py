"""Anthropic Messages client -> Anthropic backend: passthrough with model override and usage."""

from __future__ import annotations

from ..auth import ANTHROPIC_VERSION_HEADER, DEFAULT_ANTHROPIC_VERSION
from ..config import schema_prefix
from ..endpoints import Endpoint
from ..sse import Event
from ..usage import from_anthropic, merge_anthropic_stream
from .base import (
    ObservedStream,
    RequestContext,
    TranslatedRequest,
    dump_json,
    load_json,
    model_override_body,
    parse_request_json,
    passed_answer,
)
from .claude_reasoning import drop_unsigned_thinking, may_hold_unsigned_thinking


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    prefix = schema_prefix(ctx.backend.schema)
    suffix = "/messages/count_tokens" if ctx.endpoint is Endpoint.COUNT_TOKENS else "/messages"
    new_body = model_override_body(ctx, body)
    if may_hold_unsigned_thinking(new_body or body):  # another model's reasoning: Claude refuses it
        req = parse_request_json(new_body or body)
        if drop_unsigned_thinking(req):
            new_body = dump_json(req)
    headers = {}
    if ANTHROPIC_VERSION_HEADER not in ctx.headers:
        headers[ANTHROPIC_VERSION_HEADER] = DEFAULT_ANTHROPIC_VERSION
    return TranslatedRequest(path=(f"/{prefix}" if prefix else "") + suffix, body=new_body, set_headers=headers)


class AnthropicPassthroughResponse(ObservedStream):
    def body(self, body: bytes) -> bytes | None:
        obj = passed_answer(self.ctx, body)
        if isinstance(obj, dict):
            if self.ctx.endpoint is Endpoint.MESSAGES:
                self.usage = from_anthropic(obj.get("usage"))
            if isinstance(obj.get("model"), str):
                self.response_model = obj["model"]
        return None

    def _observe(self, event: Event) -> None:
        obj = load_json(event.data.encode())
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start":
            msg = obj.get("message") or {}
            self.response_model = msg.get("model") or self.response_model
            self.usage = merge_anthropic_stream(self.usage, msg.get("usage"))
            self.usage.known = False
        elif kind == "message_delta":
            self.usage = merge_anthropic_stream(self.usage, obj.get("usage"))
        elif kind == "error":
            self.usage.known = False
